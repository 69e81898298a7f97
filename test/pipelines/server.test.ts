/**
 * Black-box tests of MediaServer against the wire contract (/work/shared/spec/protocol.md),
 * in process, on real sockets, through a raw client that sees every byte the server sends.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Storage } from '../../lib/storage.js';
import { RawClient, eventually, refused, sleep } from '../helpers/raw-client.js';
import { startServer } from '../helpers/server-harness.js';

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const EMPTY_SHA = sha256('');

function write(name: string, data: Buffer | string): Buffer {
  const bytes = Buffer.from(data);
  return Buffer.concat([Buffer.from(`WRITE,${name},${bytes.length}\n`), bytes]);
}

async function tempFiles(root: string): Promise<string[]> {
  return (await readdir(root)).filter((name) => name.startsWith('.ioe-upload-'));
}

/** Waits until the server has opened the temporary file of an upload. */
async function uploadStarted(root: string, count = 1): Promise<void> {
  await eventually(async () => (await tempFiles(root)).length >= count, 'the upload to start');
}

async function noTempFiles(root: string): Promise<void> {
  await eventually(async () => (await tempFiles(root)).length === 0, 'temp files to be deleted');
}

/** Sends LIST (with an optional type) and returns the entry lines. */
async function list(client: RawClient, type?: string): Promise<string[]> {
  await client.send(type === undefined ? 'LIST\n' : `LIST,${type}\n`);
  const head = await client.readLine();
  const match = /^OK (\d+)$/.exec(head);
  if (!match) throw new Error(`unexpected LIST reply: ${head}`);
  return client.readLines(Number(match[1]));
}

const names = (lines: string[]): string[] => lines.map((line) => line.split('\t')[1]);

/** Reads one READ reply: `OK <n>` then n bytes. */
async function readReply(client: RawClient): Promise<Buffer> {
  const head = await client.readLine();
  const match = /^OK (\d+)$/.exec(head);
  if (!match) throw new Error(`unexpected READ reply: ${head}`);
  return client.readBytes(Number(match[1]));
}

/** The reply's code: `OK` or the ERR code. */
const code = (line: string): string => {
  const words = line.split(' ');
  return words[0] === 'ERR' ? words[1] : words[0];
};

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

t.test('LIST on an empty root is OK 0; verbs are case-insensitive', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send('LIST\nlist\nLiSt,MUSIC\n');
  t.same(await c.readLines(3), ['OK 0', 'OK 0', 'OK 0']);
  await c.send('BYE\n');
  t.equal(await c.readLine(), 'OK BYE');
  t.equal((await c.waitClose()).length, 0, 'nothing after OK BYE, then the server closes');
});

t.test('LIST: entry format, ISO mtime with milliseconds, UTF-8 byte order', async (t) => {
  const { connect, root } = await startServer(t);
  const files = [
    'b.mp3',
    'B.mp3',
    'a.mp3',
    'a-b.mp3',
    'a/b.mp3',
    '\uFF21.mp3', // FULLWIDTH A: EF BC A1, before the emoji in UTF-8, after it in UTF-16
    '\u{1F600}.mp3',
    '\u00e9.mp3',
    'z.jpg',
    '0.mov',
  ];
  await mkdir(join(root, 'a'));
  for (const [i, name] of files.entries()) await writeFile(join(root, name), 'x'.repeat(i));
  const when = new Date('2026-11-24T09:30:00.123Z');
  await utimes(join(root, 'z.jpg'), when, when);

  const c = await connect();
  const lines = await list(c);
  t.same(names(lines), [
    '0.mov',
    'B.mp3',
    'a-b.mp3',
    'a.mp3',
    'a/b.mp3',
    'b.mp3',
    'z.jpg',
    '\u00e9.mp3',
    '\uFF21.mp3',
    '\u{1F600}.mp3',
  ]);
  t.equal(lines[6], 'picture\tz.jpg\t8\t2026-11-24T09:30:00.123Z');
  for (const line of lines) {
    const fields = line.split('\t');
    t.equal(fields.length, 4, `four fields: ${line}`);
    t.match(fields[3], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const stats = await stat(join(root, fields[1]));
    t.equal(fields[2], String(stats.size));
    t.equal(fields[3], stats.mtime.toISOString());
  }
  t.equal(lines[0].split('\t')[0], 'video');
  t.equal(lines[1].split('\t')[0], 'music');
});

t.test(
  'LIST with a type filters, case-insensitively; an unknown type is BAD_REQUEST',
  async (t) => {
    const { connect, root } = await startServer(t);
    for (const name of ['v.mkv', 'm.flac', 'm2.OGG', 'p.png', 'p2.TIFF', 'notes.txt']) {
      await writeFile(join(root, name), 'x');
    }
    const c = await connect();
    t.same(names(await list(c, 'Music')), ['m.flac', 'm2.OGG']);
    t.same(names(await list(c, 'VIDEO')), ['v.mkv']);
    t.same(names(await list(c, 'picture')), ['p.png', 'p2.TIFF']);
    t.same(names(await list(c)), ['m.flac', 'm2.OGG', 'p.png', 'p2.TIFF', 'v.mkv']);
    await c.send('LIST,movies\nLIST,\nLIST\n');
    t.equal(code(await c.readLine()), 'BAD_REQUEST');
    t.equal(code(await c.readLine()), 'BAD_REQUEST');
    t.equal(await c.readLine(), 'OK 5', 'the connection stays');
  },
);

t.test('WRITE then READ, HASH and LIST; parent folders are created', async (t) => {
  const { connect, root } = await startServer(t);
  const c = await connect();
  const data = Buffer.from('hello, media\n');
  await c.send(write('Music/Artist/Album/01 Song.mp3', data));
  t.equal(await c.readLine(), `OK ${data.length} ${sha256(data)}`);
  t.same(await readFile(join(root, 'Music/Artist/Album/01 Song.mp3')), data);
  t.same(await readFile(join(root, 'Music/Artist/Album/01 Song.mp3')), data);
  await c.send('READ,Music/Artist/Album/01 Song.mp3\n');
  t.same(await readReply(c), data);
  await c.send('HASH,Music/Artist/Album/01 Song.mp3\n');
  t.equal(await c.readLine(), `OK ${sha256(data)} ${data.length}`);
  t.same(names(await list(c)), ['Music/Artist/Album/01 Song.mp3']);

  await c.send(write('empty.jpg', ''));
  t.equal(await c.readLine(), `OK 0 ${EMPTY_SHA}`);
  t.equal((await stat(join(root, 'empty.jpg'))).size, 0);
  await c.send('READ,empty.jpg\nHASH,empty.jpg\n');
  t.equal(await c.readLine(), 'OK 0');
  t.equal(await c.readLine(), `OK ${EMPTY_SHA} 0`);
});

t.test(
  "LIST on any connection after a WRITE's OK lists the file; so do outside changes",
  async (t) => {
    const { connect, root } = await startServer(t);
    const writer = await connect();
    const reader = await connect();
    t.same(names(await list(reader)), []);
    t.same(names(await list(reader)), [], 'twice (the second from the cache)');
    for (let i = 0; i < 10; i++) {
      await writer.send(write(`f${i}.mp3`, 'x'.repeat(i)));
      t.equal(code(await writer.readLine()), 'OK');
      t.equal(
        (await list(reader)).length,
        i + 1,
        `after WRITE ${i + 1}, the other connection lists it`,
      );
    }
    await writeFile(join(root, 'outside.jpg'), 'copied in');
    t.ok(names(await list(reader)).includes('outside.jpg'), 'a file copied in is listed at once');
    await rm(join(root, 'outside.jpg'));
    t.notOk(names(await list(reader)).includes('outside.jpg'), 'and unlisted once deleted');
  },
);

t.test('names with commas parse as the contract says', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send(write('Crosby, Stills & Nash.mp3', 'abcdef'));
  t.equal(await c.readLine(), `OK 6 ${sha256('abcdef')}`);
  await c.send(write('a,b.jpg', '123456789012'));
  t.equal(await c.readLine(), `OK 12 ${sha256('123456789012')}`);
  await c.send('READ,Crosby, Stills & Nash.mp3,1\n');
  t.equal((await readReply(c)).toString(), 'bcdef');
  await c.send('READ,Crosby, Stills & Nash.mp3,1,2\n');
  t.equal((await readReply(c)).toString(), 'bc');
  await c.send('READ,a,b.jpg\nHASH,a,b.jpg\n');
  t.equal((await readReply(c)).toString(), '123456789012');
  t.equal(await c.readLine(), `OK ${sha256('123456789012')} 12`);
  t.same(names(await list(c)), ['Crosby, Stills & Nash.mp3', 'a,b.jpg']);
});

