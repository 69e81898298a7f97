/**
 * Fixtures of the benchmark, under the bench dir (never in the repo): made once, checked by
 * size on the next run and reused. Every file is written under a hidden temporary name and
 * renamed into place, so an interrupted run leaves nothing that looks complete.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** A file of `size` bytes of random blocks, made if missing or of another size. */
export async function ensureFile(path: string, size: number): Promise<boolean> {
  if ((await sizeOf(path)) === size) return false;
  await mkdir(dirname(path), { recursive: true });
  const temp = join(dirname(path), `.tmp-${process.pid}-${Date.now()}`);
  const handle = await open(temp, 'w');
  try {
    const block = randomBytes(MiB);
    for (let written = 0; written < size; written += block.length) {
      block.writeUInt32BE(written / MiB, 0); // no two blocks alike
      await handle.write(block, 0, Math.min(block.length, size - written));
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
  return true;
}

/** Reads a file once so that it is in the page cache. */
export async function warmPageCache(path: string): Promise<void> {
  const stream = createReadStream(path, { highWaterMark: 4 * MiB });
  for await (const chunk of stream) void chunk;
}

/** `count` files of `size` bytes named by `nameOf(i)` in `dir`; made where missing. */
export async function ensureFiles(
  dir: string,
  count: number,
  size: number,
  nameOf: (i: number) => string,
  progress?: (done: number) => void,
): Promise<number> {
  await mkdir(dir, { recursive: true });
  const marker = join(dir, `.complete-${count}-${size}`);
  if ((await sizeOf(marker)) !== undefined) return 0;
  const existing = new Set(await readdir(dir));
  const content = randomBytes(size);
  let made = 0;
  const BATCH = 256;
  for (let i = 0; i < count; i += BATCH) {
    const jobs: Promise<void>[] = [];
    for (let j = i; j < Math.min(count, i + BATCH); j++) {
      const name = nameOf(j);
      const path = join(dir, name);
      if (existing.has(name) && (await sizeOf(path)) === size) continue;
      const body = Buffer.from(content);
      body.writeUInt32BE(j, 0);
      jobs.push(writeFile(path, body));
      made++;
    }
    await Promise.all(jobs);
    progress?.(Math.min(count, i + BATCH));
  }
  await writeFile(marker, '');
  return made;
}

/** Deletes a file if it is there. */
export async function remove(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

export const smallName = (i: number): string => `s-${String(i).padStart(5, '0')}.jpg`;
export const listName = (i: number): string => `p-${String(i).padStart(6, '0')}.jpg`;
