/**
 * parseRequest and payloadLength against the contract's "Requests" and "Names" sections.
 */
import t, { type Test } from 'tap';
import { ProtocolError, type ErrorCode } from '../../lib/errors.js';
import {
  MAX_LINE_BYTES,
  MAX_NUMBER,
  okLine,
  parseDecimal,
  parseRequest,
  payloadLength,
  stripCR,
  type ParseOptions,
  type Request,
} from '../../lib/protocol.js';

const line = (text: string | Buffer): Buffer => (Buffer.isBuffer(text) ? text : Buffer.from(text));

function parse(text: string | Buffer, options?: ParseOptions): Request | undefined {
  return parseRequest(line(text), options);
}

/** The ProtocolError parseRequest throws for this line (fails the test if it does not throw). */
function failure(text: string | Buffer, options?: ParseOptions): ProtocolError {
  try {
    const request = parse(text, options);
    throw new Error(`expected a ProtocolError, got ${JSON.stringify(request)}`);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return error;
  }
}

function rejects(
  t: Test,
  text: string | Buffer,
  code: ErrorCode,
  closes: boolean,
  options?: ParseOptions,
): void {
  const label = Buffer.isBuffer(text) ? text.toString('hex') : JSON.stringify(text);
  const error = failure(text, options);
  t.equal(error.code, code, `${label} → ${code}`);
  t.equal(error.closes, closes, `${label} closes=${closes}`);
}

t.test('constants', async (t) => {
  t.equal(MAX_LINE_BYTES, 4096);
  t.equal(MAX_NUMBER, 9007199254740991);
});

t.test('empty lines are ignored', async (t) => {
  t.equal(parse(''), undefined);
  t.equal(parse('\r'), undefined, 'a lone \\r is an empty line once dropped');
  // Only one trailing \r is dropped: "\r\r" is not empty.
  rejects(t, '\r\r', 'UNKNOWN_COMMAND', false);
  rejects(t, ' ', 'UNKNOWN_COMMAND', false);
});

t.test('a trailing \\r is dropped, nothing else is trimmed', async (t) => {
  t.same(parse('LIST\r'), { verb: 'LIST' });
  t.same(parse('BYE\r'), { verb: 'BYE' });
  t.same(parse('READ,a.mp3,5\r'), { verb: 'READ', name: 'a.mp3', offset: 5 });
  t.same(parse('WRITE,a.mp3,3\r'), { verb: 'WRITE', name: 'a.mp3', size: 3 });
  rejects(t, ' LIST', 'UNKNOWN_COMMAND', false);
  rejects(t, 'LIST ', 'UNKNOWN_COMMAND', false);
  rejects(t, '\tLIST', 'UNKNOWN_COMMAND', false);
  rejects(t, 'LIST\r\r', 'UNKNOWN_COMMAND', false);
  rejects(t, 'LI\rST', 'UNKNOWN_COMMAND', false);
  // A space before the name is part of the name; the name check rejects it later.
  t.same(parse('HASH, a.mp3'), { verb: 'HASH', name: ' a.mp3' });
  t.same(parse('READ,a.mp3 '), { verb: 'READ', name: 'a.mp3 ', offset: 0 });
});

t.test('verbs are case-insensitive (ASCII)', async (t) => {
  for (const verb of ['LIST', 'list', 'List', 'lIsT']) t.same(parse(verb), { verb: 'LIST' });
  for (const verb of ['BYE', 'bye', 'bYe']) t.same(parse(verb), { verb: 'BYE' });
  t.same(parse('read,a.mp3'), { verb: 'READ', name: 'a.mp3', offset: 0 });
  t.same(parse('Read,a.mp3,1,2'), { verb: 'READ', name: 'a.mp3', offset: 1, length: 2 });
  t.same(parse('write,a.mp3,7'), { verb: 'WRITE', name: 'a.mp3', size: 7 });
  t.same(parse('hAsH,a.mp3'), { verb: 'HASH', name: 'a.mp3' });
  // Non-ASCII look-alikes are not folded: U+0130 and the Kelvin sign are not ASCII letters.
  rejects(t, 'L\u0130ST', 'UNKNOWN_COMMAND', false);
  rejects(t, 'LİST', 'UNKNOWN_COMMAND', false);
  rejects(t, 'ﬁle', 'UNKNOWN_COMMAND', false);
});

