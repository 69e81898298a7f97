/**
 * LocalStorage's close() against uploads still starting: FORCEQUIT (and QUIT) rest on it to
 * leave no temporary file behind; and an upload's background syncs (write-behind), whose
 * failure must fail the upload and which an abort must wait for. The rest of the store is
 * tested through the stages that use it (test/pipelines) and in test/security; here too, its
 * read at once (`readNow`), which keeps nothing between READs and so is never stale or mixed.
 */
import t, { type Test } from 'tap';
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import {
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStorage, type LocalStorageOptions } from '../../lib/local-storage.js';

async function openStorage(t: Test, options: LocalStorageOptions = {}): Promise<LocalStorage> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-local-storage-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return LocalStorage.open(root, options);
}

/** This test file: any file will do to reach FileHandle's prototype. */
const thisFile = (): string => new URL(import.meta.url).pathname;

/** Puts `datasync` of every FileHandle in the test's hands until the test ends. */
async function replaceDatasync(
  t: Test,
  replacement: (original: () => Promise<void>) => Promise<void>,
): Promise<void> {
  const probe = await open(thisFile(), 'r');
  const prototype = Object.getPrototypeOf(probe) as FileHandle;
  await probe.close();
  const original = Object.getOwnPropertyDescriptor(prototype, 'datasync')!;
  Object.defineProperty(prototype, 'datasync', {
    ...original,
    value(this: FileHandle) {
      return replacement(() => (original.value as () => Promise<void>).call(this));
    },
  });
  t.teardown(() => Object.defineProperty(prototype, 'datasync', original));
}

const tempFiles = (root: string): string[] =>
  readdirSync(root).filter((name) => name.startsWith('.ioe-upload-'));

t.test(
  'close() while uploads are being checked: each is refused, none leaves a file',
  async (t) => {
    const storage = await openStorage(t);
    const starts = Array.from({ length: 5 }, (_, i) => storage.beginUpload(`f-${i}.mp3`, 10));
    await storage.close();
    t.same(tempFiles(storage.root), [], 'no temporary file when close() resolves');
    for (const start of starts) await t.rejects(start, { code: 'SHUTTING_DOWN' });
    t.same(await readdir(storage.root), [], 'nothing left, nothing published');
  },
);

t.test(
  'close() while the temporary file is being created: deleted before close() resolves',
  async (t) => {
    // Let the upload's checks run a turn at a time, and after each turn block the event loop for a
    // few ms: once the thread pool creates the file during such a block, the upload's own code
    // cannot have run since, so close() comes after the file and before the upload knows of it.
    // On a busy machine the file may appear just after a block, the upload then goes on as
    // usual: that attempt is set aside and another store tried.
    for (let attempt = 1; attempt <= 20; attempt++) {
      const storage = await openStorage(t);
      let settled = false;
      const start = storage.beginUpload('song.mp3', 10);
      start.then(
        () => (settled = true),
        () => (settled = true),
      );
      const deadline = Date.now() + 5000;
      while (tempFiles(storage.root).length === 0 && Date.now() < deadline) {
        await new Promise(setImmediate);
        const block = Date.now() + 20;
        while (tempFiles(storage.root).length === 0 && Date.now() < block);
      }
      if (settled) {
        await storage.close(); // the window was missed: the upload is aborted like any other
        continue;
      }
      t.equal(tempFiles(storage.root).length, 1, 'the temporary file exists as close() is called');
      await storage.close();
      t.same(tempFiles(storage.root), [], 'no temporary file when close() resolves');
      await t.rejects(start, { code: 'SHUTTING_DOWN' });
      t.same(await readdir(storage.root), []);
      t.comment(`caught on attempt ${attempt}`);
      return;
    }
    t.fail('the file was never seen before the upload knew of it, in 20 attempts');
  },
);

t.test('close() with an upload in progress: aborted, its file deleted', async (t) => {
  const storage = await openStorage(t);
  const upload = await storage.beginUpload('clip.mp4', 10);
  await upload.write([Buffer.from('01234')]);
  t.equal(tempFiles(storage.root).length, 1);
  await storage.close();
  t.same(await readdir(storage.root), [], 'the partial upload is gone');
  await t.rejects(storage.beginUpload('late.mp4', 1), { code: 'SHUTTING_DOWN' }, 'and no new one');
});

const KiB = 1024;

t.test(
  'an upload past writeBehindBytes syncs in the background and publishes every byte',
  async (t) => {
    let syncs = 0;
    // Each background sync ends at once, so the count does not hang on the disk's speed (a
    // real one could outlast the whole upload); the abort test below runs real ones.
    await replaceDatasync(t, () => {
      syncs++;
      return Promise.resolve();
    });
    const storage = await openStorage(t, { writeBehindBytes: 64 * KiB });
    t.teardown(() => storage.close());
    const bytes = randomBytes(1024 * KiB);
    const upload = await storage.beginUpload('a/clip.mp4', bytes.length);
    for (let at = 0; at < bytes.length; at += 16 * KiB) {
      await upload.write([bytes.subarray(at, at + 16 * KiB)]);
    }
    await upload.publish({ sha256: '' });
    t.equal(syncs, 16, 'one background sync per 64 KiB written');
    t.ok((await readFile(join(storage.root, 'a/clip.mp4'))).equals(bytes), 'the same bytes');
    t.same(tempFiles(storage.root), []);
  },
);

