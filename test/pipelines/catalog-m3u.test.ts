/**
 * The M3U playlist formatter alone: catalog entries in, the `GET /api/list?format=m3u` body out.
 */
import t from 'tap';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { catalogM3u } from '../../pipelines/catalog-m3u.js';
import { decodeMediaPath, MEDIA_PREFIX } from '../../lib/http-paths.js';
import type { CatalogEntry } from '../../lib/storage.js';

const ORIGIN = 'http://127.0.0.1:10080';

/** Feeds the entries through a formatter; returns the output chunks. */
async function format(
  entries: CatalogEntry[],
  options: { origin?: string; batchChars?: number } = {},
): Promise<Buffer[]> {
  const formatter = catalogM3u({
    origin: options.origin ?? ORIGIN,
    batchChars: options.batchChars,
  });
  const chunks: Buffer[] = [];
  formatter.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(Readable.from(entries), formatter);
  return chunks;
}

const text = (chunks: Buffer[]): string => Buffer.concat(chunks).toString('utf8');
const MTIME = new Date(Date.UTC(2026, 10, 24, 9, 30, 0, 0));
const entry = (name: string, type: CatalogEntry['type'] = 'music'): CatalogEntry => ({
  type,
  name,
  size: 1,
  mtime: MTIME,
});

t.test('an empty catalog is the header alone', async (t) => {
  const chunks = await format([]);
  t.equal(text(chunks), '#EXTM3U\n');
  t.equal(chunks.length, 1);
});

t.test('one entry: the exact lines', async (t) => {
  t.equal(
    text(await format([entry('a.mp3')])),
    '#EXTM3U\n#EXTINF:-1,a.mp3\nhttp://127.0.0.1:10080/media/a.mp3\n',
  );
});

t.test('several entries, in order, each an #EXTINF line and its URL', async (t) => {
  const output = text(
    await format(
      [entry('films/b.mkv', 'video'), entry('music/c d.mp3'), entry('pics/e.JPG', 'picture')],
      { origin: 'http://[::1]:8080' },
    ),
  );
  t.equal(
    output,
    '#EXTM3U\n' +
      '#EXTINF:-1,films/b.mkv\nhttp://[::1]:8080/media/films/b.mkv\n' +
      '#EXTINF:-1,music/c d.mp3\nhttp://[::1]:8080/media/music/c%20d.mp3\n' +
      '#EXTINF:-1,pics/e.JPG\nhttp://[::1]:8080/media/pics/e.JPG\n',
  );
  t.notMatch(output, /\r/, 'LF line ends');
});

t.test('URLs: each segment percent-encoded, the title as it is', async (t) => {
  const cases: [string, string][] = [
    ['Crosby, Stills & Nash.mov', 'Crosby%2C%20Stills%20%26%20Nash.mov'],
    ['a#1?.mp3', 'a%231%3F.mp3'],
    ['100%/x.mp3', '100%25/x.mp3'],
    ['[live]+set.mp3', '%5Blive%5D%2Bset.mp3'],
    ['caf\u00e9 \u{1f3b5}.mp3', 'caf%C3%A9%20%F0%9F%8E%B5.mp3'],
    ['cafe\u0301.mp3', 'cafe%CC%81.mp3'],
    ['#EXTINF:-1,x.mp3', '%23EXTINF%3A-1%2Cx.mp3'],
  ];
  const chunks = await format(cases.map(([name]) => entry(name)));
  const lines = text(chunks).split('\n');
  t.equal(lines[0], '#EXTM3U');
  t.equal(lines.pop(), '', 'ends with a line break');
  t.equal(lines.length, 1 + 2 * cases.length, 'two lines per entry');
  cases.forEach(([name, encoded], i) => {
    const title = lines[1 + 2 * i];
    const url = lines[2 + 2 * i];
    t.equal(title, `#EXTINF:-1,${name}`, `title of ${JSON.stringify(name)}`);
    t.equal(url, `${ORIGIN}/media/${encoded}`, `URL of ${JSON.stringify(name)}`);
    t.match(url, /^[\x21-\x7e]+$/, 'a URL of printable ASCII only');
    t.equal(new URL(url).pathname, `/media/${encoded}`, 'a URL parser keeps the path as it is');
    const path = new URL(url).pathname.slice(MEDIA_PREFIX.length);
    t.equal(decodeMediaPath(path).name, name, 'the server decodes it back to the name');
  });
  t.ok(
    Buffer.concat(chunks).includes(Buffer.from('#EXTINF:-1,caf\u00e9 \u{1f3b5}.mp3\n', 'utf8')),
    'titles are UTF-8',
  );
});

function manyEntries(n: number): CatalogEntry[] {
  return Array.from({ length: n }, (_, i) => ({
    type: 'music',
    name: `folder ${i % 97}/entry #${String(i).padStart(6, '0')} \u00e9\u{1f3b5}.mp3`,
    size: i,
    mtime: MTIME,
  }));
}

const expected = (entries: CatalogEntry[]): string =>
  '#EXTM3U\n' +
  entries
    .map(
      (e) =>
        `#EXTINF:-1,${e.name}\n${ORIGIN}/media/${e.name
          .split('/')
          .map(encodeURIComponent)
          .join('/')}\n`,
    )
    .join('');

t.test('5,000 entries: batched into several chunks, identical concatenated output', async (t) => {
  const entries = manyEntries(5000);
  const chunks = await format(entries);
  t.ok(chunks.length > 1, `${chunks.length} chunks`);
  t.ok(chunks.length < entries.length / 10, 'entries are batched');
  t.ok(Buffer.concat(chunks).equals(Buffer.from(expected(entries))), 'byte for byte');
  t.ok(chunks.slice(0, -1).every((c) => c.toString().length >= 65536));
  t.ok(
    chunks.every((c) => c[c.length - 1] === 0x0a),
    'every chunk ends at a line break',
  );
});

t.test('a small batch size gives many chunks, same bytes', async (t) => {
  const entries = manyEntries(200);
  const want = Buffer.from(expected(entries));
  for (const batchChars of [1, 10, 100, 4096]) {
    const chunks = await format(entries, { batchChars });
    t.ok(Buffer.concat(chunks).equals(want), `batchChars ${batchChars}: the same bytes`);
    t.ok(
      chunks.every((c) => c.length > 0 && Buffer.from(c.toString('utf8'), 'utf8').equals(c)),
      'no empty chunk, none splits a character',
    );
    if (batchChars === 1) t.equal(chunks.length, 200, 'one chunk per entry');
  }
  t.equal(text(await format([], { batchChars: 1 })), '#EXTM3U\n');
});
