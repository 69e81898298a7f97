/**
 * checkName, nameProblem, mediaTypeOf, isValidName and parseMediaType against the contract's
 * "Valid names" section and its table of media extensions.
 */
import t from 'tap';
import { ProtocolError, type ErrorCode } from '../../lib/errors.js';
import {
  MAX_NAME_BYTES,
  MAX_SEGMENT_BYTES,
  MEDIA_EXTENSIONS,
  MEDIA_TYPES,
  checkName,
  isValidName,
  mediaTypeOf,
  nameProblem,
  parseMediaType,
  type MediaType,
} from '../../lib/media-names.js';

/** The contract's table, written out independently of the module. */
const TABLE: Record<MediaType, string[]> = {
  video: ['.mov', '.mp4', '.m4v', '.mkv', '.avi', '.webm'],
  music: ['.mp3', '.m4a', '.aac', '.flac', '.wav', '.ogg', '.opus'],
  picture: ['.jpg', '.jpeg', '.png', '.gif', '.webp', '.heic', '.bmp', '.tif', '.tiff'],
};

function checkCode(name: string): ErrorCode | MediaType {
  try {
    return checkName(name);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return error.code;
  }
}

/** Upper-cases the letters at odd positions: ".jpeg" → ".jPeG". */
function mixedCase(ext: string): string {
  return [...ext].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join('');
}

t.test('the extension table is exactly the contract table', async (t) => {
  t.same([...MEDIA_TYPES].sort(), ['music', 'picture', 'video']);
  for (const type of MEDIA_TYPES) t.same([...MEDIA_EXTENSIONS[type]], TABLE[type], type);
  const all = Object.values(TABLE).flat();
  t.equal(new Set(all).size, all.length, 'no extension belongs to two types');
  t.ok(
    all.every((ext) => /[a-z]/.test(ext)),
    'every extension contains a letter',
  );
});

t.test('every extension in the table, in any case', async (t) => {
  for (const type of MEDIA_TYPES) {
    for (const ext of TABLE[type]) {
      for (const variant of [ext, ext.toUpperCase(), mixedCase(ext)]) {
        const name = `clip${variant}`;
        t.equal(mediaTypeOf(name), type, `mediaTypeOf ${name}`);
        t.equal(checkName(name), type, `checkName ${name}`);
        t.ok(isValidName(name), `isValidName ${name}`);
        t.equal(nameProblem(name), undefined, `nameProblem ${name}`);
        t.equal(checkName(`folder/sub/${name}`), type, `nested ${name}`);
      }
    }
  }
});

t.test('names without a media extension are UNSUPPORTED_TYPE', async (t) => {
  for (const name of [
    'notes.txt',
    'README',
    'mp3',
    'a.mp3.txt',
    'a.mp',
    'a.mpeg',
    'a.jpgx',
    'a.tif.',
    'a.mp3 ',
    'a_mp3',
    'a.mp3~',
    'mp3/readme',
    'x.mp3/readme',
    'folder.mp3/file',
    'a. mp3',
  ]) {
    t.equal(mediaTypeOf(name), undefined, `mediaTypeOf ${JSON.stringify(name)}`);
    t.equal(checkCode(name), 'UNSUPPORTED_TYPE', JSON.stringify(name));
    t.notOk(isValidName(name), `isValidName ${JSON.stringify(name)}`);
    t.equal(nameProblem(name), undefined, 'structurally fine');
  }
});

t.test('mediaTypeOf looks only at the last dot of the last segment', async (t) => {
  t.equal(mediaTypeOf('a.txt.mp3'), 'music');
  t.equal(mediaTypeOf('a.mp4.jpg'), 'picture');
  t.equal(mediaTypeOf('dir.mov/a.png'), 'picture');
  t.equal(mediaTypeOf('dir.mov/a'), undefined);
  t.equal(mediaTypeOf('.mp3'), 'music', 'the type is by extension; the name check is separate');
  t.equal(mediaTypeOf(''), undefined);
  t.equal(mediaTypeOf('.'), undefined);
});

