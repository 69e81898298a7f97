/**
 * The scenarios of the benchmark: the TCP door's six, and the HTTP door's three (http-read,
 * http-small, http-slow). Each runs the project (peer "ioe") and its baselines interleaved,
 * round by round (warm-up round 0, then measured rounds 1..N), and records one Sample per peer
 * per round. Every loop is bounded and every wait has a deadline.
 *
 * Memory is the kernel's own figure: VmHWM (peak RSS) of the server's process tree, in MiB. A
 * server started for one round reports its VmHWM since it started; a server kept for a whole
 * scenario has its VmHWM reset (clear_refs) at the start of each round.
 *
 * The many-small scenarios drive every server with the same out-of-process load generator
 * (load.ts), and run `wrk` against nginx (and IOE's HTTP door) beside it in the same rounds,
 * so that the run itself shows whether the generator or the server sets the figure.
 *
 * The Python reference (python-reference.py, a thread per connection) speaks the same protocol
 * over TCP, so it runs beside IOE wherever IOE's TCP door is measured with a client that
 * speaks it: read, write, small and slow.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MiB, remove, smallName } from './fixtures.js';
import { runLoad, type LoadKind, type LoadResult } from './load.js';
import {
  RssSampler,
  cpuSeconds,
  memoryOf,
  resetPeak,
  startIoe,
  startNginx,
  startPython,
  startRawNode,
  type Running,
} from './proc.js';
import {
  mbPerSecond,
  median,
  percentile,
  type MetricDef,
  type Sample,
  type ScenarioInfo,
} from './stats.js';
import {
  NGINX_TARGET,
  Payload,
  Wire,
  httpGet,
  ioeHttpTarget,
  ioeList,
  ioeRead,
  ioeWrite,
  rawNamedRead,
  rawUpload,
  type HttpTarget,
  type Throttle,
} from './wire.js';
import { runWrk } from './wrk.js';

export interface BenchConfig {
  quick: boolean;
  rounds: number;
  /** The bench dir: fixtures, logs, scratch. */
  dir: string;
  /** The Node binary that runs the IOE server and raw-node (--node; the bench's own by default). */
  node: string;
  /** That Node can share a port between threads: the `--threads 2` peer runs (ioe-x2). */
  threads: boolean;
  /** python3, for the Python reference (skipped if missing). */
  python?: string;
  nginx?: string;
  /** `wrk`, the cross-check of the many-small load generator (skipped if missing). */
  wrk?: string;
  wrkThreads: number;
  bigBytes: number;
  smallClients: number;
  smallReads: number;
  smallBytes: number;
  /** How long each many-small measurement drives a server (whole seconds, as wrk takes). */
  loadSeconds: number;
  /** Processes of the load generator. */
  loadWorkers: number;
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
  /** A server past this RSS (MiB) makes a memory round stop early, to spare the machine. */
  rssSafetyMib: number;
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
  /** The Python reference's root in the write scenario (its uploads land there). */
  pythonUploads: string;
  logs: string;
  nginxDir: string;
  /** wrk's Lua script, written at run time. */
  wrkScript: string;
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
    pythonUploads: join(config.dir, 'python-uploads'),
    logs: join(config.dir, 'logs'),
    nginxDir: join(config.dir, 'nginx'),
    wrkScript: join(config.dir, 'wrk-rotate.lua'),
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

export type Metrics = Record<string, number>;
export interface Outcome {
  metrics: Metrics;
  notes?: string[];
}

const SUBJECT = 'ioe';

/** raw-node's upload that also hashes SHA-256 on the way: what the protocol's hash costs. */
const RAW_SHA256 = 'raw-node+sha256';
/** raw-node's small mode in two processes: the ceiling of a Node server using both cores. */
const RAW_TWO = 'raw-node-x2';
/** The IOE server with `--threads 2`: its TCP door on both cores. */
export const IOE_TWO = 'ioe-x2';

/** The Python reference: a thread per connection, protocol v1, SHA-256 and fsync on WRITE. */
const PYTHON = 'python';

/** The same peers measured with `wrk` instead of the benchmark's load generator. */
const IOE_WRK = 'ioe/wrk';
const NGINX_WRK = 'nginx/wrk';
/** nginx measured with the benchmark's former client: in the bench process, one event loop. */
const NGINX_IN_PROCESS = 'nginx/in-proc';

