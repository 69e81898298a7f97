/**
 * The WRITE branch alone, on a real LocalStorage in a temporary directory (and fake Storage
 * objects for faults): the checks in the contract's order, the receipt, refusals drained, and
 * nothing partial ever left behind.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProtocolError } from '../../lib/errors.js';
import { HashCache } from '../../lib/hash-cache.js';
import { LocalStorage } from '../../lib/local-storage.js';
import type { Storage, StoredFile, Upload } from '../../lib/storage.js';
import { uploadIntake, type UploadIntake } from '../../pipelines/upload-intake.js';
import { ShortInputError } from '../../pipelines/upload-sink.js';

const sha256 = (bytes: Buffer | string): string => createHash('sha256').update(bytes).digest('hex');

async function setup(t: Test): Promise<{ root: string; storage: LocalStorage }> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-upload-intake-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  return { root: storage.root, storage };
}

/** Temporary upload files anywhere under the root. */
async function temps(root: string): Promise<string[]> {
  const all = await readdir(root, { recursive: true });
  return all.filter((name) => name.split('/').some((s) => s.startsWith('.ioe-upload-')));
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Writes one chunk and waits for the intake to take it. */
function write(intake: UploadIntake, chunk: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) =>
    intake.write(chunk, (error) => (error ? reject(error) : resolve())),
  );
}

/** The intake's result as a settled value, for assertions. */
async function outcome(intake: UploadIntake): Promise<{ value?: unknown; error?: unknown }> {
  return intake.result.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

/** Whether the promise settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = promise.then(
    () => true,
    () => true,
  );
  return Promise.race([settled, sleep(ms).then(() => false)]);
}

/** Records every event an intake emits that matters here. */
function events(intake: UploadIntake): { refused: Error[]; errors: Error[]; order: string[] } {
  const seen = { refused: [] as Error[], errors: [] as Error[], order: [] as string[] };
  intake.on('refused', (error: Error) => {
    seen.refused.push(error);
    seen.order.push('refused');
  });
  intake.on('error', (error) => {
    seen.errors.push(error);
    seen.order.push('error');
  });
  intake.on('finish', () => seen.order.push('finish'));
  intake.on('close', () => seen.order.push('close'));
  return seen;
}

/** A storage that counts calls; its uploads fail as told; everything else is the real one. */
function wrappedStorage(
  real: LocalStorage,
  fault: { write?: (call: number) => Error | undefined } = {},
) {
  const calls = { beginUpload: 0, writes: 0, aborts: 0, publishes: 0 };
  const storage: Storage = {
    list: () => real.list(),
    open: (name) => real.open(name),
    close: () => real.close(),
    beginUpload: async (name, size) => {
      calls.beginUpload++;
      const inner = await real.beginUpload(name, size);
      const upload: Upload = {
        write: async (chunks) => {
          calls.writes++;
          const error = fault.write?.(calls.writes);
          if (error) throw error;
          return inner.write(chunks);
        },
        publish: async () => {
          calls.publishes++;
          return inner.publish();
        },
        abort: async () => {
          calls.aborts++;
          return inner.abort();
        },
      };
      return upload;
    },
  };
  return { storage, calls };
}

t.test('accepted: the receipt, the file, and the hash cache learns it', async (t) => {
  const { root, storage } = await setup(t);
  const hashes = new HashCache();
  const bytes = randomBytes(3 * 1024 * 1024 + 5);
  const intake = await uploadIntake({
    storage,
    name: 'music/song.mp3',
    size: bytes.length,
    hashes,
  });
  t.equal(intake.refusal, undefined, 'not refused');
  const seen = events(intake);
  const chunks = Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) =>
    bytes.subarray(i * 65536, (i + 1) * 65536),
  );
  await pipeline(Readable.from(chunks), intake);
  const receipt = await intake.result;
  t.equal(receipt.size, bytes.length);
  t.equal(receipt.sha256, sha256(bytes));
  t.equal(intake.received, bytes.length, 'every byte counted');
  t.ok((await readFile(join(root, 'music/song.mp3'))).equals(bytes), 'the file is stored');
  t.same(await temps(root), []);
  t.same(seen.refused, []);
  t.same(seen.errors, []);

  const opened = await storage.open('music/song.mp3');
  t.equal(receipt.published.version, opened.version, 'the version a later open reports');
  t.same(receipt.published.mtime, opened.mtime);
  await opened.close();

  // HASH of the new file: answered from the receipt, the file is not read.
  let closed = 0;
  const unreadable: StoredFile = {
    size: bytes.length,
    mtime: receipt.published.mtime,
    version: receipt.published.version,
    stream: () => {
      throw new Error('the file was read again');
    },
    close: async () => {
      closed++;
    },
  };
  t.same(await hashes.hash(unreadable), { sha256: receipt.sha256, size: bytes.length });
  t.equal(closed, 1, 'the file is closed');
  // And a real open of it: answered without streaming a byte.
  const real = await storage.open('music/song.mp3');
  let streamed = 0;
  const watched: StoredFile = {
    size: real.size,
    mtime: real.mtime,
    version: real.version,
    stream: (offset, length, options) => {
      streamed++;
      return real.stream(offset, length, options);
    },
    close: () => real.close(),
  };
  t.same(await hashes.hash(watched), { sha256: sha256(bytes), size: bytes.length });
  t.equal(streamed, 0, 'the stored file is not read');
});

