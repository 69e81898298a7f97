/**
 * The catalog cache behind LIST: the last scan (lib/catalog.ts) is kept and served again until
 * something that could change it happens. A stale listing is a bug, so the cache is dropped:
 *
 * - synchronously, by `invalidate()`, when the storage publishes an upload (before the WRITE's
 *   OK is sent, so a LIST on any connection after that OK sees the file);
 * - by inotify, for changes made by anyone else: the scan sets up a non-recursive `fs.watch` on
 *   every folder just before reading it (a change between the read and the watch cannot be
 *   missed), on the folders a followed link leads into, and any event drops the cache;
 * - always, when a watch could not be set up (inotify limits, an unreadable folder that was
 *   read anyway...) or a watcher reports an error: such a scan is served once and not kept.
 *
 * Generations order it all: every invalidation bumps the generation; a scan is kept only if no
 * invalidation happened since it began, and a LIST joins a scan in flight only if none happened
 * since that scan began. A failed scan is never kept: the error goes to every LIST that shared
 * it, and the next LIST scans again.
 *
 * What inotify cannot see is not seen: a file changed through a hard link outside the watched
 * folders, or by another machine on a network filesystem. For such roots, turn the cache off.
 */
import {
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { isInsideRoot, scanCatalog, type ScanObserver } from './catalog.js';
import type { CatalogEntry } from './storage.js';

/** Creates a watcher on one folder; `listener` gets every event (`filename` may be null). */
export type WatchFolder = (
  dir: string,
  listener: (event: string, filename: string | null) => void,
) => FSWatcher;

export interface CatalogCacheOptions {
  /** False: scan on every LIST (a network filesystem changed by other machines). Default true. */
  enabled?: boolean;
  /** Creates the folder watchers (a seam for tests). Default: `fs.watch`, non-persistent. */
  watch?: WatchFolder;
}

/** Non-recursive (one watcher per folder: Node 20's recursive mode on Linux is emulated in
 *  JS) and non-persistent: a forgotten watcher never keeps the process alive. */
const watchFolder: WatchFolder = (dir, listener) => watch(dir, { persistent: false }, listener);

/** How long a barrier may take before the cache gives up on it (and scans). */
const BARRIER_TIMEOUT_MS = 2000;
/** Barriers in a row that may time out before the cache stops trying (and always scans). */
const GIVE_UP_AFTER = 3;

/** Barrier folders of this process, removed at exit even if no one called close(). */
const barrierFolders = new Set<string>();
let removeAtExit = false;

function removeFolder(dir: string): void {
  barrierFolders.delete(dir);
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    // a folder in the temporary folder that could not be removed: nothing depends on it
  }
}

/** True when process `pid` exists (EPERM: it does, as another user's). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let swept = false;

/** Removes the barrier folders left by processes that were killed (SIGKILL skips 'exit'). */
function sweepOrphans(base: string): void {
  try {
    for (const name of readdirSync(base)) {
      const pid = Number(/^ioe-catalog-(\d+)-/.exec(name)?.[1]);
      if (pid > 0 && pid !== process.pid && !alive(pid)) removeFolder(join(base, name));
    }
  } catch {
    // an unreadable temporary folder: nothing to sweep
  }
}

function barrierFolder(): string {
  const base = tmpdir();
  if (!swept) {
    swept = true;
    sweepOrphans(base);
  }
  const dir = mkdtempSync(join(base, `ioe-catalog-${process.pid}-`));
  barrierFolders.add(dir);
  if (!removeAtExit) {
    removeAtExit = true;
    process.on('exit', () => {
      for (const folder of barrierFolders) removeFolder(folder);
    });
  }
  return dir;
}

/**
 * Proof that every inotify event queued before `sync()` was called has been handled. Node reads
 * all watchers' events from one inotify queue per event loop, in order; the barrier watches a
 * private folder of its own (in the system's temporary folder) and renames a file there to a
 * new name each time: when the event bearing that name comes back, everything queued before it
 * has been dispatched. One rename per cached LIST.
 */
class InotifyBarrier {
  private readonly watchFolder: WatchFolder;
  private dir?: string;
  private watcher?: FSWatcher;
  /** The name the marker file has now; the next one is `current + 1`. */
  private current = 0;
  private readonly waiters = new Map<number, (ok: boolean) => void>();
  private closed = false;
  /** Barriers in a row that timed out. */
  private timeouts = 0;

  constructor(watch: WatchFolder) {
    this.watchFolder = watch;
  }

