/**
 * The web page's files, read once at start and served from memory: they are small, and a page
 * must not change under a browser halfway through loading it. Each has a strong ETag of its
 * bytes, so a reload costs a 304.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { extname, join } from 'node:path';

export interface WebAsset {
  body: Buffer;
  contentType: string;
  etag: string;
}

/** URL path → asset. `/` is the page itself. */
export type WebAssets = ReadonlyMap<string, WebAsset>;

const ASSET_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

async function asset(path: string): Promise<WebAsset> {
  const body = await readFile(path);
  return {
    body,
    contentType: ASSET_TYPES[extname(path)] ?? 'application/octet-stream',
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
  };
}

export interface WebAssetSources {
  /** A folder holding `index.html` (served at `/`) and the files it loads (at `/assets/…`). */
  page: string;
  /** More files under `/assets/`: URL path below `/assets/` → file (vendored libraries). */
  extra?: Readonly<Record<string, string>>;
}

export async function loadWebAssets({ page, extra = {} }: WebAssetSources): Promise<WebAssets> {
  const assets = new Map<string, WebAsset>();
  for (const entry of await readdir(page, { withFileTypes: true })) {
    if (!entry.isFile() || entry.name.startsWith('.')) continue;
    const loaded = await asset(join(page, entry.name));
    assets.set(entry.name === 'index.html' ? '/' : `/assets/${entry.name}`, loaded);
  }
  if (!assets.has('/')) throw new Error(`${page} has no index.html`);
  for (const [path, file] of Object.entries(extra)) {
    assets.set(`/assets/${path}`, await asset(file));
  }
  return assets;
}