t.test('accepted: an empty upload', async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'empty.wav', size: 0 });
  intake.end();
  const receipt = await intake.result;
  t.match(receipt, { size: 0, sha256: sha256('') });
  t.equal((await readFile(join(root, 'empty.wav'))).length, 0);
});

t.test('readOnly: READ_ONLY before the name is even looked at', async (t) => {
  const { storage: real } = await setup(t);
  const { storage, calls } = wrappedStorage(real);
  for (const name of ['a.mp3', '../../etc/passwd', 'notes.txt', '']) {
    const intake = await uploadIntake({ storage, name, size: 3, readOnly: true });
    t.match(intake.refusal, { code: 'READ_ONLY' }, JSON.stringify(name));
    t.type(intake.refusal, ProtocolError);
    intake.end('abc');
    t.match((await outcome(intake)).error, { code: 'READ_ONLY' });
  }
  t.equal(calls.beginUpload, 0, 'the store is never asked');
});

t.test('a bad name: BAD_NAME; not media: UNSUPPORTED_TYPE; the store is not asked', async (t) => {
  const { storage: real } = await setup(t);
  const { storage, calls } = wrappedStorage(real);
  for (const name of [
    '../a.mp3',
    'a/../b.mp3',
    '.hidden.mp3',
    'a\\b.mp3',
    '/abs.mp3',
    'a\nb.mp3',
  ]) {
    const intake = await uploadIntake({ storage, name, size: 1 });
    t.match(intake.refusal, { code: 'BAD_NAME' }, JSON.stringify(name));
  }
  const dotdot = await uploadIntake({ storage, name: '../notes.txt', size: 1 });
  t.match(dotdot.refusal, { code: 'BAD_NAME' }, 'the name rules come before the type');
  for (const name of ['notes.txt', 'script.sh', 'noext', 'a.mp3/b']) {
    const intake = await uploadIntake({ storage, name, size: 1 });
    t.match(intake.refusal, { code: 'UNSUPPORTED_TYPE' }, JSON.stringify(name));
  }
  t.equal(calls.beginUpload, 0);
});

t.test('LOCKED while another upload of the name is open, free once it ends', async (t) => {
  const { root, storage } = await setup(t);
  const first = await uploadIntake({ storage, name: 'x.mp3', size: 6 });
  t.equal(first.refusal, undefined);
  await write(first, 'abc');
  const second = await uploadIntake({ storage, name: 'x.mp3', size: 3 });
  t.match(second.refusal, { code: 'LOCKED' });
  second.end('zzz');
  t.match((await outcome(second)).error, { code: 'LOCKED' });
  const other = await uploadIntake({ storage, name: 'y.mp3', size: 1 });
  t.equal(other.refusal, undefined, 'another name is not locked');
  other.destroy();
  first.end('def');
  await first.result;
  t.equal(await readFile(join(root, 'x.mp3'), 'utf8'), 'abcdef', 'the first upload is intact');
  const third = await uploadIntake({ storage, name: 'x.mp3', size: 1 });
  t.match(third.refusal, { code: 'EXISTS' }, 'after it: the name exists');
});