t.test('segments: non-empty, not . or .., no leading dot', async (t) => {
  for (const name of [
    '',
    '/a.mp3',
    '//a.mp3',
    'a//b.mp3',
    'dir/',
    'a.mp3/',
    './a.mp3',
    '../a.mp3',
    'a/./b.mp3',
    'a/../b.mp3',
    'a/..',
    '.',
    '..',
    '.mp3',
    '.hidden.mp3',
    'dir/.hidden.mp3',
    '.dir/a.mp3',
    'a/.b/c.mp3',
    '.ioe-upload-abc.tmp',
    '...mp3',
  ]) {
    t.equal(checkCode(name), 'BAD_NAME', JSON.stringify(name));
    t.type(nameProblem(name), 'string', `nameProblem ${JSON.stringify(name)}`);
    t.notOk(isValidName(name), `isValidName ${JSON.stringify(name)}`);
  }
  // Dots elsewhere are fine.
  for (const name of ['a..b.mp3', 'a./b.mp3', 'a.b/c..d.mp3', 'x/y.z/w.mp3', 'a. .mp3']) {
    t.equal(checkCode(name), 'music', JSON.stringify(name));
  }
});

t.test('no leading slash, no backslash, no control characters', async (t) => {
  t.equal(checkCode('/a.mp3'), 'BAD_NAME');
  t.equal(checkCode('/dir/a.mp3'), 'BAD_NAME');
  t.equal(checkCode('a\\b.mp3'), 'BAD_NAME');
  t.equal(checkCode('..\\a.mp3'), 'BAD_NAME');
  t.equal(checkCode('a.mp3\\'), 'BAD_NAME');
  for (let code = 0; code <= 0x1f; code++) {
    const c = String.fromCharCode(code);
    t.equal(checkCode(`a${c}b.mp3`), 'BAD_NAME', `U+${code.toString(16).padStart(4, '0')}`);
    t.equal(checkCode(`a.mp3${c}`), 'BAD_NAME', `trailing U+${code.toString(16)}`);
  }
  t.equal(checkCode('a\u007fb.mp3'), 'BAD_NAME', 'U+007F');
  // Neighbours of the forbidden ranges are allowed, and so is other Unicode.
  for (const c of [' ', '!', '~', '\u0080', '\u009f', '\u00a0', '\u00e9', '\u4e2d', '\u{1f3b5}']) {
    t.equal(checkCode(`a${c}b.mp3`), 'music', `U+${c.codePointAt(0)!.toString(16)}`);
  }
  // Other punctuation is legal in a name.
  t.equal(checkCode('Crosby, Stills & Nash.mp3'), 'music');
  t.equal(checkCode('100% (live) [2024] #1 @home.flac'), 'music');
  t.equal(checkCode('a:b*c?d"e<f>g|h.mp3'), 'music');
});

t.test('a 255-byte segment passes, 256 bytes fail, counted in UTF-8 bytes', async (t) => {
  t.equal(MAX_SEGMENT_BYTES, 255);
  const ascii255 = 'a'.repeat(251) + '.mp3';
  t.equal(Buffer.byteLength(ascii255), 255);
  t.equal(checkCode(ascii255), 'music');
  t.equal(checkCode('a' + ascii255), 'BAD_NAME');
  t.equal(checkCode(`dir/${ascii255}`), 'music');
  t.equal(checkCode(`dir/a${ascii255}`), 'BAD_NAME');
  // A folder segment counts too.
  const folder255 = 'd'.repeat(255);
  t.equal(checkCode(`${folder255}/a.mp3`), 'music');
  t.equal(checkCode(`d${folder255}/a.mp3`), 'BAD_NAME');
  // Two-byte characters: 125 × "é" = 250 bytes (125 UTF-16 units) + ".mp3" (4) = 254 bytes.
  const two = '\u00e9'.repeat(125) + 'x.mp3';
  t.equal(Buffer.byteLength(two), 255);
  t.equal(checkCode(two), 'music');
  const twoOver = '\u00e9'.repeat(126) + '.mp3';
  t.equal(twoOver.length, 130, 'only 130 UTF-16 units…');
  t.equal(Buffer.byteLength(twoOver), 256, '…but 256 bytes');
  t.equal(checkCode(twoOver), 'BAD_NAME');
  // Four-byte characters (surrogate pairs in UTF-16).
  const four = '\u{1f3b5}'.repeat(62) + 'abc.mp3'; // 248 + 7 = 255
  t.equal(Buffer.byteLength(four), 255);
  t.equal(checkCode(four), 'music');
  t.equal(checkCode('\u{1f3b5}'.repeat(63) + '.mp3'), 'BAD_NAME', '252 + 4 = 256 bytes');
  // Three-byte characters.
  const three = '\u4e2d'.repeat(83) + '.mp3'; // 249 + 4 = 253
  t.equal(checkCode(three), 'music');
  t.equal(checkCode('\u4e2d'.repeat(84) + '.mp3'), 'BAD_NAME', '252 + 4 = 256 bytes');
});

