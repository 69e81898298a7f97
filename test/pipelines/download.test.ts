/**
 * The READ branch alone: a real file of a LocalStorage in a temporary directory (and fake
 * StoredFiles for faults) in, paced chunks out; the budget, the pool and the file descriptor
 * are all given back however the consumer stops.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type ReadableOptions } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChunkBudget, ChunkPacer, type ChunkPacerOptions } from '../../lib/chunk-pacer.js';
import { ChunkPool } from '../../lib/chunk-pool.js';
import { LocalStorage } from '../../lib/local-storage.js';
import type { StoredFile } from '../../lib/storage.js';
import { download, ShrunkError } from '../../pipelines/download.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A pacer that records what it was asked and told. */
class SpyPacer extends ChunkPacer {
  readonly asks: number[] = [];
  readonly paces: { bytes: number; ms: number }[] = [];

  constructor(options: ChunkPacerOptions = {}) {
    super(options);
  }

  override get size(): number {
    const size = super.size;
    this.asks.push(size);
    return size;
  }

  override paced(bytes: number, ms: number): void {
    this.paces.push({ bytes, ms });
    super.paced(bytes, ms);
  }
}

/** A pool that records what it lent. */
class SpyPool extends ChunkPool {
  readonly given: Buffer[] = [];
  failAt = Infinity;

  override take(size: number): Buffer {
    if (this.given.length + 1 >= this.failAt) throw new Error('no memory for a chunk');
    const chunk = super.take(size);
    this.given.push(chunk);
    return chunk;
  }
}

/** Open file descriptors of this process. */
const fds = (): number => readdirSync('/proc/self/fd').length;

/** Waits (bounded) until the open descriptors are back to `count`; returns the last count. */
async function fdsBackTo(count: number, ms = 2000): Promise<number> {
  const deadline = Date.now() + ms;
  while (fds() !== count && Date.now() < deadline) await sleep(5);
  return fds();
}

interface Setup {
  root: string;
  storage: LocalStorage;
  bytes: Buffer;
  name: string;
}

async function setup(t: Test, size = 300_017): Promise<Setup> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-download-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  const bytes = randomBytes(size);
  const name = 'films/movie.mkv';
  await storage.beginUpload(name, bytes.length).then(async (upload) => {
    await upload.write([bytes]);
    await upload.publish();
  });
  return { root: storage.root, storage, bytes, name };
}

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const all: Buffer[] = [];
  for await (const chunk of chunks) all.push(Buffer.from(chunk)); // a copy: the pool may reuse
  return all;
}

/** The chunks until the download ends or throws, and what it threw. */
async function collectUntilError(
  chunks: AsyncIterable<Buffer>,
): Promise<{ got: Buffer[]; error?: unknown }> {
  const got: Buffer[] = [];
  try {
    for await (const chunk of chunks) got.push(Buffer.from(chunk));
  } catch (error) {
    return { got, error };
  }
  return { got };
}

/** A stream that gives 10 bytes of 1s, then, asked for more, does `then` to itself. */
function tenBytesThen(then: (stream: Readable) => void, options: ReadableOptions = {}): Readable {
  let sent = false;
  return new Readable({
    ...options,
    read() {
      if (sent) return then(this);
      sent = true;
      this.push(Buffer.alloc(10, 1));
    },
  });
}

/** A StoredFile of `size` bytes whose every stream is `stream()`. */
function fakeFile(size: number, stream: () => Readable): StoredFile {
  return { size, mtime: new Date(0), version: 'v', stream, close: async () => undefined };
}

t.test('yields exactly `length` bytes from `offset`, and closes the file', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const size = bytes.length;
  for (const [offset, length] of [
    [0, size],
    [12345, 200_000],
    [size - 1, 1],
    [100, size - 100],
    [0, 1],
    [70_000, 65_536],
  ]) {
    const before = fds();
    const file = await storage.open(name);
    t.equal(fds(), before + 1, 'the file is open');
    const chunks = await collect(download(file, { offset, length, pacer: new ChunkPacer() }));
    const got = Buffer.concat(chunks);
    t.equal(got.length, length, `${offset}+${length}: the length`);
    t.ok(got.equals(bytes.subarray(offset, offset + length)), `${offset}+${length}: the bytes`);
    t.ok(
      chunks.every((c) => c.length > 0),
      'no empty chunk',
    );
    t.equal(await fdsBackTo(before), before, 'the file is closed');
  }
});