t.test('EXISTS for a name taken, and the existing file untouched', async (t) => {
  const { root, storage } = await setup(t);
  await writeFile(join(root, 'old.mp3'), 'old');
  const intake = await uploadIntake({ storage, name: 'old.mp3', size: 3 });
  t.match(intake.refusal, { code: 'EXISTS' });
  intake.end('new');
  t.match((await outcome(intake)).error, { code: 'EXISTS' });
  t.equal(await readFile(join(root, 'old.mp3'), 'utf8'), 'old');
});

t.test('a refused intake drains its input; the result rejects with the same refusal', async (t) => {
  const { root, storage } = await setup(t);
  await writeFile(join(root, 'taken.mp3'), 'old');
  const intake = await uploadIntake({ storage, name: 'taken.mp3', size: 3 * 65536 });
  const refusal = intake.refusal;
  t.match(refusal, { code: 'EXISTS' });
  const seen = events(intake);
  for (let i = 0; i < 3; i++) await write(intake, randomBytes(65536));
  t.equal(intake.received, 3 * 65536, 'every byte counted');
  t.notOk(await settlesWithin(intake.result, 50), 'the result waits for the end of the input');
  intake.end();
  const { error } = await outcome(intake);
  t.equal(error, refusal, 'the very same error');
  t.same(seen.refused, [], "an up-front refusal is no 'refused' event");
  t.same(seen.errors, [], 'never in error');
  t.same(await temps(root), []);
  t.equal(await readFile(join(root, 'taken.mp3'), 'utf8'), 'old');
});

t.test("a write fault mid-payload: 'refused' once, the rest drained, temp gone", async (t) => {
  const { root, storage: real } = await setup(t);
  const { storage, calls } = wrappedStorage(real, {
    write: (call) => (call === 2 ? new Error('EIO: i/o error, write') : undefined),
  });
  const size = 8 * 65536;
  const intake = await uploadIntake({ storage, name: 'fault.mp3', size });
  t.equal(intake.refusal, undefined);
  const seen = events(intake);
  const refused = once(intake, 'refused');
  // Write and wait chunk by chunk: the fault comes from the second disk write.
  for (let i = 0; i < 8; i++) {
    await write(intake, randomBytes(65536));
    if (i === 2) await refused;
  }
  t.equal(seen.refused.length, 1, "'refused' once");
  t.match(seen.refused[0].message, /EIO/);
  t.equal(intake.refusal, seen.refused[0], 'and it is the refusal');
  t.equal(intake.received, size, 'the rest is drained, and counted');
  intake.end();
  const { error } = await outcome(intake);
  t.equal(error, seen.refused[0], 'the result rejects with it');
  t.equal(seen.refused.length, 1, 'still once');
  t.same(seen.errors, [], 'never an error event');
  t.ok(calls.aborts >= 1, 'the upload was aborted');
  t.equal(calls.publishes, 0, 'nothing published');
  t.equal(calls.writes, 2, 'no disk write after the fault');
  t.same(await temps(root), [], 'the temporary file is gone');
  t.notOk(await exists(join(root, 'fault.mp3')));
  const again = await uploadIntake({ storage: real, name: 'fault.mp3', size: 1 });
  t.equal(again.refusal, undefined, 'the name is unlocked');
  again.destroy();
});

t.test('a full disk mid-payload is refused as NO_SPACE', async (t) => {
  const { root, storage: real } = await setup(t);
  const { storage } = wrappedStorage(real, {
    write: () => new ProtocolError('NO_SPACE', 'the disk is full'),
  });
  const intake = await uploadIntake({ storage, name: 'full.mp3', size: 6 });
  const refused = once(intake, 'refused');
  await write(intake, 'abc');
  const [error] = (await refused) as [ProtocolError];
  t.equal(error.code, 'NO_SPACE');
  await write(intake, 'def');
  intake.end();
  t.equal((await outcome(intake)).error, error);
  t.same(await temps(root), []);
});

