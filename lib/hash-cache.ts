/**
 * SHA-256 of stored files, cached by file version (device, inode, size, mtime, ctime) so a
 * changed file is hashed again. Hashing streams the open file asynchronously, so other
 * connections keep being served; concurrent requests for one version share one pass.
 */
import { createHash } from 'node:crypto';
import type { StoredFile } from './storage.js';

export interface FileHash {
  sha256: string;
  size: number;
}

export class HashCache {
  private readonly done = new Map<string, FileHash>();
  private readonly running = new Map<string, Promise<FileHash>>();

  constructor(private readonly maxEntries = 10_000) {}

  /**
   * The hash of an open file; takes ownership of `file` and closes it. A receipt the store
   * kept (`file.sha256`) is the answer, as one the upload intake remembered would be.
   */
  async hash(file: StoredFile): Promise<FileHash> {
    if (file.sha256 !== undefined) {
      await file.close();
      const kept = { sha256: file.sha256, size: file.size };
      this.remember(file.version, kept);
      return kept;
    }
    const cached = this.done.get(file.version);
    if (cached) {
      await file.close();
      // Refresh its place: the Map's order is the eviction order.
      this.done.delete(file.version);
      this.done.set(file.version, cached);
      return cached;
    }
    const running = this.running.get(file.version);
    if (running) {
      await file.close();
      return running;
    }
    const job = this.compute(file).finally(() => this.running.delete(file.version));
    this.running.set(file.version, job);
    const result = await job;
    this.remember(file.version, result);
    return result;
  }

  /** A version's hash known without reading it: an upload's receipt, taken as it was stored. */
  remember(version: string, result: FileHash): void {
    this.done.delete(version);
    this.done.set(version, result);
    if (this.done.size > this.maxEntries) {
      this.done.delete(this.done.keys().next().value as string);
    }
  }

  private async compute(file: StoredFile): Promise<FileHash> {
    const hash = createHash('sha256');
    let size = 0;
    if (file.size === 0) {
      await file.close();
    } else {
      for await (const chunk of file.stream(0, file.size) as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
      }
    }
    if (size !== file.size) throw new Error('the file changed while it was hashed');
    return { sha256: hash.digest('hex'), size };
  }
}