t.test('length 0: nothing yielded, the file closed at once', async (t) => {
  const { storage, name } = await setup(t);
  const budget = new ChunkBudget();
  const pacer = new SpyPacer();
  const before = fds();
  const file = await storage.open(name);
  const chunks = await collect(download(file, { offset: 0, length: 0, pacer, budget }));
  t.same(chunks, [], 'no chunk');
  t.equal(fds(), before, 'closed by the time the iteration ends');
  t.same(pacer.asks, [], 'no read asked for');
  t.equal(budget.downloads, 0);

  let closes = 0;
  const fake: StoredFile = {
    size: 10,
    mtime: new Date(0),
    version: 'v',
    stream: () => {
      throw new Error('stream() must not be called for 0 bytes');
    },
    close: async () => {
      closes++;
    },
  };
  t.same(await collect(download(fake, { offset: 10, length: 0, pacer })), []);
  t.equal(closes, 1, 'close() called once');
});

t.test('chunk sizes are the pacer sizes, asked before each read', async (t) => {
  const { storage, bytes, name } = await setup(t, MiB + 123);
  const pacer = new SpyPacer({ min: KiB, start: 4 * KiB, max: 64 * KiB });
  const file = await storage.open(name);
  const chunks = await collect(download(file, { offset: 0, length: bytes.length, pacer }));
  t.ok(Buffer.concat(chunks).equals(bytes), 'the bytes');
  // The first ask: does the whole range fit in one chunk (it does not)?
  const asks = pacer.asks.slice(1);
  t.equal(pacer.asks[0], 4 * KiB, 'asked first whether the range fits in one chunk');
  t.equal(asks.length, chunks.length, 'then one ask per chunk');
  t.equal(chunks[0].length, 4 * KiB, 'the first chunk is the start size');
  for (let i = 0; i < chunks.length - 1; i++) {
    if (chunks[i].length !== asks[i]) {
      t.fail(`chunk ${i} is ${chunks[i].length} bytes, the pacer said ${asks[i]}`);
    }
  }
  const last = chunks.length - 1;
  t.ok(chunks[last].length <= asks[last], 'the last chunk is at most its size (the rest)');
  // The pace of a chunk is learned once the consumer has taken it and asks for the next.
  t.equal(pacer.paces.length, chunks.length, 'the pacer learns of every chunk taken');
  t.same(
    pacer.paces.map((p) => p.bytes),
    chunks.map((c) => c.length),
    'each pace is of the chunk the consumer took',
  );
});

t.test('a fast consumer gets larger chunks', async (t) => {
  const { storage, bytes, name } = await setup(t, 4 * MiB);
  const pacer = new SpyPacer({ min: KiB, start: 4 * KiB, max: 256 * KiB, windowMs: 10 });
  const file = await storage.open(name);
  const chunks = await collect(download(file, { offset: 0, length: bytes.length, pacer }));
  t.ok(Buffer.concat(chunks).equals(bytes));
  const sizes = chunks.map((c) => c.length);
  t.equal(sizes[0], 4 * KiB, 'starts at the start size');
  t.equal(Math.max(...sizes), 256 * KiB, `grows to the maximum (${sizes.slice(0, 8).join(' ')}…)`);
  t.ok(sizes.length < (4 * MiB) / (16 * KiB), `few chunks (${sizes.length})`);
});

t.test('a slow consumer gets smaller chunks', async (t) => {
  const { storage, bytes, name } = await setup(t, 40 * KiB);
  const pacer = new SpyPacer({ min: KiB, start: 16 * KiB, max: 64 * KiB, windowMs: 2 });
  const file = await storage.open(name);
  const sizes: number[] = [];
  const got: Buffer[] = [];
  for await (const chunk of download(file, { offset: 0, length: bytes.length, pacer })) {
    sizes.push(chunk.length);
    got.push(Buffer.from(chunk));
    await sleep(20); // the socket takes its time
  }
  t.ok(Buffer.concat(got).equals(bytes));
  t.equal(sizes[0], 16 * KiB, 'starts at the start size');
  // The second chunk is read ahead while the first is taken, before the first pace is known.
  t.ok(
    sizes.slice(2).every((size) => size <= 2 * KiB),
    `then small chunks (${sizes.join(' ')})`,
  );
  t.ok(
    pacer.paces.every((p) => p.ms >= 15),
    `the waits are counted (${pacer.paces.map((p) => p.ms.toFixed(1)).join(' ')} ms)`,
  );
});