t.test('names are stored and compared byte for byte', async (t) => {
  const { connect, root } = await startServer(t);
  const nfc = 'caf\u00e9.mp3';
  const nfd = 'cafe\u0301.mp3';
  const c = await connect();
  await c.send(
    Buffer.concat([write(nfc, 'nfc'), write(nfd, 'nfd'), write('A.mp3', 'A'), write('a.mp3', 'a')]),
  );
  for (let i = 0; i < 4; i++) t.equal(code(await c.readLine()), 'OK');
  t.same(names(await list(c)), ['A.mp3', 'a.mp3', nfd, nfc]);
  await c.send(`READ,${nfc}\nREAD,${nfd}\nREAD,A.mp3\nREAD,%61.mp3\n`);
  t.equal((await readReply(c)).toString(), 'nfc');
  t.equal((await readReply(c)).toString(), 'nfd');
  t.equal((await readReply(c)).toString(), 'A');
  t.equal(code(await c.readLine()), 'NOT_FOUND', 'no percent-decoding');
  t.equal(await readFile(join(root, nfd), 'utf8'), 'nfd');
});

t.test('READ ranges and resume', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, 'd.mp3'), '0123456789');
  const c = await connect();
  const cases: [string, string][] = [
    ['READ,d.mp3', '0123456789'],
    ['READ,d.mp3,3', '3456789'],
    ['READ,d.mp3,3,4', '3456'],
    ['READ,d.mp3,8,100', '89'],
    ['READ,d.mp3,0,0', ''],
    ['READ,d.mp3,10', ''],
    ['READ,d.mp3,10,5', ''],
  ];
  // All pipelined in one write: the replies come back in order.
  await c.send(cases.map(([line]) => line + '\n').join(''));
  for (const [line, expected] of cases) t.equal((await readReply(c)).toString(), expected, line);

  await c.send('READ,d.mp3,11\nREAD,d.mp3,9007199254740991\nREAD,d.mp3,1\n');
  t.equal(code(await c.readLine()), 'BAD_RANGE');
  t.equal(code(await c.readLine()), 'BAD_RANGE');
  t.equal((await readReply(c)).toString(), '123456789', 'the connection stays after BAD_RANGE');

  const big = randomBytes(100_000);
  await writeFile(join(root, 'big.mp4'), big);
  await c.send('READ,big.mp4,0,40000\n');
  const first = await readReply(c);
  await c.send(`READ,big.mp4,${first.length}\n`);
  const rest = await readReply(c);
  t.same(Buffer.concat([first, rest]), big, 'a resumed download is the whole file');
});

t.test('HASH matches SHA-256 and follows a replaced file', async (t) => {
  const { connect, root } = await startServer(t, { overwrite: true });
  const one = randomBytes(300_000);
  await writeFile(join(root, 'h.mov'), one);
  const c = await connect();
  await c.send('HASH,h.mov\nHASH,h.mov\n');
  t.equal(await c.readLine(), `OK ${sha256(one)} ${one.length}`);
  t.equal(await c.readLine(), `OK ${sha256(one)} ${one.length}`, 'again (cached)');
  const two = randomBytes(1000);
  await c.send(write('h.mov', two));
  t.equal(await c.readLine(), `OK ${two.length} ${sha256(two)}`);
  await c.send('HASH,h.mov\n');
  t.equal(await c.readLine(), `OK ${sha256(two)} ${two.length}`, 'a changed file is hashed again');
});

t.test('binary payloads with every byte value round-trip exactly', async (t) => {
  const { connect, root } = await startServer(t);
  const every = Buffer.alloc(256 * 16, 0);
  for (let i = 0; i < every.length; i++) every[i] = i % 256;
  const tricky = Buffer.concat([
    Buffer.from('\nLIST\nREAD,x.mp3\r\n\xff\xfe'),
    every,
    randomBytes(3 * 1024 * 1024 + 7),
    Buffer.from('BYE\n'),
  ]);
  const c = await connect();
  await c.send(Buffer.concat([write('bin.wav', every), write('tricky.webm', tricky)]));
  t.equal(await c.readLine(), `OK ${every.length} ${sha256(every)}`);
  t.equal(await c.readLine(), `OK ${tricky.length} ${sha256(tricky)}`);
  t.same(await readFile(join(root, 'bin.wav')), every);
  t.ok((await readFile(join(root, 'tricky.webm'))).equals(tricky), 'stored exactly');
  await c.send('READ,bin.wav\nREAD,tricky.webm\n');
  t.ok((await readReply(c)).equals(every), 'every byte value read back');
  t.ok((await readReply(c)).equals(tricky), 'a large binary file read back exactly');
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 2', 'the payload bytes were never taken for commands');
});