/** The server a peer is measured on (`nginx/wrk` → `nginx`). */
function serverOf(peer: string): string {
  return peer === IOE_WRK ? SUBJECT : peer.startsWith('nginx') ? 'nginx' : peer;
}

function peersOf(ctx: Context, baselines: string[], subject = [SUBJECT]): string[] {
  return [...subject, ...baselines].filter(
    (peer) =>
      (serverOf(peer) !== 'nginx' || ctx.config.nginx) &&
      (peer !== PYTHON || ctx.config.python) &&
      (peer !== IOE_TWO || ctx.config.threads) &&
      (!peer.endsWith('/wrk') || ctx.config.wrk),
  );
}

export function errorText(error: unknown): string {
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
export async function interleave(
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
export async function withServers<T>(
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
export async function withServer<T>(
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

export function logFile(ctx: Context, name: string): string {
  return join(ctx.paths.logs, `${name}.log`);
}

/**
 * Runs `body` on a server kept for the whole scenario: resets its VmHWM first, then adds
 * peak_rss_mib (VmHWM after the body: the kernel's peak RSS during this round).
 */
export async function sampled(server: Running, body: () => Promise<Outcome>): Promise<Outcome> {
  const reset = resetPeak(server.pid);
  const outcome = await body();
  outcome.metrics.peak_rss_mib = memoryOf(server.pid).hwmMib;
  if (!reset) (outcome.notes ??= []).push('could not reset VmHWM: peak since the server started');
  return outcome;
}

/** VmRSS of a server just started, once it has settled: its idle RSS (MiB). */
async function idleRss(server: Running): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  return memoryOf(server.pid).rssMib;
}

export async function using<T>(port: number, body: (wire: Wire) => Promise<T>): Promise<T> {
  const wire = await Wire.connect(port);
  try {
    return await body(wire);
  } finally {
    wire.destroy();
  }
}

/** Runs `jobs` with at most `limit` at once; returns their results in order. */
export async function pool<T>(
  count: number,
  limit: number,
  job: (i: number) => Promise<T>,
): Promise<T[]> {
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

/**
 * The server's starter for each server the peers are measured on (see serverOf). The Python
 * reference serves `pythonRoot` (the media by default).
 */
function mediaServers(
  ctx: Context,
  peers: string[],
  raw: string[],
  ioeExtra: string[] = [],
  pythonRoot = ctx.paths.media,
): Record<string, () => Promise<Running>> {
  const { paths: p, config } = ctx;
  const starters: Record<string, () => Promise<Running>> = {};
  for (const server of new Set(peers.map(serverOf))) {
    if (server === 'ioe') {
      starters.ioe = () => startIoe(config.node, p.media, logFile(ctx, 'ioe'), ioeExtra);
    }
    if (server === 'raw-node') {
      starters[server] = () => startRawNode(config.node, raw, logFile(ctx, 'raw'));
    }
    if (server === IOE_TWO) {
      starters[server] = () =>
        startIoe(config.node, p.media, logFile(ctx, 'ioe-x2'), [...ioeExtra, '--threads', '2']);
    }
    if (server === RAW_TWO) {
      starters[server] = () =>
        startRawNode(config.node, [...raw, '--processes', '2'], logFile(ctx, 'raw-x2'));
    }
    if (server === RAW_SHA256) {
      starters[server] = () =>
        startRawNode(config.node, [...raw, '--sha256'], logFile(ctx, 'raw-sha256'));
    }
    if (server === PYTHON) {
      starters[server] = () => startPython(config.python!, pythonRoot, logFile(ctx, 'python'));
    }
    if (server === 'nginx') starters.nginx = () => startNginx(config.nginx!, p.media, p.nginxDir);
  }
  return starters;
}

/** A server started for one round, with its idle RSS measured before any load. */
async function withFreshServer(
  ctx: Context,
  peer: string,
  raw: string[],
  ioeExtra: string[],
  body: (server: Running, idle: number) => Promise<Outcome>,
): Promise<Outcome> {
  return withServer(mediaServers(ctx, [peer], raw, ioeExtra)[serverOf(peer)], async (server) => {
    const idle = await idleRss(server);
    const outcome = await body(server, idle);
    // VmHWM since the server started: the kernel's peak RSS of the process's whole life.
    const memory = memoryOf(server.pid);
    outcome.metrics.peak_rss_mib = memory.hwmMib;
    outcome.metrics.idle_rss_mib = idle;
    if (memory.processes > 1) outcome.metrics.processes = memory.processes;
    return outcome;
  });
}

/** The HTTP door's target for the IOE server, nginx's otherwise. */
function httpTarget(server: Running): HttpTarget {
  return server.name === 'ioe' ? ioeHttpTarget(server.httpPort!) : NGINX_TARGET;
}

/** The port a peer's HTTP requests go to (IOE's HTTP door, or nginx). */
function httpPort(server: Running): number {
  if (server.name !== 'ioe') return server.port;
  if (server.httpPort === undefined) throw new Error('IOE started without its HTTP door');
  return server.httpPort;
}

// ---------------------------------------------------------------------------------------------

const PEAK: MetricDef = { key: 'peak_rss_mib', label: 'peak RSS MiB (VmHWM)', better: 'lower' };
const PEAK_CHART: MetricDef = { ...PEAK, chart: true };
const IDLE: MetricDef = { key: 'idle_rss_mib', label: 'idle RSS MiB', better: 'lower' };

/** One big file, one stream: over IOE's TCP protocol (read) or its HTTP door (http-read). */
function bigRead(http: boolean): Scenario {
  return {
    id: http ? 'http-read' : 'read',
    title: http
      ? 'HTTP GET of one page-cached big file, one stream (raw-node: the same bare TCP stream)'
      : 'READ of one page-cached big file, one stream',
    subject: SUBJECT,
    peers: http ? ['ioe', 'raw-node', 'nginx'] : ['ioe', 'raw-node', PYTHON, 'nginx'],
    metrics: [{ key: 'mb_s', label: 'MB/s', better: 'higher', chart: true }, PEAK],
    async run(ctx) {
      const { paths: p, config } = ctx;
      const peers = peersOf(ctx, http ? ['raw-node', 'nginx'] : ['raw-node', PYTHON, 'nginx']);
      const raw = ['--mode', 'stream', '--file', p.big];
      await withServers(mediaServers(ctx, peers, raw), (servers) =>
        interleave(ctx, this.id, peers, (peer) =>
          sampled(servers[peer], async () => {
            const server = servers[peer];
            const port = http && peer === 'ioe' ? httpPort(server) : server.port;
            const start = performance.now();
            const bytes = await using(port, (wire) => {
              if (peer === 'raw-node') return wire.toEnd(BIG_TIMEOUT_MS);
              if ((peer === 'ioe' && !http) || peer === PYTHON) {
                return ioeRead(wire, p.bigName, BIG_TIMEOUT_MS);
              }
              return httpGet(wire, p.bigName, BIG_TIMEOUT_MS, undefined, httpTarget(server));
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
}

const write: Scenario = {
  id: 'write',
  title: 'WRITE of one big file, one stream, fsync before the reply; server CPU per GB',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', RAW_SHA256, PYTHON],
  metrics: [
    { key: 'mb_s', label: 'MB/s', better: 'higher', chart: true },
    { key: 'cpu_s_gb', label: 'server CPU s/GB (utime+stime)', better: 'lower', chart: true },
    PEAK,
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', RAW_SHA256, PYTHON]);
    const payload = new Payload(randomBytes(MiB), config.bigBytes);
    ctx.log(`  hashing the ${config.bigBytes / MiB} MiB payload once (to check the receipts)`);
    payload.sha256();
    const raw = ['--mode', 'upload', '--dir', p.rawUploads];
    // The Python reference stores into a folder of its own, out of IOE's watched media root.
    const rootOf = (peer: string) => (peer === PYTHON ? p.pythonUploads : p.media);
    await withServers(mediaServers(ctx, peers, raw, [], p.pythonUploads), (servers) =>
      interleave(ctx, this.id, peers, async (peer, round) => {
        const name = `bench-up/w-${round}-${Date.now()}.mp4`;
        const protocol = peer === 'ioe' || peer === PYTHON;
        try {
          return await sampled(servers[peer], async () => {
            const pid = servers[peer].pid;
            const cpuBefore = cpuSeconds(pid);
            const start = performance.now();
            // Both protocol peers' receipts are checked: `OK <size> <sha256 of the payload>`.
            await using(servers[peer].port, (wire) =>
              protocol
                ? ioeWrite(wire, name, payload, BIG_TIMEOUT_MS)
                : rawUpload(wire, payload, BIG_TIMEOUT_MS),
            );
            const ms = performance.now() - start;
            const cpu = cpuSeconds(pid) - cpuBefore;
            return {
              metrics: {
                mb_s: mbPerSecond(payload.size, ms),
                seconds: ms / 1000,
                cpu_s: cpu,
                cpu_s_gb: cpu / (payload.size / 1e9),
              },
            };
          });
        } finally {
          if (protocol) await remove(join(rootOf(peer), name));
        }
      }),
    );
  },
};

/** Metrics of one many-small measurement (those it could not measure left out). */
function loadMetrics(r: LoadResult): Metrics {
  const all: Metrics = {
    ops_s: r.opsPerSecond,
    p50_ms: r.p50Ms,
    p99_ms: r.p99Ms,
    max_ms: r.maxMs,
    first_max_ms: r.firstMaxMs,
    errors: r.errors,
    completed: r.completed,
    connect_ms: r.connectMs,
  };
  return Object.fromEntries(Object.entries(all).filter(([, value]) => Number.isFinite(value)));
}

/** The names of the many-small files: client c reads smallNames[c * reads …]. */
function smallNames(config: BenchConfig): string[] {
  return Array.from({ length: config.smallClients * config.smallReads }, (_, i) =>
    join('small', smallName(i)),
  );
}

/**
 * The former many-small client, kept to show what it measured: every connection a `Wire` in
 * the bench process's one event loop, for the same clients, files and duration.
 */
async function inProcessLoad(ctx: Context, port: number, target: HttpTarget): Promise<LoadResult> {
  const { config } = ctx;
  const timeout = 60_000;
  const latencies: number[] = [];
  const notes = new Set<string>();
  let errors = 0;
  const wires: Wire[] = [];
  const start = performance.now();
  const deadline = start + config.loadSeconds * 1000;
  const client = async (c: number) => {
    let wire: Wire;
    try {
      wire = await Wire.connect(port);
    } catch (error) {
      errors++;
      notes.add(errorText(error));
      return;
    }
    wires.push(wire);
    for (let i = 0; performance.now() < deadline; i = (i + 1) % config.smallReads) {
      const name = join('small', smallName(c * config.smallReads + i));
      const t = performance.now();
      try {
        const got = await httpGet(wire, name, timeout, undefined, target);
        if (got !== config.smallBytes) throw new Error(`short file ${name}: ${got}`);
        const done = performance.now();
        if (done <= deadline) latencies.push(done - t);
      } catch (error) {
        errors++;
        notes.add(errorText(error));
        if (wire.closed) return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: config.smallClients }, (_, c) => client(c)));
  } finally {
    for (const wire of wires) wire.destroy();
  }
  return {
    completed: latencies.length,
    errors,
    opsPerSecond: latencies.length / config.loadSeconds,
    seconds: config.loadSeconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length ? latencies.reduce((a, b) => Math.max(a, b), 0) : NaN,
    connectMs: NaN,
    firstMaxMs: NaN,
    reconnects: 0,
    notes: [...notes].slice(0, 5),
  };
}

/** One many-small measurement of one peer: the load generator, wrk, or the in-process client. */
async function smallRound(
  ctx: Context,
  peer: string,
  server: Running,
  http: boolean,
): Promise<Outcome> {
  const { config, paths: p } = ctx;
  const names = smallNames(config);
  if (peer.endsWith('/wrk')) {
    const target = httpTarget(server);
    const r = await runWrk({
      wrk: config.wrk!,
      port: httpPort(server),
      host: '127.0.0.1',
      names,
      prefix: target.prefix,
      connections: config.smallClients,
      threads: config.wrkThreads,
      seconds: config.loadSeconds,
      scriptPath: p.wrkScript,
    });
    return {
      metrics: {
        ops_s: (r.requests - r.statusErrors) / r.seconds,
        p50_ms: r.p50Ms,
        p99_ms: r.p99Ms,
        max_ms: r.maxMs,
        errors: r.errors,
        completed: r.requests,
      },
    };
  }
  let result: LoadResult;
  if (peer === NGINX_IN_PROCESS) {
    result = await inProcessLoad(ctx, server.port, NGINX_TARGET);
  } else {
    // raw-node's small mode and the Python reference answer READ as IOE does.
    const kind: LoadKind = http || serverOf(peer) === 'nginx' ? 'http' : 'ioe';
    const target = httpTarget(server);
    result = await runLoad({
      port: kind === 'http' ? httpPort(server) : server.port,
      host: '127.0.0.1',
      kind,
      names,
      clients: config.smallClients,
      perClient: config.smallReads,
      size: config.smallBytes,
      pathPrefix: target.prefix,
      hostHeader: target.host === '127.0.0.1' ? undefined : target.host,
      workers: config.loadWorkers,
      durationMs: config.loadSeconds * 1000,
      timeoutMs: 60_000,
    });
  }
  return { metrics: loadMetrics(result), notes: result.notes };
}

const SMALL_METRICS: MetricDef[] = [
  { key: 'ops_s', label: 'ops/s', better: 'higher', chart: true },
  { key: 'p50_ms', label: 'p50 latency ms', better: 'lower' },
  { key: 'p99_ms', label: 'p99 latency ms', better: 'lower', chart: true },
  { key: 'first_max_ms', label: 'slowest first reply ms', better: 'lower' },
  { key: 'errors', label: 'errors', better: 'lower' },
  PEAK,
];

/**
 * Many small files: clients × distinct 64 KiB files, one keep-alive connection per client and
 * one request in flight on it; each client cycles through its own files for loadSeconds. Over
 * IOE's TCP protocol (small) or its HTTP door (http-small).
 */
function manySmall(http: boolean): Scenario {
  const baselines = http
    ? ['nginx', IOE_WRK, NGINX_WRK]
    : [IOE_TWO, 'raw-node', RAW_TWO, PYTHON, 'nginx', NGINX_WRK, NGINX_IN_PROCESS];
  return {
    id: http ? 'http-small' : 'small',
    title: http
      ? 'many small HTTP GETs: keep-alive clients cycling over distinct 64 KiB files; wrk beside the load generator'
      : 'many small READs: clients cycling over distinct 64 KiB files, one connection each; wrk beside the load generator',
    subject: SUBJECT,
    peers: [SUBJECT, ...baselines],
    metrics: SMALL_METRICS,
    async run(ctx) {
      const { paths: p } = ctx;
      const peers = peersOf(ctx, baselines);
      const raw = ['--mode', 'small', '--root', p.media];
      await withServers(mediaServers(ctx, peers, raw), (servers) =>
        interleave(ctx, this.id, peers, (peer) => {
          const server = servers[serverOf(peer)];
          // The cross-checks run on the same server: its memory is the main peer's row.
          if (peer.includes('/')) return smallRound(ctx, peer, server, http);
          return sampled(server, () => smallRound(ctx, peer, server, http));
        }),
      );
    },
  };
}

const list: Scenario = {
  id: 'list',
  title: 'LIST of a flat folder of small .jpg files: first call after a restart, then repeated',
  subject: SUBJECT,
  peers: ['ioe'],
  metrics: [
    { key: 'first_ms', label: 'first call ms', better: 'lower', chart: true },
    { key: 'repeated_ms', label: 'repeated call ms (median)', better: 'lower', chart: true },
    { key: 'rss_mib', label: 'RSS after MiB', better: 'lower' },
    PEAK,
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const timeout = 120_000;
    await interleave(ctx, this.id, [SUBJECT], () =>
      withServer(
        () => startIoe(config.node, p.listRoot, logFile(ctx, 'ioe-list')),
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
                rss_mib: memoryOf(server.pid).rssMib,
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
  server?: Running,
  http = false,
): Promise<number> {
  if ((peer === 'ioe' && !http) || peer === PYTHON) return ioeRead(wire, name, timeoutMs, throttle);
  if (peer === 'ioe' || peer === 'nginx') {
    return httpGet(wire, name, timeoutMs, throttle, server ? httpTarget(server) : NGINX_TARGET);
  }
  return rawNamedRead(wire, name, size, timeoutMs, throttle);
}

/** Slow readers of one file, over IOE's TCP protocol (slow) or its HTTP door (http-slow). */
function slowReaders(http: boolean): Scenario {
  return {
    id: http ? 'http-slow' : 'slow',
    title: `memory: slow ${http ? 'HTTP ' : ''}readers of one file (64 KiB then a 10 ms pause, socket paused between)`,
    subject: SUBJECT,
    peers: http ? ['ioe', 'nginx'] : ['ioe', 'raw-node', PYTHON, 'nginx'],
    metrics: [
      PEAK_CHART,
      IDLE,
      { key: 'received_mb', label: 'MB received (all clients)', better: 'higher' },
      { key: 'errors', label: 'errors', better: 'lower' },
    ],
    async run(ctx) {
      const { paths: p, config } = ctx;
      const peers = peersOf(ctx, http ? ['nginx'] : ['raw-node', PYTHON, 'nginx']);
      const raw = ['--mode', 'named', '--root', p.media];
      await interleave(ctx, this.id, peers, (peer) =>
        withFreshServer(ctx, peer, raw, [], async (server) => {
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
            if (rss > config.rssSafetyMib && !stopped) {
              aborted = true;
              notes.add(`stopped early: server RSS ${Math.round(rss)} MiB over the safety limit`);
              stopAll();
            }
          });
          const cap = setTimeout(stopAll, config.slowSeconds * 1000);
          const port = http && peer === 'ioe' ? httpPort(server) : server.port;
          try {
            await Promise.all(
              Array.from({ length: config.slowClients }, async () => {
                try {
                  const wire = await Wire.connect(port, {
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
                    server,
                    http,
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
            sampler.stop();
          }
          const received = wires.reduce((sum, wire) => sum + wire.received, 0);
          const metrics: Metrics = { received_mb: received / 1e6, completed, errors };
          if (aborted) metrics.aborted = 1;
          return { metrics, notes: [...notes].slice(0, 5) };
        }),
      );
    },
  };
}

const conns: Scenario = {
  id: 'conns',
  title: 'connections: many held open while some of them download a file at full speed',
  subject: SUBJECT,
  peers: ['ioe', 'raw-node', 'nginx'],
  metrics: [
    PEAK_CHART,
    { key: 'errors', label: 'errors', better: 'lower' },
    { key: 'transfer_mb_s', label: 'downloads MB/s (all)', better: 'higher' },
    IDLE,
  ],
  async run(ctx) {
    const { paths: p, config } = ctx;
    const peers = peersOf(ctx, ['raw-node', 'nginx']);
    const raw = ['--mode', 'named', '--root', p.media];
    // The IOE default (512 open connections) would refuse the rest with ERR BUSY.
    const ioeExtra = ['--max-connections', String(Math.max(512, config.connHeld + 100))];
    const timeout = 600_000;
    await interleave(ctx, this.id, peers, (peer) =>
      withFreshServer(ctx, peer, raw, ioeExtra, async (server) => {
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
          return {
            metrics: {
              errors,
              transfer_mb_s: mbPerSecond(moved(sizes), ms),
              held: alive.filter((wire) => !wire.closed).length,
            },
            notes: [...notes].slice(0, 5),
          };
        } finally {
          for (const wire of wires) wire?.destroy();
        }
      }),
    );
  },
};

function moved(sizes: number[]): number {
  return sizes.reduce((sum, n) => sum + n, 0);
}

export const SCENARIOS: Scenario[] = [
  bigRead(false),
  write,
  manySmall(false),
  list,
  slowReaders(false),
  conns,
  bigRead(true),
  manySmall(true),
  slowReaders(true),
];

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
    big: has('read', 'http-read'),
    slow: has('slow', 'http-slow'),
    conn: has('conns'),
    small: has('small', 'http-small', 'conns'),
    list: has('list'),
  };
}