t.test('the shared budget: entered while running, left at the end', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const budget = new ChunkBudget();
  const file = await storage.open(name);
  const chunks = download(file, {
    offset: 0,
    length: bytes.length,
    pacer: new ChunkPacer({ min: KiB, start: 4 * KiB, max: 4 * KiB }),
    budget,
  });
  t.equal(budget.downloads, 0, 'not before it starts');
  const seen: number[] = [];
  let total = 0;
  for await (const chunk of chunks) {
    total += chunk.length;
    seen.push(budget.downloads);
  }
  t.equal(total, bytes.length);
  t.ok(seen.length > 1);
  t.ok(
    seen.every((n) => n === 1),
    'counted while it runs',
  );
  t.equal(budget.downloads, 0, 'left at the end');
});

t.test('the shared budget bounds the chunk size by the downloads running', async (t) => {
  const { storage, bytes, name } = await setup(t, 2 * MiB);
  // 1 MiB in all: 256 KiB a chunk for one download, 128 KiB for each of two.
  const budget = new ChunkBudget(MiB);
  const pacer = new ChunkPacer({ min: KiB, start: MiB, max: MiB, budget });
  const alone = await collect(
    download(await storage.open(name), { offset: 0, length: bytes.length, pacer, budget }),
  );
  t.equal(Math.max(...alone.map((c) => c.length)), 256 * KiB, 'one download: its share');
  const other = budget.enter(); // another download runs meanwhile
  const shared = await collect(
    download(await storage.open(name), { offset: 0, length: bytes.length, pacer, budget }),
  );
  other();
  t.equal(Math.max(...shared.map((c) => c.length)), 128 * KiB, 'two downloads: half each');
  t.ok(Buffer.concat(shared).equals(bytes));
  t.equal(budget.downloads, 0);
});

t.test('a consumer that stops early (break): budget left, file closed', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const budget = new ChunkBudget();
  const before = fds();
  const file = await storage.open(name);
  let taken = 0;
  for await (const chunk of download(file, {
    offset: 0,
    length: bytes.length,
    pacer: new ChunkPacer({ min: KiB, start: 4 * KiB, max: 4 * KiB }),
    budget,
  })) {
    taken += chunk.length;
    t.equal(budget.downloads, 1);
    if (taken >= 8 * KiB) break;
  }
  t.equal(taken, 8 * KiB);
  t.equal(budget.downloads, 0, 'the budget is left at once');
  t.equal(await fdsBackTo(before), before, 'the file is closed');
});

t.test('a consumer that throws: budget left, file closed', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const budget = new ChunkBudget();
  const before = fds();
  const file = await storage.open(name);
  const consume = async (): Promise<void> => {
    for await (const chunk of download(file, {
      offset: 0,
      length: bytes.length,
      pacer: new ChunkPacer(),
      budget,
    })) {
      throw new Error(`the socket broke after ${chunk.length} bytes`);
    }
  };
  await t.rejects(consume(), /the socket broke/);
  t.equal(budget.downloads, 0);
  t.equal(await fdsBackTo(before), before, 'the file is closed');
});

t.test('a consumer that gives up before the first chunk: file closed', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const budget = new ChunkBudget();
  const before = fds();
  const file = await storage.open(name);
  const chunks = download(file, {
    offset: 0,
    length: bytes.length,
    pacer: new ChunkPacer(),
    budget,
  });
  // The door decided not to send after all (the client went away): it owns the file no more.
  await chunks.return();
  t.equal(budget.downloads, 0);
  t.equal(await fdsBackTo(before, 500), before, 'the file is closed ("takes ownership of file")');
  if (fds() !== before) await file.close(); // do not leak it into the next tests
});

