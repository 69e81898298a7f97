/**
 * access.md: "An unknown name and a wrong password take the same time (within noise) and get
 * the same bytes." Measured on the TCP door with the credential `ioe-server users add` writes
 * (its production scrypt cost, not the tests' cheap one): the medians of many tries of each,
 * made in pairs at the same time, each from its own loopback address so that the rate limit
 * never answers instead. Also: a check never blocks the event loop.
 */
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep } from '../helpers/raw-client.js';
import {
  ask,
  checkNoSecrets,
  runUsers,
  startAccessServer,
  tempDir,
} from '../helpers/access-env.js';

const PASSWORD = 'alice-Timing-Pw-5';
const PAIRS = 8;

const dir = await tempDir(t);
const file = join(dir, 'users');
const added = await runUsers(['add', 'alice', '--rules', 'r=/', '--file', file], `${PASSWORD}\n`);
if (added.code !== 0) throw new Error(`users add failed: ${added.stderr}`);
const text = await readFile(file, 'utf8');
const cost = /^alice:\$scrypt\$(ln=(\d+),r=\d+,p=\d+)\$/m.exec(text);
const env = await startAccessServer(t, { users: text.trimEnd().split('\n') });

t.test('users add wrote a credential of the contract', async (t) => {
  t.ok(cost && Number(cost[2]) >= 15, `users add wrote ${cost?.[1]} (N >= 2^15)`);
});

let address = 0;
/** One AUTH on a fresh connection from a fresh address: the reply and the time it took. */
async function attempt(name: string, password: string): Promise<{ reply: string; ms: number }> {
  address++;
  const c = await env.connect(`127.0.12.${address}`);
  const started = process.hrtime.bigint();
  await c.send(`AUTH,${name},${password}\n`);
  const reply = await c.readLine(10_000);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  c.destroy();
  return { reply, ms };
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

t.test('an unknown name and a wrong password: the same time and the same bytes', async (t) => {
  const wrong: number[] = [];
  const unknown: number[] = [];
  const gaps: number[] = [];
  const replies = new Set<string>();
  const probe = await env.connect('127.0.13.1');
  let probeMs = -1;
  for (let i = 0; i < PAIRS; i++) {
    // One of each at the same time (the server checks two at once), so that whatever else
    // the machine is doing slows both alike; which one is sent first alternates.
    const tries = [attempt('alice', `wrong-${i}`), attempt(`nobody${i}`, `wrong-${i}`)];
    if (i % 2) tries.reverse();
    if (i === 0) {
      // While two checks run, another connection is answered at once: never the event loop.
      await sleep(100);
      const asked = Date.now();
      if ((await ask(probe, 'WHOAMI')) === 'OK WHOAMI anonymous') probeMs = Date.now() - asked;
    }
    const results = await Promise.all(tries);
    const [w, u] = i % 2 ? [results[1], results[0]] : results;
    wrong.push(w.ms);
    unknown.push(u.ms);
    gaps.push(u.ms - w.ms);
    replies.add(w.reply).add(u.reply);
  }
  t.same([...replies], ['ERR AUTH_FAILED wrong name or password'], 'one reply, byte for byte');
  const mw = median(wrong);
  const mu = median(unknown);
  const gap = median(gaps);
  t.comment(
    `medians: wrong password ${mw.toFixed(1)} ms, unknown name ${mu.toFixed(1)} ms, ` +
      `paired gap ${gap.toFixed(1)} ms`,
  );
  t.ok(mw > 20, 'a wrong password costs a real scrypt');
  t.ok(
    probeMs >= 0 && probeMs < Math.min(150, mw / 2),
    `a WHOAMI during two checks took ${probeMs} ms (a check: ${mw.toFixed(0)} ms)`,
  );
  const scale = Math.max(mw, mu);
  t.ok(
    Math.abs(gap) <= 0.2 * scale,
    `the median paired gap (${gap.toFixed(1)} ms) is within 20% of a check`,
  );
  t.ok(
    Math.abs(mw - mu) <= 0.3 * scale,
    `the medians (${mw.toFixed(1)} vs ${mu.toFixed(1)} ms) are within 30%`,
  );
  // The file is usable: the right password is accepted.
  t.equal((await attempt('alice', PASSWORD)).reply, 'OK AUTH alice');
});

t.test('no password appears in any log line', async (t) => {
  checkNoSecrets(t, env.log.lines, [PASSWORD], 'the timing test');
});
