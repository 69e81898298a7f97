/**
 * The LIST cache (lib/catalog-cache.ts) on a real LocalStorage: served from memory while
 * nothing changes, and never stale. Every change is made straight on the filesystem, with
 * synchronous calls, and followed at once (no sleep) by a list(); the answer is compared with
 * a fresh, uncached scan of the same folder.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  stat,
  symlinkSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scanCatalog, sortCatalog } from '../../lib/catalog.js';
import type { WatchFolder } from '../../lib/catalog-cache.js';
import { LocalStorage, type LocalStorageOptions } from '../../lib/local-storage.js';
import type { CatalogEntry } from '../../lib/storage.js';

function tempRoot(t: Test): string {
  const root = realpathSync(mkdtempSync(join(tmpdir(), 'ioe-cache-test-')));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

async function open(
  t: Test,
  root: string,
  options: LocalStorageOptions = {},
): Promise<LocalStorage> {
  const storage = await LocalStorage.open(root, options);
  t.teardown(() => storage.close());
  return storage;
}

/** Name, size and mtime of every entry: what a stale cache would get wrong. */
const shown = (entries: CatalogEntry[]): string[] =>
  entries.map((entry) => `${entry.type} ${entry.name} ${entry.size} ${entry.mtime.getTime()}`);

/** Lists twice and checks that the second answer came from the cache. */
async function primed(t: Test, storage: LocalStorage): Promise<CatalogEntry[]> {
  const first = await storage.list();
  const scans = storage.catalog.scans;
  const second = await storage.list();
  t.equal(storage.catalog.scans, scans, 'the repeated LIST is served from the cache');
  t.equal(second, first, 'the very same entries');
  return second;
}

/** Lists through the cache and checks the answer against an uncached scan. */
async function fresh(t: Test, storage: LocalStorage, what: string): Promise<string[]> {
  const cached = shown(await storage.list());
  t.same(cached, shown(await scanCatalog(storage.root)), `${what}: the listing is current`);
  return cached.map((line) => line.split(' ').slice(1, 3).join(' '));
}

/** A watch function that records its watchers and can be told to fail. */
function recordingWatch(fail?: (dir: string) => string | undefined) {
  const created: { dir: string; watcher: FSWatcher; closed: boolean }[] = [];
  const fn: WatchFolder = (dir, listener) => {
    const code = fail?.(dir);
    if (code) throw Object.assign(new Error(`${code}: injected`), { code });
    const watcher = watch(dir, { persistent: false }, listener);
    const record = { dir, watcher, closed: false };
    const close = watcher.close.bind(watcher);
    watcher.close = () => {
      record.closed = true;
      close();
    };
    created.push(record);
    return watcher;
  };
  return { fn, created };
}

t.test('a repeated LIST is served from the cache; a change makes it scan again', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  const storage = await open(t, root);
  t.equal(storage.catalog.scans, 0, 'nothing scanned before the first LIST');
  t.same(await fresh(t, storage, 'first'), ['a.mp3 4']);
  t.equal(storage.catalog.scans, 1);
  for (let i = 0; i < 5; i++) await storage.list();
  t.equal(storage.catalog.scans, 1, 'five more LISTs, no scan');
  t.ok(storage.catalog.isFresh);
  writeFileSync(join(root, 'b.mp3'), 'song');
  t.same(await fresh(t, storage, 'after a copy'), ['a.mp3 4', 'b.mp3 4']);
  t.equal(storage.catalog.scans, 2, 'the change made it scan again');
  await storage.list();
  t.equal(storage.catalog.scans, 2, 'and then it is cached again');
});

t.test('concurrent LISTs share one scan', async (t) => {
  const root = tempRoot(t);
  for (let i = 0; i < 50; i++) writeFileSync(join(root, `f${i}.jpg`), 'x');
  const storage = await open(t, root);
  const all = await Promise.all(Array.from({ length: 8 }, () => storage.list()));
  t.equal(storage.catalog.scans, 1, 'eight LISTs at once, one scan');
  for (const entries of all) t.equal(entries.length, 50);
});

