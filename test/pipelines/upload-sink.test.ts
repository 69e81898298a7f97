/**
 * The upload sink alone, on a real LocalStorage in a temporary directory (and on fake Upload
 * objects for faults): exactly `size` bytes publish the file; anything else leaves no
 * temporary file and no target behind.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { LocalStorage } from '../../lib/local-storage.js';
import type { Upload } from '../../lib/storage.js';
import { ShortInputError, uploadSink, type UploadSink } from '../../pipelines/upload-sink.js';

async function tempRoot(t: Test): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-upload-sink-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function setup(t: Test): Promise<{ root: string; storage: LocalStorage }> {
  const root = await tempRoot(t);
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  return { root: storage.root, storage };
}

/** Temporary upload files anywhere under the root. */
async function temps(root: string): Promise<string[]> {
  const all = await readdir(root, { recursive: true });
  return all.filter((name) =>
    name.split('/').some((segment) => segment.startsWith('.ioe-upload-')),
  );
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/**
 * Resolves when the sink has closed (its upload aborted or published) and its 'error' and
 * 'close' events are out: `closed` turns true just before they are emitted on the next tick.
 */
async function closed(sink: UploadSink): Promise<void> {
  if (!sink.closed) await new Promise((resolve) => sink.once('close', resolve));
  await new Promise((resolve) => setImmediate(resolve));
}

/**
 * Records the sink's 'error' events. When pipeline() fails because of its source, it destroys
 * the sink and returns at once; the sink emits 'error' later, after its async abort, when
 * pipeline's listeners are gone.
 */
function errorsOf(sink: UploadSink): Error[] {
  const errors: Error[] = [];
  sink.on('error', (error) => errors.push(error));
  return errors;
}

/** Writes one chunk and waits for it to be handed to the upload. */
function write(sink: UploadSink, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    sink.write(chunk, (error) => (error ? reject(error) : resolve())),
  );
}

function chunksOf(bytes: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

/** A fake upload that records calls; its steps may be made to fail. */
function fakeUpload(fail: { write?: Error; publish?: Error } = {}) {
  const calls = { writes: 0, bytes: 0, publish: 0, abort: 0 };
  const upload: Upload = {
    write: async (chunks) => {
      calls.writes++;
      calls.bytes += chunks.reduce((sum, c) => sum + c.length, 0);
      if (fail.write) throw fail.write;
    },
    publish: async () => {
      calls.publish++;
      if (fail.publish) throw fail.publish;
      return { version: 'v1', mtime: new Date(0) };
    },
    abort: async () => {
      calls.abort++;
    },
  };
  return { upload, calls };
}

t.test('exactly size bytes: the file is published, the receipt is its SHA-256', async (t) => {
  const { root, storage } = await setup(t);
  const bytes = randomBytes(3 * 1024 * 1024 + 17);
  const upload = await storage.beginUpload('music/song.mp3', bytes.length);
  const sink = uploadSink({ upload, size: bytes.length });
  await pipeline(Readable.from(chunksOf(bytes, 65536)), sink);
  const stored = await readFile(join(root, 'music/song.mp3'));
  t.ok(stored.equals(bytes), 'the stored bytes');
  t.match(sink.receipt, { size: bytes.length, sha256: sha256(bytes) });
  t.equal(sink.receipt?.sha256, createHash('sha256').update(stored).digest('hex'));
  const opened = await storage.open('music/song.mp3');
  t.equal(sink.receipt?.published.version, opened.version, 'the version an open reports');
  t.same(sink.receipt?.published.mtime, opened.mtime, 'and its mtime');
  await opened.close();
  t.same(await temps(root), [], 'no temporary file left');
});

t.test('every byte value, in one chunk', async (t) => {
  const { root, storage } = await setup(t);
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const upload = await storage.beginUpload('all.jpg', 256);
  const sink = uploadSink({ upload, size: 256 });
  await pipeline(Readable.from([bytes]), sink);
  t.ok((await readFile(join(root, 'all.jpg'))).equals(bytes));
  t.equal(sink.receipt?.sha256, sha256(bytes));
});

t.test('an empty upload publishes an empty file', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('empty.wav', 0);
  const sink = uploadSink({ upload, size: 0 });
  sink.end();
  await once(sink, 'finish');
  t.equal((await readFile(join(root, 'empty.wav'))).length, 0);
  t.match(sink.receipt, { size: 0, sha256: sha256(Buffer.alloc(0)) });
});