t.test('pipelining: WRITE header, payload and the next commands in one socket write', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  const payload = Buffer.from('ab\ncd\r\nLIST\n\0');
  await c.send(
    Buffer.concat([
      write('p.mp3', payload),
      Buffer.from('HASH,p.mp3\nREAD,p.mp3,1\nLIST,music\n'),
      write('q.gif', 'q'),
      Buffer.from('BYE\nLIST\n'),
    ]),
  );
  t.equal(await c.readLine(), `OK ${payload.length} ${sha256(payload)}`);
  t.equal(await c.readLine(), `OK ${sha256(payload)} ${payload.length}`);
  t.same(await readReply(c), payload.subarray(1));
  t.equal(await c.readLine(), 'OK 1');
  t.match(await c.readLine(), `music\tp.mp3\t${payload.length}\t`);
  t.equal(await c.readLine(), `OK 1 ${sha256('q')}`);
  t.equal(await c.readLine(), 'OK BYE');
  t.equal((await c.waitClose()).toString(), '', 'nothing is answered after BYE');
});

t.test('a request split at every byte is still one request', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  const bytes = Buffer.concat([write('s.mp3', 'x\ny'), Buffer.from('READ,s.mp3\r\n')]);
  for (const byte of bytes) {
    await c.send(Buffer.from([byte]));
    await sleep(1);
  }
  t.equal(await c.readLine(), `OK 3 ${sha256('x\ny')}`);
  t.equal((await readReply(c)).toString(), 'x\ny');
});

t.test('\\r\\n lines are accepted; empty lines are ignored; nothing is trimmed', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send('\n\r\n\n\r\nLIST\r\n\r\nlist,music\r\n\n');
  t.same(await c.readLines(2), ['OK 0', 'OK 0']);
  await c.send(' LIST\nLIST \nBYE\n');
  t.equal(code(await c.readLine()), 'UNKNOWN_COMMAND', '" LIST" is not LIST');
  t.equal(code(await c.readLine()), 'UNKNOWN_COMMAND', '"LIST " is not LIST');
  t.equal(await c.readLine(), 'OK BYE', 'no reply was sent for the empty lines');
  await c.waitClose();
});

t.test('a client that half-closes after pipelined commands still gets every reply', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send(
    Buffer.concat([write('h.mp3', 'hello'), Buffer.from('LIST\nREAD,h.mp3\nHASH,h.mp3\n')]),
  );
  c.end();
  t.equal(await c.readLine(), `OK 5 ${sha256('hello')}`);
  t.equal(await c.readLine(), 'OK 1');
  t.match(await c.readLine(), /^music\th\.mp3\t5\t/);
  t.equal((await readReply(c)).toString(), 'hello');
  t.equal(await c.readLine(), `OK ${sha256('hello')} 5`);
  t.equal((await c.waitClose()).length, 0);
});

// ---------------------------------------------------------------------------------------------
// Error codes
// ---------------------------------------------------------------------------------------------

t.test('BAD_REQUEST keeps the connection for malformed commands', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, 'd.mp3'), '0123456789');
  const c = await connect();
  const bad = [
    'READ',
    'HASH',
    'READ,d.mp3,01',
    'READ,d.mp3,-1',
    'READ,d.mp3,0x1',
    'READ,d.mp3, 1',
    'READ,d.mp3,1,2,3',
    'READ,d.mp3,x',
    'READ,d.mp3,9007199254740992',
    'LIST,nothing',
  ];
  await c.send(bad.map((line) => line + '\n').join(''));
  for (const line of bad) t.equal(code(await c.readLine()), 'BAD_REQUEST', line);
  // A line that is not valid UTF-8.
  await c.send(Buffer.from([...Buffer.from('READ,'), 0xff, 0xfe, ...Buffer.from('.mp3\n')]));
  t.equal(code(await c.readLine()), 'BAD_REQUEST', 'not UTF-8');
  await c.send(Buffer.from([...Buffer.from('LIST,mus'), 0xc3, 0x0a]));
  t.equal(code(await c.readLine()), 'BAD_REQUEST', 'a truncated UTF-8 sequence');
  await c.send(Buffer.from([...Buffer.from('HASH,'), 0xed, 0xa0, 0x80, ...Buffer.from('.mp3\n')]));
  t.equal(code(await c.readLine()), 'BAD_REQUEST', 'an encoded surrogate is not UTF-8');
  await c.send(Buffer.from([...Buffer.from('READ,'), 0xc0, 0xaf, ...Buffer.from('.mp3\n')]));
  t.equal(code(await c.readLine()), 'BAD_REQUEST', 'an overlong encoding is not UTF-8');
  await c.send('READ,d.mp3,9\n');
  t.equal((await readReply(c)).toString(), '9', 'the connection stays');
  t.equal(c.pending.length, 0, 'no stray replies');
});

t.test('BAD_REQUEST for a WRITE without a valid size closes the connection', async (t) => {
  const { connect } = await startServer(t);
  const lines = [
    'WRITE',
    'WRITE,a.mp3',
    'WRITE,a.mp3,',
    'WRITE,a.mp3,-1',
    'WRITE,a.mp3,+3',
    'WRITE,a.mp3,01',
    'WRITE,a.mp3,0x10',
    'WRITE,a.mp3,1.5',
    'WRITE,a.mp3, 3',
    'WRITE,a.mp3,9007199254740992',
  ];
  for (const line of lines) {
    const c = await connect();
    await c.send(`${line}\nabcLIST\n`);
    const rest = (await c.waitClose()).toString();
    t.match(rest, /^ERR BAD_REQUEST [^\n]*\n$/, `${line}: one ERR BAD_REQUEST, then closed`);
  }
});

t.test('a WRITE with a valid size but a missing or non-UTF-8 name stays in step', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send('WRITE,5\nabcdeLIST\n');
  t.equal(code(await c.readLine()), 'BAD_REQUEST');
  t.equal(await c.readLine(), 'OK 0', 'the 5 payload bytes were drained');
  await c.send(
    Buffer.concat([
      Buffer.from('WRITE,\xff'),
      Buffer.from([0xff]),
      Buffer.from('.mp3,3\nx\nyLIST\n'),
    ]),
  );
  t.equal(code(await c.readLine()), 'BAD_REQUEST');
  t.equal(await c.readLine(), 'OK 0', 'drained again');
});

