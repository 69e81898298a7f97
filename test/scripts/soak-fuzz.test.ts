/**
 * A short soak and a short live fuzz, each against its own freshly started server, run as the
 * compiled scripts (`npm run build` first; `npm test` does). Each must exit 0 and report no
 * errors. The full-size runs are `npm run soak` and `npm run fuzz`.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { built } from '../helpers/paths.js';

const script = (name: string): string => built(`scripts/${name}.js`);

/** Each run takes 5–10 s; the bound only ends a stuck one (a shared VM's disk can stall). */
const RUN_BOUND_MS = 90_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(name: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [script(name), ...args],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

t.test('the compiled scripts exist (npm run build)', async (t) => {
  t.ok(existsSync(script('soak')), 'dist/scripts/soak.js');
  t.ok(existsSync(script('fuzz')), 'dist/scripts/fuzz.js');
});

t.test('a short soak: 20 clients for 5 s, no errors, RSS and fds flat', async (t) => {
  const result = await run(
    'soak',
    ['--clients', '20', '--seconds', '5', '--seed', '42'],
    RUN_BOUND_MS,
  );
  const summary = `${result.stdout}\n${result.stderr}`;
  t.equal(result.code, 0, 'exit code 0', { summary });
  t.match(result.stdout, /^errors: 0$/m, 'the summary says 0 errors');
  t.match(result.stdout, /^operations: [1-9][0-9]* /m, 'operations ran');
  t.match(result.stdout, /^server RSS: .* — flat/m, 'RSS flat');
  t.match(result.stdout, /^server fds: .* — flat/m, 'fds flat');
  t.match(result.stdout, /^result: PASS$/m);
});

t.test('a short fuzz: 3000 commands, no framing violation, server still up', async (t) => {
  const result = await run('fuzz', ['--count', '3000', '--seed', '42'], RUN_BOUND_MS);
  const summary = `${result.stdout}\n${result.stderr}`;
  t.equal(result.code, 0, 'exit code 0', { summary });
  t.match(result.stdout, /^commands sent: [0-9]{4,} /m, 'at least 3000 commands');
  t.match(result.stdout, /^framing violations: 0$/m, 'no framing violation');
  t.match(result.stdout, /^contract mismatches: 0$/m, 'no contract mismatch');
  t.match(result.stdout, /^server crash: none$/m);
  t.match(result.stdout, /^final LIST on a fresh connection: OK$/m);
  t.match(result.stdout, /^errors: 0$/m, 'the summary says 0 errors');
  t.match(result.stdout, /^result: PASS$/m);
});
