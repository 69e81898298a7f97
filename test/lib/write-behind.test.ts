/**
 * WriteBehind alone, over a file handle whose datasync the test settles: a sync starts once
 * enough bytes are unsynced and never two at once, settled() waits for the one running, and a
 * failed sync fails every later call.
 */
import t from 'tap';
import type { FileHandle } from 'node:fs/promises';
import { WriteBehind } from '../../lib/write-behind.js';
import { deferred } from '../helpers/deferred.js';

function fakeFile(): { file: FileHandle; syncs: ReturnType<typeof deferred<void>>[] } {
  const syncs: ReturnType<typeof deferred<void>>[] = [];
  const file = {
    datasync() {
      const sync = deferred<void>();
      syncs.push(sync);
      return sync.promise;
    },
  } as unknown as FileHandle;
  return { file, syncs };
}

t.test('a sync starts once everyBytes are unsynced, and one at a time', async (t) => {
  const { file, syncs } = fakeFile();
  const writeBehind = new WriteBehind(file, 100);
  writeBehind.written(60);
  t.equal(syncs.length, 0, 'not before 100 bytes');
  writeBehind.written(40);
  t.equal(syncs.length, 1, 'one at 100 bytes');
  writeBehind.written(500);
  t.equal(syncs.length, 1, 'none while one runs');
  syncs[0].resolve();
  await syncs[0].promise;
  writeBehind.written(1);
  t.equal(syncs.length, 2, 'the bytes written meanwhile start the next one');
  syncs[1].resolve();
  await writeBehind.settled();
  writeBehind.written(99);
  t.equal(syncs.length, 2, 'the count starts again after each sync');
});

t.test('settled() waits for the sync under way', async (t) => {
  const { file, syncs } = fakeFile();
  const writeBehind = new WriteBehind(file, 10);
  writeBehind.written(10);
  let settled = false;
  const waiting = writeBehind.settled().then(() => (settled = true));
  await new Promise(setImmediate);
  t.notOk(settled, 'not while the sync runs');
  syncs[0].resolve();
  await waiting;
  t.ok(settled);
  t.resolves(new WriteBehind(file, 10).settled(), 'at once when none ran');
});

t.test('a failed sync fails the next write and settled()', async (t) => {
  const { file, syncs } = fakeFile();
  const writeBehind = new WriteBehind(file, 10);
  writeBehind.written(10);
  const error = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  syncs[0].reject(error);
  await t.rejects(writeBehind.settled(), error, 'settled() throws the sync error');
  t.throws(() => writeBehind.written(1), error, 'and so does every later write');
  await t.rejects(writeBehind.settled(), error, 'again');
  t.equal(syncs.length, 1, 'no sync after a failure');
});

t.test('everyBytes 0: never syncs', async (t) => {
  const { file, syncs } = fakeFile();
  const writeBehind = new WriteBehind(file, 0);
  for (let i = 0; i < 10; i++) writeBehind.written(1 << 30);
  t.equal(syncs.length, 0);
  await writeBehind.settled();
});