t.test('unknown verbs', async (t) => {
  for (const text of ['GET', 'LISTS', 'LIS', 'DELETE,a.mp3', 'READX,a.mp3', ',a.mp3', '\u00e9']) {
    rejects(t, text, 'UNKNOWN_COMMAND', false);
  }
});

t.test('invalid UTF-8 is BAD_REQUEST', async (t) => {
  rejects(t, Buffer.from([0xff]), 'BAD_REQUEST', false);
  rejects(t, Buffer.from([0x4c, 0x49, 0x53, 0x54, 0x80]), 'BAD_REQUEST', false); // "LIST\x80"
  rejects(
    t,
    Buffer.concat([Buffer.from('READ,a'), Buffer.from([0xc3]), Buffer.from('.mp3')]),
    'BAD_REQUEST',
    false,
  );
  rejects(
    t,
    Buffer.concat([Buffer.from('HASH,'), Buffer.from([0xed, 0xa0, 0x80])]),
    'BAD_REQUEST',
    false,
  ); // a surrogate
  rejects(
    t,
    Buffer.concat([Buffer.from('LIST,'), Buffer.from([0xc0, 0xaf])]),
    'BAD_REQUEST',
    false,
  ); // overlong
  // Valid multi-byte UTF-8 is fine, and a BOM is kept, not stripped.
  t.same(parse('READ,caf\u00e9 \u{1f3b5}.mp3'), {
    verb: 'READ',
    name: 'caf\u00e9 \u{1f3b5}.mp3',
    offset: 0,
  });
  rejects(t, '\ufeffLIST', 'UNKNOWN_COMMAND', false);
  t.same(parse('HASH,\ufeffa.mp3'), { verb: 'HASH', name: '\ufeffa.mp3' });
});

t.test('parseDecimal: plain decimal only, at most 2^53-1', async (t) => {
  t.equal(parseDecimal('0'), 0);
  t.equal(parseDecimal('1'), 1);
  t.equal(parseDecimal('10'), 10);
  t.equal(parseDecimal('9007199254740991'), 9007199254740991);
  t.equal(parseDecimal('1000000000000000'), 1e15);
  for (const bad of [
    '',
    '00',
    '01',
    '007',
    '+1',
    '-1',
    '-0',
    ' 1',
    '1 ',
    '0x10',
    '1e3',
    '1.0',
    '1_000',
    '\u0661', // Arabic-Indic digit one
    '\uff11', // fullwidth digit one
    '9007199254740992',
    '9007199254740993',
    '9999999999999999',
    '10000000000000000',
    '99999999999999999999',
    'Infinity',
    'NaN',
  ]) {
    t.equal(parseDecimal(bad), undefined, JSON.stringify(bad));
  }
});

t.test('LIST', async (t) => {
  t.same(parse('LIST'), { verb: 'LIST' });
  t.same(parse('LIST,video'), { verb: 'LIST', type: 'video' });
  t.same(parse('LIST,music'), { verb: 'LIST', type: 'music' });
  t.same(parse('LIST,picture'), { verb: 'LIST', type: 'picture' });
  t.same(parse('LIST,Music'), { verb: 'LIST', type: 'music' });
  t.same(parse('list,PICTURE'), { verb: 'LIST', type: 'picture' });
  t.same(parse('LIST,ViDeO'), { verb: 'LIST', type: 'video' });
  for (const bad of [
    'LIST,',
    'LIST,audio',
    'LIST,videos',
    'LIST, video',
    'LIST,video,',
    'LIST,video,music',
  ]) {
    rejects(t, bad, 'BAD_REQUEST', false);
  }
});

