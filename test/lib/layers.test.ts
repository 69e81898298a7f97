/**
 * The folders are layers and imports only point down (ARCHITECTURE.md): lib/ imports nothing
 * from pipelines/ or scripts/, pipelines/ nothing from scripts/. Reads every import.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from '../helpers/paths.js';

const top = ROOT;
const below: Record<string, string[]> = {
  lib: ['lib'],
  pipelines: ['lib', 'pipelines'],
  scripts: ['lib', 'pipelines', 'scripts'],
};

function sources(folder: string): string[] {
  return readdirSync(join(top, folder), { recursive: true, encoding: 'utf8' })
    .filter((file) => /\.(ts|js)$/.test(file))
    .map((file) => join(top, folder, file));
}

/** Relative import targets of a file, as folders of the project (the first path segment). */
function importedFolders(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const targets = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map(
    (match) => match[1],
  );
  return targets.map((target) => relative(top, resolve(dirname(file), target)).split('/')[0]);
}

for (const [folder, allowed] of Object.entries(below)) {
  t.test(`${folder}/ imports only from ${allowed.join(', ')}`, async (t) => {
    const files = sources(folder);
    t.ok(files.length > 0, `${folder}/ has sources`);
    for (const file of files) {
      for (const target of importedFolders(file)) {
        t.ok(allowed.includes(target), `${relative(top, file)} imports from ${target}/`);
      }
    }
  });
}

t.test('the check sees an upward import when there is one', async (t) => {
  // A guard against a regex that matches nothing: the server script does import pipelines/.
  t.ok(importedFolders(join(top, 'scripts/server.ts')).includes('pipelines'));
});
