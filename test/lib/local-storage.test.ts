/**
 * LocalStorage's close() against uploads still starting: FORCEQUIT (and QUIT) rest on it to
 * leave no temporary file behind. The rest of the store is tested through the stages that use
 * it (test/pipelines) and in test/security.
 */
import t, { type Test } from 'tap';
import { readdirSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStorage } from '../../lib/local-storage.js';

async function openStorage(t: Test): Promise<LocalStorage> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-local-storage-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return LocalStorage.open(root);
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