t.test('BYE', async (t) => {
  t.same(parse('BYE'), { verb: 'BYE' });
  rejects(t, 'BYE,', 'BAD_REQUEST', false);
  rejects(t, 'BYE,now', 'BAD_REQUEST', false);
  rejects(t, 'bye,1,2', 'BAD_REQUEST', false);
});

t.test('HASH', async (t) => {
  t.same(parse('HASH,a.mp3'), { verb: 'HASH', name: 'a.mp3' });
  t.same(parse('HASH,Crosby, Stills & Nash.mp3'), {
    verb: 'HASH',
    name: 'Crosby, Stills & Nash.mp3',
  });
  t.same(parse('HASH,'), { verb: 'HASH', name: '' }, 'empty name: BAD_NAME is the name check');
  rejects(t, 'HASH', 'BAD_REQUEST', false);
});

t.test('READ name splitting', async (t) => {
  t.same(parse('READ,a.mp3'), { verb: 'READ', name: 'a.mp3', offset: 0 });
  t.same(parse('READ,Crosby, Stills & Nash.mp3'), {
    verb: 'READ',
    name: 'Crosby, Stills & Nash.mp3',
    offset: 0,
  });
  t.same(parse('READ,Crosby, Stills & Nash.mp3,100'), {
    verb: 'READ',
    name: 'Crosby, Stills & Nash.mp3',
    offset: 100,
  });
  t.same(parse('READ,Crosby, Stills & Nash.mp3,100,5'), {
    verb: 'READ',
    name: 'Crosby, Stills & Nash.mp3',
    offset: 100,
    length: 5,
  });
  t.same(parse('READ,a.mp3,5'), { verb: 'READ', name: 'a.mp3', offset: 5 });
  t.same(parse('READ,a.mp3,5,10'), { verb: 'READ', name: 'a.mp3', offset: 5, length: 10 });
  t.same(parse('READ,a.mp3,0,0'), { verb: 'READ', name: 'a.mp3', offset: 0, length: 0 });
  t.same(parse('READ,a.mp3,9007199254740991,9007199254740991'), {
    verb: 'READ',
    name: 'a.mp3',
    offset: 9007199254740991,
    length: 9007199254740991,
  });
  // The name ends at the LAST field with a media extension.
  t.same(parse('READ,a.mp3,b.JPG'), { verb: 'READ', name: 'a.mp3,b.JPG', offset: 0 });
  t.same(parse('READ,a.mp3,1,b.mp3,2'), { verb: 'READ', name: 'a.mp3,1,b.mp3', offset: 2 });
  t.same(parse('READ,dir,x/a.mkv,3'), { verb: 'READ', name: 'dir,x/a.mkv', offset: 3 });
  t.same(parse('READ,12.mp3'), { verb: 'READ', name: '12.mp3', offset: 0 });
  t.same(parse('READ,a.MP3,1'), { verb: 'READ', name: 'a.MP3', offset: 1 });
});

t.test('READ numbers after the name must be valid (at most two)', async (t) => {
  for (const bad of [
    'READ,a.mp3,x',
    'READ,a.mp3,',
    'READ,a.mp3,,',
    'READ,a.mp3,1,',
    'READ,a.mp3,,1',
    'READ,a.mp3,01',
    'READ,a.mp3,-1',
    'READ,a.mp3,+1',
    'READ,a.mp3, 1',
    'READ,a.mp3,1 ',
    'READ,a.mp3,0x1',
    'READ,a.mp3,1,x',
    'READ,a.mp3,1,2,3',
    'READ,a.mp3,1,2,3,4',
    'READ,a.mp3,9007199254740992',
    'READ,a.mp3,0,9007199254740992',
    'READ,a.mp3,notes',
  ]) {
    rejects(t, bad, 'BAD_REQUEST', false);
  }
  rejects(t, 'READ', 'BAD_REQUEST', false);
  rejects(t, 'read', 'BAD_REQUEST', false);
});

