/**
 * The JSON catalog formatter (HTTP `GET /api/list`): catalog entries in,
 * `{"count": N, "entries": [{"type", "name", "size", "mtime"}, …]}` out, streamed in batches
 * like the LIST formatter beside it, so a 100,000-entry listing is never one string.
 */
import type { Transform } from 'node:stream';
import type { CatalogEntry } from '../lib/storage.js';
import { entryFormatter, type CatalogFormatterOptions } from './catalog-formatter.js';

export function formatJsonEntry(entry: CatalogEntry): string {
  return JSON.stringify({
    type: entry.type,
    name: entry.name,
    size: entry.size,
    mtime: entry.mtime.toISOString(),
  });
}

export function catalogJson({ count, batchChars }: CatalogFormatterOptions): Transform {
  return entryFormatter({
    head: `{"count":${count},"entries":[`,
    entry: (entry, index) => (index === 0 ? '' : ',') + formatJsonEntry(entry),
    tail: ']}\n',
    batchChars,
  });
}
