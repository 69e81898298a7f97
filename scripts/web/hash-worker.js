// @ts-check
/**
 * The SHA-256 of one File, computed off the page's thread while the same File uploads.
 *
 * Why here and not crypto.subtle: subtle.digest takes the whole file in memory at once and
 * exists only on https or localhost pages; a library on the LAN is plain http. noble's sha256 is
 * incremental, so the file is read in slices and never held whole, whatever its size.
 *
 * Messages: in, the File; out, { progress } (0..1) now and then, then { sha256 } (lowercase
 * hex) or { error } (a sentence): the page then says "not verified".
 */
import { toHex } from './format.js';

/** Slices of 4 MiB: few enough postMessage calls, small enough memory. */
const SLICE = 4 * 1024 * 1024;

/**
 * The library is loaded with a dynamic import so that a missing or broken copy becomes an
 * { error } message instead of a worker that never answers. (Its path is a variable so the type
 * checker does not look for it in this folder: the server maps it in from node_modules.)
 */
const NOBLE = './noble-hashes/sha2.js';

/**
 * The part of noble's API used here.
 * @typedef {{ create(): { update(bytes: Uint8Array): unknown; digest(): Uint8Array } }} Sha256
 */

/**
 * The part of a dedicated worker's global scope used here (the page's type check has the DOM
 * library, not the worker one).
 * @type {{ onmessage: ((event: MessageEvent<File>) => void) | null, postMessage(message: object): void }}
 */
const scope = /** @type {any} */ (globalThis);

scope.onmessage = async (event) => {
  const file = event.data;
  try {
    /** @type {{ sha256: Sha256 }} */
    const noble = await import(NOBLE);
    const hasher = noble.sha256.create();
    for (let offset = 0; offset < file.size; offset += SLICE) {
      const end = Math.min(offset + SLICE, file.size);
      hasher.update(new Uint8Array(await file.slice(offset, end).arrayBuffer()));
      scope.postMessage({ progress: end / file.size });
    }
    scope.postMessage({ sha256: toHex(hasher.digest()) });
  } catch (error) {
    // A file changed or removed since it was picked, or the library failed to load.
    scope.postMessage({ error: error instanceof Error ? error.message : String(error) });
  }
};