t.test('UNKNOWN_COMMAND keeps the connection', async (t) => {
  const { connect } = await startServer(t);
  const c = await connect();
  await c.send('FOO\nGET,a.mp3\nQUIT\nLIST\n');
  t.equal(code(await c.readLine()), 'UNKNOWN_COMMAND');
  t.equal(code(await c.readLine()), 'UNKNOWN_COMMAND');
  t.equal(code(await c.readLine()), 'UNKNOWN_COMMAND');
  t.equal(await c.readLine(), 'OK 0');
});

t.test('LINE_TOO_LONG at 4096 bytes without a newline, and the connection closes', async (t) => {
  const { connect } = await startServer(t);
  // A 4096-byte line counting its \n is accepted (here it fails on its over-long name).
  const c1 = await connect();
  const name = 'a'.repeat(4095 - 'READ,'.length - '.mp3'.length) + '.mp3';
  await c1.send(`READ,${name}\n`);
  t.equal(code(await c1.readLine()), 'BAD_NAME', '4095 bytes + \\n is a line');
  await c1.send(`READ,${name.slice(1)}\r\n`);
  t.equal(code(await c1.readLine()), 'BAD_NAME', '4094 bytes + \\r\\n is a line');
  await c1.send('LIST\n');
  t.equal(await c1.readLine(), 'OK 0');

  const c2 = await connect();
  await c2.send(`READ,a${name}\nLIST\n`);
  t.match((await c2.waitClose()).toString(), /^ERR LINE_TOO_LONG [^\n]*\n$/, '4096 bytes + \\n');

  const c3 = await connect();
  await c3.send('L'.repeat(3000));
  await sleep(20);
  await c3.send('L'.repeat(1096));
  t.match((await c3.waitClose()).toString(), /^ERR LINE_TOO_LONG [^\n]*\n$/, 'no \\n yet');

  const c4 = await connect();
  await c4.send(`READ,${name.slice(1)}\r\r\n`);
  t.match((await c4.waitClose()).toString(), /^ERR LINE_TOO_LONG /, 'the \\r counts');
});

t.test('BAD_NAME for names that break the rules; the connection stays', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, '.x.mp3'), 'hidden');
  await mkdir(join(root, '.hidden'));
  await writeFile(join(root, '.hidden', 'a.mp3'), 'hidden');
  const c = await connect();
  const bad = [
    '',
    '.x.mp3',
    '.hidden/a.mp3',
    '../x.mp3',
    'a/../x.mp3',
    './x.mp3',
    '/etc/x.mp3',
    'a//b.mp3',
    'a/',
    'a\\b.mp3',
    'a\tb.mp3',
    'a\x7fb.mp3',
    'a\x01b.mp3',
    `${'s'.repeat(252)}.mp3`, // a 256-byte segment
    `${'d/'.repeat(511)}x.mp3`, // 1027 bytes
  ];
  for (const name of bad) {
    await c.send(`READ,${name}\nHASH,${name}\n`);
    t.equal(code(await c.readLine()), 'BAD_NAME', `READ ${JSON.stringify(name.slice(0, 40))}`);
    t.equal(code(await c.readLine()), 'BAD_NAME', `HASH ${JSON.stringify(name.slice(0, 40))}`);
  }
  await c.send(Buffer.concat([write('../up.mp3', 'abc'), write('.y.mp3', 'abc')]));
  t.equal(code(await c.readLine()), 'BAD_NAME');
  t.equal(code(await c.readLine()), 'BAD_NAME');
  await c.send(`READ,${'s'.repeat(251)}.mp3\n`);
  t.equal(code(await c.readLine()), 'NOT_FOUND', 'a 255-byte segment is a valid name');
  t.same(names(await list(c)), [], 'hidden files are never listed; nothing was written');
  t.same(await readdir(join(root, '..')).then((all) => all.includes('up.mp3')), false);
});

t.test('UNSUPPORTED_TYPE for valid names without a media extension', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, 'notes.txt'), 'text');
  const c = await connect();
  await c.send(
    Buffer.concat([
      Buffer.from('READ,notes.txt\nHASH,notes.txt\nREAD,noext\nREAD,song.mp3.txt\nREAD,a.mp3/b\n'),
      write('notes.txt', 'abc'),
      write('x.exe', 'abc'),
      Buffer.from('LIST\n'),
    ]),
  );
  for (let i = 0; i < 7; i++) t.equal(code(await c.readLine()), 'UNSUPPORTED_TYPE');
  t.equal(await c.readLine(), 'OK 0', 'payloads drained; notes.txt is not listed');
  t.equal(await readFile(join(root, 'notes.txt'), 'utf8'), 'text', 'untouched');
});

t.test('NOT_FOUND: missing names and everything invisible, without hanging', async (t) => {
  const { connect, root } = await startServer(t);
  const outside = await mkdtemp(join(tmpdir(), 'ioe-outside-'));
  t.teardown(() => rm(outside, { recursive: true, force: true }));
  await writeFile(join(outside, 'secret.mp3'), 'secret');
  await writeFile(join(root, 'real.mp3'), 'real');
  execFileSync('mkfifo', [join(root, 'x.mp3')]);
  await mkdir(join(root, 'y.jpg'));
  await writeFile(join(root, 'y.jpg', 'inner.jpg'), 'inner');
  await symlink(join(outside, 'secret.mp3'), join(root, 'out.mp3'));
  await symlink(outside, join(root, 'outdir'));
  await symlink(join(root, 'nowhere.mp3'), join(root, 'dangling.mp3'));
  await symlink('real.mp3', join(root, 'alias.mp3'));
  await symlink('.', join(root, 'loop'));

  const c = await connect();
  for (const name of [
    'missing.mp3',
    'x.mp3',
    'y.jpg',
    'out.mp3',
    'outdir/secret.mp3',
    'dangling.mp3',
    'nested/missing.png',
  ]) {
    await c.send(`READ,${name}\nHASH,${name}\nREAD,${name},0,1\n`);
    for (const verb of ['READ', 'HASH', 'READ range']) {
      t.equal(code(await c.readLine()), 'NOT_FOUND', `${verb} ${name}`);
    }
  }
  const listed = names(await list(c));
  for (const hidden of ['x.mp3', 'y.jpg', 'out.mp3', 'outdir/secret.mp3', 'dangling.mp3']) {
    t.notOk(listed.includes(hidden), `${hidden} is not listed`);
  }
  t.ok(listed.includes('y.jpg/inner.jpg'), 'a file inside a folder named like media is listed');
  t.ok(listed.includes('real.mp3'));
  t.ok(listed.includes('alias.mp3'), 'a link that stays inside the root is listed');
  await c.send('READ,alias.mp3\n');
  t.equal((await readReply(c)).toString(), 'real');
  await c.send('BYE\n');
  t.equal(await c.readLine(), 'OK BYE');
});

