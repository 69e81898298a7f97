/**
 * Where the repository and its build are, for tests that start a built script or read a source
 * file. Tests run compiled, from dist/test/ (ARCHITECTURE.md, "Tests"): a path relative to a
 * test file's own location would point into dist/, so these start from the package root.
 */
import { join } from 'node:path';
import { packageRoot } from '../../scripts/bench/proc.js';

/** The repository: package.json, the sources, scripts/web, scripts/ceph-rgw.sh. */
export const ROOT = packageRoot();

/** A file of the build (`npm run build`), e.g. `built('scripts/server.js')`. */
export function built(path: string): string {
  return join(ROOT, 'dist', path);
}