t.test('a read fault: the error comes out, budget left, file closed', async (t) => {
  const { storage, bytes, name } = await setup(t);
  const budget = new ChunkBudget();
  const pool = new SpyPool();
  pool.failAt = 3; // the third read cannot get a buffer
  const before = fds();
  const file = await storage.open(name);
  const got: Buffer[] = [];
  await t.rejects(
    (async () => {
      for await (const chunk of download(file, {
        offset: 0,
        length: bytes.length,
        // One size only: a loaded machine's slow pace must not shrink the chunks counted below.
        pacer: new ChunkPacer({ min: 4 * KiB, start: 4 * KiB, max: 4 * KiB }),
        budget,
        pool,
      })) {
        got.push(Buffer.from(chunk));
      }
    })(),
    /no memory for a chunk/,
  );
  t.equal(got.length, 2, 'the chunks before the fault were delivered');
  t.ok(Buffer.concat(got).equals(bytes.subarray(0, 8 * KiB)));
  t.equal(budget.downloads, 0);
  t.equal(await fdsBackTo(before), before, 'the file is closed');
});

t.test('a fake file whose stream fails: the error comes out, its stream destroyed', async (t) => {
  const budget = new ChunkBudget();
  let destroyed = false;
  const fake = fakeFile(100, () =>
    tenBytesThen((stream) => stream.destroy(new Error('EIO: i/o error, read')), {
      destroy(error, callback) {
        destroyed = true;
        callback(error);
      },
    }),
  );
  await t.rejects(
    collect(download(fake, { offset: 0, length: 100, pacer: new ChunkPacer(), budget })),
    /EIO/,
  );
  t.ok(destroyed, 'the stream (which closes the file) was destroyed');
  t.equal(budget.downloads, 0);
});

t.test('a stream closed before its end, with no error: the download throws', async (t) => {
  const budget = new ChunkBudget();
  // Gone, a moment later, without a word.
  const fake = fakeFile(100, () => tenBytesThen((stream) => setImmediate(() => stream.destroy())));
  const { got, error } = await collectUntilError(
    download(fake, { offset: 0, length: 100, pacer: new ChunkPacer(), budget }),
  );
  t.match(error, { code: 'ERR_STREAM_PREMATURE_CLOSE' }, 'not a quiet end, nor a hang');
  t.same(Buffer.concat(got), Buffer.alloc(10, 1), 'what came before the close came first');
  t.equal(budget.downloads, 0);
});

t.test('chunks pushed together, and an end without a close (autoDestroy off)', async (t) => {
  const budget = new ChunkBudget();
  const parts = [Buffer.from('abc'), Buffer.from('defg'), Buffer.from('hij')];
  const fake = fakeFile(10, () => {
    let sent = false;
    return new Readable({
      autoDestroy: false, // 'end' only: the end alone must finish the download
      read() {
        if (sent) return;
        sent = true;
        for (const part of parts) this.push(part);
        setImmediate(() => this.push(null));
      },
    });
  });
  const got = await collect(
    download(fake, { offset: 0, length: 10, pacer: new ChunkPacer(), budget }),
  );
  t.equal(Buffer.concat(got).toString(), 'abcdefghij', 'every byte, in order');
  t.equal(budget.downloads, 0);
});

t.test('stopped while a chunk is awaited: the wait ends, and nothing comes after', async (t) => {
  const budget = new ChunkBudget();
  let destroyed = false;
  const fake = fakeFile(100, () =>
    tenBytesThen(() => undefined, {
      // a read that never completes (a stalled disk): only the stop can end it
      destroy(error, callback) {
        destroyed = true;
        callback(error);
      },
    }),
  );
  const chunks = download(fake, { offset: 0, length: 100, pacer: new ChunkPacer(), budget });
  const first = await chunks.next();
  t.same(first.value, Buffer.alloc(10, 1));
  const waiting = chunks.next();
  await sleep(10);
  // What Readable.from does to the iterator when the HTTP response it feeds is destroyed.
  t.same(await chunks.return(), { value: undefined, done: true });
  t.ok(destroyed, 'the stream (which closes the file) was destroyed');
  t.equal(budget.downloads, 0, 'the budget is left');
  const settled = await Promise.race([
    waiting.then(
      () => 'settled',
      () => 'settled',
    ),
    sleep(1000).then(() => 'still waiting'),
  ]);
  t.equal(settled, 'settled', 'the pending next() does not hang');
  t.same(await chunks.next(), { value: undefined, done: true }, 'done from then on');
  t.same(await chunks.return(), { value: undefined, done: true }, 'a second stop is harmless');
});