t.test('EXISTS: existing file, a folder of that name, a parent that is a file', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, 'e.mp3'), 'original');
  await mkdir(join(root, 'dir.mp3'));
  await writeFile(join(root, 'f.mp3'), 'a file');
  const c = await connect();
  await c.send(
    Buffer.concat([
      write('e.mp3', 'replacement'),
      write('dir.mp3', 'abc'),
      write('f.mp3/child.mp3', 'abc'),
      write('f.mp3/deeper/child.mp3', 'abc'),
      Buffer.from('READ,e.mp3\n'),
    ]),
  );
  for (let i = 0; i < 4; i++) t.equal(code(await c.readLine()), 'EXISTS');
  t.equal((await readReply(c)).toString(), 'original', 'the existing file is untouched');
  t.ok((await stat(join(root, 'dir.mp3'))).isDirectory());
  t.equal(await readFile(join(root, 'f.mp3'), 'utf8'), 'a file');
  await noTempFiles(root);
});

t.test('--overwrite replaces a file atomically, but never a folder', async (t) => {
  const { connect, root } = await startServer(t, { overwrite: true });
  await writeFile(join(root, 'e.mp3'), 'original');
  await mkdir(join(root, 'dir.mp3'));
  await writeFile(join(root, 'f.mp3'), 'a file');
  const c = await connect();
  await c.send(
    Buffer.concat([
      write('e.mp3', 'replaced'),
      write('dir.mp3', 'abc'),
      write('f.mp3/child.mp3', 'abc'),
      Buffer.from('READ,e.mp3\n'),
    ]),
  );
  t.equal(await c.readLine(), `OK 8 ${sha256('replaced')}`);
  t.equal(code(await c.readLine()), 'EXISTS', 'a folder is never replaced');
  t.equal(code(await c.readLine()), 'EXISTS', 'a parent that is a file');
  t.equal((await readReply(c)).toString(), 'replaced');
  t.ok((await stat(join(root, 'dir.mp3'))).isDirectory());
});

t.test('a READ in progress finishes on the old content when the file is replaced', async (t) => {
  const { connect, root } = await startServer(t, { overwrite: true });
  const old = randomBytes(16 * 1024 * 1024);
  await writeFile(join(root, 'r.mkv'), old);
  const reader = await connect();
  reader.socket.pause();
  await reader.send('READ,r.mkv\n');
  await sleep(100); // the server has opened the file and filled the socket buffers
  const writer = await connect();
  await writer.send(write('r.mkv', 'new'));
  t.equal(await writer.readLine(), `OK 3 ${sha256('new')}`);
  reader.socket.resume();
  const got = await readReply(reader);
  t.ok(got.equals(old), 'the reader got the old content whole');
  await reader.send('READ,r.mkv\n');
  t.equal((await readReply(reader)).toString(), 'new');
});

t.test(
  'LOCKED while an upload of the name is in progress; nothing visible meanwhile',
  async (t) => {
    const { connect, root } = await startServer(t, { overwrite: true });
    const a = await connect();
    const data = Buffer.from('0123456789');
    await a.send(Buffer.concat([Buffer.from('WRITE,l.mp3,10\n'), data.subarray(0, 5)]));
    await uploadStarted(root);

    const b = await connect();
    await b.send(Buffer.concat([write('l.mp3', 'xyz'), Buffer.from('HASH,l.mp3\nREAD,l.mp3\n')]));
    t.equal(code(await b.readLine()), 'LOCKED');
    t.equal(code(await b.readLine()), 'NOT_FOUND', 'not hashable before it completes');
    t.equal(code(await b.readLine()), 'NOT_FOUND', 'not readable before it completes');
    t.same(await list(b), [], 'not listed before it completes (nor is the temporary file)');

    await a.send(data.subarray(5));
    t.equal(await a.readLine(), `OK 10 ${sha256(data)}`);
    t.same(names(await list(b)), ['l.mp3']);
    await b.send('READ,l.mp3\n');
    t.same(await readReply(b), data, 'the stored file is exactly the first upload');
    await b.send(write('l.mp3', 'xyz'));
    t.equal(await b.readLine(), `OK 3 ${sha256('xyz')}`, 'the lock is gone once it completes');
  },
);

t.test('abandoned uploads: nothing published, the old file untouched, no temp file', async (t) => {
  const { connect, root } = await startServer(t, { overwrite: true });
  await writeFile(join(root, 'e.mp3'), 'old');

  const a = await connect();
  await a.send(Buffer.concat([Buffer.from('WRITE,e.mp3,10\n'), Buffer.from('new')]));
  const b = await connect();
  await b.send(Buffer.concat([Buffer.from('WRITE,n.mp3,10\n'), Buffer.from('new')]));
  await uploadStarted(root, 2);
  const c = await connect();
  await c.send('READ,e.mp3\n');
  t.equal((await readReply(c)).toString(), 'old', 'the existing file is untouched meanwhile');

  a.destroy(); // disconnects mid-payload
  b.end(); // half-closes mid-payload: the upload can never complete
  t.equal((await b.waitClose()).length, 0, 'no reply for an upload that cannot complete');
  await noTempFiles(root);
  await c.send('READ,e.mp3\nREAD,n.mp3\n');
  t.equal((await readReply(c)).toString(), 'old', 'still untouched');
  t.equal(code(await c.readLine()), 'NOT_FOUND', 'the abandoned new file was never published');
  t.same(names(await list(c)), ['e.mp3']);
  await c.send(Buffer.concat([write('e.mp3', 'abc'), write('n.mp3', 'abc')]));
  t.equal(code(await c.readLine()), 'OK', 'the lock was released');
  t.equal(code(await c.readLine()), 'OK', 'the lock was released');
});

t.test('no upload replaces a file that appeared while it was in progress', async (t) => {
  const { connect, root } = await startServer(t);
  const a = await connect();
  await a.send('WRITE,race.mp3,4\nab');
  await uploadStarted(root);
  await writeFile(join(root, 'race.mp3'), 'someone else');
  await a.send('cdLIST\n');
  t.equal(code(await a.readLine()), 'EXISTS');
  t.equal(await a.readLine(), 'OK 1', 'the connection stays');
  await a.readLine();
  t.equal(await readFile(join(root, 'race.mp3'), 'utf8'), 'someone else');
  await noTempFiles(root);
});

