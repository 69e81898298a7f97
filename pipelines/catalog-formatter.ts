/**
 * The catalog formatter: catalog entries in, the LIST reply out: `OK <count>\n`, then one
 * `<type>\t<name>\t<size>\t<mtime>\n` line per entry. Text is batched into chunks of about
 * 64 KiB so a large listing streams without one string per line or one for the whole.
 * `entryFormatter` is that batching for any text format: the HTTP door's JSON and M3U
 * listings are formatters beside this one.
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

export interface EntryFormatterOptions {
  /** Text before the first entry. */
  head: string;
  /** One entry's text; `index` counts from 0 (for separators). */
  entry: (entry: CatalogEntry, index: number) => string;
  /** Text after the last entry. */
  tail?: string;
  batchChars?: number;
}

/** Entries in, `head`, each entry's text and `tail` out, in chunks of about `batchChars`. */
export function entryFormatter({
  head,
  entry: format,
  tail = '',
  batchChars = 65536,
}: EntryFormatterOptions): Transform {
  let batch = head;
  let index = 0;
  return through2.obj(
    function (
      this: Transform,
      entry: CatalogEntry,
      _encoding: BufferEncoding,
      callback: TransformCallback,
    ) {
      batch += format(entry, index++);
      if (batch.length >= batchChars) {
        this.push(Buffer.from(batch));
        batch = '';
      }
      callback();
    },
    function (this: Transform, callback: TransformCallback) {
      batch += tail;
      if (batch.length > 0) this.push(Buffer.from(batch));
      callback();
    },
  ) as unknown as Transform;
}

export function formatEntry(entry: CatalogEntry): string {
  return `${entry.type}\t${entry.name}\t${entry.size}\t${entry.mtime.toISOString()}\n`;
}

export function catalogFormatter({ count, batchChars }: CatalogFormatterOptions): Transform {
  return entryFormatter({ head: `OK ${count}\n`, entry: formatEntry, batchChars });
}
