/**
 * The HTTP door's paths alone: request targets split, `/media/` paths decoded to names segment
 * by segment (bytes, never normalised), and names encoded back to URL paths.
 */
import t from 'tap';
import fc from 'fast-check';
import { ProtocolError } from '../../lib/errors.js';
import { decodeMediaPath, MEDIA_PREFIX, mediaHref, splitTarget } from '../../lib/http-paths.js';
import { isValidName, MEDIA_EXTENSIONS, MEDIA_TYPES } from '../../lib/media-names.js';

/** A request target as Node hands it over: the UTF-8 bytes, one latin1 character each. */
const latin1 = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');

/** The name back from a URL path made by mediaHref. */
const roundTrip = (name: string): string =>
  decodeMediaPath(mediaHref(name).slice(MEDIA_PREFIX.length)).name;

t.test('splitTarget: origin-form', async (t) => {
  const plain = splitTarget('/media/a.mp4');
  t.equal(plain.path, '/media/a.mp4');
  t.equal([...plain.query].length, 0, 'no query');

  t.equal(splitTarget('/').path, '/');
  t.equal(splitTarget('').path, '/', 'an empty target is the root');

  const encoded = splitTarget('/media/a%3Fb%20c.mp4');
  t.equal(encoded.path, '/media/a%3Fb%20c.mp4', 'the path stays encoded');
  t.equal([...encoded.query].length, 0, 'an encoded ? is not a query');
});

t.test('splitTarget: queries', async (t) => {
  const list = splitTarget('/api/list?type=video&format=m3u');
  t.equal(list.path, '/api/list');
  t.equal(list.query.get('type'), 'video');
  t.equal(list.query.get('format'), 'm3u');

  const download = splitTarget('/media/a.mp4?download');
  t.equal(download.path, '/media/a.mp4');
  t.ok(download.query.has('download'), 'a bare key');
  t.equal(download.query.get('download'), '');

  const empty = splitTarget('/media/a.mp4?');
  t.equal(empty.path, '/media/a.mp4');
  t.equal([...empty.query].length, 0);

  const second = splitTarget('/api/list?type=a?b&x=%20y');
  t.equal(second.path, '/api/list', 'split at the first ?');
  t.equal(second.query.get('type'), 'a?b', 'later ? are part of the query');
  t.equal(second.query.get('x'), ' y', 'query values are decoded');

  t.equal(splitTarget('?type=music').path, '/', 'a query alone is the root');
});

t.test('splitTarget: absolute-form', async (t) => {
  const absolute = splitTarget('http://example.test:10080/media/a.mp4?download');
  t.equal(absolute.path, '/media/a.mp4');
  t.ok(absolute.query.has('download'));

  t.equal(splitTarget('HTTPS://Example.Test/media/b.mp3').path, '/media/b.mp3', 'any case');
  t.equal(splitTarget('http://example.test').path, '/', 'no path: the root');
  t.equal(splitTarget('http://example.test?x=1').path, '/');
  t.equal(splitTarget('http://example.test?x=1').query.get('x'), '1');
  t.equal(
    splitTarget('http://[::1]:10080/api/list?type=video').path,
    '/api/list',
    'an IPv6 authority',
  );
  t.equal(
    splitTarget('/media/http://x/a.mp4').path,
    '/media/http://x/a.mp4',
    'a scheme-like text inside an origin-form path is part of the path',
  );
});

t.test('decodeMediaPath: per-segment percent decoding', async (t) => {
  t.same(decodeMediaPath('a.mp4'), { name: 'a.mp4', slashInSegment: false });
  t.same(decodeMediaPath('films/Crosby%2C%20Stills%20%26%20Nash.mov'), {
    name: 'films/Crosby, Stills & Nash.mov',
    slashInSegment: false,
  });
  t.equal(decodeMediaPath('caf%C3%A9.mp3').name, 'caf\u00e9.mp3', 'UTF-8 escapes');
  t.equal(decodeMediaPath('caf%c3%a9.mp3').name, 'caf\u00e9.mp3', 'lower-case hex');
  t.equal(decodeMediaPath('%F0%9F%8E%B5.mp3').name, '\u{1f3b5}.mp3', 'a four-byte character');
  t.equal(decodeMediaPath('a%25b.mp3').name, 'a%b.mp3', '%25 is a percent sign');
  t.equal(decodeMediaPath('a%252F.mp3').name, 'a%2F.mp3', 'decoded once only');
  t.equal(decodeMediaPath('%5Bx%5D%23%3F.mp3').name, '[x]#?.mp3');
  t.equal(decodeMediaPath('a+b.mp3').name, 'a+b.mp3', '+ stays + (not a space)');
  t.equal(decodeMediaPath('a%2Bb.mp3').name, 'a+b.mp3');
  t.equal(decodeMediaPath('').name, '', 'empty stays empty (the name check refuses it)');
  t.equal(decodeMediaPath('a//b.mp3').name, 'a//b.mp3', 'empty segments kept for the check');
});

