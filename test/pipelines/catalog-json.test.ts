/**
 * The JSON catalog formatter alone: catalog entries in, the `GET /api/list` body bytes out.
 */
import t from 'tap';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { catalogJson, formatJsonEntry } from '../../pipelines/catalog-json.js';
import type { CatalogEntry } from '../../lib/storage.js';

/** Feeds the entries through a formatter; returns the output chunks. */
async function format(entries: CatalogEntry[], batchChars?: number): Promise<Buffer[]> {
  const formatter = catalogJson({ count: entries.length, batchChars });
  const chunks: Buffer[] = [];
  formatter.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(Readable.from(entries), formatter);
  return chunks;
}

interface Listing {
  count: number;
  entries: { type: string; name: string; size: number; mtime: string }[];
}

const text = (chunks: Buffer[]): string => Buffer.concat(chunks).toString('utf8');
const parse = (chunks: Buffer[]): Listing => JSON.parse(text(chunks)) as Listing;

const MTIME = new Date(Date.UTC(2026, 10, 24, 9, 30, 0, 0));

t.test('an empty catalog', async (t) => {
  const chunks = await format([]);
  t.equal(text(chunks), '{"count":0,"entries":[]}\n');
  t.equal(chunks.length, 1, 'one chunk');
  t.same(parse(chunks), { count: 0, entries: [] });
});

t.test('one entry: the exact bytes', async (t) => {
  const chunks = await format([{ type: 'music', name: 'a.mp3', size: 1234, mtime: MTIME }]);
  t.equal(
    text(chunks),
    '{"count":1,"entries":[' +
      '{"type":"music","name":"a.mp3","size":1234,"mtime":"2026-11-24T09:30:00.000Z"}' +
      ']}\n',
  );
  t.ok(
    chunks.every((c) => Buffer.isBuffer(c)),
    'chunks are Buffers',
  );
});

t.test('several entries: commas between, none trailing; order kept', async (t) => {
  const entries: CatalogEntry[] = [
    { type: 'video', name: 'films/b.mkv', size: 0, mtime: new Date('2001-02-03T04:05:06.007Z') },
    {
      type: 'picture',
      name: 'p/q.png',
      size: 9007199254740991,
      mtime: new Date('1999-12-31T23:59:59.999+02:00'),
    },
    { type: 'music', name: 'x.flac', size: 42, mtime: new Date(0) },
  ];
  t.equal(
    text(await format(entries)),
    '{"count":3,"entries":[' +
      '{"type":"video","name":"films/b.mkv","size":0,"mtime":"2001-02-03T04:05:06.007Z"},' +
      '{"type":"picture","name":"p/q.png","size":9007199254740991,' +
      '"mtime":"1999-12-31T21:59:59.999Z"},' +
      '{"type":"music","name":"x.flac","size":42,"mtime":"1970-01-01T00:00:00.000Z"}' +
      ']}\n',
  );
});

t.test('formatJsonEntry', async (t) => {
  t.equal(
    formatJsonEntry({ type: 'picture', name: 'p/q.png', size: 7, mtime: MTIME }),
    '{"type":"picture","name":"p/q.png","size":7,"mtime":"2026-11-24T09:30:00.000Z"}',
  );
});

t.test('tricky names survive JSON.parse', async (t) => {
  const names = [
    'say "hi".mp3',
    'back\\slash.mp3',
    'caf\u00e9 \u{1f3b5}.jpg',
    'cafe\u0301.jpg',
    '</script><script>alert(1)</script>.mp4',
    '<!--.mp4',
    'line\u2028sep\u2029.mp3',
    'tab\there\u0001.mp3',
    '\ufeffbom.mp3',
    "'single' & {braces} [x].png",
    '\u65e5\u672c\u8a9e/\u97f3\u697d.flac',
  ];
  const entries: CatalogEntry[] = names.map((name, i) => ({
    type: 'music',
    name,
    size: i,
    mtime: MTIME,
  }));
  const chunks = await format(entries);
  const listing = parse(chunks);
  t.equal(listing.count, names.length);
  t.same(
    listing.entries.map((entry) => entry.name),
    names,
    'every name exactly, NFD and BOM included',
  );
  t.same(
    listing.entries.map((entry) => entry.size),
    names.map((_, i) => i),
  );
  t.ok(
    Buffer.concat(chunks).includes(Buffer.from('caf\u00e9 \u{1f3b5}', 'utf8')),
    'non-ASCII is sent as UTF-8',
  );
});