  /** Resolves true once every event queued before the call has been handled; false if unsure. */
  sync(): Promise<boolean> {
    if (this.closed || this.timeouts >= GIVE_UP_AFTER || !this.ready()) {
      return Promise.resolve(false);
    }
    const next = this.current + 1;
    try {
      renameSync(join(this.dir!, String(this.current)), join(this.dir!, String(next)));
    } catch {
      this.reset(); // the folder was cleaned away, say: set it up again next time
      return Promise.resolve(false);
    }
    this.current = next;
    return new Promise((resolve) => {
      // Not unref'd: it keeps the process alive until the event is back (the watchers don't).
      // After a stall, timers run before the poll phase: give that phase one more turn.
      // Events that never come (a temporary folder where inotify does not work): after a few,
      // stop waiting for them, and let every LIST scan.
      const timer = setTimeout(
        () =>
          setImmediate(() => {
            if (!this.waiters.has(next)) return;
            this.timeouts++;
            this.settle(next, false);
          }),
        BARRIER_TIMEOUT_MS,
      );
      this.waiters.set(next, (ok) => {
        clearTimeout(timer);
        if (ok) this.timeouts = 0;
        resolve(ok);
      });
    });
  }

  close(): void {
    this.closed = true;
    this.reset();
  }

  private ready(): boolean {
    if (this.watcher) return true;
    try {
      this.dir = barrierFolder();
      this.current = 0;
      writeFileSync(join(this.dir, '0'), '');
      this.watcher = this.watchFolder(this.dir, (_event, filename) => {
        // The rename makes two events, the old name's and the new one's; either proves that
        // the waiters up to that name are through.
        const seen = Number(filename);
        if (Number.isInteger(seen)) {
          for (const waiting of this.waiters.keys())
            if (waiting <= seen) this.settle(waiting, true);
        }
      });
      this.watcher.on('error', () => this.reset());
      return true;
    } catch {
      this.reset();
      return false;
    }
  }

  private settle(waiting: number, ok: boolean): void {
    const resolve = this.waiters.get(waiting);
    this.waiters.delete(waiting);
    resolve?.(ok);
  }

  private reset(): void {
    for (const waiting of [...this.waiters.keys()]) this.settle(waiting, false);
    this.watcher?.close();
    this.watcher = undefined;
    if (this.dir) removeFolder(this.dir);
    this.dir = undefined;
  }
}

/** One scan in flight: its generation, the watchers it set up, and whether it may be kept. */
interface Scan {
  generation: number;
  watchers: Map<string, FSWatcher>;
  /** Folders whose watch could not be set up, waiting for the outcome of reading them. */
  unwatched: Set<string>;
  /** Something it saw is not watched: serve it to those who asked, but do not keep it. */
  blind: boolean;
  /** Links being resolved: until they are, a LIST arriving now must not share this scan. */
  resolving: number;
  result?: Promise<CatalogEntry[]>;
}

export class CatalogCache {
  readonly root: string;
  /** Scans started since the cache was created: a cached LIST does not add one. */
  scans = 0;
  private readonly enabled: boolean;
  private readonly watchFolder: WatchFolder;
  private generation = 0;
  private fresh?: { generation: number; entries: CatalogEntry[]; scan: Scan };
  private running?: Scan;
  /** Every watcher open now, the kept scan's and those of scans in flight. */
  private readonly watchers = new Set<FSWatcher>();
  private closed = false;
  private readonly barrier: InotifyBarrier;

  /** `root` must be a real path (as LocalStorage keeps it). */
  constructor(root: string, options: CatalogCacheOptions = {}) {
    this.root = root;
    this.enabled = options.enabled ?? true;
    this.watchFolder = options.watch ?? watchFolder;
    this.barrier = new InotifyBarrier(this.watchFolder);
  }

  /** Watchers open now (for tests and leak checks). */
  get watcherCount(): number {
    return this.watchers.size;
  }

  /** True when the next LIST would be answered without a scan (if nothing happens meanwhile). */
  get isFresh(): boolean {
    return this.fresh !== undefined;
  }

  /** Drops the cached catalog: the next LIST scans again. Synchronous. */
  invalidate(): void {
    this.generation++;
    const fresh = this.fresh;
    this.fresh = undefined;
    // Nothing is left to keep fresh; the next scan sets up its own watchers.
    if (fresh) this.closeWatchers(fresh.scan);
  }

  async list(): Promise<CatalogEntry[]> {
    if (this.closed || !this.enabled) {
      this.scans++;
      return scanCatalog(this.root);
    }
    if (this.fresh || this.running) {
      // A change made before this LIST arrived has its inotify event queued already, but Node
      // may not have handled it yet (it reads the queue in its poll phase, perhaps after the
      // socket data that brought this LIST, or after a change this very process just made).
      // Yielding once (setImmediate) covers only the first case. The barrier is exact: it
      // makes an event of its own, after everything queued so far, and waits for it.
      if (!(await this.barrier.sync())) this.invalidate(); // no proof: do not trust the cache
    }
    return this.current();
  }

  /**
   * The cached catalog, a scan in flight that began after the last change, or a new scan. One
   * scan at a time: while uploads keep changing the catalog, every LIST would otherwise start
   * a scan of its own before the last one ended (80 at once in a soak, each holding a folder
   * open and filling the thread pool with stats). A LIST that finds an outdated scan in flight
   * waits for it to end, then shares the next one, which began after the LIST arrived.
   */
  private async current(): Promise<CatalogEntry[]> {
    /** The scan this LIST waited for: it began too early to answer it. */
    let waited: Scan | undefined;
    for (;;) {
      const fresh = this.fresh;
      if (fresh?.generation === this.generation && fresh.scan !== waited) return fresh.entries;
      const running = this.running;
      if (!running?.result) return this.scan();
      if (
        running !== waited &&
        running.generation === this.generation &&
        !running.blind &&
        running.resolving === 0
      ) {
        return running.result;
      }
      waited = running;
      await running.result.catch(() => undefined);
      if (this.closed) return this.list();
    }
  }