t.test(
  'READ without a media extension: trailing numbers, then the name fails on its own',
  async (t) => {
    t.same(parse('READ,'), { verb: 'READ', name: '', offset: 0 }, 'READ, → empty name');
    t.same(parse('READ,notes.txt'), { verb: 'READ', name: 'notes.txt', offset: 0 });
    t.same(parse('READ,notes.txt,5'), { verb: 'READ', name: 'notes.txt', offset: 5 });
    t.same(parse('READ,notes.txt,5,6'), { verb: 'READ', name: 'notes.txt', offset: 5, length: 6 });
    // At most two numbers are taken; the rest stays in the name.
    t.same(parse('READ,notes,1,2,3'), { verb: 'READ', name: 'notes,1', offset: 2, length: 3 });
    t.same(parse('READ,1,2,3'), { verb: 'READ', name: '1', offset: 2, length: 3 });
    t.same(parse('READ,5'), { verb: 'READ', name: '', offset: 5 });
    t.same(parse('READ,notes.txt,x'), { verb: 'READ', name: 'notes.txt,x', offset: 0 });
    t.same(parse('READ,notes,01'), { verb: 'READ', name: 'notes,01', offset: 0 });
  },
);

t.test('WRITE parsing', async (t) => {
  t.same(parse('WRITE,a.mp3,12'), { verb: 'WRITE', name: 'a.mp3', size: 12 });
  t.same(parse('WRITE,a,b.jpg,12'), { verb: 'WRITE', name: 'a,b.jpg', size: 12 });
  t.same(parse('WRITE,Crosby, Stills & Nash.mp3,0'), {
    verb: 'WRITE',
    name: 'Crosby, Stills & Nash.mp3',
    size: 0,
  });
  t.same(parse('WRITE,a.mp3,9007199254740991'), {
    verb: 'WRITE',
    name: 'a.mp3',
    size: 9007199254740991,
  });
  // The name is returned as sent; its checks are the caller's.
  t.same(parse('WRITE,notes.txt,1'), { verb: 'WRITE', name: 'notes.txt', size: 1 });
  t.same(parse('WRITE,../x.mp3,1'), { verb: 'WRITE', name: '../x.mp3', size: 1 });
  t.same(parse('WRITE,,1'), { verb: 'WRITE', name: '', size: 1 });
  t.same(parse('WRITE,caf\u00e9.jpg,1'), { verb: 'WRITE', name: 'caf\u00e9.jpg', size: 1 });
});

t.test('WRITE: malformed size is BAD_REQUEST and closes', async (t) => {
  for (const bad of [
    'WRITE',
    'write',
    'WRITE,',
    'WRITE,a.mp3',
    'WRITE,a.mp3,',
    'WRITE,a.mp3,x',
    'WRITE,a.mp3,01',
    'WRITE,a.mp3,-1',
    'WRITE,a.mp3,+1',
    'WRITE,a.mp3, 1',
    'WRITE,a.mp3,1 ',
    'WRITE,a.mp3,0x10',
    'WRITE,a.mp3,1.5',
    'WRITE,a.mp3,9007199254740992',
    'WRITE,a.mp3,12,',
  ]) {
    rejects(t, bad, 'BAD_REQUEST', true);
  }
});

t.test('WRITE check order: size → limit → name', async (t) => {
  const limit = { maxUpload: 100 };
  t.same(parse('WRITE,a.mp3,100', limit), { verb: 'WRITE', name: 'a.mp3', size: 100 });
  rejects(t, 'WRITE,a.mp3,101', 'TOO_LARGE', true, limit);
  rejects(t, 'WRITE,a.mp3,9007199254740991', 'TOO_LARGE', true, limit);
  t.same(parse('WRITE,a.mp3,0', { maxUpload: 0 }), { verb: 'WRITE', name: 'a.mp3', size: 0 });
  rejects(t, 'WRITE,a.mp3,1', 'TOO_LARGE', true, { maxUpload: 0 });
  // Malformed size wins over the limit.
  rejects(t, 'WRITE,a.mp3,01', 'BAD_REQUEST', true, limit);
  // The limit wins over a bad name: even a name that is not UTF-8.
  const badName = Buffer.concat([Buffer.from('WRITE,'), Buffer.from([0xff]), Buffer.from(',101')]);
  rejects(t, badName, 'TOO_LARGE', true, limit);
  rejects(t, 'WRITE,101', 'TOO_LARGE', true, limit);
  // Within the limit, a missing or non-UTF-8 name is BAD_REQUEST and does not close.
  const notUtf8 = Buffer.concat([
    Buffer.from('WRITE,a'),
    Buffer.from([0xfe]),
    Buffer.from('.mp3,5'),
  ]);
  rejects(t, notUtf8, 'BAD_REQUEST', false);
  rejects(t, notUtf8, 'BAD_REQUEST', false, limit);
  rejects(t, 'WRITE,5', 'BAD_REQUEST', false);
  rejects(t, 'WRITE,5\r', 'BAD_REQUEST', false);
  // A size that is not UTF-8 is simply malformed.
  rejects(
    t,
    Buffer.concat([Buffer.from('WRITE,a.mp3,1'), Buffer.from([0xff])]),
    'BAD_REQUEST',
    true,
  );
});