t.test('the temporary file exists while the upload runs, and nothing is visible', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('a.mp3', 10);
  const sink = uploadSink({ upload, size: 10 });
  await write(sink, Buffer.from('12345'));
  t.equal((await temps(root)).length, 1, 'one temporary file');
  t.notOk(await exists(join(root, 'a.mp3')), 'target not there yet');
  t.notOk(sink.receipt);
  sink.end(Buffer.from('67890'));
  await once(sink, 'finish');
  t.same(await temps(root), []);
  t.equal(await readFile(join(root, 'a.mp3'), 'utf8'), '1234567890');
});

t.test('short input: ShortInputError, no temporary file, no target', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('short.mp3', 100);
  const sink = uploadSink({ upload, size: 100 });
  await t.rejects(
    pipeline(Readable.from([randomBytes(60), randomBytes(39)]), sink),
    ShortInputError,
  );
  t.same(await temps(root), [], 'the temporary file is gone by the time the error is seen');
  t.notOk(await exists(join(root, 'short.mp3')));
  t.equal(sink.receipt, undefined);
  // The lock is released: the name can be uploaded again.
  const again = await storage.beginUpload('short.mp3', 1);
  await again.abort();
  t.pass('the name is free again');
});

t.test('end with nothing written at all', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('nothing.mp3', 5);
  const sink = uploadSink({ upload, size: 5 });
  sink.end();
  const [error] = (await once(sink, 'error')) as [Error];
  t.type(error, ShortInputError);
  t.match(error.message, /0 of 5 bytes/);
  await closed(sink);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'nothing.mp3')));
});

t.test('more bytes than size: error, temporary file gone, no target', async (t) => {
  const { root, storage } = await setup(t);
  // In one chunk.
  const upload = await storage.beginUpload('long.mp3', 10);
  const sink = uploadSink({ upload, size: 10 });
  await t.rejects(pipeline(Readable.from([randomBytes(11)]), sink), /more than its 10 bytes/);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'long.mp3')));
  // Exactly size bytes, then one more in a later chunk.
  const upload2 = await storage.beginUpload('long.mp3', 10);
  const sink2 = uploadSink({ upload: upload2, size: 10 });
  const errored = once(sink2, 'error');
  await write(sink2, randomBytes(10));
  t.equal((await temps(root)).length, 1);
  await t.rejects(write(sink2, Buffer.from('x')), /more than its 10 bytes/);
  t.match(((await errored) as [Error])[0].message, /more than its 10 bytes/);
  await closed(sink2);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'long.mp3')));
});

t.test('a source error: the upload is aborted', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('src.mp3', 1000);
  const sink = uploadSink({ upload, size: 1000 });
  const errors = errorsOf(sink);
  let sent = false;
  const source = new Readable({
    read() {
      if (sent) return;
      sent = true;
      this.push(randomBytes(100));
      setImmediate(() => this.destroy(new Error('the socket broke')));
    },
  });
  await t.rejects(pipeline(source, sink), /the socket broke/);
  await closed(sink);
  t.match(errors[0]?.message, /the socket broke/, 'the sink was destroyed with the source error');
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'src.mp3')));
});

t.test('an async generator source that throws midway', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('gen.mp3', 1000);
  const sink = uploadSink({ upload, size: 1000 });
  const errors = errorsOf(sink);
  async function* source() {
    yield randomBytes(300);
    yield randomBytes(300);
    throw new Error('generator failed');
  }
  await t.rejects(pipeline(source, sink), /generator failed/);
  await closed(sink);
  t.match(errors[0]?.message, /generator failed/, 'the sink was destroyed with the source error');
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'gen.mp3')));
});

t.test('destroy() mid-way: the temporary file is gone when it closes', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('d/e/f.mp3', 1 << 20);
  const sink = uploadSink({ upload, size: 1 << 20 });
  await write(sink, randomBytes(4096));
  t.equal((await temps(root)).length, 1);
  sink.destroy();
  await closed(sink);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'd/e/f.mp3')));
  t.equal(sink.receipt, undefined);
  // Destroy with an error: reported, and cleaned up before.
  const upload2 = await storage.beginUpload('d/e/f.mp3', 100);
  const sink2 = uploadSink({ upload: upload2, size: 100 });
  await write(sink2, randomBytes(50));
  const errored = once(sink2, 'error');
  sink2.destroy(new Error('connection closed'));
  const [error] = (await errored) as [Error];
  t.match(error.message, /connection closed/);
  t.same(await temps(root), [], 'gone by the time the error is emitted');
});

