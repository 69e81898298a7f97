/**
 * The six scenarios of the benchmark. Each runs the project (peer "ioe") and its baselines
 * interleaved, round by round (warm-up round 0, then measured rounds 1..N), and records one
 * Sample per peer per round. Every loop is bounded and every wait has a deadline.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MiB, remove, smallName } from './fixtures.js';
import { RssSampler, rssMb, startIoe, startNginx, startRawNode, type Running } from './proc.js';
import { mbPerSecond, median, percentile, type Sample, type ScenarioInfo } from './stats.js';
import {
  Payload,
  Wire,
  httpGet,
  ioeList,
  ioeRead,
  ioeWrite,
  rawNamedRead,
  rawUpload,
  type Throttle,
} from './wire.js';

export interface BenchConfig {
  quick: boolean;
  rounds: number;
  /** The bench dir: fixtures, logs, scratch. */
  dir: string;
  nginx?: string;
  bigBytes: number;
  smallClients: number;
  smallReads: number;
  smallBytes: number;
  listCount: number;
  listRepeats: number;
  slowClients: number;
  slowBytes: number;
  slowSeconds: number;
  slowThrottle: Throttle;
  connHeld: number;
  connActive: number;
  /** Size of the file each active connection downloads in the connections scenario. */
  connBytes: number;
  /** A server past this RSS (MB) makes a memory round stop early, to spare the machine. */
  rssSafetyMb: number;
}

export interface Paths {
  media: string;
  big: string;
  bigName: string;
  slowName: string;
  connName: string;
  smallDir: string;
  listRoot: string;
  rawUploads: string;
  logs: string;
  nginxDir: string;
}

export function paths(config: BenchConfig): Paths {
  const mb = (bytes: number) => `${Math.round(bytes / MiB)}m`;
  const media = join(config.dir, 'media');
  const bigName = `big-${mb(config.bigBytes)}.mp4`;
  return {
    media,
    big: join(media, bigName),
    bigName,
    slowName: `slow-${mb(config.slowBytes)}.mp4`,
    connName: `conn-${mb(config.connBytes)}.mp4`,
    smallDir: join(media, 'small'),
    listRoot: join(config.dir, `list-${config.listCount}`),
    rawUploads: join(config.dir, 'raw-uploads'),
    logs: join(config.dir, 'logs'),
    nginxDir: join(config.dir, 'nginx'),
  };
}

export interface Context {
  config: BenchConfig;
  paths: Paths;
  samples: Sample[];
  /** Progress, on stderr. */
  log(message: string): void;
}

export interface Scenario extends ScenarioInfo {
  run(ctx: Context): Promise<void>;
}

type Metrics = Record<string, number>;
interface Outcome {
  metrics: Metrics;
  notes?: string[];
}

const SUBJECT = 'ioe';

/** raw-node's upload that also hashes SHA-256 on the way: what the protocol's hash costs. */
const RAW_SHA256 = 'raw-node+sha256';