/** Each change: how to set it up, the change itself (synchronous), what is listed after. */
const changes: {
  what: string;
  setup?: (root: string) => void;
  change: (root: string) => void;
  after: string[];
}[] = [
  {
    what: 'a file copied into the root',
    change: (root) => copyFileSync(join(root, 'a.mp3'), join(root, 'c.mp3')),
    after: ['a.mp3 4', 'c.mp3 4', 'sub/s.mp3 3'],
  },
  {
    what: 'a file removed',
    change: (root) => unlinkSync(join(root, 'a.mp3')),
    after: ['sub/s.mp3 3'],
  },
  {
    what: 'a file renamed',
    change: (root) => renameSync(join(root, 'a.mp3'), join(root, 'z.mp3')),
    after: ['sub/s.mp3 3', 'z.mp3 4'],
  },
  {
    what: 'a file renamed to a hidden name',
    change: (root) => renameSync(join(root, 'a.mp3'), join(root, '.a.mp3')),
    after: ['sub/s.mp3 3'],
  },
  {
    what: 'a hidden file renamed into view (how rsync finishes a copy)',
    setup: (root) => writeFileSync(join(root, '.c.mp3.Xy12'), 'hidden'),
    change: (root) => renameSync(join(root, '.c.mp3.Xy12'), join(root, 'c.mp3')),
    after: ['a.mp3 4', 'c.mp3 6', 'sub/s.mp3 3'],
  },
  {
    what: 'a file appended to',
    change: (root) => appendFileSync(join(root, 'a.mp3'), ' and more'),
    after: ['a.mp3 13', 'sub/s.mp3 3'],
  },
  {
    what: 'a file truncated',
    change: (root) => truncateSync(join(root, 'a.mp3'), 1),
    after: ['a.mp3 1', 'sub/s.mp3 3'],
  },
  {
    what: 'a file touched (mtime only)',
    change: (root) => utimesSync(join(root, 'a.mp3'), new Date(0), new Date(86_400_000)),
    after: ['a.mp3 4', 'sub/s.mp3 3'],
  },
  {
    what: 'a new nested folder with a file',
    change: (root) => {
      mkdirSync(join(root, 'new', 'deeper'), { recursive: true });
      writeFileSync(join(root, 'new', 'deeper', 'n.mp4'), 'film');
    },
    after: ['a.mp3 4', 'new/deeper/n.mp4 4', 'sub/s.mp3 3'],
  },
  {
    what: 'a folder removed',
    change: (root) => rmSync(join(root, 'sub'), { recursive: true }),
    after: ['a.mp3 4'],
  },
  {
    what: 'a folder renamed',
    change: (root) => renameSync(join(root, 'sub'), join(root, 'moved')),
    after: ['a.mp3 4', 'moved/s.mp3 3'],
  },
  {
    what: 'a file added inside a nested folder',
    change: (root) => writeFileSync(join(root, 'sub', 't.mp3'), 'new'),
    after: ['a.mp3 4', 'sub/s.mp3 3', 'sub/t.mp3 3'],
  },
  {
    what: 'a file appended to inside a nested folder',
    change: (root) => appendFileSync(join(root, 'sub', 's.mp3'), '!!'),
    after: ['a.mp3 4', 'sub/s.mp3 5'],
  },
  {
    what: 'a file added in a folder created after the first scan',
    setup: (root) => mkdirSync(join(root, 'later')),
    change: (root) => writeFileSync(join(root, 'later', 'l.mp3'), 'late'),
    after: ['a.mp3 4', 'later/l.mp3 4', 'sub/s.mp3 3'],
  },
  {
    what: 'a symlink to a file added',
    change: (root) => symlinkSync('sub/s.mp3', join(root, 'link.mp3')),
    after: ['a.mp3 4', 'link.mp3 3', 'sub/s.mp3 3'],
  },
  {
    what: 'a symlink to a folder added',
    change: (root) => symlinkSync('sub', join(root, 'alias')),
    after: ['a.mp3 4', 'alias/s.mp3 3', 'sub/s.mp3 3'],
  },
  {
    what: "a linked file's target appended to",
    setup: (root) => {
      mkdirSync(join(root, 'store'));
      writeFileSync(join(root, 'store', 'x.flac'), 'x');
      symlinkSync('../store/x.flac', join(root, 'sub', 'x.flac'));
    },
    change: (root) => appendFileSync(join(root, 'store', 'x.flac'), 'yz'),
    after: ['a.mp3 4', 'store/x.flac 3', 'sub/s.mp3 3', 'sub/x.flac 3'],
  },
  {
    what: "a linked file's target appended to, in a folder the scan does not walk",
    setup: (root) => {
      // Below 1,024 bytes of path no name can be valid, so the scan stops there; a link in
      // the root may still lead to a file down there.
      const deep = join(...Array.from({ length: 5 }, (_, i) => `${i}`.repeat(250)));
      mkdirSync(join(root, deep), { recursive: true });
      writeFileSync(join(root, deep, 'x.flac'), 'x');
      symlinkSync(join(deep, 'x.flac'), join(root, 'x.flac'));
    },
    change: (root) => {
      const deep = join(...Array.from({ length: 5 }, (_, i) => `${i}`.repeat(250)));
      appendFileSync(join(root, deep, 'x.flac'), 'yz');
    },
    after: ['a.mp3 4', 'sub/s.mp3 3', 'x.flac 3'],
  },
  {
    what: 'a symlink pointed elsewhere',
    setup: (root) => symlinkSync('a.mp3', join(root, 'l.mp3')),
    change: (root) => {
      unlinkSync(join(root, 'l.mp3'));
      symlinkSync('sub/s.mp3', join(root, 'l.mp3'));
    },
    after: ['a.mp3 4', 'l.mp3 3', 'sub/s.mp3 3'],
  },
  {
    what: "a dangling link's target created",
    setup: (root) => symlinkSync('future/f.mp3', join(root, 'soon.mp3')),
    change: (root) => {
      mkdirSync(join(root, 'future'));
      writeFileSync(join(root, 'future', 'f.mp3'), 'here');
    },
    after: ['a.mp3 4', 'future/f.mp3 4', 'soon.mp3 4', 'sub/s.mp3 3'],
  },
];