t.test('decodeMediaPath: raw latin1 characters are bytes', async (t) => {
  t.equal(decodeMediaPath(latin1('caf\u00e9.mp3')).name, 'caf\u00e9.mp3', 'raw UTF-8 bytes');
  t.equal(decodeMediaPath(latin1('\u{1f3b5} x.mp3')).name, '\u{1f3b5} x.mp3');
  t.equal(
    decodeMediaPath(latin1('caf') + '%C3' + latin1('\u00e9').slice(1) + '.mp3').name,
    'caf\u00e9.mp3',
    'raw bytes and escapes of one character mix',
  );
  t.equal(
    decodeMediaPath(latin1('\u00e9')).name,
    decodeMediaPath('%C3%A9').name,
    'raw and escaped decode alike',
  );
  t.throws(
    () => decodeMediaPath('caf\u00e9.mp3'),
    { code: 'BAD_NAME' },
    'a lone latin1 0xE9 byte is not UTF-8',
  );
});

t.test('decodeMediaPath: malformed escapes are BAD_NAME', async (t) => {
  for (const encoded of [
    '%',
    'a%',
    'a%.mp3',
    '%G1.mp3',
    '%1G.mp3',
    '%1',
    'a.mp3%1',
    'ok/%zz.mp3',
    '%%41.mp3',
    '% 1.mp3',
  ]) {
    t.throws(
      () => decodeMediaPath(encoded),
      { name: 'ProtocolError', code: 'BAD_NAME' },
      JSON.stringify(encoded),
    );
  }
  let caught: unknown;
  try {
    decodeMediaPath('a%G1.mp3');
  } catch (error) {
    caught = error;
  }
  t.type(caught, ProtocolError, 'a ProtocolError, for the door to answer 400');
});

t.test('decodeMediaPath: bytes that are not UTF-8 are BAD_NAME', async (t) => {
  for (const encoded of [
    '%FF.mp3',
    'a/%FE.mp3',
    '%C3.mp3', // truncated sequence
    '%C3%28.mp3', // bad continuation
    '%80.mp3', // lone continuation byte
    '%C0%AF.mp3', // overlong "/"
    '%E0%80%AF.mp3', // overlong "/"
    '%ED%A0%80.mp3', // a UTF-16 surrogate
    '%F4%90%80%80.mp3', // above U+10FFFF
  ]) {
    t.throws(() => decodeMediaPath(encoded), { name: 'ProtocolError', code: 'BAD_NAME' }, encoded);
  }
  // Sequences split across segments are invalid in each.
  t.throws(() => decodeMediaPath('%C3/%A9.mp3'), { code: 'BAD_NAME' }, 'split by a /');
});

t.test('decodeMediaPath: %2F is a byte inside a segment, never a separator', async (t) => {
  t.same(decodeMediaPath('a%2Fb.mp3'), { name: 'a/b.mp3', slashInSegment: true });
  t.same(decodeMediaPath('a%2fb.mp3'), { name: 'a/b.mp3', slashInSegment: true }, 'lower case');
  t.same(decodeMediaPath('x/..%2F..%2Fetc.mp3').slashInSegment, true);
  t.same(decodeMediaPath('a/b.mp3'), { name: 'a/b.mp3', slashInSegment: false }, 'a raw /');
  t.equal(
    decodeMediaPath('%2E%2E/a.mp3').name,
    '../a.mp3',
    'an escaped dot is a dot (for the check)',
  );
  t.equal(decodeMediaPath('%2E%2E/a.mp3').slashInSegment, false);
  t.equal(decodeMediaPath('a%5Cb.mp3').name, 'a\\b.mp3', 'an escaped backslash is a backslash');
  t.equal(decodeMediaPath('a%00b.mp3').name, 'a\u0000b.mp3', 'an escaped NUL is a NUL');
});

t.test('decodeMediaPath: nothing is normalised', async (t) => {
  const nfc = decodeMediaPath('caf%C3%A9.mp3').name;
  const nfd = decodeMediaPath('cafe%CC%81.mp3').name;
  t.equal(nfc, 'caf\u00e9.mp3'.normalize('NFC'));
  t.equal(nfd, 'caf\u00e9.mp3'.normalize('NFD'));
  t.not(nfc, nfd, 'NFC and NFD are two names');
  t.equal(decodeMediaPath('A.MP3').name, 'A.MP3', 'no case folding');
  t.equal(decodeMediaPath('%EF%BB%BFa.mp3').name, '\ufeffa.mp3', 'a leading BOM is kept');
  t.equal(decodeMediaPath('x/%EF%BB%BFa.mp3').name, 'x/\ufeffa.mp3');
});