function manyEntries(n: number): CatalogEntry[] {
  const types = ['video', 'music', 'picture'] as const;
  const exts = ['.mkv', '.mp3', '.png'];
  return Array.from({ length: n }, (_, i) => ({
    type: types[i % 3],
    name: `folder "${i % 97}"/entry\\${String(i).padStart(6, '0')}\u00e9\u{1f3b5}${exts[i % 3]}`,
    size: i * 1031,
    mtime: new Date(MTIME.getTime() + i * 1001),
  }));
}

const expected = (entries: CatalogEntry[]): string =>
  `{"count":${entries.length},"entries":[` + entries.map(formatJsonEntry).join(',') + ']}\n';

t.test('10,000 entries: batched into several chunks, identical concatenated output', async (t) => {
  const entries = manyEntries(10000);
  const chunks = await format(entries);
  t.ok(chunks.length > 1, `${chunks.length} chunks`);
  t.ok(chunks.length < entries.length / 10, 'entries are batched, not one chunk each');
  t.ok(Buffer.concat(chunks).equals(Buffer.from(expected(entries))), 'byte for byte');
  t.ok(
    chunks.slice(0, -1).every((c) => c.toString().length >= 65536),
    'every chunk but the last holds at least 64 Ki characters',
  );
  const listing = parse(chunks);
  t.equal(listing.count, 10000);
  t.equal(listing.entries.length, 10000);
  t.same(listing.entries[9999], {
    type: entries[9999].type,
    name: entries[9999].name,
    size: entries[9999].size,
    mtime: entries[9999].mtime.toISOString(),
  });
});

t.test('a small batch size gives many chunks, same bytes', async (t) => {
  const entries = manyEntries(300);
  const want = Buffer.from(expected(entries));
  for (const batchChars of [1, 10, 100, 4096]) {
    const chunks = await format(entries, batchChars);
    t.ok(Buffer.concat(chunks).equals(want), `batchChars ${batchChars}: the same bytes`);
    t.ok(
      chunks.every((c) => c.length > 0),
      'no empty chunk',
    );
    // A chunk never splits a character: each is valid UTF-8 alone.
    t.ok(
      chunks.every((c) => Buffer.from(c.toString('utf8'), 'utf8').equals(c)),
      'each chunk is whole UTF-8',
    );
    if (batchChars === 1) {
      t.equal(chunks.length, 301, 'one chunk per entry (the head rides with the first), the tail');
    }
  }
  const empty = await format([], 1);
  t.equal(text(empty), '{"count":0,"entries":[]}\n', 'empty, batchChars 1');
});

t.test('the count is what it was told, before any entry', async (t) => {
  const formatter = catalogJson({ count: 5 });
  const chunks: Buffer[] = [];
  formatter.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(
    Readable.from([{ type: 'music', name: 'a.mp3', size: 1, mtime: MTIME }]),
    formatter,
  );
  t.match(text(chunks), /^\{"count":5,"entries":\[\{"type":"music"/);
});

t.test('backpressure: a slow reader still gets every byte', async (t) => {
  const entries = manyEntries(2000);
  const formatter = catalogJson({ count: entries.length, batchChars: 1000 });
  Readable.from(entries).pipe(formatter);
  const chunks: Buffer[] = [];
  for await (const chunk of formatter) {
    chunks.push(chunk as Buffer);
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.ok(Buffer.concat(chunks).equals(Buffer.from(expected(entries))));
});