t.test('while changes keep coming, one scan at a time, and every LIST is fresh', async (t) => {
  const root = tempRoot(t);
  for (let i = 0; i < 3000; i++) writeFileSync(join(root, `f${i}.jpg`), 'x');
  const storage = await open(t, root);
  await storage.list();
  const before = storage.catalog.scans;
  const lists: Promise<void>[] = [];
  let concurrent = 0;
  let mostConcurrent = 0;
  for (let i = 0; i < 20; i++) {
    // A change (as an upload's publish would make), then a LIST that must see it.
    writeFileSync(join(root, `new${i}.jpg`), 'x');
    storage.catalog.invalidate();
    concurrent++;
    mostConcurrent = Math.max(mostConcurrent, concurrent);
    lists.push(
      storage.list().then((entries) => {
        concurrent--;
        t.ok(
          entries.some((entry) => entry.name === `new${i}.jpg`),
          `LIST ${i} sees the file made just before it`,
        );
      }),
    );
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.all(lists);
  const scans = storage.catalog.scans - before;
  t.ok(mostConcurrent > 5, `the LISTs overlapped (${mostConcurrent} at once)`);
  t.ok(scans < 8, `they shared scans instead of one each (${scans} scans for 20 LISTs)`);
});

t.test('every change on disk is seen by the very next LIST', async (t) => {
  for (const { what, setup, change, after } of changes) {
    await t.test(what, async (t) => {
      const root = tempRoot(t);
      writeFileSync(join(root, 'a.mp3'), 'tune');
      mkdirSync(join(root, 'sub'));
      writeFileSync(join(root, 'sub', 's.mp3'), 'sss');
      setup?.(root);
      const storage = await open(t, root);
      await primed(t, storage);
      const before = storage.catalog.scans;
      // The worst moment: in the poll phase, just after an I/O callback. A change made here is
      // queued by inotify, but Node reads that queue only on its next poll; one setImmediate
      // would come before that.
      await new Promise<void>((resolve) => stat(root, () => resolve()));
      change(root);
      t.same(await fresh(t, storage, what), after);
      t.equal(storage.catalog.scans, before + 1, 'one new scan');
      await primed(t, storage);
    });
  }
});

t.test('hidden entries changing do not drop the cache', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  const storage = await open(t, root);
  await primed(t, storage);
  const scans = storage.catalog.scans;
  writeFileSync(join(root, '.ioe-upload-0123.tmp'), 'an upload in progress');
  appendFileSync(join(root, '.ioe-upload-0123.tmp'), 'more');
  mkdirSync(join(root, '.hidden'));
  await storage.list();
  t.equal(storage.catalog.scans, scans, 'still served from the cache');
});