t.test('destroy() while a write is still in flight', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('inflight.mov', 8 << 20);
  const sink = uploadSink({ upload, size: 8 << 20 });
  sink.write(randomBytes(4 << 20)); // not awaited
  sink.destroy();
  await closed(sink);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'inflight.mov')));
});

t.test('destroy() after publishing does not delete the file', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('kept.png', 3);
  const sink = uploadSink({ upload, size: 3 });
  sink.end(Buffer.from('abc'));
  await once(sink, 'finish');
  sink.destroy();
  await closed(sink);
  t.equal(await readFile(join(root, 'kept.png'), 'utf8'), 'abc');
});

t.test('a publish that finds the name taken (EXISTS): error, nothing left behind', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('race.mp3', 3);
  const sink = uploadSink({ upload, size: 3 });
  await write(sink, Buffer.from('new'));
  // Someone else (outside this storage's locks) creates the file meanwhile.
  await writeFile(join(root, 'race.mp3'), 'old');
  sink.end();
  const [error] = (await once(sink, 'error')) as [Error & { code?: string }];
  t.equal(error.code, 'EXISTS');
  await closed(sink);
  t.equal(await readFile(join(root, 'race.mp3'), 'utf8'), 'old', 'the existing file is untouched');
  t.same(await temps(root), []);
});

t.test('fake upload: a write that rejects aborts the upload', async (t) => {
  const { upload, calls } = fakeUpload({ write: new Error('EIO: i/o error, write') });
  const sink = uploadSink({ upload, size: 100 });
  await t.rejects(pipeline(Readable.from([randomBytes(10), randomBytes(10)]), sink), /EIO/);
  await closed(sink);
  t.equal(calls.abort >= 1, true, 'abort() called');
  t.equal(calls.publish, 0, 'publish() never called');
  t.equal(calls.writes, 1, 'no write after the failed one');
  t.equal(sink.receipt, undefined);
});

t.test('fake upload: a publish that rejects aborts, and the sink errors', async (t) => {
  const { upload, calls } = fakeUpload({ publish: new Error('fsync failed') });
  const sink = uploadSink({ upload, size: 4 });
  await t.rejects(pipeline(Readable.from([Buffer.from('abcd')]), sink), /fsync failed/);
  await closed(sink);
  t.equal(calls.publish, 1);
  t.ok(calls.abort >= 1, 'abort() called');
  t.equal(sink.receipt, undefined);
});

t.test('fake upload: success calls write and publish, never abort', async (t) => {
  const { upload, calls } = fakeUpload();
  const sink = uploadSink({ upload, size: 7 });
  await pipeline(Readable.from([Buffer.from('abc'), Buffer.from('defg')]), sink);
  await closed(sink);
  t.equal(calls.bytes, 7);
  t.equal(calls.publish, 1);
  t.equal(calls.abort, 0);
  t.equal(sink.receipt?.sha256, sha256(Buffer.from('abcdefg')));
});

t.test('fake upload: extra bytes are refused before they reach the upload', async (t) => {
  const { upload, calls } = fakeUpload();
  const sink = uploadSink({ upload, size: 5 });
  await t.rejects(pipeline(Readable.from([Buffer.from('abcdef')]), sink), /more than its 5 bytes/);
  await closed(sink);
  t.equal(calls.bytes, 0, 'nothing written');
  t.ok(calls.abort >= 1);
  t.equal(calls.publish, 0);
});

t.test('a real failing write (EBADF): the upload was aborted under the sink', async (t) => {
  const { root, storage } = await setup(t);
  const upload = await storage.beginUpload('ebadf.mp3', 100);
  const sink = uploadSink({ upload, size: 100 });
  const errors = errorsOf(sink);
  await write(sink, randomBytes(10));
  await storage.close(); // FORCEQUIT: every upload aborted, its file handle closed
  await t.rejects(write(sink, randomBytes(10)), { code: 'EBADF' });
  await closed(sink);
  t.equal(errors.length, 1, 'the sink errors once');
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'ebadf.mp3')));
});

