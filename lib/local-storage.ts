/**
 * Storage on a local directory. Uploads go to hidden temporary files in the root
 * (`.ioe-upload-*.tmp`), are fsynced, then published with a primitive that cannot clobber
 * (a hard link, then unlinking the temporary name) or, with `overwrite`, an atomic rename.
 * Reads open the file once and check what the open descriptor really is, so a link swapped
 * after the check cannot lead outside the root.
 */
import { closeSync, constants, fstatSync, openSync, readlinkSync, type BigIntStats } from 'node:fs';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  stat,
  statfs,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { ProtocolError, shuttingDown } from './errors.js';
import { isInsideRoot, rethrowFault } from './catalog.js';
import { CatalogCache, type CatalogCacheOptions } from './catalog-cache.js';
import { FileRangeStream, readRangeNow } from './file-range-stream.js';
import { ReadPolicy, unexplainedLimitFor } from './read-policy.js';
import { UnderWay } from './under-way.js';
import { WriteBehind } from './write-behind.js';
import { LocalReservations, LocalTally, type Reservations, type Tally } from './shared-counts.js';
import type { CatalogEntry, Storage, StoredFile, Upload, UploadOptions } from './storage.js';

/** Chunk size for a stream read without a pacer (HASH): 1 MiB, large enough for fast reads. */
export const READ_CHUNK_BYTES = 1024 * 1024;
const TEMP_PREFIX = '.ioe-upload-';
const DIRECT_FLAGS =
  constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
const TEMP_SUFFIX = '.tmp';

export interface LocalStorageOptions {
  /** Let an upload replace an existing file (atomically). */
  overwrite?: boolean;
  /** The LIST cache (lib/catalog-cache.ts): on by default. */
  catalog?: CatalogCacheOptions;
  /**
   * The names of uploads in progress (LOCKED) and the bytes they reserve (NO_SPACE); shared
   * ones when several threads serve one root (`--threads`). Default: this storage's own.
   */
  locks?: Tally;
  reservations?: Reservations;
  /**
   * Delete the temporary files a crash left (default). A thread that joins a running server
   * must not: they are the other threads' uploads in progress.
   */
  removeLeftovers?: boolean;
  /**
   * An upload's file is synced in the background after every this many bytes, so that the
   * fsync before the reply has little left to write (lib/write-behind.ts); 0 turns it off.
   */
  writeBehindBytes?: number;
}

/** 16 MiB: 8, 16 and 64 all took a 1 GiB WRITE from 0.84× to 1.15–1.19× raw-node. */
export const WRITE_BEHIND_BYTES = 16 * 1024 * 1024;

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function notFound(): ProtocolError {
  return new ProtocolError('NOT_FOUND', 'no such media file');
}

/** Maps a write-side fault to the contract: a full disk is NO_SPACE, anything else a fault. */
export function uploadFault(error: unknown): Error {
  const code = errno(error);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ProtocolError('NO_SPACE', 'the disk is full');
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * A file's version: device, inode, size, mtime and ctime. A file replaced by a copy with the same
 * size and mtime (`cp -p`, `rsync -t`) still gets a new version: a new inode, or a new ctime.
 */
function fileVersion(stats: BigIntStats): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
}