t.test('mediaHref: each segment percent-encoded', async (t) => {
  t.equal(mediaHref('a.mp4'), '/media/a.mp4');
  t.equal(mediaHref('films/b c.mkv'), '/media/films/b%20c.mkv', 'the / between segments stays');
  t.equal(mediaHref('x/a#b?c,d%e[f]g h+i.mp3'), '/media/x/a%23b%3Fc%2Cd%25e%5Bf%5Dg%20h%2Bi.mp3');
  t.equal(mediaHref('caf\u00e9 \u{1f3b5}.mp3'), '/media/caf%C3%A9%20%F0%9F%8E%B5.mp3');
  t.equal(
    mediaHref('cafe\u0301.mp3'),
    '/media/cafe%CC%81.mp3',
    'NFD stays NFD, not composed on the way out',
  );
});

t.test('mediaHref and decodeMediaPath: round trip of tricky names', async (t) => {
  for (const name of [
    'a.mp3',
    'music/a#1.mp3',
    'what?.mp3',
    'Crosby, Stills & Nash.mov',
    '100%.mp3',
    '%41.mp3',
    '%2F.mp3',
    '[live] set.mp3',
    'a b/c d/e f.mp3',
    'caf\u00e9.mp3',
    'cafe\u0301.mp3',
    '\u{1f3b5}/\u{1f3b5}.mp3',
    'a+b=c;d@e$f&g.mp3',
    "it's (live)!*~.mp3",
    '\u65e5\u672c\u8a9e/\u97f3\u697d.flac',
    '\ufeffbom.mp3',
  ]) {
    t.equal(roundTrip(name), name, JSON.stringify(name));
    const href = mediaHref(name);
    t.equal(splitTarget(href).path, href, `${JSON.stringify(name)}: no query split off`);
    t.equal(decodeMediaPath(href.slice(MEDIA_PREFIX.length)).slashInSegment, false);
  }
});

/** A character of a name: the ones URLs treat specially, or any code point but separators. */
const nameCharacter = fc.oneof(
  fc.constantFrom(
    '#',
    '?',
    ',',
    '%',
    '[',
    ']',
    ' ',
    '+',
    '&',
    '=',
    ';',
    "'",
    '\u00e9',
    '\u{1f3b5}',
  ),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
);
const extensions = MEDIA_TYPES.flatMap((type) => MEDIA_EXTENSIONS[type]);

/** Random valid names: up to four segments, a media extension, every rule of the contract. */
const validName = fc
  .tuple(
    fc.array(fc.string({ unit: nameCharacter, minLength: 1, maxLength: 12 }), {
      minLength: 1,
      maxLength: 4,
    }),
    fc.constantFrom(...extensions),
  )
  .map(([segments, extension]) => segments.join('/') + extension)
  .filter(isValidName);

t.test('property: mediaHref and decodeMediaPath round-trip every valid name', async (t) => {
  let checked = 0;
  fc.assert(
    fc.property(validName, (name) => {
      checked++;
      const href = mediaHref(name);
      if (!href.startsWith(MEDIA_PREFIX)) return false;
      // What a client sends: printable ASCII only, each % an escape, no query or fragment.
      if (!/^[\x21-\x7e]*$/.test(href)) return false;
      if (/[?#\s]/.test(href)) return false;
      if (/%(?![0-9A-F]{2})/.test(href)) return false;
      if (splitTarget(href).path !== href) return false;
      const decoded = decodeMediaPath(href.slice(MEDIA_PREFIX.length));
      return decoded.name === name && !decoded.slashInSegment;
    }),
    { numRuns: 200 },
  );
  t.equal(checked, 200, 'every run checked a name');
});

t.test('property: any well-formed string round-trips, slashes as separators', async (t) => {
  fc.assert(
    fc.property(fc.string({ unit: nameCharacter, maxLength: 40 }), (text) => {
      const name = text + '/' + text; // at least one separator
      return roundTrip(name) === name;
    }),
    { numRuns: 150 },
  );
  // The same names sent as raw UTF-8 bytes (a client that does not encode) decode alike; a raw
  // % would start an escape, so those names are left out.
  fc.assert(
    fc.property(
      validName.filter((name) => !name.includes('%')),
      (name) => {
        const raw = latin1(name);
        return decodeMediaPath(raw).name === name;
      },
    ),
    { numRuns: 150 },
  );
  t.pass('round trips hold');
});