t.test('a real disk fault (EFBIG under ulimit -f): temporary file deleted', async (t) => {
  const root = await tempRoot(t);
  // The compiled modules beside this compiled test (tests run from dist/test/).
  const modules = {
    storage: fileURLToPath(new URL('../../lib/local-storage.js', import.meta.url)),
    sink: fileURLToPath(new URL('../../pipelines/upload-sink.js', import.meta.url)),
  };
  // The child runs with a 256 KiB file size limit (512-byte blocks) and uploads 1 MiB. Node
  // ignores SIGXFSZ, so the write that crosses the limit fails with EFBIG.
  const script = `
    process.on('SIGXFSZ', () => {});
    const { LocalStorage } = await import(${JSON.stringify(modules.storage)});
    const { uploadSink } = await import(${JSON.stringify(modules.sink)});
    const { Readable } = await import('node:stream');
    const { pipeline } = await import('node:stream/promises');
    const { readdir } = await import('node:fs/promises');
    const storage = await LocalStorage.open(process.argv[1]);
    const size = 1 << 20;
    const upload = await storage.beginUpload('big.mp4', size);
    const sink = uploadSink({ upload, size });
    const chunks = Array.from({ length: 16 }, () => Buffer.alloc(65536, 7));
    let result;
    try {
      await pipeline(Readable.from(chunks), sink);
      result = { error: null };
    } catch (error) {
      result = { error: error.code ?? error.message, message: error.message };
    }
    result.files = await readdir(process.argv[1]);
    console.log(JSON.stringify(result));
  `;
  // No NODE_OPTIONS: the child listens for SIGXFSZ itself, and a signal-exit handler loaded by
  // tap's hooks would otherwise turn the signal into a kill.
  const child = spawn(
    '/bin/sh',
    [
      '-c',
      'ulimit -f 512 && exec "$@"',
      'sh',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
      root,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code, signal] = (await once(child, 'close')) as [number | null, string | null];
  t.equal(code, 0, `the child ran (signal ${signal}, stderr: ${stderr.slice(0, 500)})`);
  const result = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
    error: string | null;
    message?: string;
    files: string[];
  };
  t.equal(result.error, 'EFBIG', `the upload failed with EFBIG (${result.message})`);
  t.same(result.files, [], 'no temporary file and no target, seen by the child');
  t.same(await readdir(root), [], 'and seen from here');
});

const canLetGo = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';

// Node 20 has no `transfer`: there the chunks are left to the collector, as without the option.
t.test(
  'consumesChunks: each whole chunk is given back once stored and hashed, a part of larger memory is not',
  async (t) => {
    const { root, storage } = await setup(t);
    const bytes = randomBytes(300 * 1024);
    // Like socket reads: each chunk its own memory, a copy of its part of `bytes`.
    const whole = [0, 1, 2, 3].map((i) =>
      Buffer.from(bytes.subarray(i * 64 * 1024, (i + 1) * 64 * 1024)),
    );
    const shared = Buffer.from(bytes.subarray(256 * 1024)); // 44 KiB, then a part of it:
    const part = shared.subarray(0, 20 * 1024);
    const rest = Buffer.from(shared.subarray(20 * 1024));
    const sink = uploadSink({
      upload: await storage.beginUpload('big.mp4', bytes.length),
      size: bytes.length,
      consumesChunks: true,
    });
    for (const [i, chunk] of whole.entries()) {
      await new Promise<void>((resolve, reject) =>
        sink.write(chunk, (error) => (error ? reject(error) : resolve())),
      );
      t.equal(
        chunk.length,
        canLetGo ? 0 : 64 * 1024,
        canLetGo
          ? `whole chunk ${i}: its memory given back after its write`
          : `whole chunk ${i}: left to the collector (no transfer on ${process.version})`,
      );
    }
    sink.write(part);
    sink.end(rest);
    await once(sink, 'finish');
    t.equal(part.length, 20 * 1024, 'a part of larger memory is left as it is');
    t.ok(part.equals(bytes.subarray(256 * 1024, 276 * 1024)), 'and its bytes unchanged');
    t.equal(sink.receipt?.sha256, sha256(bytes), 'the hash covers every byte');
    t.ok((await readFile(join(root, 'big.mp4'))).equals(bytes), 'the file has every byte');
  },
);

t.test('without consumesChunks the chunks are left as they are', async (t) => {
  const { root, storage } = await setup(t);
  const chunks = [randomBytes(64 * 1024), randomBytes(64 * 1024)].map((b) => Buffer.from(b));
  const copies = chunks.map((chunk) => Buffer.from(chunk));
  const size = 128 * 1024;
  const sink = uploadSink({ upload: await storage.beginUpload('keep.mp4', size), size });
  sink.write(chunks[0]);
  sink.end(chunks[1]);
  await once(sink, 'finish');
  t.same(
    chunks.map((chunk, i) => chunk.equals(copies[i]!)),
    [true, true],
    'each chunk still holds its bytes',
  );
  t.ok((await readFile(join(root, 'keep.mp4'))).equals(Buffer.concat(copies)));
});