function peersOf(ctx: Context, baselines: string[]): string[] {
  return [SUBJECT, ...baselines.filter((peer) => peer !== 'nginx' || ctx.config.nginx)];
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function describe(metrics: Metrics): string {
  return Object.entries(metrics)
    .map(([key, value]) => `${key}=${Number.isInteger(value) ? value : value.toFixed(2)}`)
    .join(' ');
}

/**
 * Rounds 0..N, peers in the same order in every round (A B A B …). A round that throws is
 * recorded with errors=1 and its message, and the run goes on.
 */
async function interleave(
  ctx: Context,
  scenario: string,
  peers: string[],
  run: (peer: string, round: number) => Promise<Outcome>,
): Promise<void> {
  for (let round = 0; round <= ctx.config.rounds; round++) {
    for (const peer of peers) {
      let outcome: Outcome;
      try {
        outcome = await run(peer, round);
      } catch (error) {
        outcome = { metrics: { errors: 1 }, notes: [errorText(error)] };
      }
      const sample: Sample = { scenario, peer, round, warmup: round === 0, ...outcome };
      ctx.samples.push(sample);
      const tag = round === 0 ? 'warm-up' : `round ${round}/${ctx.config.rounds}`;
      const notes = outcome.notes?.length ? `  [${outcome.notes.slice(0, 3).join('; ')}]` : '';
      ctx.log(`  ${scenario} ${tag} ${peer}: ${describe(outcome.metrics)}${notes}`);
    }
  }
}

/** Starts one server per peer for a whole scenario, and stops them all at the end. */
async function withServers<T>(
  starters: Record<string, () => Promise<Running>>,
  body: (servers: Record<string, Running>) => Promise<T>,
): Promise<T> {
  const servers: Record<string, Running> = {};
  try {
    for (const [peer, start] of Object.entries(starters)) servers[peer] = await start();
    return await body(servers);
  } finally {
    for (const server of Object.values(servers)) await server.stop();
  }
}

/** Starts a server for one round only. */
async function withServer<T>(
  start: () => Promise<Running>,
  body: (server: Running) => Promise<T>,
): Promise<T> {
  const server = await start();
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

function logFile(ctx: Context, name: string): string {
  return join(ctx.paths.logs, `${name}.log`);
}

/** Runs `body` while sampling the server's RSS every 50 ms; adds peak_rss_mb. */
async function sampled(server: Running, body: () => Promise<Outcome>): Promise<Outcome> {
  const sampler = new RssSampler(server.pid, 50);
  try {
    const outcome = await body();
    const rss = sampler.stop();
    outcome.metrics.peak_rss_mb = rss.peak;
    return outcome;
  } finally {
    sampler.stop();
  }
}

async function using<T>(port: number, body: (wire: Wire) => Promise<T>): Promise<T> {
  const wire = await Wire.connect(port);
  try {
    return await body(wire);
  } finally {
    wire.destroy();
  }
}

/** Runs `jobs` with at most `limit` at once; returns their results in order. */
async function pool<T>(count: number, limit: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await job(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

const BIG_TIMEOUT_MS = 300_000;

/** The server's starter for each peer that serves the media root. */
function mediaServers(
  ctx: Context,
  peers: string[],
  raw: string[],
  ioeExtra: string[] = [],
): Record<string, () => Promise<Running>> {
  const { paths: p, config } = ctx;
  const starters: Record<string, () => Promise<Running>> = {};
  for (const peer of peers) {
    if (peer === 'ioe') starters.ioe = () => startIoe(p.media, logFile(ctx, 'ioe'), ioeExtra);
    if (peer === 'raw-node') starters['raw-node'] = () => startRawNode(raw, logFile(ctx, 'raw'));
    if (peer === RAW_SHA256) {
      starters[peer] = () => startRawNode([...raw, '--sha256'], logFile(ctx, 'raw-sha256'));
    }
    if (peer === 'nginx') starters.nginx = () => startNginx(config.nginx!, p.media, p.nginxDir);
  }
  return starters;
}

// ---------------------------------------------------------------------------------------------

const read: Scenario = {
  id: 'read',
  title: 'READ of one page-cached big file, one stream',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', 'nginx'],
  metrics: [
    { key: 'mb_s', label: 'MB/s', better: 'higher', chart: true },
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', 'nginx']);
    const raw = ['--mode', 'stream', '--file', p.big];
    await withServers(mediaServers(ctx, peers, raw), (servers) =>
      interleave(ctx, this.id, peers, (peer) =>
        sampled(servers[peer], async () => {
          const start = performance.now();
          const bytes = await using(servers[peer].port, (wire) => {
            if (peer === 'ioe') return ioeRead(wire, p.bigName, BIG_TIMEOUT_MS);
            if (peer === 'nginx') return httpGet(wire, p.bigName, BIG_TIMEOUT_MS);
            return wire.toEnd(BIG_TIMEOUT_MS);
          });
          const ms = performance.now() - start;
          if (bytes !== config.bigBytes)
            throw new Error(`got ${bytes} of ${config.bigBytes} bytes`);
          return { metrics: { mb_s: mbPerSecond(bytes, ms), seconds: ms / 1000 } };
        }),
      ),
    );
  },
};

const write: Scenario = {
  id: 'write',
  title: 'WRITE of one big file, one stream, fsync before the reply',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', RAW_SHA256],
  metrics: [
    { key: 'mb_s', label: 'MB/s', better: 'higher', chart: true },
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', RAW_SHA256]);
    const payload = new Payload(randomBytes(MiB), config.bigBytes);
    ctx.log(`  hashing the ${config.bigBytes / MiB} MiB payload once (to check IOE's replies)`);
    payload.sha256();
    const raw = ['--mode', 'upload', '--dir', p.rawUploads];
    await withServers(mediaServers(ctx, peers, raw), (servers) =>
      interleave(ctx, this.id, peers, async (peer, round) => {
        const name = `bench-up/w-${round}-${Date.now()}.mp4`;
        try {
          return await sampled(servers[peer], async () => {
            const start = performance.now();
            await using(servers[peer].port, (wire) =>
              peer === 'ioe'
                ? ioeWrite(wire, name, payload, BIG_TIMEOUT_MS)
                : rawUpload(wire, payload, BIG_TIMEOUT_MS),
            );
            const ms = performance.now() - start;
            return { metrics: { mb_s: mbPerSecond(payload.size, ms), seconds: ms / 1000 } };
          });
        } finally {
          if (peer === 'ioe') await remove(join(p.media, name));
        }
      }),
    );
  },
};

const small: Scenario = {
  id: 'small',
  title: 'many small READs: clients × reads of distinct 64 KiB files, one connection each',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', 'nginx'],
  metrics: [
    { key: 'ops_s', label: 'ops/s', better: 'higher', chart: true },
    { key: 'p50_ms', label: 'p50 latency ms', better: 'lower' },
    { key: 'p99_ms', label: 'p99 latency ms', better: 'lower', chart: true },
    { key: 'errors', label: 'errors', better: 'lower' },
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', 'nginx']);
    const raw = ['--mode', 'named', '--root', p.media];
    const timeout = 60_000;
    await withServers(mediaServers(ctx, peers, raw), (servers) =>
      interleave(ctx, this.id, peers, (peer) =>
        sampled(servers[peer], async () => {
          const latencies: number[] = [];
          const notes = new Set<string>();
          let errors = 0;
          const client = async (c: number) => {
            let wire: Wire;
            try {
              wire = await Wire.connect(servers[peer].port);
            } catch (error) {
              errors += config.smallReads;
              notes.add(errorText(error));
              return;
            }
            try {
              for (let i = 0; i < config.smallReads; i++) {
                const name = `small/${smallName(c * config.smallReads + i)}`;
                const t = performance.now();
                try {
                  let got: number;
                  if (peer === 'ioe') got = await ioeRead(wire, name, timeout);
                  else if (peer === 'nginx') got = await httpGet(wire, name, timeout);
                  else got = await rawNamedRead(wire, name, config.smallBytes, timeout);
                  if (got !== config.smallBytes) throw new Error(`short file ${name}: ${got}`);
                  latencies.push(performance.now() - t);
                } catch (error) {
                  errors++;
                  notes.add(errorText(error));
                  if (wire.closed) {
                    errors += config.smallReads - i - 1;
                    return;
                  }
                }
              }
            } finally {
              wire.destroy();
            }
          };
          const start = performance.now();
          await Promise.all(Array.from({ length: config.smallClients }, (_, c) => client(c)));
          const ms = performance.now() - start;
          return {
            metrics: {
              ops_s: latencies.length / (ms / 1000),
              p50_ms: percentile(latencies, 50),
              p99_ms: percentile(latencies, 99),
              errors,
            },
            notes: [...notes].slice(0, 5),
          };
        }),
      ),
    );
  },
};

const list: Scenario = {
  id: 'list',
  title: 'LIST of a flat folder of small .jpg files: first call after a restart, then repeated',
  subject: SUBJECT,
  peers: ['ioe'],
  metrics: [
    { key: 'first_ms', label: 'first call ms', better: 'lower', chart: true },
    { key: 'repeated_ms', label: 'repeated call ms (median)', better: 'lower', chart: true },
    { key: 'rss_mb', label: 'RSS after MB', better: 'lower' },
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const timeout = 120_000;
    await interleave(ctx, this.id, [SUBJECT], () =>
      withServer(
        () => startIoe(p.listRoot, logFile(ctx, 'ioe-list')),
        (server) =>
          sampled(server, () =>
            using(server.port, async (wire) => {
              const notes: string[] = [];
              const check = (count: number) => {
                if (count !== config.listCount)
                  notes.push(`listed ${count}, expected ${config.listCount}`);
              };
              let start = performance.now();
              check((await ioeList(wire, timeout)).count);
              const first = performance.now() - start;
              const repeated: number[] = [];
              for (let i = 0; i < config.listRepeats; i++) {
                start = performance.now();
                check((await ioeList(wire, timeout)).count);
                repeated.push(performance.now() - start);
              }
              const metrics: Metrics = {
                first_ms: first,
                repeated_ms: median(repeated),
                repeated_min_ms: Math.min(...repeated),
                rss_mb: rssMb(server.pid),
              };
              if (notes.length) metrics.errors = notes.length;
              return { metrics, notes };
            }),
          ),
      ),
    );
  },
};

/** The client side of one download on an open connection, for any peer. */
function download(
  peer: string,
  wire: Wire,
  name: string,
  size: number,
  timeoutMs: number,
  throttle?: Throttle,
): Promise<number> {
  if (peer === 'ioe') return ioeRead(wire, name, timeoutMs, throttle);
  if (peer === 'nginx') return httpGet(wire, name, timeoutMs, throttle);
  return rawNamedRead(wire, name, size, timeoutMs, throttle);
}

const slow: Scenario = {
  id: 'slow',
  title: 'memory: slow readers of one file (64 KiB then a 10 ms pause, socket paused between)',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', 'nginx'],
  metrics: [
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower', chart: true },
    { key: 'start_rss_mb', label: 'RSS at start MB', better: 'lower' },
    { key: 'received_mb', label: 'MB received (all clients)', better: 'higher' },
    { key: 'errors', label: 'errors', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', 'nginx']);
    const raw = ['--mode', 'named', '--root', p.media];
    await interleave(ctx, this.id, peers, (peer) =>
      withServer(mediaServers(ctx, [peer], raw)[peer], async (server) => {
        const sampler = new RssSampler(server.pid, 50);
        const wires: Wire[] = [];
        const notes = new Set<string>();
        let stopped = false;
        let aborted = false;
        let errors = 0;
        let completed = 0;
        const stopAll = () => {
          stopped = true;
          for (const wire of wires) wire.destroy();
        };
        sampler.onSample((rss) => {
          if (rss > config.rssSafetyMb && !stopped) {
            aborted = true;
            notes.add(`stopped early: server RSS ${Math.round(rss)} MB over the safety limit`);
            stopAll();
          }
        });
        const cap = setTimeout(stopAll, config.slowSeconds * 1000);
        try {
          await Promise.all(
            Array.from({ length: config.slowClients }, async () => {
              try {
                const wire = await Wire.connect(server.port, {
                  receiveBytes: config.slowThrottle.every,
                });
                wires.push(wire);
                if (stopped) return wire.destroy();
                const timeout = (config.slowSeconds + 60) * 1000;
                await download(
                  peer,
                  wire,
                  p.slowName,
                  config.slowBytes,
                  timeout,
                  config.slowThrottle,
                );
                completed++;
                wire.destroy();
              } catch (error) {
                if (stopped) return;
                errors++;
                notes.add(errorText(error));
              }
            }),
          );
        } finally {
          clearTimeout(cap);
          stopAll();
        }
        const rss = sampler.stop();
        const received = wires.reduce((sum, wire) => sum + wire.received, 0);
        const metrics: Metrics = {
          peak_rss_mb: rss.peak,
          start_rss_mb: rss.start,
          received_mb: received / 1e6,
          completed,
          errors,
        };
        if (aborted) metrics.aborted = 1;
        return { metrics, notes: [...notes].slice(0, 5) };
      }),
    );
  },
};

const conns: Scenario = {
  id: 'conns',
  title: 'connections: many held open while some of them download a file at full speed',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', 'nginx'],
  metrics: [
    { key: 'peak_rss_mb', label: 'peak RSS MB', better: 'lower', chart: true },
    { key: 'errors', label: 'errors', better: 'lower' },
    { key: 'transfer_mb_s', label: 'downloads MB/s (all)', better: 'higher' },
    { key: 'start_rss_mb', label: 'RSS at start MB', better: 'lower' },
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', 'nginx']);
    const raw = ['--mode', 'named', '--root', p.media];
    // The IOE default (512 open connections) would refuse the rest with ERR BUSY.
    const ioeExtra = ['--max-connections', String(Math.max(512, config.connHeld + 100))];
    const timeout = 600_000;
    await interleave(ctx, this.id, peers, (peer) =>
      withServer(mediaServers(ctx, [peer], raw, ioeExtra)[peer], async (server) => {
        const sampler = new RssSampler(server.pid, 50);
        const notes = new Set<string>();
        let errors = 0;
        const fail = (error: unknown) => {
          errors++;
          notes.add(errorText(error));
        };
        const wires = await pool(config.connHeld, 100, async () => {
          try {
            return await Wire.connect(server.port);
          } catch (error) {
            fail(error);
            return undefined;
          }
        });
        try {
          await new Promise((resolve) => setTimeout(resolve, 200));
          const alive: Wire[] = [];
          for (const wire of wires) {
            if (!wire) continue;
            if (wire.closed || wire.buffered > 0) {
              fail(new Error('closed or answered before any request (e.g. ERR BUSY)'));
              wire.destroy();
            } else alive.push(wire);
          }
          const active = alive.slice(0, config.connActive);
          const idle = alive.slice(config.connActive);
          const start = performance.now();
          const sizes = await Promise.all(
            active.map((wire) =>
              download(peer, wire, p.connName, config.connBytes, timeout).catch((error) => {
                fail(error);
                return 0;
              }),
            ),
          );
          const ms = performance.now() - start;
          // Every idle connection must still be served.
          await pool(idle.length, 200, async (i) => {
            const name = `small/${smallName(i % (config.smallClients * config.smallReads))}`;
            await download(peer, idle[i], name, config.smallBytes, 60_000).catch(fail);
          });
          const rss = sampler.stop();
          const moved = sizes.reduce((sum, n) => sum + n, 0);
          return {
            metrics: {
              peak_rss_mb: rss.peak,
              start_rss_mb: rss.start,
              errors,
              transfer_mb_s: mbPerSecond(moved, ms),
              held: alive.filter((wire) => !wire.closed).length,
            },
            notes: [...notes].slice(0, 5),
          };
        } finally {
          sampler.stop();
          for (const wire of wires) wire?.destroy();
        }
      }),
    );
  },
};

export const SCENARIOS: Scenario[] = [read, write, small, list, slow, conns];

/** Which fixtures a set of scenarios needs. */
export function fixturesNeeded(ids: string[]): {
  big: boolean;
  slow: boolean;
  conn: boolean;
  small: boolean;
  list: boolean;
} {
  const has = (...wanted: string[]) => wanted.some((id) => ids.includes(id));
  return {
    big: has('read'),
    slow: has('slow'),
    conn: has('conns'),
    small: has('small', 'conns'),
    list: has('list'),
  };
}