t.test('a failed background sync fails the upload; nothing is published', async (t) => {
  await replaceDatasync(t, () =>
    Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })),
  );
  const storage = await openStorage(t, { writeBehindBytes: 64 * KiB });
  t.teardown(() => storage.close());
  const upload = await storage.beginUpload('clip.mp4', 256 * KiB);
  const chunk = Buffer.alloc(64 * KiB, 1);
  await upload.write([chunk]); // starts the sync that fails
  await new Promise(setImmediate);
  await t.rejects(upload.write([chunk]), { code: 'EIO' }, 'the next write fails');
  await t.rejects(upload.publish({ sha256: '' }), { code: 'EIO' }, 'and so does a publish');
  t.same(await readdir(storage.root), [], 'nothing published, no temporary file');
});

t.test('an abort during a background sync waits for it, then deletes the file', async (t) => {
  let syncing: Promise<void> | undefined;
  await replaceDatasync(t, (original) => (syncing = original()));
  const storage = await openStorage(t, { writeBehindBytes: 1024 * KiB });
  t.teardown(() => storage.close());
  const upload = await storage.beginUpload('clip.mp4', 4096 * KiB);
  await upload.write([Buffer.alloc(1024 * KiB, 1)]);
  t.ok(syncing, 'a sync runs');
  let synced = 'no';
  void syncing!.then(
    () => (synced = 'yes'),
    (error: NodeJS.ErrnoException) => (synced = `failed: ${error.code}`),
  );
  await upload.abort(); // at once, while the sync of 1 MiB runs
  // Closed under the sync, the descriptor could be reused by another file before it ran.
  t.equal(synced, 'yes', 'the sync ended before the abort did');
  t.same(await readdir(storage.root), [], 'the temporary file is gone');
});

/** Open descriptors of this process. */
const fds = (): number => readdirSync('/proc/self/fd').length;

t.test('readNow: the range at once, after the room asked for; the file closed', async (t) => {
  const storage = await openStorage(t);
  const bytes = randomBytes(50_000);
  await writeFile(join(storage.root, 'a.jpg'), bytes);
  const before = fds();
  const file = await storage.open('a.jpg');
  t.equal(fds(), before + 1);
  const chunk = file.readNow?.(123, 40_000, { headroom: 9 });
  t.ok(chunk?.equals(bytes.subarray(123, 40_123)), 'exactly the range');
  t.ok(chunk && chunk.byteOffset >= 9 && chunk.buffer.byteLength >= 9 + 40_000, 'room before it');
  t.equal(fds(), before, 'closed');
  await file.close(); // nothing left to close: not a second close of a reused number
  t.throws(() => file.readNow?.(0, 1), /already/, 'once only');

  const past = await storage.open('a.jpg');
  t.equal(past.readNow?.(49_990, 100)?.length, 10, 'fewer bytes where the file ends');
  t.equal(fds(), before);
});

t.test('readNow: a range larger than a read in place is left to the stream', async (t) => {
  const storage = await openStorage(t);
  const bytes = randomBytes(300_000);
  await writeFile(join(storage.root, 'b.mp4'), bytes);
  const before = fds();
  const file = await storage.open('b.mp4');
  t.equal(file.readNow?.(0, bytes.length), undefined, 'not at once');
  t.equal(fds(), before + 1, 'still open, for the stream');
  const chunks: Buffer[] = [];
  for await (const chunk of file.stream(0, bytes.length)) chunks.push(chunk as Buffer);
  t.ok(Buffer.concat(chunks).equals(bytes));
  t.equal(fds(), before);
});

t.test('readNow: a file changed or replaced on disk is never stale, never mixed', async (t) => {
  const storage = await openStorage(t);
  const path = join(storage.root, 'c.jpg');
  const first = randomBytes(64 * 1024);
  const second = randomBytes(64 * 1024);
  const third = randomBytes(64 * 1024);
  await writeFile(path, first);
  t.ok((await storage.open('c.jpg')).readNow?.(0, first.length)?.equals(first));

  // Rewritten in place, same size: the next READ has the new bytes.
  await writeFile(path, second);
  t.ok((await storage.open('c.jpg')).readNow?.(0, second.length)?.equals(second), 'rewritten');

  // Replaced (a new file renamed over it) while a READ holds it open: that READ gets the file it
  // opened, whole; the next one the new file.
  const held = await storage.open('c.jpg');
  await writeFile(join(storage.root, 'next.tmp'), third);
  await rename(join(storage.root, 'next.tmp'), path);
  t.ok(held.readNow?.(0, second.length)?.equals(second), 'the open file, whole, not mixed');
  t.ok((await storage.open('c.jpg')).readNow?.(0, third.length)?.equals(third), 'replaced');

  // Removed: not found, nothing remembered.
  await rm(path);
  await t.rejects(storage.open('c.jpg'), { code: 'NOT_FOUND' });
});
