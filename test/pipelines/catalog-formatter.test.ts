/**
 * The catalog formatter alone: catalog entries in, the LIST reply bytes out.
 */
import t from 'tap';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { catalogFormatter, formatEntry } from '../../pipelines/catalog-formatter.js';
import type { CatalogEntry } from '../../lib/storage.js';

/** Feeds the entries through a formatter; returns the output chunks. */
async function format(entries: CatalogEntry[], batchChars?: number): Promise<Buffer[]> {
  const formatter = catalogFormatter({ count: entries.length, batchChars });
  const chunks: Buffer[] = [];
  formatter.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(Readable.from(entries), formatter);
  return chunks;
}

const MTIME = new Date(Date.UTC(2026, 10, 24, 9, 30, 0, 0));

t.test('one entry: header and the exact line', async (t) => {
  const chunks = await format([{ type: 'music', name: 'a.mp3', size: 1234, mtime: MTIME }]);
  t.equal(
    Buffer.concat(chunks).toString('utf8'),
    'OK 1\nmusic\ta.mp3\t1234\t2026-11-24T09:30:00.000Z\n',
  );
  t.ok(
    chunks.every((c) => Buffer.isBuffer(c)),
    'chunks are Buffers',
  );
});

t.test('an empty catalog is exactly OK 0', async (t) => {
  const chunks = await format([]);
  t.equal(Buffer.concat(chunks).toString(), 'OK 0\n');
});

t.test('line format: tabs, sizes, milliseconds and UTC', async (t) => {
  const entries: CatalogEntry[] = [
    {
      type: 'video',
      name: 'films/Crosby, Stills & Nash.mov',
      size: 0,
      mtime: new Date('2001-02-03T04:05:06.007Z'),
    },
    {
      type: 'picture',
      name: 'caf\u00e9 \u{1f3b5}.JPG',
      size: 9007199254740991,
      mtime: new Date('1999-12-31T23:59:59.999+02:00'),
    },
    { type: 'music', name: 'x.flac', size: 42, mtime: new Date(0) },
  ];
  const text = Buffer.concat(await format(entries)).toString('utf8');
  t.equal(
    text,
    'OK 3\n' +
      'video\tfilms/Crosby, Stills & Nash.mov\t0\t2001-02-03T04:05:06.007Z\n' +
      'picture\tcaf\u00e9 \u{1f3b5}.JPG\t9007199254740991\t1999-12-31T21:59:59.999Z\n' +
      'music\tx.flac\t42\t1970-01-01T00:00:00.000Z\n',
  );
  const lines = text.split('\n').slice(1, -1);
  for (const line of lines) {
    const fields = line.split('\t');
    t.equal(fields.length, 4, 'four tab-separated fields');
    t.match(fields[0], /^(video|music|picture)$/);
    t.match(fields[2], /^(0|[1-9][0-9]*)$/);
    t.match(fields[3], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
  // Names are sent as UTF-8 bytes.
  t.ok(
    Buffer.concat(await format(entries)).includes(Buffer.from('caf\u00e9 \u{1f3b5}.JPG', 'utf8')),
  );
});

t.test('formatEntry', async (t) => {
  t.equal(
    formatEntry({ type: 'picture', name: 'p/q.png', size: 7, mtime: MTIME }),
    'picture\tp/q.png\t7\t2026-11-24T09:30:00.000Z\n',
  );
});

t.test('the header counts what it was told, before any entry', async (t) => {
  const formatter = catalogFormatter({ count: 2 });
  const chunks: Buffer[] = [];
  formatter.on('data', (chunk: Buffer) => chunks.push(chunk));
  await pipeline(
    Readable.from([
      { type: 'music', name: 'a.mp3', size: 1, mtime: MTIME },
      { type: 'music', name: 'b.mp3', size: 2, mtime: MTIME },
    ]),
    formatter,
  );
  t.match(Buffer.concat(chunks).toString(), /^OK 2\nmusic\ta\.mp3\t1\t/);
});

function manyEntries(n: number): CatalogEntry[] {
  const types = ['video', 'music', 'picture'] as const;
  const exts = ['.mkv', '.mp3', '.png'];
  return Array.from({ length: n }, (_, i) => ({
    type: types[i % 3],
    name: `folder ${i % 97}/entry-${String(i).padStart(6, '0')}\u00e9${exts[i % 3]}`,
    size: i * 1031,
    mtime: new Date(MTIME.getTime() + i * 1001),
  }));
}

t.test('10,000 entries: batched into several chunks, identical concatenated output', async (t) => {
  const entries = manyEntries(10000);
  const expected = `OK ${entries.length}\n` + entries.map(formatEntry).join('');
  const chunks = await format(entries);
  t.ok(chunks.length > 1, `${chunks.length} chunks`);
  t.ok(chunks.length < entries.length / 10, 'lines are batched, not one chunk per line');
  const output = Buffer.concat(chunks);
  t.ok(output.equals(Buffer.from(expected, 'utf8')), 'byte for byte');
  t.equal(output.toString().split('\n').length - 1, entries.length + 1, 'count + 1 lines');
  // Every chunk ends at a line boundary, and none is empty.
  t.ok(chunks.every((c) => c.length > 0 && c[c.length - 1] === 0x0a));
  // Chunks are about the batch size: only the last may be smaller than 64 KiB of characters.
  t.ok(chunks.slice(0, -1).every((c) => c.toString().length >= 65536));
});

t.test('a small batch size gives many chunks, same bytes', async (t) => {
  const entries = manyEntries(500);
  const expected = Buffer.from(`OK 500\n` + entries.map(formatEntry).join(''));
  for (const batchChars of [1, 10, 100, 4096]) {
    const chunks = await format(entries, batchChars);
    t.ok(Buffer.concat(chunks).equals(expected), `batchChars ${batchChars}`);
    if (batchChars === 1)
      t.equal(chunks.length, 500, 'one chunk per entry (the header rides with the first)');
  }
});

t.test('backpressure: a slow reader still gets every byte', async (t) => {
  const entries = manyEntries(3000);
  const formatter = catalogFormatter({ count: entries.length, batchChars: 1000 });
  Readable.from(entries).pipe(formatter);
  const chunks: Buffer[] = [];
  for await (const chunk of formatter) {
    chunks.push(chunk as Buffer);
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.ok(Buffer.concat(chunks).equals(Buffer.from(`OK 3000\n` + entries.map(formatEntry).join(''))));
});