async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export class LocalStorage implements Storage {
  readonly root: string;
  private readonly overwrite: boolean;
  /** Names with an upload in progress, each under `upload:` and the name. */
  private readonly locks: Tally;
  /** Bytes promised to uploads in progress, so that concurrent uploads cannot overcommit. */
  private readonly reservations: Reservations;
  private readonly uploads = new Set<Upload>();
  /** beginUpload calls under way, for close() to wait for. */
  private readonly beginning = new UnderWay<Upload>();
  /** Set by close(): an upload that gets this far is refused and leaves nothing behind. */
  private closed = false;
  /** The last catalog scan, kept until a publish or a change on disk (inotify) drops it. */
  readonly catalog: CatalogCache;
  /** Small reads in place while the page cache answers them (read-policy.ts). */
  private readonly readPolicy: ReadPolicy;
  /** Bytes between an upload's background syncs. */
  private readonly writeBehindBytes: number;

  private constructor(root: string, fsType: bigint, options: LocalStorageOptions) {
    this.root = root;
    this.readPolicy = new ReadPolicy({ unexplainedLimit: unexplainedLimitFor(fsType) });
    this.overwrite = options.overwrite ?? false;
    this.catalog = new CatalogCache(root, options.catalog);
    this.locks = options.locks ?? new LocalTally();
    this.reservations = options.reservations ?? new LocalReservations();
    this.writeBehindBytes = options.writeBehindBytes ?? WRITE_BEHIND_BYTES;
  }

  /** Creates the root if missing and deletes temporary files left by a crash. */
  static async open(root: string, options: LocalStorageOptions = {}): Promise<LocalStorage> {
    await mkdir(root, { recursive: true });
    const real = await realpath(root);
    const storage = new LocalStorage(real, (await statfs(real, { bigint: true })).type, options);
    if (options.removeLeftovers ?? true) await storage.removeLeftovers();
    return storage;
  }

  private async removeLeftovers(): Promise<void> {
    for (const name of await readdir(this.root)) {
      if (name.startsWith(TEMP_PREFIX) && name.endsWith(TEMP_SUFFIX)) {
        await unlink(join(this.root, name)).catch(() => undefined);
      }
    }
  }

  list(): Promise<CatalogEntry[]> {
    return this.catalog.list();
  }

  async open(name: string): Promise<StoredFile> {
    const path = join(this.root, name);
    const fd = this.openDirect(path) ?? (await this.openThroughLink(path));
    try {
      const stats = fstatSync(fd, { bigint: true });
      if (!stats.isFile()) throw notFound();
      // What the descriptor really is, whatever the path went through (a folder link that
      // leads out, or through a hidden folder) or became since.
      if (!isInsideRoot(this.root, readlinkSync(`/proc/self/fd/${fd}`))) throw notFound();
      // The descriptor went to a stream, was read at once, or was closed: no longer ours.
      let released = false;
      let version: string | undefined;
      return {
        size: Number(stats.size),
        // Made when asked (HASH, the HTTP door): a TCP READ never asks, and making both
        // took 0.5 µs a READ.
        get mtime() {
          return stats.mtime;
        },
        get version() {
          return (version ??= fileVersion(stats));
        },
        stream: (offset, length, options = {}) => {
          released = true; // the stream owns the descriptor now, and closes it
          return new FileRangeStream(fd, {
            offset,
            length,
            chunkBytes: options.chunkBytes ?? (() => READ_CHUNK_BYTES),
            buffers: options.buffers,
            policy: this.readPolicy,
            headroom: options.headroom,
          });
        },
        // A small range the page cache answers is read at once, with no stream: making and
        // ending one cost a READ of a 64 KiB file about 7 % of its main-thread instructions.
        readNow: (offset, length, options = {}) => {
          if (released) throw new Error('the file was already streamed, read or closed');
          if (!this.readPolicy.inPlace(length)) return undefined;
          released = true; // closed below, whatever the read does
          try {
            return this.readPolicy.time(() => readRangeNow(fd, offset, length, options));
          } finally {
            closeSync(fd);
          }
        },
        close: async () => {
          if (!released) closeSync(fd);
          released = true;
        },
      };
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /**
   * Opens a plain file on this thread: an open that refuses a final symlink, then (in `open`)
   * fstat and the descriptor's real path. On cached metadata these are microseconds each,
   * where a hop to libuv's thread pool for each cost more than the syscall (a small READ used
   * to make seven). O_NONBLOCK: a FIFO with a media name opens at once (and is refused as not a
   * regular file); O_NOCTTY: a terminal device never becomes ours. Returns undefined when the
   * name ends in a symlink, which openThroughLink resolves the careful way.
   */
  private openDirect(path: string): number | undefined {
    try {
      return openSync(path, DIRECT_FLAGS);
    } catch (error) {
      if (errno(error) === 'ELOOP') return undefined; // a link: the careful path
      rethrowFault(error); // out of descriptors is a fault, not a missing file
      throw notFound();
    }
  }

  /** A name whose last segment is a symlink: followed only if its real path is a media file. */
  private async openThroughLink(path: string): Promise<number> {
    let real: string;
    try {
      real = await realpath(path);
    } catch (error) {
      rethrowFault(error);
      throw notFound();
    }
    if (!isInsideRoot(this.root, real)) throw notFound();
    const target = await stat(real).catch(() => undefined);
    if (!target?.isFile()) throw notFound();
    try {
      return openSync(real, DIRECT_FLAGS);
    } catch (error) {
      rethrowFault(error);
      throw notFound();
    }
  }

  /** EXISTS when the name is taken (unless replacing), is a folder, or a parent is a file. */
  private async checkTarget(path: string, replace: boolean): Promise<void> {
    let stats;
    try {
      stats = await lstat(path);
    } catch (error) {
      if (errno(error) === 'ENOTDIR')
        throw new ProtocolError('EXISTS', 'a parent folder is a file');
      if (errno(error) !== 'ENOENT') throw error;
      return this.checkParents(dirname(path));
    }
    if (!replace) throw new ProtocolError('EXISTS', 'a file of that name exists');
    const target = await stat(path).catch(() => stats);
    if (target.isDirectory()) throw new ProtocolError('EXISTS', 'a folder of that name exists');
    await this.checkParents(dirname(path));
  }

  /** The deepest existing parent must be a folder inside the root. */
  private async checkParents(dir: string): Promise<void> {
    for (let current = dir; ; current = dirname(current)) {
      let real: string;
      try {
        real = await realpath(current);
      } catch (error) {
        if (errno(error) === 'ENOENT') continue;
        if (errno(error) === 'ENOTDIR')
          throw new ProtocolError('EXISTS', 'a parent folder is a file');
        throw error;
      }
      if (!isInsideRoot(this.root, real)) {
        throw new ProtocolError('BAD_NAME', 'the name leads outside the media root');
      }
      if (!(await stat(real)).isDirectory()) {
        throw new ProtocolError('EXISTS', 'a parent folder is a file');
      }
      return;
    }
  }

  beginUpload(name: string, size: number, options: UploadOptions = {}): Promise<Upload> {
    return this.beginning.add(this.startUpload(name, size, options));
  }

  private async startUpload(name: string, size: number, options: UploadOptions): Promise<Upload> {
    const path = join(this.root, name);
    // --overwrite replaces, unless this upload asked to create only (HTTP If-None-Match: *).
    const replace = this.overwrite && !options.createOnly;
    const lock = `upload:${name}`;
    if (!this.locks.add(lock, 1)) {
      throw new ProtocolError('LOCKED', 'an upload of that name is in progress');
    }
    let locked = true;
    let reserved = 0;
    let handle: FileHandle | undefined;
    const tempPath = join(
      this.root,
      `${TEMP_PREFIX}${randomBytes(12).toString('hex')}${TEMP_SUFFIX}`,
    );
    const release = (): void => {
      if (locked) this.locks.remove(lock);
      locked = false;
      this.reservations.release(reserved);
      reserved = 0;
    };
    try {
      await this.checkTarget(path, replace);
      const fs = await statfs(this.root);
      if (!this.reservations.reserve(size, fs.bavail * fs.bsize)) {
        throw new ProtocolError('NO_SPACE', 'not enough free disk space for the upload');
      }
      reserved = size;
      if (this.closed) throw shuttingDown();
      handle = await open(tempPath, 'wx', 0o644);
    } catch (error) {
      release();
      throw error;
    }
    const file = handle;
    let done = false;
    let aborting: Promise<void> | undefined;

    // Every caller (the sink, a FORCEQUIT) waits for the same deletion.
    const abort = (): Promise<void> => {
      if (done && !aborting) return Promise.resolve();
      done = true;
      // The upload stays in `uploads` until its file is gone, so that close() (QUIT after a
      // FORCEQUIT began, or the reverse) waits for this deletion instead of missing it.
      aborting ??= (async () => {
        await file.close().catch(() => undefined);
        await unlink(tempPath).catch(() => undefined);
        release();
        this.uploads.delete(upload);
      })();
      return aborting;
    };

    const writeBehind = new WriteBehind(file, this.writeBehindBytes);
    const upload: Upload = {
      write: async (chunks) => {
        try {
          let total = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
          const bytes = total;
          let pending = chunks;
          while (total > 0) {
            const { bytesWritten } = await file.writev(pending);
            total -= bytesWritten;
            if (total > 0) pending = [Buffer.concat(pending).subarray(bytesWritten)];
          }
          writeBehind.written(bytes);
        } catch (error) {
          throw uploadFault(error);
        }
      },
      publish: async () => {
        let replaced: boolean;
        try {
          await writeBehind.settled();
          await file.sync();
          replaced = await this.publish(tempPath, path, replace);
        } catch (error) {
          await abort();
          throw error instanceof ProtocolError ? error : uploadFault(error);
        }
        if (aborting) throw new Error('the upload was aborted while it was published');
        done = true;
        this.uploads.delete(upload);
        release();
        // The descriptor is still the published inode: its version is exact even if another
        // upload replaces the name (--overwrite) a moment later. Linking changed its ctime.
        try {
          const stats = await file.stat({ bigint: true });
          return { version: fileVersion(stats), mtime: stats.mtime, replaced };
        } finally {
          await file.close().catch(() => undefined);
        }
      },
      abort,
    };
    if (this.closed) {
      // close() came while the file was being created: it waits for this deletion.
      await abort();
      throw shuttingDown();
    }
    this.uploads.add(upload);
    return upload;
  }

  /**
   * Moves a complete, fsynced temporary file into place and makes that durable. Returns
   * whether an existing file was replaced (only ever when `replace`).
   */
  private async publish(tempPath: string, path: string, replace: boolean): Promise<boolean> {
    try {
      return await this.movePublished(tempPath, path, replace);
    } finally {
      // Before the WRITE's OK: a LIST on any connection after it must see the file. inotify
      // would tell the cache too, but later.
      this.catalog.invalidate();
    }
  }

  private async movePublished(tempPath: string, path: string, replace: boolean): Promise<boolean> {
    const parent = dirname(path);
    const created = await mkdir(parent, { recursive: true });
    await this.checkParents(parent); // a folder swapped for a link meanwhile cannot lead out
    let replaced = false;
    if (replace) {
      // Only for the answer (HTTP 200 rather than 201): rename replaces atomically either way.
      replaced = await lstat(path).then(
        () => true,
        () => false,
      );
      await rename(tempPath, path).catch((error) => {
        if (errno(error) === 'EISDIR' || errno(error) === 'ENOTEMPTY') {
          throw new ProtocolError('EXISTS', 'a folder of that name exists');
        }
        throw error;
      });
    } else {
      try {
        await link(tempPath, path);
        await unlink(tempPath);
      } catch (error) {
        if (errno(error) === 'EEXIST')
          throw new ProtocolError('EXISTS', 'a file of that name exists');
        if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP'].includes(errno(error) ?? '')) throw error;
        // A filesystem without hard links (FAT on a USB disk): check, then rename. Our own lock
        // keeps other uploads of this name out; only an outside process could slip in between.
        if (
          await lstat(path).then(
            () => true,
            () => false,
          )
        ) {
          throw new ProtocolError('EXISTS', 'a file of that name exists');
        }
        await rename(tempPath, path);
      }
    }
    // fsync every folder whose entries changed: the new name's, and those mkdir created.
    const top = created === undefined ? parent : dirname(created);
    for (let dir = parent; ; dir = dirname(dir)) {
      await fsyncDirectory(dir);
      if (dir === top || dir === this.root) break;
    }
    return replaced;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.catalog.close(); // its watchers; LIST still works, without the cache
    await this.beginning.settled();
    await Promise.all([...this.uploads].map((upload) => upload.abort()));
  }
}