t.test(
  'a WRITE is listed as soon as publish() resolves, without waiting for inotify',
  async (t) => {
    const root = tempRoot(t);
    // Watchers that never report anything in the media root: only the storage's own
    // invalidation can make the new file appear.
    const deaf: WatchFolder = (dir, listener) =>
      watch(dir, { persistent: false }, dir.startsWith(root) ? () => undefined : listener);
    const storage = await open(t, root, { catalog: { watch: deaf }, overwrite: true });
    writeFileSync(join(root, 'a.mp3'), 'tune');
    await primed(t, storage);

    // The deaf watcher really hides outside changes: the checks below would catch a miss.
    writeFileSync(join(root, 'outside.mp3'), 'x');
    t.same(
      (await storage.list()).map((entry) => entry.name),
      ['a.mp3'],
      'an outside change is missed with deaf watchers (so the test can fail)',
    );

    const upload = await storage.beginUpload('up/b.mp3', 5);
    await upload.write([Buffer.from('hello')]);
    await upload.publish();
    t.same(
      (await storage.list()).map((entry) => `${entry.name} ${entry.size}`),
      ['a.mp3 4', 'outside.mp3 1', 'up/b.mp3 5'],
      'the published file is listed',
    );
    await primed(t, storage);
    const replace = await storage.beginUpload('a.mp3', 7);
    await replace.write([Buffer.from('replace')]);
    await replace.publish();
    t.same(
      (await storage.list()).map((entry) => `${entry.name} ${entry.size}`),
      ['a.mp3 7', 'outside.mp3 1', 'up/b.mp3 5'],
      'an overwrite is listed with its new size',
    );
  },
);

t.test('a scan overtaken by a change is not kept, nor shared by later LISTs', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  mkdirSync(join(root, 'sub'));
  let late: Promise<CatalogEntry[]> | undefined;
  let storage: LocalStorage | undefined = undefined;
  // The moment the scan moves on to sub/ (the root has been read), a file lands in the root
  // and a second LIST arrives.
  const racing: WatchFolder = (dir, listener) => {
    const watcher = watch(dir, { persistent: false }, listener);
    if (dir === join(root, 'sub') && !late) {
      writeFileSync(join(root, 'b.mp3'), 'song');
      late = storage!.list();
    }
    return watcher;
  };
  storage = await open(t, root, { catalog: { watch: racing } });
  const early = await storage.list();
  t.same(
    early.map((entry) => entry.name),
    ['a.mp3'],
    'the first LIST gets the scan it started (the change came after the root was read)',
  );
  t.ok(late, 'the second LIST arrived during the scan');
  t.same(
    (await late!).map((entry) => entry.name),
    ['a.mp3', 'b.mp3'],
    'the second LIST, after the change, sees it',
  );
  t.equal(storage.catalog.scans, 2, 'it did not share the first scan');
  t.same(await fresh(t, storage, 'then'), ['a.mp3 4', 'b.mp3 4']);
  t.equal(storage.catalog.scans, 2, 'the second scan was kept');
});

t.test('a folder that cannot be watched turns the cache off until it can be', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'sub', 's.mp3'), 'sss');
  let failing = true;
  const { fn, created } = recordingWatch((dir) =>
    failing && dir === join(root, 'sub') ? 'ENOSPC' : undefined,
  );
  const storage = await open(t, root, { catalog: { watch: fn } });
  t.same(await fresh(t, storage, 'first'), ['a.mp3 4', 'sub/s.mp3 3']);
  t.same(await fresh(t, storage, 'second'), ['a.mp3 4', 'sub/s.mp3 3']);
  t.equal(storage.catalog.scans, 2, 'every LIST scans');
  appendFileSync(join(root, 'sub', 's.mp3'), 'more'); // in the folder nobody watches
  t.same(await fresh(t, storage, 'after a change in it'), ['a.mp3 4', 'sub/s.mp3 7']);
  t.equal(storage.catalog.scans, 3);
  t.notOk(storage.catalog.isFresh);
  t.equal(storage.catalog.watcherCount, 0, "those scans' watchers were closed");

  failing = false;
  await storage.list();
  t.equal(storage.catalog.scans, 4);
  await primed(t, storage);
  t.equal(storage.catalog.scans, 4, 'cached again once every folder is watched');
  t.ok(created.some((record) => record.dir === join(root, 'sub') && !record.closed));
});

t.test('the root that cannot be watched turns the cache off', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  const { fn } = recordingWatch((dir) => (dir === root ? 'EMFILE' : undefined));
  const storage = await open(t, root, { catalog: { watch: fn } });
  await storage.list();
  await storage.list();
  t.equal(storage.catalog.scans, 2);
});

