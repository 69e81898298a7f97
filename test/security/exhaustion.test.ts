/**
 * Resource exhaustion (SECURITY.md, "Hostile clients" and "Faults"): downloads aborted
 * mid-stream leak no file descriptors, and a server out of descriptors keeps running, sheds
 * load and recovers. Runs the executable (needs `npm run build`) to watch its /proc/PID/fd.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import fs from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { MediaServer } from '../../pipelines/server.js';
import { connect, ProtocolError } from '../../pipelines/client.js';
import { listeningPort } from '../helpers/listening.js';
import { built } from '../helpers/paths.js';

const SERVER = built('scripts/server.js');
const WAIT_MS = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `command` (a shell line ending in the server's arguments) until it says "listening". */
function startServer(
  t: Test,
  shellLine: string,
): Promise<{ child: ChildProcess; port: number; exited: () => boolean; stderr: () => string }> {
  // Without tap's NODE_OPTIONS (its process-info hook would load into the server too).
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn('bash', ['-c', shellLine], { stdio: ['pipe', 'pipe', 'pipe'], env });
  let exited = false;
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    // Node's own warnings only; the log lines (pino JSON) are not needed.
    for (const line of chunk.toString().split('\n')) if (!line.startsWith('{')) stderr += line;
  });
  child.once('exit', () => (exited = true));
  t.teardown(() => {
    if (!exited) child.kill('SIGKILL');
  });
  return listeningPort(child, WAIT_MS).then((port) => ({
    child,
    port,
    exited: () => exited,
    stderr: () => stderr,
  }));
}

function media(t: Test): string {
  const base = mkdtempSync(join(tmpdir(), 'ioe-exhaust-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'media');
  mkdirSync(root);
  return root;
}

const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

type Outcome = 'served' | 'refused' | 'wrong' | 'dropped' | 'stalled';

/**
 * Connects, sends `command`, and settles with what happened within `ms`: `judge` says when the
 * bytes received so far are a whole right answer ('served') or a wrong one; any ERR line is
 * 'refused', a close or reset before an answer 'dropped'. The connection stays open until
 * `close()`.
 */
function attempt(
  port: number,
  command: string,
  ms: number,
  judge: (received: Buffer) => 'served' | 'wrong' | undefined,
): Promise<{ outcome: Outcome; reply: string; close: () => void; open: () => boolean }> {
  return new Promise((resolve) => {
    const socket = netConnect({ port, host: '127.0.0.1' });
    let received = Buffer.alloc(0);
    let settled = false;
    let closed = false;
    const close = (): void => void socket.destroy();
    const open = (): boolean => !closed;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ outcome, reply: received.subarray(0, 100).toString('latin1'), close, open });
    };
    const timer = setTimeout(() => settle('stalled'), ms);
    socket.on('connect', () => socket.write(command + '\n'));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (/^ERR [^\n]*\n/.test(received.toString('latin1'))) settle('refused');
      const verdict = judge(received);
      if (verdict) settle(verdict);
    });
    socket.on('error', () => settle('dropped'));
    socket.on('close', () => {
      closed = true;
      settle('dropped');
    });
  });
}

/** A LIST reply for a root holding only a.mp3 (4 bytes). */
function judgeList(received: Buffer): 'served' | 'wrong' | undefined {
  const text = received.toString();
  if (/^OK 1\nmusic\ta\.mp3\t4\t[^\n]*\n$/.test(text)) return 'served';
  const header = /^(OK[^\n]*)\n/.exec(text);
  if (header && header[1] !== 'OK 1') return 'wrong'; // e.g. "OK 0": the library looks empty
  return undefined;
}

