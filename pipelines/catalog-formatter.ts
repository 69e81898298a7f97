/**
 * The catalog formatter: catalog entries in, the LIST reply out: `OK <count>\n`, then one
 * `<type>\t<name>\t<size>\t<mtime>\n` line per entry. Lines are batched into chunks of about
 * 64 KiB so a large listing streams without one string per line or one for the whole.
 */
import through2 from 'through2';
import type { Transform, TransformCallback } from 'node:stream';
import type { CatalogEntry } from '../lib/storage.js';

export interface CatalogFormatterOptions {
  /** The number of entries that will be written; it heads the reply. */
  count: number;
  /** Flush a chunk once it holds this many characters. Default 64 KiB. */
  batchChars?: number;
}

export function formatEntry(entry: CatalogEntry): string {
  return `${entry.type}\t${entry.name}\t${entry.size}\t${entry.mtime.toISOString()}\n`;
}

export function catalogFormatter({
  count,
  batchChars = 65536,
}: CatalogFormatterOptions): Transform {
  let batch = `OK ${count}\n`;
  return through2.obj(
    function (
      this: Transform,
      entry: CatalogEntry,
      _encoding: BufferEncoding,
      callback: TransformCallback,
    ) {
      batch += formatEntry(entry);
      if (batch.length >= batchChars) {
        this.push(Buffer.from(batch));
        batch = '';
      }
      callback();
    },
    function (this: Transform, callback: TransformCallback) {
      if (batch.length > 0) this.push(Buffer.from(batch));
      callback();
    },
  ) as unknown as Transform;
}