t.test('a wrong expectedSha256: DIGEST_MISMATCH, nothing published', async (t) => {
  const { root, storage } = await setup(t);
  const hashes = new HashCache();
  const wrong = createHash('sha256').update('something else').digest();
  const intake = await uploadIntake({
    storage,
    name: 'digest.mp3',
    size: 5,
    hashes,
    expectedSha256: wrong,
  });
  const seen = events(intake);
  intake.end('hello');
  const { error } = await outcome(intake);
  t.match(error, { code: 'DIGEST_MISMATCH' });
  t.type(error, ProtocolError);
  t.same(seen.refused, [], 'after the input: the result, not a refusal');
  t.same(seen.errors, []);
  t.notOk(await exists(join(root, 'digest.mp3')), 'nothing published');
  t.same(await temps(root), [], 'the temporary file is gone');

  const right = createHash('sha256').update('hello').digest();
  const good = await uploadIntake({ storage, name: 'digest.mp3', size: 5, expectedSha256: right });
  good.end('hello');
  t.equal((await good.result).sha256, sha256('hello'), 'the right digest publishes');
  t.equal(await readFile(join(root, 'digest.mp3'), 'utf8'), 'hello');
});

t.test("destroy mid-payload: 'close' only once the temporary file is gone", async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'cut/short.mp4', size: 1 << 20 });
  const seen = events(intake);
  await write(intake, randomBytes(100_000));
  t.equal((await temps(root)).length, 1, 'the temporary file exists');
  const atClose = once(intake, 'close').then(() => temps(root));
  intake.destroy(new Error('the client went away'));
  t.same(await atClose, [], "gone by 'close'");
  await sleep(10);
  t.same(seen.errors, [], "no 'error' event");
  t.match((await outcome(intake)).error, { message: /the client went away/ });
  t.notOk(await exists(join(root, 'cut/short.mp4')));
  // Without a reason: the result still rejects.
  const plain = await uploadIntake({ storage, name: 'cut/short.mp4', size: 10 });
  const plainSeen = events(plain);
  await write(plain, 'abc');
  const closed = once(plain, 'close').then(() => temps(root));
  plain.destroy();
  t.same(await closed, []);
  t.ok((await outcome(plain)).error instanceof Error, 'the result rejects');
  t.same(plainSeen.errors, []);
});

t.test('destroy while a write waits on the disk', async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'busy.mov', size: 16 << 20 });
  const seen = events(intake);
  intake.write(randomBytes(4 << 20));
  intake.write(randomBytes(4 << 20));
  const closed = once(intake, 'close').then(() => temps(root));
  intake.destroy();
  t.same(await closed, [], "gone by 'close'");
  t.same(seen.errors, []);
  t.notOk(await exists(join(root, 'busy.mov')));
});

t.test('short input (the end comes early): rejects, nothing published', async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'short.mp3', size: 100 });
  const seen = events(intake);
  await write(intake, randomBytes(60));
  intake.end(randomBytes(39));
  const { error } = await outcome(intake);
  t.type(error, ShortInputError);
  t.match((error as Error).message, /99 of 100/);
  t.same(seen.errors, [], 'never an error event');
  t.same(seen.refused, []);
  t.notOk(await exists(join(root, 'short.mp3')));
  t.same(await temps(root), []);
  const again = await uploadIntake({ storage, name: 'short.mp3', size: 1 });
  t.equal(again.refusal, undefined, 'the name is free again');
  again.destroy();
});

t.test('nothing at all, then the end: rejects, nothing published', async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'none.mp3', size: 5 });
  intake.end();
  t.type((await outcome(intake)).error, ShortInputError);
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'none.mp3')));
});

t.test('the name taken while the payload came (EXISTS at publish): the result', async (t) => {
  const { root, storage } = await setup(t);
  const intake = await uploadIntake({ storage, name: 'race.mp3', size: 3 });
  const seen = events(intake);
  await write(intake, 'ne');
  await writeFile(join(root, 'race.mp3'), 'old');
  intake.end('w');
  t.match((await outcome(intake)).error, { code: 'EXISTS' });
  t.same(seen.refused, [], 'not a mid-payload refusal');
  t.same(seen.errors, []);
  t.equal(await readFile(join(root, 'race.mp3'), 'utf8'), 'old');
  t.same(await temps(root), []);
});