t.test('payloadLength', async (t) => {
  const cases: [string | Buffer, number][] = [
    ['WRITE,a.mp3,12', 12],
    ['write,a.mp3,12', 12],
    ['WrItE,a.mp3,12\r', 12],
    ['WRITE,a,b.jpg,12', 12],
    ['WRITE,a.mp3,0', 0],
    ['WRITE,a.mp3,9007199254740991', 9007199254740991],
    // A rejected WRITE with a valid size still announces its payload: it is drained.
    ['WRITE,12', 12],
    ['WRITE,notes.txt,7', 7],
    ['WRITE,,7', 7],
    [Buffer.concat([Buffer.from('WRITE,'), Buffer.from([0xff, 0x80]), Buffer.from(',9')]), 9],
    // No valid size: no payload (the server closes).
    ['WRITE', 0],
    ['WRITE,', 0],
    ['WRITE,a.mp3', 0],
    ['WRITE,a.mp3,x', 0],
    ['WRITE,a.mp3,01', 0],
    ['WRITE,a.mp3,-3', 0],
    ['WRITE,a.mp3,9007199254740992', 0],
    // Other verbs never carry a payload, whatever their fields.
    ['READ,a.mp3,12', 0],
    ['HASH,a.mp3,12', 0],
    ['LIST,12', 0],
    [' WRITE,a.mp3,12', 0],
    ['WRITES,a.mp3,12', 0],
    ['', 0],
    ['WRITE12', 0],
  ];
  for (const [text, expected] of cases) {
    const label = Buffer.isBuffer(text) ? text.toString('hex') : JSON.stringify(text);
    t.equal(payloadLength(line(text)), expected, label);
  }
});

t.test('payloadLength agrees with parseRequest for every accepted WRITE', async (t) => {
  for (const text of ['WRITE,a.mp3,12', 'WRITE,a,b.jpg,3', 'write,x/y.png,0\r', 'WRITE,z.mov,77']) {
    const request = parse(text);
    t.equal(request?.verb, 'WRITE');
    if (request?.verb === 'WRITE') t.equal(payloadLength(line(text)), request.size, text);
  }
});

t.test('stripCR and okLine', async (t) => {
  t.equal(stripCR(Buffer.from('a\r')).toString(), 'a');
  t.equal(stripCR(Buffer.from('a\r\r')).toString(), 'a\r');
  t.equal(stripCR(Buffer.from('a')).toString(), 'a');
  t.equal(stripCR(Buffer.alloc(0)).length, 0);
  t.equal(okLine(), 'OK\n');
  t.equal(okLine(5), 'OK 5\n');
  t.equal(okLine(3, 'abc'), 'OK 3 abc\n');
  t.equal(okLine('BYE'), 'OK BYE\n');
});

t.test('error replies', async (t) => {
  const error = failure('NOPE');
  t.match(error.toReply(), /^ERR UNKNOWN_COMMAND [^\n]*\n$/);
  const closing = failure('WRITE,a.mp3,x');
  t.match(closing.toReply(), /^ERR BAD_REQUEST [^\n]*\n$/);
});