t.test('a file that yields fewer bytes than `length`: ShrunkError', async (t) => {
  const budget = new ChunkBudget();
  const fake = fakeFile(10, () => Readable.from([Buffer.from('01234')]));
  const { got, error } = await collectUntilError(
    download(fake, { offset: 0, length: 10, pacer: new ChunkPacer(), budget }),
  );
  t.type(error, ShrunkError);
  t.match((error as Error).message, /5 of 10 bytes/);
  t.equal(Buffer.concat(got).toString(), '01234', 'what there was came first');
  t.equal(budget.downloads, 0);
});

t.test('a real file truncated after it was opened: ShrunkError, file closed', async (t) => {
  const { root, storage, bytes, name } = await setup(t, 100 * KiB);
  const budget = new ChunkBudget();
  const before = fds();
  const file = await storage.open(name);
  t.equal(file.size, 100 * KiB);
  await truncate(join(root, name), 50 * KiB);
  const got: Buffer[] = [];
  await t.rejects(
    (async () => {
      for await (const chunk of download(file, {
        offset: 0,
        length: file.size,
        pacer: new ChunkPacer({ min: KiB, start: 16 * KiB, max: 16 * KiB }),
        budget,
      })) {
        got.push(Buffer.from(chunk));
      }
    })(),
    { name: 'ShrunkError', message: /51200 of 102400 bytes/ },
  );
  t.ok(Buffer.concat(got).equals(bytes.subarray(0, 50 * KiB)), 'the bytes that were there');
  t.equal(budget.downloads, 0);
  t.equal(await fdsBackTo(before), before, 'the file is closed');
  // Shrunk below the offset: not one byte.
  const again = await storage.open(name);
  await writeFile(join(root, name), 'tiny');
  await t.rejects(
    collect(download(again, { offset: 1000, length: 10, pacer: new ChunkPacer() })),
    ShrunkError,
  );
  t.equal(await fdsBackTo(before), before);
});

t.test('chunk buffers come from the pool, and are reused after free()', async (t) => {
  const { storage, bytes, name } = await setup(t, 64 * 4 * KiB);
  const fixed = (): ChunkPacer => new ChunkPacer({ min: 4 * KiB, start: 4 * KiB, max: 4 * KiB });

  // Not freed: every chunk its own memory, all of it the pool's.
  const kept = new SpyPool();
  const held: Buffer[] = [];
  for await (const chunk of download(await storage.open(name), {
    offset: 0,
    length: bytes.length,
    pacer: fixed(),
    pool: kept,
  })) {
    held.push(chunk);
  }
  t.equal(held.length, 64);
  t.ok(
    held.every((chunk) => kept.given.some((lent) => lent.buffer === chunk.buffer)),
    'every chunk is memory the pool lent',
  );
  t.equal(new Set(held.map((chunk) => chunk.buffer)).size, 64, 'none reused while held');
  t.ok(Buffer.concat(held).equals(bytes), 'held chunks keep their bytes');

  // Freed once used: a few buffers go round.
  const pool = new SpyPool();
  const memories = new Set<ArrayBufferLike>();
  const copies: Buffer[] = [];
  for await (const chunk of download(await storage.open(name), {
    offset: 0,
    length: bytes.length,
    pacer: fixed(),
    pool,
  })) {
    memories.add(chunk.buffer);
    copies.push(Buffer.from(chunk));
    pool.free(chunk); // the socket sent it
  }
  t.equal(copies.length, 64);
  t.ok(memories.size <= 3, `${memories.size} buffers for 64 chunks`);
  t.ok(Buffer.concat(copies).equals(bytes), 'reuse never corrupts a chunk before it is freed');
});

/** A file of the store whose `stream` and `readNow` calls are counted. */
function counted(file: StoredFile): { file: StoredFile; streams: number; readNows: number } {
  const spy = { file, streams: 0, readNows: 0 };
  spy.file = {
    ...file,
    stream: (offset, length, options) => {
      spy.streams++;
      return file.stream(offset, length, options);
    },
    readNow:
      file.readNow &&
      ((offset, length, options) => {
        spy.readNows++;
        return file.readNow?.(offset, length, options);
      }),
  };
  return spy;
}