t.test('a watcher error drops the cache', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  const { fn, created } = recordingWatch();
  const storage = await open(t, root, { catalog: { watch: fn } });
  await primed(t, storage);
  const scans = storage.catalog.scans;
  const mine = created.find((record) => record.dir === root && !record.closed);
  mine!.watcher.emit('error', Object.assign(new Error('EIO: injected'), { code: 'EIO' }));
  t.notOk(storage.catalog.isFresh, 'dropped at once');
  t.ok(mine!.closed, 'the watchers were closed');
  await storage.list();
  t.equal(storage.catalog.scans, scans + 1, 'the next LIST scans');
});

t.test('a link that depends on unwatched links is served but not cached', async (t) => {
  // Each case: links set up in `root` (with `elsewhere` outside it), then a change that only
  // such an unwatched link sees; the listing before and after.
  const cases: {
    what: string;
    setup: (root: string, elsewhere: string) => void;
    change: (root: string, elsewhere: string) => void;
    before: string[];
    after: string[];
  }[] = [
    {
      what: 'a chain through a hidden folder',
      setup: (root) => {
        mkdirSync(join(root, '.private'));
        symlinkSync('../real/r.mp3', join(root, '.private', 'hop.mp3'));
        symlinkSync('.private/hop.mp3', join(root, 'chain.mp3'));
      },
      change: (root) => {
        unlinkSync(join(root, '.private', 'hop.mp3'));
        symlinkSync('../real/gone.mp3', join(root, '.private', 'hop.mp3'));
      },
      before: ['chain.mp3 1', 'real/r.mp3 1'],
      after: ['real/r.mp3 1'],
    },
    {
      what: 'a chain through a folder outside the root',
      setup: (root, elsewhere) => {
        symlinkSync(join(root, 'real', 'r.mp3'), join(elsewhere, 'hop.mp3'));
        symlinkSync(join(elsewhere, 'hop.mp3'), join(root, 'chain.mp3'));
      },
      change: (root, elsewhere) => {
        unlinkSync(join(elsewhere, 'hop.mp3'));
        symlinkSync(join(root, 'real', 'gone.mp3'), join(elsewhere, 'hop.mp3'));
      },
      before: ['chain.mp3 1', 'real/r.mp3 1'],
      after: ['real/r.mp3 1'],
    },
    {
      what: 'a dangling link through a hidden name that appears later',
      setup: (root) => symlinkSync('.alias/r.mp3', join(root, 'soon.mp3')),
      change: (root) => symlinkSync('real', join(root, '.alias')),
      before: ['real/r.mp3 1'],
      after: ['real/r.mp3 1', 'soon.mp3 1'],
    },
  ];
  for (const { what, setup, change, before, after } of cases) {
    await t.test(what, async (t) => {
      const root = tempRoot(t);
      const elsewhere = tempRoot(t);
      mkdirSync(join(root, 'real'));
      writeFileSync(join(root, 'real', 'r.mp3'), 'r');
      setup(root, elsewhere);
      const storage = await open(t, root);
      t.same(await fresh(t, storage, 'first'), before);
      change(root, elsewhere); // nothing the cache watches sees this
      t.same(await fresh(t, storage, 'after the change'), after);
      t.equal(storage.catalog.scans, 2);
    });
  }
});

t.test('a barrier that never answers: every LIST scans, and soon without waiting', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  // The barrier's own folder (outside the root) never reports: as on a temporary folder
  // where inotify does not work.
  const mute: WatchFolder = (dir, listener) =>
    watch(dir, { persistent: false }, dir.startsWith(root) ? listener : () => undefined);
  const storage = await open(t, root, { catalog: { watch: mute } });
  await storage.list();
  const times: number[] = [];
  for (let i = 0; i < 4; i++) {
    const started = Date.now();
    writeFileSync(join(root, `n${i}.mp3`), 'x');
    t.same(await fresh(t, storage, `LIST ${i + 2}`), [
      'a.mp3 4',
      ...Array.from({ length: i + 1 }, (_, j) => `n${j}.mp3 1`),
    ]);
    times.push(Date.now() - started);
  }
  t.equal(storage.catalog.scans, 5, 'every LIST scanned');
  t.ok(
    times.slice(0, 3).every((ms) => ms >= 1900),
    `the first three waited (${times} ms)`,
  );
  t.ok(times[3] < 1000, `then it stops waiting (${times[3]} ms)`);
});

