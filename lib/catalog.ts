/**
 * The catalog scan: walks the media root and returns every visible media file (contract:
 * "Valid names"). Hidden entries, in-progress uploads, other extensions, non-regular files and
 * links whose real path leaves the root are skipped. Directory links are followed when they
 * stay inside the root, once per real directory on the current path, so a loop cannot hang it.
 */
import { readdir, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Stats } from 'node:fs';
import { MAX_NAME_BYTES, isValidName, mediaTypeOf } from './media-names.js';
import { sortByName, type CatalogEntry } from './storage.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const STAT_BATCH = 256;

/** True when `real` is `root` itself or inside it, and no segment below the root is hidden. */
export function isInsideRoot(root: string, real: string): boolean {
  if (real === root) return true;
  const prefix = root.endsWith(sep) ? root : root + sep;
  if (!real.startsWith(prefix)) return false; // also rejects /srv/media2 against /srv/media
  return !real
    .slice(prefix.length)
    .split(sep)
    .some((segment) => segment.startsWith('.'));
}

/**
 * Running out of descriptors or memory is a fault, not a missing file: the scan fails (the
 * client gets INTERNAL) rather than answer a catalog with files silently left out.
 */
export function rethrowFault(error: unknown): void {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM') throw error;
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (error) {
    rethrowFault(error);
    return undefined;
  }
}

/** Scans `rootReal` (already a real path) and returns the catalog sorted by name. */
export async function scanCatalog(rootReal: string): Promise<CatalogEntry[]> {
  const found: CatalogEntry[] = [];

  async function addFile(path: string, name: string, known?: Stats): Promise<void> {
    const stats = known ?? (await statOrUndefined(path));
    const type = mediaTypeOf(name);
    if (stats?.isFile() && type !== undefined) {
      found.push({ type, name, size: stats.size, mtime: stats.mtime });
    }
  }

  async function walk(dir: string, prefix: string, ancestors: Set<string>): Promise<void> {
    let dirents;
    try {
      dirents = await readdir(dir, { withFileTypes: true, encoding: 'buffer' });
    } catch (error) {
      rethrowFault(error);
      return; // vanished or unreadable: its files are simply not listed
    }
    const files: (() => Promise<void>)[] = [];
    const folders: [string, string][] = [];
    for (const dirent of dirents) {
      const raw = dirent.name as unknown as Buffer;
      if (raw[0] === 0x2e) continue; // hidden, and our own temporary uploads
      let segment: string;
      try {
        segment = utf8.decode(raw);
      } catch {
        continue; // a name that is not UTF-8 can never be requested
      }
      const name = prefix + segment;
      const path = join(dir, segment);
      if (dirent.isDirectory()) {
        folders.push([path, name]);
      } else if (dirent.isFile()) {
        if (isValidName(name)) files.push(() => addFile(path, name));
      } else if (dirent.isSymbolicLink()) {
        files.push(async () => {
          const real = await realpath(path).catch((error: unknown) => rethrowFault(error));
          if (real === undefined || !isInsideRoot(rootReal, real)) return;
          const stats = await statOrUndefined(real);
          if (stats?.isDirectory()) folders.push([real, name]);
          else if (isValidName(name)) await addFile(real, name, stats);
        });
      }
      // FIFOs, sockets and devices are never part of the catalog.
    }
    for (let i = 0; i < files.length; i += STAT_BATCH) {
      await Promise.all(files.slice(i, i + STAT_BATCH).map((job) => job()));
    }
    for (const [path, name] of folders) {
      if (Buffer.byteLength(name) >= MAX_NAME_BYTES) continue; // nothing below can be a valid name
      const stats = await statOrUndefined(path);
      if (!stats) continue;
      const id = `${stats.dev}:${stats.ino}`;
      if (ancestors.has(id)) continue; // a link back up the tree
      ancestors.add(id);
      await walk(path, name + '/', ancestors);
      ancestors.delete(id);
    }
  }

  const rootStats = await stat(rootReal);
  await walk(rootReal, '', new Set([`${rootStats.dev}:${rootStats.ino}`]));
  return sortByName(found);
}