t.test('1,000 downloads aborted mid-stream leak no descriptors', async (t) => {
  t.ok(existsSync(SERVER), `the executable is built (${SERVER}); run npm run build`);
  const root = media(t);
  const size = 8 * 1024 * 1024;
  writeFileSync(join(root, 'big.mp4'), randomBytes(size));
  const server = await startServer(
    t,
    `exec "${process.execPath}" "${SERVER}" --port 0 --http-port 0 --log-level warn --root "${root}"`,
  );
  const pid = server.child.pid!;
  await sleep(300);
  const baseline = fdCount(pid);

  const total = 1000;
  const parallel = 50;
  let started = 0;
  let peak = 0;
  const partial = 64 * 1024;
  const worker = async (): Promise<void> => {
    while (started < total) {
      started++;
      const { outcome, reply, close } = await attempt(
        server.port,
        'READ,big.mp4',
        WAIT_MS,
        (received) =>
          received.length >= partial && received.toString('latin1').startsWith(`OK ${size}\n`)
            ? 'served'
            : undefined,
      );
      if (outcome !== 'served') throw new Error(`a download was ${outcome}: ${reply}`);
      if (started % 100 === 0) peak = Math.max(peak, fdCount(pid));
      close(); // abort mid-stream: most of the 8 MiB is still unsent
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  t.ok(peak > baseline, `descriptors were in use during the downloads (peak ${peak})`);

  const deadline = Date.now() + WAIT_MS;
  let now = fdCount(pid);
  while (now > baseline && Date.now() < deadline) {
    await sleep(100);
    now = fdCount(pid);
  }
  t.ok(now <= baseline, `the descriptors are back to ${baseline} (now ${now})`);
  t.notMatch(
    server.stderr(),
    /Closing file descriptor \d+ on garbage collection/,
    'no descriptor was left for the garbage collector to close',
  );
  t.notOk(server.exited(), 'the server is still running');
  const after = await attempt(server.port, 'LIST', WAIT_MS, (received) =>
    received.toString().startsWith('OK 1\n') ? 'served' : undefined,
  );
  after.close();
  t.equal(after.outcome, 'served', 'and serves a new client');
});

t.test('out of descriptors (ulimit -n 64): no crash, sheds load, recovers', async (t) => {
  t.ok(existsSync(SERVER), `the executable is built (${SERVER}); run npm run build`);
  const root = media(t);
  writeFileSync(join(root, 'a.mp3'), 'tune');
  const server = await startServer(
    t,
    `ulimit -n 64 && exec "${process.execPath}" "${SERVER}" --port 0 --http-port 0 --log-level warn --root "${root}"`,
  );

  // 10 clients are served first and stay connected; then 190 more arrive at once. Everyone
  // holds the connection until every one of them has an outcome.
  const first = await Promise.all(
    Array.from({ length: 10 }, () => attempt(server.port, 'LIST', 5000, judgeList)),
  );
  t.same(
    first.map((result) => result.outcome),
    Array(10).fill('served'),
    'the first 10 clients are served',
  );
  const burst = await Promise.all(
    Array.from({ length: 190 }, () => attempt(server.port, 'LIST', 5000, judgeList)),
  );
  const results = [...first, ...burst];
  const counts = { served: 0, refused: 0, wrong: 0, dropped: 0, stalled: 0 };
  for (const result of burst) counts[result.outcome]++;
  t.comment(`outcomes of the 190: ${JSON.stringify(counts)}`);
  t.ok(counts.served < 190, 'not all of them are served: the server ran out of descriptors');
  t.equal(counts.wrong, 0, 'no client gets a wrong answer (such as an empty library)');
  t.equal(counts.stalled, 0, 'every client is served, refused or dropped: none is left hanging');
  t.notOk(server.exited(), 'the server did not crash');
  t.ok(
    first.every((result) => result.open()),
    'the clients connected before the burst are still connected',
  );
  for (const result of results) result.close();

  // Once they are gone, a new client is served normally.
  const deadline = Date.now() + WAIT_MS;
  let outcome = 'stalled';
  while (Date.now() < deadline) {
    const next = await attempt(server.port, 'LIST', 2000, judgeList);
    next.close();
    outcome = next.outcome;
    if (outcome === 'served') break;
    await sleep(100);
  }
  t.equal(outcome, 'served', 'after they leave, a new client gets LIST OK');
  t.notOk(server.exited(), 'the server is still running');
});

t.test('a catalog scan out of descriptors fails instead of listing an empty library', async (t) => {
  const root = media(t);
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'a.mp3'), 'tune');
  writeFileSync(join(root, 'sub', 'b.mp3'), 'song');
  const server = await MediaServer.create({ root, port: 0, idleTimeoutSeconds: 0 });
  const { port } = await server.listen();
  const client = await connect({ port });
  t.teardown(async () => {
    client.destroy();
    await server.forceQuit();
  });
  t.same(
    (await client.list()).map((entry) => entry.name),
    ['a.mp3', 'sub/b.mp3'],
  );

  // Deterministic descriptor exhaustion: the scan's fs calls fail with EMFILE, one at a time.
  // The scan reads folders with fs/promises opendir and stats with the callback fs.stat.
  const emfileError = (): Error =>
    Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE', errno: -24 });
  const promised = fsp as unknown as Record<string, (...args: unknown[]) => unknown>;
  const callbacks = fs as unknown as Record<string, (...args: unknown[]) => unknown>;
  const realRoot = realpathSync(root);
  const cases: [
    Record<string, (...args: unknown[]) => unknown>,
    string,
    string,
    (path: unknown) => boolean,
  ][] = [
    [promised, 'opendir', 'the root', (path) => path === realRoot],
    [promised, 'opendir', 'a sub folder', (path) => path === join(realRoot, 'sub')],
    [callbacks, 'stat', 'a file', (path) => path === join(realRoot, 'a.mp3')],
  ];
  for (const [module, call, what, failsFor] of cases) {
    const original = module[call];
    module[call] = (path, ...rest) => {
      if (!failsFor(path)) return original(path, ...rest);
      if (module === promised) return Promise.reject(emfileError());
      const callback = rest.at(-1) as (error: Error) => void;
      process.nextTick(() => callback(emfileError()));
    };
    syncBuiltinESMExports();
    // A change on disk, so that the LIST cannot be answered from the catalog cache.
    utimesSync(join(root, 'sub', 'b.mp3'), new Date(), new Date());
    let code: string;
    try {
      code = await client.list().then(
        (entries) => `OK ${entries.length}`,
        (error: unknown) => (error instanceof ProtocolError ? error.code : String(error)),
      );
    } finally {
      module[call] = original;
      syncBuiltinESMExports();
    }
    t.equal(code, 'INTERNAL', `LIST when ${call}() of ${what} is out of descriptors is an error`);
  }
  t.equal((await client.list()).length, 2, 'the connection stays usable and LIST recovers');
});