t.test('close() closes every watcher and the barrier; LIST still works', async (t) => {
  const root = tempRoot(t);
  mkdirSync(join(root, 'a', 'b'), { recursive: true });
  writeFileSync(join(root, 'a', 'b', 'c.mp3'), 'c');
  const { fn, created } = recordingWatch();
  const storage = await LocalStorage.open(root, { catalog: { watch: fn } });
  await primed(t, storage);
  t.equal(storage.catalog.watcherCount, 3, 'one watcher per folder');
  const barrier = created.find((record) => !record.dir.startsWith(root));
  t.ok(barrier && existsSync(barrier.dir), 'the barrier folder exists');
  await storage.close();
  t.equal(storage.catalog.watcherCount, 0);
  t.ok(
    created.every((record) => record.closed),
    'every watcher created was closed',
  );
  t.notOk(existsSync(barrier!.dir), 'the barrier folder is removed');
  writeFileSync(join(root, 'd.mp3'), 'd');
  t.same(
    (await storage.list()).map((entry) => entry.name),
    ['a/b/c.mp3', 'd.mp3'],
    'LIST after close() scans',
  );
  t.equal(storage.catalog.watcherCount, 0, 'without setting up watchers');
});

t.test('close() lets a process with persistent watchers exit', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  // The compiled module beside this compiled test (tests run from dist/test/).
  const storageModule = fileURLToPath(new URL('../../lib/local-storage.js', import.meta.url));
  const scratch = tempRoot(t); // the child's temporary folder (its barrier), even if killed
  // Persistent watchers (fs.watch's default) keep a process alive until they are closed.
  const run = async (close: boolean): Promise<'exited' | 'alive'> => {
    const script = `
      const { watch } = await import('node:fs');
      const { LocalStorage } = await import(${JSON.stringify(storageModule)});
      const storage = await LocalStorage.open(process.argv[1], {
        catalog: { watch: (dir, listener) => watch(dir, listener) },
      });
      await storage.list();
      await storage.list();
      ${close ? 'await storage.close();' : ''}
      console.log('done');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, root], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', TMPDIR: scratch },
    });
    let stdout = '';
    // Alive means still running 4 s after it printed `done` (a busy machine can take longer than
    // that to load the child at all); 60 s at most in all.
    let timer: NodeJS.Timeout | undefined;
    const alive = new Promise<'alive'>((resolve) => {
      const deadline = setTimeout(() => resolve('alive'), 60_000);
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        if (/done/.test(stdout) && !timer) timer = setTimeout(() => resolve('alive'), 4000);
      });
      child.once('exit', () => clearTimeout(deadline));
    });
    const exited = once(child, 'exit').then(() => 'exited' as const);
    const outcome = await Promise.race([exited, alive]);
    clearTimeout(timer);
    if (outcome === 'alive') {
      child.kill('SIGKILL');
      await exited;
    }
    t.match(stdout, /done/, `the child listed (close: ${close})`);
    return outcome;
  };
  t.equal(await run(false), 'alive', 'without close(): the watchers keep it alive (control)');
  const barriers = (): string[] =>
    readdirSync(scratch).filter((name) => name.startsWith('ioe-catalog-'));
  t.equal(barriers().length, 1, 'the killed process left its barrier folder');
  t.equal(await run(true), 'exited', 'with close(): the process exits');
  t.same(barriers(), [], "the next process swept the killed one's folder, then its own");
});

t.test('sortCatalog orders by UTF-8 bytes, across many runs', async (t) => {
  const pieces = ['a', 'B', 'é', '\uFF21', '\u{1F600}', '-', '/', '0', 'z', '\u00ff', '\uE000'];
  const entries: CatalogEntry[] = [];
  const seen = new Set<string>();
  let seed = 7;
  const random = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  while (entries.length < 20_000) {
    let name = '';
    for (let i = 0, n = 1 + random(6); i < n; i++) name += pieces[random(pieces.length)];
    if (seen.has(name)) continue;
    seen.add(name);
    entries.push({ type: 'music', name, size: 0, mtime: new Date(0) });
  }
  const sorted = await sortCatalog(entries);
  const expected = [...entries].sort((a, b) =>
    Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)),
  );
  t.same(
    sorted.map((entry) => entry.name),
    expected.map((entry) => entry.name),
  );
  t.same(await sortCatalog([]), []);
});