t.test('READ_ONLY refuses every WRITE and drains its payload; checks run in order', async (t) => {
  const { connect, root } = await startServer(t, { readOnly: true, maxUpload: 100 });
  await writeFile(join(root, 'e.mp3'), 'x');
  const c = await connect();
  await c.send(
    Buffer.concat([
      write('new.mp3', 'abc'),
      write('e.mp3', 'abc'),
      write('../bad.mp3', 'abc'),
      write('bad.txt', 'abc'),
      Buffer.from('WRITE,7\n1234567'),
      Buffer.from('LIST\nREAD,e.mp3\n'),
    ]),
  );
  t.equal(code(await c.readLine()), 'READ_ONLY');
  t.equal(code(await c.readLine()), 'READ_ONLY', 'before EXISTS');
  t.equal(code(await c.readLine()), 'READ_ONLY', 'before BAD_NAME');
  t.equal(code(await c.readLine()), 'READ_ONLY', 'before UNSUPPORTED_TYPE');
  t.equal(code(await c.readLine()), 'BAD_REQUEST', 'a missing name before READ_ONLY');
  t.equal(await c.readLine(), 'OK 1', 'reads still work');
  await c.readLine();
  t.equal((await readReply(c)).toString(), 'x');
  await c.send('WRITE,../bad.txt,101\n');
  t.match((await c.waitClose()).toString(), /^ERR TOO_LARGE /, 'TOO_LARGE before READ_ONLY');
  t.same(await tempFiles(root), []);
});

t.test('TOO_LARGE above the upload limit closes the connection', async (t) => {
  const { connect, root } = await startServer(t, { maxUpload: 10 });
  const c1 = await connect();
  await c1.send(write('ten.mp3', '0123456789'));
  t.equal(await c1.readLine(), `OK 10 ${sha256('0123456789')}`, 'at the limit is fine');
  await c1.send(Buffer.concat([write('eleven.mp3', '0123456789A'), Buffer.from('LIST\n')]));
  t.match((await c1.waitClose()).toString(), /^ERR TOO_LARGE [^\n]*\n$/);
  const c2 = await connect();
  await c2.send('WRITE,../x.txt,11\n');
  t.match((await c2.waitClose()).toString(), /^ERR TOO_LARGE /, 'before the name checks');
  const c3 = await connect();
  await c3.send('WRITE,ten.mp3,9007199254740991\n');
  t.match((await c3.waitClose()).toString(), /^ERR TOO_LARGE /, 'before EXISTS');
  t.same(
    (await readdir(root)).filter((name) => name !== 'ten.mp3'),
    [],
    'nothing else was written',
  );
});

t.test('NO_SPACE when the size exceeds free disk; the name is not left locked', async (t) => {
  const { connect, root } = await startServer(t);
  await writeFile(join(root, 'e.mp3'), 'x');
  const c1 = await connect();
  await c1.send('WRITE,huge.mp3,9007199254740991\n');
  t.equal(code(await c1.readLine()), 'NO_SPACE');
  c1.destroy();
  const c2 = await connect();
  await c2.send('WRITE,e.mp3,9007199254740991\n');
  t.equal(code(await c2.readLine()), 'EXISTS', 'EXISTS is checked before NO_SPACE');
  c2.destroy();
  const c3 = await connect();
  await c3.send(write('huge.mp3', 'small'));
  t.equal(await c3.readLine(), `OK 5 ${sha256('small')}`);
  await noTempFiles(root);
});

t.test('BUSY at maxConnections; a slot frees as soon as a client leaves', async (t) => {
  const { connect, server } = await startServer(t, { maxConnections: 2 });
  const c1 = await connect();
  const c2 = await connect();
  await c1.send('LIST\n');
  await c2.send('LIST\n');
  t.equal(await c1.readLine(), 'OK 0');
  t.equal(await c2.readLine(), 'OK 0');
  const c3 = await connect();
  t.match((await c3.waitClose()).toString(), /^ERR BUSY [^\n]*\n$/, 'sent on connect, then closed');
  const c4 = await connect();
  await c4.send('LIST\n');
  t.match((await c4.waitClose()).toString(), /^ERR BUSY [^\n]*\n$/, 'refused ones hold no slot');

  await c1.send('BYE\n');
  t.equal(await c1.readLine(), 'OK BYE');
  await c1.waitClose();
  c1.destroy();
  await eventually(() => server.connectionCount === 1, 'the server to see c1 leave');
  const c5 = await connect();
  await c5.send('LIST\n');
  t.equal(await c5.readLine(), 'OK 0', 'the freed slot is taken at once');
  const c6 = await connect();
  t.match((await c6.waitClose()).toString(), /^ERR BUSY /, 'full again');

  c2.destroy(); // an abrupt leave frees the slot too
  await eventually(() => server.connectionCount === 1, 'the server to see c2 leave');
  const c7 = await connect();
  await c7.send('LIST\n');
  t.equal(await c7.readLine(), 'OK 0');
});

t.test('BUSY at maxConnectionsPerIp counts each client address', async (t) => {
  const { connect, server } = await startServer(t, { maxConnections: 10, maxConnectionsPerIp: 1 });
  const c1 = await connect('127.0.0.1');
  await c1.send('LIST\n');
  t.equal(await c1.readLine(), 'OK 0');
  const c2 = await connect('127.0.0.1');
  t.match((await c2.waitClose()).toString(), /^ERR BUSY /);
  const c3 = await connect('127.0.0.2');
  await c3.send('LIST\n');
  t.equal(await c3.readLine(), 'OK 0', 'another address has its own allowance');
  c1.destroy();
  await eventually(() => server.connectionCount === 1, 'the server to see c1 leave');
  const c4 = await connect('127.0.0.1');
  await c4.send('LIST\n');
  t.equal(await c4.readLine(), 'OK 0', 'the address slot frees when its client leaves');
});