t.test('a range that fits in one chunk, read at once by the store: no stream', async (t) => {
  const { storage, bytes, name } = await setup(t, 64 * KiB);
  const budget = new ChunkBudget();
  const entered = t.capture(budget, 'enter', budget.enter.bind(budget));
  const pool = new SpyPool();
  const pacer = new SpyPacer();
  const header = Buffer.from(`OK ${20 * KiB}\n`);
  const before = fds();
  const spy = counted(await storage.open(name));
  const chunks: Buffer[] = [];
  for await (const chunk of download(spy.file, {
    offset: 1000,
    length: 20 * KiB,
    pacer,
    budget,
    pool,
    header,
  })) {
    chunks.push(chunk);
  }
  t.equal(chunks.length, 1, 'one chunk');
  t.ok(
    chunks[0].equals(Buffer.concat([header, bytes.subarray(1000, 1000 + 20 * KiB)])),
    'the header, then exactly the range',
  );
  t.equal(chunks[0].buffer, pool.given[0]?.buffer, 'in memory the pool lent, header in place');
  t.equal(pool.given.length, 1, 'one buffer');
  t.equal(spy.readNows, 1, 'read at once');
  t.equal(spy.streams, 0, 'no stream made');
  t.equal(entered().length, 0, 'the budget was not entered');
  t.equal(fds(), before, 'the file is closed by the time the iteration ends');
  t.same(
    pacer.paces.map((p) => p.bytes),
    [20 * KiB],
    'the pacer learns of the chunk once the consumer asks again',
  );
});

t.test('a store that cannot read the range at once: the stream serves it', async (t) => {
  const bytes = randomBytes(1000);
  let closed = 0;
  let asked = 0;
  const fake: StoredFile = {
    ...fakeFile(bytes.length, () => Readable.from([bytes.subarray(0, 600), bytes.subarray(600)])),
    readNow: () => {
      asked++;
      return undefined; // the disk is slow: not now
    },
    close: async () => {
      closed++;
    },
  };
  const chunks = await collect(
    download(fake, { offset: 0, length: 1000, pacer: new ChunkPacer() }),
  );
  t.equal(asked, 1);
  t.ok(Buffer.concat(chunks).equals(bytes), 'every byte, from the stream');
  t.equal(closed, 0, 'the stream owns the file: close() is not called');
});

t.test('a range larger than the pacer says: never read at once', async (t) => {
  const { storage, bytes, name } = await setup(t, 64 * KiB);
  const spy = counted(await storage.open(name));
  const pacer = new ChunkPacer({ min: 4 * KiB, start: 16 * KiB, max: 16 * KiB });
  const chunks = await collect(download(spy.file, { offset: 0, length: bytes.length, pacer }));
  t.equal(spy.readNows, 0, 'not read at once');
  t.equal(spy.streams, 1, 'streamed');
  t.same(
    chunks.map((c) => c.length),
    [16 * KiB, 16 * KiB, 16 * KiB, 16 * KiB],
  );
  t.ok(Buffer.concat(chunks).equals(bytes));
});

t.test('read at once from a file that shrank: ShrunkError before any byte', async (t) => {
  const { root, storage, name } = await setup(t, 64 * KiB);
  const before = fds();
  const file = await storage.open(name);
  await truncate(join(root, name), 10 * KiB);
  const spy = counted(file);
  const { got, error } = await collectUntilError(
    download(spy.file, {
      offset: 0,
      length: file.size,
      pacer: new ChunkPacer(),
      header: Buffer.from('OK 65536\n'),
    }),
  );
  t.equal(spy.readNows, 1);
  t.type(error, ShrunkError);
  t.match((error as Error).message, /10240 of 65536 bytes/);
  t.same(got, [], 'nothing left: not even the header, so the door can still answer an error');
  t.equal(fds(), before, 'the file is closed');
});

t.test('a store whose read at once fails: the error comes out, nothing yielded', async (t) => {
  let closed = 0;
  const fake: StoredFile = {
    ...fakeFile(10, () => {
      throw new Error('stream() must not be called after a failed read');
    }),
    readNow: () => {
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    },
    close: async () => {
      closed++;
    },
  };
  const pool = new SpyPool();
  const budget = new ChunkBudget();
  const { got, error } = await collectUntilError(
    download(fake, { offset: 0, length: 10, pacer: new ChunkPacer(), pool, budget }),
  );
  t.match(error, { code: 'EIO' });
  t.same(got, []);
  t.equal(closed, 0, 'the store closed it: close() is not called again');
  t.equal(budget.downloads, 0);
});
