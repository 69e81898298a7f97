/**
 * The playlist formatter (HTTP `GET /api/list?format=m3u`): catalog entries in, an extended
 * M3U playlist out, one absolute `/media/…` URL per entry, for VLC, mpv and the like. The
 * title is the name; names hold no line breaks (control characters are never valid).
 */
import type { Transform } from 'node:stream';
import { mediaHref } from '../lib/http-paths.js';
import { entryFormatter } from './catalog-formatter.js';

export interface CatalogM3uOptions {
  /** Scheme and authority the URLs start with: `http://127.0.0.1:10080`. */
  origin: string;
  batchChars?: number;
}

export function catalogM3u({ origin, batchChars }: CatalogM3uOptions): Transform {
  return entryFormatter({
    head: '#EXTM3U\n',
    entry: (entry) => `#EXTINF:-1,${entry.name}\n${origin}${mediaHref(entry.name)}\n`,
    batchChars,
  });
}