t.test('TIMEOUT: idle and trickling clients are closed; steady progress is not', async (t) => {
  const { connect, root } = await startServer(t, { idleTimeoutSeconds: 1 });
  const started = Date.now();

  const idle = await connect();
  const trickler = await connect();
  let trickling = true;
  const trickle = (async () => {
    // One byte of an unfinished line every 300 ms, for up to 8 s.
    for (let i = 0; i < 27 && trickling && !trickler.ended; i++) {
      await trickler.send('L').catch(() => undefined);
      await sleep(300);
    }
  })();
  const stalled = await connect();
  await stalled.send('WRITE,stalled.mp3,10\nabc');

  const steadyWriter = await connect();
  const steady = (async () => {
    const data = Buffer.from('01234567');
    await steadyWriter.send('WRITE,slow.mp3,8\n');
    for (const byte of data) {
      await sleep(300);
      await steadyWriter.send(Buffer.from([byte]));
    }
    return steadyWriter.readLine();
  })();

  const chatty = await connect();
  const chat = (async () => {
    const replies: string[] = [];
    for (let i = 0; i < 8; i++) {
      await sleep(300);
      await chatty.send('READ,none.mp3\n');
      replies.push(code(await chatty.readLine()));
    }
    return replies;
  })();

  t.match((await idle.waitClose(6000)).toString(), /^ERR TIMEOUT [^\n]*\n$/, 'idle');
  const trickled = (await trickler.waitClose(8000)).toString();
  const stillTrickling = trickling;
  trickling = false;
  await trickle;
  t.match(trickled, /^ERR TIMEOUT /, 'a trickled unfinished line is not progress');
  t.ok(stillTrickling, 'closed while the trickle was still going');
  t.match((await stalled.waitClose(6000)).toString(), /^ERR TIMEOUT /, 'a stalled WRITE');

  t.equal(await steady, `OK 8 ${sha256('01234567')}`, 'a slow, steady WRITE is not killed');
  t.same(await chat, Array(8).fill('NOT_FOUND'), 'complete commands are progress');
  t.ok(Date.now() - started > 2000, 'the steady ones outlived the timeout');
  await noTempFiles(root);
  t.same(names(await list(chatty)), ['slow.mp3'], 'the stalled upload was not published');
});

t.test('TIMEOUT does not cut a reader that is slow but steady', async (t) => {
  // Progress is what the server sees leave: the reader takes 1 MiB every 300 ms, so the file
  // takes longer than the 2 s timeout while the server's bytes keep moving. (With 1 s, a test
  // process starved for a second on a loaded machine really was idle, and was rightly cut.)
  const { connect, root } = await startServer(t, { idleTimeoutSeconds: 2 });
  const data = randomBytes(12 * 1024 * 1024);
  await writeFile(join(root, 'big.mp4'), data);
  const c = await connect();
  c.socket.removeAllListeners('data');
  const chunks: Buffer[] = [];
  let received = 0;
  let allowance = 1024 * 1024;
  c.socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    received += chunk.length;
    if (received >= allowance) c.socket.pause();
  });
  const total = data.length + `OK ${data.length}\n`.length;
  const started = Date.now();
  await c.send('READ,big.mp4\n');
  while (received < total && !c.ended && Date.now() - started < 30_000) {
    await sleep(300);
    allowance += 1024 * 1024;
    c.socket.resume();
  }
  t.ok(Date.now() - started > 2500, 'the read took longer than the timeout');
  const all = Buffer.concat(chunks);
  t.equal(all.subarray(0, all.indexOf(0x0a)).toString(), `OK ${data.length}`);
  const body = all.subarray(all.indexOf(0x0a) + 1);
  t.ok(body.length >= data.length, `the whole file arrived (${body.length} of ${data.length})`);
  const head = body.subarray(0, data.length);
  const firstDiff = head.findIndex((byte, at) => byte !== data[at]);
  t.equal(firstDiff, -1, 'every byte as stored (-1: no byte differs)');
  // Once the last bytes are in the kernel's buffers the server has nothing left to send; if the
  // reader still needs over the timeout to drain them, the idle connection may then be closed,
  // after the payload (never inside it).
  t.match(
    body.subarray(data.length).toString(),
    /^(ERR TIMEOUT [^\n]*\n)?$/,
    'then nothing, or TIMEOUT',
  );
});

t.test('readers of different files at different paces: each gets its own bytes', async (t) => {
  // Chunk memory is reused across downloads and connections as soon as the kernel has a
  // chunk's bytes. Freed a moment too early, a buffer still queued for one socket would be
  // overwritten by another file's next read: the digests below would not match.
  const { connect, root } = await startServer(t);
  const files = [0, 1, 2].map(() => randomBytes(12 * 1024 * 1024 + 4321));
  for (const [i, data] of files.entries()) await writeFile(join(root, `f${i}.mp4`), data);
  const readers = Array.from({ length: 9 }, async (_, i) => {
    const data = files[i % files.length];
    const c = await connect();
    c.socket.removeAllListeners('data');
    const chunks: Buffer[] = [];
    let received = 0;
    let allowance = i < 3 ? Infinity : 64 * 1024; // three take all at once, six in bursts
    c.socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= allowance) c.socket.pause();
    });
    const total = data.length + `OK ${data.length}\n`.length;
    await c.send(`READ,f${i % files.length}.mp4\n`);
    const started = Date.now();
    while (received < total && Date.now() - started < 20_000) {
      await sleep(i % 2 ? 2 : 5);
      allowance += (i % 3) * 96 * 1024 + 64 * 1024;
      c.socket.resume();
    }
    const all = Buffer.concat(chunks);
    const body = all.subarray(all.indexOf(0x0a) + 1);
    t.equal(sha256(body), sha256(data), `reader ${i}: the bytes of f${i % files.length}.mp4`);
  });
  await Promise.all(readers);
});

/** Reads freely until the server closes; returns the header line and the bytes after it. */
async function drainReply(c: RawClient): Promise<{ head: string; body: Buffer }> {
  c.socket.resume();
  const all = await c.waitClose(10_000);
  const newline = all.indexOf(0x0a);
  return { head: all.subarray(0, newline).toString(), body: all.subarray(newline + 1) };
}

t.test('TIMEOUT mid-READ: the server just closes, no ERR inside the payload', async (t) => {
  const { connect, root } = await startServer(t, { idleTimeoutSeconds: 1 });
  const data = randomBytes(32 * 1024 * 1024);
  await writeFile(join(root, 'big.mp4'), data);
  const c = await connect();
  c.socket.pause();
  await c.send('READ,big.mp4\n');
  await sleep(2500); // the reader stalls for longer than the timeout
  const { head, body } = await drainReply(c);
  t.equal(head, `OK ${data.length}`);
  t.ok(body.length < data.length, 'closed before the end of the file');
  t.ok(body.equals(data.subarray(0, body.length)), 'only file bytes, no ERR line among them');
});

t.test(
  'a file that shrinks mid-READ: the server closes rather than send fewer bytes',
  async (t) => {
    const { connect, root } = await startServer(t);
    const data = randomBytes(32 * 1024 * 1024);
    await writeFile(join(root, 'shrink.mp4'), data);
    const c = await connect();
    c.socket.pause();
    await c.send('READ,shrink.mp4\nLIST\n');
    await sleep(200);
    await truncate(join(root, 'shrink.mp4'), 0);
    const { head, body } = await drainReply(c);
    t.equal(head, `OK ${data.length}`);
    t.ok(body.length < data.length, 'fewer bytes than announced, then closed');
    t.ok(body.equals(data.subarray(0, body.length)), 'no reply to LIST was mixed in');
  },
);

