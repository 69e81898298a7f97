/** The file range stream alone: ranges, chunk sizes on demand, closing. */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { openSync } from 'node:fs';
import { mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRangeStream } from '../../lib/file-range-stream.js';

async function fileWith(t: Test, content: Buffer): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-range-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'film.mkv');
  await writeFile(path, content);
  return path;
}

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

async function collect(stream: FileRangeStream): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return chunks;
}

const content = randomBytes(300_000);

t.test('streams exactly the range, in chunks of the size asked before each read', async (t) => {
  const path = await fileWith(t, content);
  const sizes = [1000, 5000, 70_000];
  let asked = 0;
  const stream = new FileRangeStream(openSync(path, 'r'), {
    offset: 123,
    length: 200_000,
    chunkBytes: () => sizes[Math.min(asked++, sizes.length - 1)],
  });
  const chunks = await collect(stream);
  t.ok(Buffer.concat(chunks).equals(content.subarray(123, 200_123)), 'the bytes of the range');
  t.same(
    chunks.slice(0, 3).map((chunk) => chunk.length),
    [1000, 5000, 70_000],
  );
  t.equal(chunks.at(-1)!.length, (200_000 - 6000) % 70_000, 'the last chunk stops at the end');
});

t.test('reads only when asked: no read-ahead beyond one chunk', async (t) => {
  const path = await fileWith(t, content);
  let reads = 0;
  const stream = new FileRangeStream(openSync(path, 'r'), {
    offset: 0,
    length: content.length,
    chunkBytes: () => {
      reads++;
      return 1000;
    },
  });
  const iterator = stream[Symbol.asyncIterator]();
  await iterator.next();
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.ok(reads <= 2, `after one chunk taken and a pause, at most one more was read (${reads})`);
  await iterator.return!();
});

t.test('the file is closed at the end, and when destroyed mid-range', async (t) => {
  const path = await fileWith(t, content);
  const before = await openFds();
  await collect(
    new FileRangeStream(openSync(path, 'r'), {
      offset: 0,
      length: content.length,
      chunkBytes: () => 65536,
    }),
  );
  t.equal(await openFds(), before, 'closed after the last byte');
  const stream = new FileRangeStream(openSync(path, 'r'), {
    offset: 0,
    length: content.length,
    chunkBytes: () => 1000,
  });
  stream.read();
  stream.destroy();
  await new Promise((resolve) => stream.once('close', resolve));
  t.equal(await openFds(), before, 'closed when destroyed');
});

t.test('a file that shrinks mid-range ends early: the consumer sees fewer bytes', async (t) => {
  const path = await fileWith(t, content);
  const handle = openSync(path, 'r');
  await truncate(path, 10_000);
  const chunks = await collect(
    new FileRangeStream(handle, { offset: 0, length: content.length, chunkBytes: () => 4096 }),
  );
  t.equal(Buffer.concat(chunks).length, 10_000);
});

t.test('a read fault is an error on the stream, and the file is still closed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-range-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const before = await openFds();
  // A folder opens for reading but cannot be read: EISDIR on the first read.
  const stream = new FileRangeStream(openSync(dir, 'r'), {
    offset: 0,
    length: 10,
    chunkBytes: () => 10,
  });
  await t.rejects(collect(stream), { code: 'EISDIR' });
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(await openFds(), before);
});