  /** Closes every watcher; LIST keeps working afterwards, scanning every time. */
  close(): void {
    this.closed = true;
    this.invalidate();
    for (const watcher of this.watchers) watcher.close();
    this.watchers.clear();
    this.barrier.close();
  }

  private scan(): Promise<CatalogEntry[]> {
    const scan: Scan = {
      generation: this.generation,
      watchers: new Map(),
      unwatched: new Set(),
      blind: false,
      resolving: 0,
    };
    this.scans++;
    this.running = scan;
    scan.result = (async () => {
      let kept = false;
      try {
        const entries = await scanCatalog(this.root, this.observe(scan));
        if (!scan.blind && !this.closed && scan.generation === this.generation) {
          if (this.fresh) this.closeWatchers(this.fresh.scan);
          this.fresh = { generation: scan.generation, entries, scan };
          kept = true;
        }
        return entries;
      } finally {
        if (!kept) this.closeWatchers(scan);
        if (this.running === scan) this.running = undefined;
      }
    })();
    return scan.result;
  }

  private observe(scan: Scan): ScanObserver {
    return {
      beforeRead: (dir) => {
        if (this.watch(scan, dir) !== undefined) scan.unwatched.add(dir);
      },
      afterRead: (dir, error) => {
        // A folder that could not be watched may be left out only if it could not be read
        // either (say, lost+found): then its parent's watcher sees it change (IN_ATTRIB on a
        // chmod, a rename...). The root has no watched parent.
        if (scan.unwatched.has(dir) && (error === undefined || dir === this.root)) {
          scan.blind = true;
        }
      },
      beforeLink: () => {
        scan.resolving++; // what a link resolves to is not known to be watched yet
      },
      afterLink: (link, target, real) => {
        scan.resolving--;
        if (target === undefined) return; // gone meanwhile: its folder's watcher saw that
        const lexical = resolve(dirname(link), target);
        if (real !== undefined && lexical !== real) {
          // The way to the target holds other links (a chain, a linked folder), which may lie
          // in folders nobody watches (hidden ones, outside the root): not kept.
          scan.blind = true;
        } else if (isInsideRoot(this.root, lexical)) {
          // What can change where it leads: the link itself (in a watched folder) and the
          // folders on the way from the root to the target, or to the first one missing (its
          // creation is seen by its parent's watcher).
          this.watchPath(scan, dirname(lexical));
        } else if (lexical.startsWith(this.root + sep)) {
          // Through a hidden name inside the root, whose events are not listened to (a hidden
          // link created there later could make this one lead somewhere visible): not kept.
          scan.blind = true;
        }
        // A link leading outside the root is not listed; what happens out there is not watched.
      },
    };
  }

  /** Watches every folder from the root down to `dir`, stopping at the first one missing. */
  private watchPath(scan: Scan, dir: string): void {
    const prefix = this.root.endsWith(sep) ? this.root : this.root + sep;
    if (!dir.startsWith(prefix)) return; // the root itself: watched before it was read
    let path = this.root;
    for (const segment of dir.slice(prefix.length).split(sep)) {
      path = path.endsWith(sep) ? path + segment : path + sep + segment;
      const error = this.watch(scan, path);
      if (error === 'ENOENT' || error === 'ENOTDIR') return;
      if (error !== undefined) {
        scan.blind = true;
        return;
      }
    }
  }

  /**
   * Sets up a watcher on `dir` for `scan` (once per scan); returns undefined, or the error
   * code when it could not be set up (ENOSPC at the inotify limit, EACCES, ENOENT...).
   */
  private watch(scan: Scan, dir: string): string | undefined {
    if (scan.watchers.has(dir)) return undefined;
    if (this.closed) return 'ECLOSED';
    let watcher: FSWatcher;
    try {
      // Events naming a hidden entry (our own temporary uploads among them) cannot change the
      // catalog, except the events about the watched folder itself, which carry its own name.
      const own = basename(dir);
      watcher = this.watchFolder(dir, (_event, filename) => {
        if (filename === null || !filename.startsWith('.') || filename === own) this.invalidate();
      });
    } catch (error) {
      return (error as NodeJS.ErrnoException | undefined)?.code ?? 'EUNKNOWN';
    }
    watcher.on('error', () => this.invalidate());
    scan.watchers.set(dir, watcher);
    this.watchers.add(watcher);
    return undefined;
  }

  private closeWatchers(scan: Scan): void {
    for (const watcher of scan.watchers.values()) {
      watcher.close();
      this.watchers.delete(watcher);
    }
    scan.watchers.clear();
  }
}