t.test('INTERNAL for an unexpected storage fault; the connection stays', async (t) => {
  const faulty: Storage = {
    list: () => Promise.reject(new Error('the disk is on fire')),
    open: () => Promise.reject(new Error('the disk is on fire')),
    beginUpload: () => Promise.reject(new Error('the disk is on fire')),
    close: () => Promise.resolve(),
  };
  const { connect } = await startServer(t, { storage: faulty });
  const c = await connect();
  await c.send(Buffer.concat([Buffer.from('LIST\nREAD,a.mp3\n'), write('a.mp3', 'abc')]));
  t.equal(code(await c.readLine()), 'INTERNAL');
  t.equal(code(await c.readLine()), 'INTERNAL');
  t.equal(code(await c.readLine()), 'INTERNAL');
  await c.send('BYE\n');
  t.equal(await c.readLine(), 'OK BYE', 'the connection stayed, in step');
});

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

t.test('quit(): an idle connection gets SHUTTING_DOWN; new connections are refused', async (t) => {
  const { connect, server, port } = await startServer(t);
  const c = await connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 0');
  const quitting = server.quit();
  t.match((await c.waitClose()).toString(), /^ERR SHUTTING_DOWN [^\n]*\n$/);
  t.ok(await refused(port), 'a new connection is refused');
  c.destroy();
  await quitting;
  t.pass('quit() resolved once the last connection closed');
});

t.test('quit() mid-WRITE: the WRITE completes with OK, then SHUTTING_DOWN', async (t) => {
  const { connect, server, root, port } = await startServer(t);
  const c = await connect();
  const data = randomBytes(1000);
  await c.send(Buffer.concat([Buffer.from(`WRITE,q.mp3,${data.length}\n`), data.subarray(0, 400)]));
  await uploadStarted(root);
  let quitDone = false;
  const quitting = server.quit().then(() => (quitDone = true));
  t.ok(await refused(port), 'new connections are refused while draining');
  await sleep(50);
  t.notOk(quitDone, 'quit waits for the transfer');
  await c.send(Buffer.concat([data.subarray(400), Buffer.from('LIST\n')]));
  t.equal(await c.readLine(), `OK ${data.length} ${sha256(data)}`);
  t.match((await c.waitClose()).toString(), /^ERR SHUTTING_DOWN [^\n]*\n$/, 'LIST is not run');
  c.destroy();
  await quitting;
  t.ok((await readFile(join(root, 'q.mp3'))).equals(data), 'the upload was published');
});

t.test('quit() with pipelined commands waiting behind a WRITE', async (t) => {
  const { connect, server, root } = await startServer(t);
  const c = await connect();
  await c.send('WRITE,w.mp3,6\nabc');
  await uploadStarted(root);
  const quitting = server.quit();
  await c.send('defREAD,w.mp3\nLIST\nBYE\n');
  t.equal(await c.readLine(), `OK 6 ${sha256('abcdef')}`);
  t.match((await c.waitClose()).toString(), /^ERR SHUTTING_DOWN [^\n]*\n$/);
  c.destroy();
  await quitting;
});

t.test('quit() mid-READ: the READ completes whole, then SHUTTING_DOWN', async (t) => {
  const { connect, server, root } = await startServer(t);
  const data = randomBytes(16 * 1024 * 1024);
  await writeFile(join(root, 'big.mov'), data);
  const c = await connect();
  c.socket.pause();
  await c.send('READ,big.mov\nLIST\n');
  await sleep(100);
  const quitting = server.quit();
  c.socket.resume();
  t.ok((await readReply(c)).equals(data));
  t.match((await c.waitClose()).toString(), /^ERR SHUTTING_DOWN /);
  c.destroy();
  await quitting;
});

t.test('forceQuit() mid-WRITE drops the connection and deletes the partial upload', async (t) => {
  const { connect, server, root } = await startServer(t);
  const c = await connect();
  await c.send('WRITE,f.mp3,100\nabc');
  await uploadStarted(root);
  await server.forceQuit();
  await c.waitClose();
  t.same(await tempFiles(root), [], 'no temporary file is left');
  t.same(await readdir(root), []);
});

t.test(
  'forceQuit() during a quit() drain: the partial upload is gone when either resolves',
  async (t) => {
    const { connect, server, root } = await startServer(t);
    const c = await connect();
    await c.send('WRITE,f.mp3,100\nabc');
    await uploadStarted(root);
    const quitting = server.quit();
    await sleep(50);
    const forcing = server.forceQuit();
    await quitting;
    // Looked at synchronously: an asynchronous readdir would queue behind a pending unlink.
    t.same(
      readdirSync(root).filter((name) => name.startsWith('.ioe-upload-')),
      [],
      'quit() resolves only once the temporary file is gone',
    );
    await forcing;
    t.same(await tempFiles(root), [], 'so does forceQuit()');
    await c.waitClose();
  },
);

t.test(
  'uploads pipelined with other commands in one stream: every byte and every line intact',
  async (t) => {
    // Socket reads that are all payload give their memory back once stored (consumesPayload);
    // a read shared with the next command line, or with the next upload, must not.
    const { connect, root } = await startServer(t);
    const c = await connect();
    const sizes = [200_000, 1, 65_536, 65_535, 131_073, 0, 300_000, 7, 65_537, 1_000_000];
    const files = sizes.map((size) => randomBytes(size));
    const stream: Buffer[] = [];
    for (const [i, bytes] of files.entries()) {
      stream.push(
        write(`p/${i}.mp4`, bytes),
        Buffer.from(`HASH,p/${i}.mp4\nREAD,p/${i}.mp4,0,5\n`),
      );
    }
    await c.send(Buffer.concat(stream));
    for (const [i, bytes] of files.entries()) {
      t.equal(await c.readLine(), `OK ${bytes.length} ${sha256(bytes)}`, `WRITE ${i}`);
      t.equal(await c.readLine(), `OK ${sha256(bytes)} ${bytes.length}`, `HASH ${i}`);
      t.same(await readReply(c), bytes.subarray(0, 5), `READ ${i}`);
    }
    for (const [i, bytes] of files.entries()) {
      t.ok((await readFile(join(root, `p/${i}.mp4`))).equals(bytes), `p/${i}.mp4 on disk`);
    }
  },
);