t.test('a 1024-byte name passes, 1025 bytes fail, counted in UTF-8 bytes', async (t) => {
  t.equal(MAX_NAME_BYTES, 1024);
  // Three 255-byte folders and a 200-byte one, with their slashes: 969 bytes.
  const seg = 'a'.repeat(255);
  const base = `${seg}/${seg}/${seg}/${'c'.repeat(200)}/`;
  t.equal(Buffer.byteLength(base), 969);
  const exact = base + 'b'.repeat(1024 - 969 - 4) + '.mp3';
  t.equal(Buffer.byteLength(exact), 1024);
  t.equal(checkCode(exact), 'music');
  t.ok(isValidName(exact));
  const over = base + 'b'.repeat(1025 - 969 - 4) + '.mp3';
  t.equal(Buffer.byteLength(over), 1025);
  t.equal(checkCode(over), 'BAD_NAME');
  t.notOk(isValidName(over));
  // In multi-byte characters: the UTF-16 length stays well under 1024.
  const wide = [
    '\u00e9'.repeat(127),
    '\u00e9'.repeat(127),
    '\u00e9'.repeat(127),
    '\u00e9'.repeat(127),
  ];
  const wideName = wide.join('/') + '/x.mp3'; // 4×254 + 4 + 5 = 1025
  t.equal(Buffer.byteLength(wideName), 1025);
  t.ok(wideName.length < 1024);
  t.equal(checkCode(wideName), 'BAD_NAME');
  t.equal(checkCode(wide.join('/') + '/'), 'BAD_NAME', 'a trailing slash is an empty segment');
  // 3 × 254 + 252 + 4 slashes + "ab.mp3" = 1024 bytes in five segments.
  const prefix = [...wide.slice(0, 3), '\u00e9'.repeat(126)].join('/') + '/';
  t.equal(Buffer.byteLength(prefix + 'ab.mp3'), 1024);
  t.equal(checkCode(prefix + 'ab.mp3'), 'music');
  t.equal(Buffer.byteLength(prefix + 'abc.mp3'), 1025);
  t.equal(checkCode(prefix + 'abc.mp3'), 'BAD_NAME');
  const wideFits = wide.slice(0, 3).join('/') + '/' + '\u00e9'.repeat(125) + 'z.mp3'; // 764+1+255
  t.equal(Buffer.byteLength(wideFits), 1020);
  t.equal(checkCode(wideFits), 'music');
});

t.test('BAD_NAME comes before UNSUPPORTED_TYPE', async (t) => {
  t.equal(checkCode('../notes.txt'), 'BAD_NAME');
  t.equal(checkCode('.hidden'), 'BAD_NAME');
  t.equal(checkCode('a\\b.txt'), 'BAD_NAME');
  t.equal(checkCode('/etc/passwd'), 'BAD_NAME');
  t.equal(checkCode(''), 'BAD_NAME');
});

t.test('checkName throws ProtocolErrors that keep the connection', async (t) => {
  t.throws(() => checkName('../a.mp3'), { code: 'BAD_NAME', closes: false });
  t.throws(() => checkName('a.txt'), { code: 'UNSUPPORTED_TYPE', closes: false });
});

t.test('names are not normalised or case-folded', async (t) => {
  // "é" precomposed vs "e" + combining acute: both valid, and mediaTypeOf does not care.
  t.equal(checkCode('caf\u00e9.mp3'), 'music');
  t.equal(checkCode('cafe\u0301.mp3'), 'music');
  t.equal(checkCode('%2e%2e/a.mp3'), 'music', 'no percent-decoding');
  t.equal(checkCode('A.MP3'), 'music');
});

t.test('parseMediaType (LIST types) is case-insensitive', async (t) => {
  t.equal(parseMediaType('video'), 'video');
  t.equal(parseMediaType('Music'), 'music');
  t.equal(parseMediaType('PICTURE'), 'picture');
  t.equal(parseMediaType('pIcTuRe'), 'picture');
  for (const bad of ['', 'videos', 'audio', ' music', 'music ', 'photo', 'image']) {
    t.equal(parseMediaType(bad), undefined, JSON.stringify(bad));
  }
});

t.test('extensions fold ASCII case only: the Kelvin sign is not a k', (t) => {
  t.equal(mediaTypeOf('a.m\u212Av'), undefined);
  t.equal(mediaTypeOf('a.MKV'), 'video');
  t.throws(() => checkName('a.m\u212Av'), { code: 'UNSUPPORTED_TYPE' });
  t.end();
});
