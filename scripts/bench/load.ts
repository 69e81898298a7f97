/**
 * The many-small load generator, parent side: forks `workers` processes of loadgen.ts, gives
 * each its share of the clients, waits until every connection is open, starts them together
 * and merges what they measured. Running outside the bench process, on raw sockets with one
 * request in flight per connection, it drives nginx at least as fast as `wrk` does on the same
 * files and connections (checked in every run: the many-small scenarios run wrk beside it).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { percentile } from './stats.js';
import type { LoadKind, WorkerJob, WorkerResult } from './loadgen.js';

export type { LoadKind } from './loadgen.js';

/**
 * The worker script: the compiled loadgen.js next to this module. Under the tests' TypeScript
 * loader this module is scripts/bench/load.ts, and the worker is still the compiled one (in
 * dist/, which `npm test` builds first): a fork that compiled TypeScript would take a second.
 */
const WORKER = fileURLToPath(
  import.meta.url.endsWith('.ts')
    ? new URL('../../dist/scripts/bench/loadgen.js', import.meta.url)
    : new URL('./loadgen.js', import.meta.url),
);

export interface LoadOptions {
  port: number;
  host: string;
  kind: LoadKind;
  /** Client c's names are names[c * perClient … (c + 1) * perClient - 1], all distinct. */
  names: readonly string[];
  clients: number;
  perClient: number;
  size: number;
  /** HTTP: the path before each name ('/' for nginx, '/media/' for IOE's HTTP door). */
  pathPrefix?: string;
  /** HTTP: the Host header (default host:port). */
  hostHeader?: string;
  /** Processes; clients are dealt out among them. */
  workers: number;
  /** Send each client's requests once (count), or cycle through them for this long. */
  durationMs?: number;
  timeoutMs: number;
}

export interface LoadResult {
  /** Replies received whole, with status 200 and the expected size. */
  completed: number;
  errors: number;
  /** completed / seconds. */
  opsPerSecond: number;
  /** From the first request to the last reply (count mode), or the duration. */
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** From the start until the last connection was open (the clock runs meanwhile), ms. */
  connectMs: number;
  /** The slowest first reply of a connection, ms: how long a new client may wait. */
  firstMaxMs: number;
  reconnects: number;
  notes: string[];
}

/** Percent-encodes each segment of a name for an HTTP path. */
export function urlPath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/** The request for one name, as the server's clients send it. */
export function requestFor(
  kind: LoadKind,
  name: string,
  prefix = '/',
  hostHeader = '127.0.0.1',
): string {
  if (kind === 'ioe') return `READ,${name}\n`;
  if (kind === 'raw') return `${name}\n`;
  return `GET ${prefix}${urlPath(name)} HTTP/1.1\r\nHost: ${hostHeader}\r\n\r\n`;
}

/** Clients 0..n-1 dealt to `workers` in contiguous blocks as even as possible: [first, count]. */
export function dealClients(clients: number, workers: number): [number, number][] {
  const out: [number, number][] = [];
  let first = 0;
  for (let w = 0; w < workers; w++) {
    const count = Math.floor(clients / workers) + (w < clients % workers ? 1 : 0);
    if (count > 0) out.push([first, count]);
    first += count;
  }
  return out;
}

/** Merges the workers' results into one. */
export function mergeResults(results: readonly WorkerResult[], durationMs?: number): LoadResult {
  const completed = results.reduce((sum, r) => sum + r.completed, 0);
  const all = new Float64Array(completed);
  let at = 0;
  for (const r of results) {
    all.set(r.latencies.subarray(0, r.completed), at);
    at += r.completed;
  }
  let maxMs = NaN;
  for (const ms of all) if (!(ms <= maxMs)) maxMs = ms;
  const latencies = Array.from(all);
  const seconds =
    durationMs !== undefined
      ? durationMs / 1000
      : (Math.max(...results.map((r) => r.endedAt)) -
          Math.min(...results.map((r) => r.startedAt))) /
        1000;
  const notes = [...new Set(results.flatMap((r) => r.notes))].slice(0, 5);
  return {
    completed,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    opsPerSecond: seconds > 0 ? completed / seconds : NaN,
    seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs,
    connectMs: Math.max(0, ...results.map((r) => r.connectMs)),
    firstMaxMs: Math.max(0, ...results.map((r) => r.firstMaxMs)),
    reconnects: results.reduce((sum, r) => sum + r.reconnects, 0),
    notes,
  };
}

interface Message {
  type: 'ready' | 'done' | 'failed';
  result?: WorkerResult;
  message?: string;
}

class Worker {
  readonly child: ChildProcess;
  private readonly queue: Message[] = [];
  private waiting?: { resolve: (m: Message) => void; reject: (e: Error) => void };
  private exitError?: Error;

  constructor() {
    this.child = fork(WORKER, [], {
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv: [],
    });
    this.child.on('message', (message: Message) => {
      if (this.waiting) {
        const { resolve } = this.waiting;
        this.waiting = undefined;
        resolve(message);
      } else this.queue.push(message);
    });
    this.child.once('exit', (code, signal) => {
      this.exitError = new Error(`load generator exited (${code ?? signal})`);
      this.waiting?.reject(this.exitError);
      this.waiting = undefined;
    });
  }

  next(timeoutMs: number): Promise<Message> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.exitError) return Promise.reject(this.exitError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`load generator did not answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  async expect(type: 'ready' | 'done', timeoutMs: number): Promise<Message> {
    const message = await this.next(timeoutMs);
    if (message.type !== type) throw new Error(message.message ?? `load generator: ${type}?`);
    return message;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/**
 * Runs one measurement: every worker prepares its requests, then all start together, each
 * client connecting and sending at once; resolves with the merge.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { clients, perClient } = options;
  if (options.names.length < clients * perClient) {
    throw new Error(`${options.names.length} names for ${clients} × ${perClient} requests`);
  }
  const hostHeader = options.hostHeader ?? `${options.host}:${options.port}`;
  const shares = dealClients(clients, Math.max(1, options.workers));
  const workers = shares.map(() => new Worker());
  try {
    shares.forEach(([first, count], w) => {
      const names = options.names.slice(first * perClient, (first + count) * perClient);
      const job: WorkerJob = {
        port: options.port,
        host: options.host,
        kind: options.kind,
        requests: names.map((name) =>
          requestFor(options.kind, name, options.pathPrefix, hostHeader),
        ),
        clients: count,
        perClient,
        size: options.size,
        durationMs: options.durationMs,
        timeoutMs: options.timeoutMs,
      };
      workers[w].child.send({ type: 'start', job });
    });
    await Promise.all(workers.map((w) => w.expect('ready', 60_000)));
    for (const w of workers) w.child.send({ type: 'go' });
    const budget = (options.durationMs ?? 0) + options.timeoutMs + 30_000;
    const done = await Promise.all(workers.map((w) => w.expect('done', budget)));
    return mergeResults(
      done.map((m) => m.result!),
      options.durationMs,
    );
  } finally {
    for (const w of workers) w.kill();
  }
}
