#!/usr/bin/env node
/**
 * Soak test: N clients, one connection each, run a random mix of LIST, ranged READ, WRITE and
 * HASH against one server for T seconds, verifying every byte and every SHA-256, then report
 * operation counts, errors, latency percentiles and whether the server's RSS and open file
 * descriptors stayed flat.
 *
 * By default it starts the server itself (`dist/scripts/server.js`, port 0, a temporary root)
 * and stops it at the end with QUIT. With `--port` it targets a server already running on
 * 127.0.0.1 instead (pass `--pid` to measure its RSS and descriptors).
 *
 * On a server it started, the soak keeps the catalog steady: past `--max-files` uploads (or
 * `--disk-budget` MiB) it deletes its oldest uploads from the root, once no operation is using
 * them, so LIST cost and disk use stay bounded however long it runs. (Against a running
 * server it deletes nothing.)
 *
 * Flat means: RSS end ≤ plateau + max(50 MiB, 25 %), descriptors end ≤ start + 5. Start is
 * sampled after the warm-up (under load); the RSS plateau is the highest sample from then to
 * mid-run, because V8's heap and the allocator keep growing toward their working size for a
 * while under load (a short run can still be ramping at the warm-up sample). A leak shows as
 * growth in the second half beyond the first half's highest point. End is sampled after the
 * clients said BYE and a settle.
 *
 * File contents are never kept in memory: every file's bytes are a pure function of a 32-bit
 * content seed and the byte position, so any range can be regenerated to check a READ.
 * Everything random comes from `--seed` (one generator per client), so a run's mix of
 * operations, names, sizes and bytes is reproducible; only the interleaving depends on timing.
 *
 * Usage: npm run soak -- [--clients 200] [--seconds 60] [--seed N] [--port P --pid PID]
 * Exit code: 0 when there were no errors and RSS and descriptors stayed flat, else 1.
 */
import { createHash, randomInt } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { integer } from '../lib/cli-options.js';
import {
  killChildServer,
  quitChildServer,
  startChildServer,
  type ChildServer,
} from './harness/child-server.js';
import { mix32, Rng } from './harness/rng.js';
import { Command, InvalidArgumentError } from 'commander';
import { IoeClient, ProtocolError, type CatalogEntry } from '../pipelines/client.js';

// ---------------------------------------------------------------------------------------------
// Options

function seconds(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(parsed >= 0))
    throw new InvalidArgumentError('not a number of seconds');
  return parsed;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

const program = new Command('soak')
  .description('Soak-test an IOE media server with many concurrent, verifying clients.')
  .option('--clients <n>', 'concurrent clients, one connection each', integer(1, 5000), 200)
  .option('--seconds <s>', 'how long the clients run', seconds, 60)
  .option('--seed <n>', 'seed for every random choice (default: random, printed)', integer(0))
  .option('--host <host>', 'server address (loopback only)', '127.0.0.1')
  .option('--port <port>', 'target a server already running on this port', integer(1, 65535))
  .option('--pid <pid>', 'with --port: the server process, to measure RSS and fds', integer(1))
  .option('--max-size <bytes>', 'largest WRITE', integer(0), 1024 * 1024)
  .option('--seed-files <n>', 'files uploaded before the clients start', integer(1), 32)
  .option(
    '--warmup <s>',
    'when to take the start sample (default: seconds/4 under 20 s, else seconds/10 within 5..60)',
    seconds,
  )
  .option('--settle <s>', 'wait after the clients disconnect before the end sample', seconds, 2)
  .option(
    '--disk-budget <MiB>',
    'own server only: above this many MiB of soak uploads, delete the oldest',
    integer(1),
    2048,
  )
  .option(
    '--max-files <n>',
    'own server only: above this many soak uploads, delete the oldest (keeps LIST steady)',
    integer(1),
    500,
  )
  .option('--op-timeout <s>', 'an operation taking longer than this is an error', seconds, 60)
  .option('--threads <n>', 'own server only: its --threads (Node 22.12+)', integer(1, 64), 1)
  .showHelpAfterError();

program.parse();
const opts = program.opts<{
  clients: number;
  seconds: number;
  seed?: number;
  host: string;
  port?: number;
  pid?: number;
  maxSize: number;
  seedFiles: number;
  warmup?: number;
  settle: number;
  diskBudget: number;
  maxFiles: number;
  opTimeout: number;
  threads: number;
}>();

if (!LOOPBACK.has(opts.host)) program.error('--host must be a loopback address (127.0.0.1)');
if (opts.pid !== undefined && opts.port === undefined) program.error('--pid needs --port');

const SEED = opts.seed ?? randomInt(0, 2 ** 31);
/** The start sample waits for the ramp-up (connections, buffers, V8 heap) to level off. */
const WARMUP_S =
  opts.warmup ??
  (opts.seconds < 20 ? opts.seconds / 4 : Math.min(60, Math.max(5, opts.seconds / 10)));
const MAX_ERRORS_SHOWN = 10;
/** RSS is flat when end ≤ plateau + max(RSS_SLACK_MIB, RSS_SLACK_RATIO × plateau). */
const RSS_SLACK_MIB = 50;
const RSS_SLACK_RATIO = 0.25;
/** Descriptors are flat when end ≤ start + FD_SLACK. */
const FD_SLACK = 5;

// ---------------------------------------------------------------------------------------------
// Reproducible randomness and file contents

/** Bytes `offset`..`offset+length` of the file whose content seed is `seed`. */
function content(seed: number, offset: number, length: number): Buffer {
  const first = Math.floor(offset / 4);
  const words = new Uint32Array(Math.ceil((offset + length) / 4) - first);
  const base = Math.imul(seed, 0x2545f491);
  for (let i = 0; i < words.length; i++) words[i] = mix32(base + Math.imul(first + i, 0x9e3779b9));
  const skip = offset - first * 4;
  return Buffer.from(words.buffer, words.byteOffset + skip, length);
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// What the soak knows about the server's files

const EXTENSIONS: Record<CatalogEntry['type'], string[]> = {
  video: ['.mov', '.mp4', '.m4v', '.mkv', '.avi', '.webm', '.MP4'],
  music: ['.mp3', '.m4a', '.aac', '.flac', '.wav', '.ogg', '.opus', '.Mp3'],
  picture: ['.jpg', '.jpeg', '.png', '.gif', '.webp', '.heic', '.bmp', '.tif', '.tiff', '.JPG'],
};
const TYPES = Object.keys(EXTENSIONS) as CatalogEntry['type'][];
/** Name parts that exercise the parser and byte-for-byte names (NFC and NFD é differ). */
const NAME_FLAVOURS = [
  '',
  '',
  '',
  ' clip',
  '-é',
  '-e\u0301',
  '-日本語',
  '-🎵',
  '-Crosby, Stills & Nash',
  ',5',
  '-ÅÄÖ',
  ' (live) #1',
];

interface KnownFile {
  name: string;
  type: CatalogEntry['type'];
  size: number;
  seed: number;
  sha256: string;
  /** A seed file is never deleted; LIST must always show it. */
  seeded: boolean;
  /** Operations in flight on this file: it is deleted only when none are. */
  users: number;
  retiring: boolean;
}

const known = new Map<string, KnownFile>();
/** The seed files, never deleted. */
const seededFiles: KnownFile[] = [];
/** Files operations may pick (not retiring). */
const live: KnownFile[] = [];
/** Soak uploads in the order they were stored, for retiring the oldest. */
const uploads: KnownFile[] = [];
let uploadBytes = 0;
let retiredFiles = 0;
let serverRoot: string | undefined;

function addKnown(file: KnownFile): void {
  known.set(file.name, file);
  live.push(file);
  if (file.seeded) seededFiles.push(file);
  else {
    uploads.push(file);
    uploadBytes += file.size;
    retireOverBudget();
  }
}

/** Keeps the disk bounded on a server we own: the oldest uploads leave the pool, then disk. */
function retireOverBudget(): void {
  if (serverRoot === undefined) return;
  while (
    (uploadBytes > opts.diskBudget * 1024 * 1024 || uploads.length > opts.maxFiles) &&
    uploads.length > 0
  ) {
    const file = uploads.shift()!;
    uploadBytes -= file.size;
    file.retiring = true;
    const index = live.indexOf(file);
    if (index >= 0) {
      live[index] = live[live.length - 1];
      live.pop();
    }
    if (file.users === 0) void deleteFile(file);
  }
}

async function deleteFile(file: KnownFile): Promise<void> {
  retiredFiles++;
  await unlink(join(serverRoot!, file.name)).catch(() => undefined);
  known.delete(file.name);
}

function release(file: KnownFile): void {
  file.users--;
  if (file.retiring && file.users === 0) void deleteFile(file);
}

// ---------------------------------------------------------------------------------------------
// Measurements

type Verb = 'LIST' | 'READ' | 'WRITE' | 'HASH';
const VERBS: Verb[] = ['LIST', 'READ', 'WRITE', 'HASH'];

const stats = {
  ops: new Map<Verb, number>(VERBS.map((verb) => [verb, 0])),
  latencies: new Map<Verb, number[]>(VERBS.map((verb) => [verb, []])),
  expectedErrors: 0,
  bytesRead: 0,
  bytesWritten: 0,
  reconnects: 0,
  errors: 0,
  firstErrors: [] as string[],
};

function recordError(client: number, what: string, error: unknown): void {
  stats.errors++;
  if (stats.firstErrors.length < MAX_ERRORS_SHOWN) {
    const detail =
      error instanceof ProtocolError
        ? `ERR ${error.code} ${error.message}`
        : error instanceof Error
          ? error.message
          : String(error);
    const at = ((performance.now() - runStarted) / 1000).toFixed(1);
    stats.firstErrors.push(`client ${client} at ${at}s: ${what}: ${detail}`);
  }
}

interface Sample {
  rssMiB: number;
  fds: number;
}

async function sample(pid: number | undefined): Promise<Sample | undefined> {
  if (pid === undefined) return undefined;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/^VmRSS:\s+([0-9]+) kB/m.exec(status)?.[1] ?? NaN);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    return { rssMiB: kb / 1024, fds };
  } catch {
    return undefined;
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const ms = (value: number): string => (Number.isNaN(value) ? '-' : `${value.toFixed(1)} ms`);
const mib = (value: number): string => `${value.toFixed(1)} MiB`;

// ---------------------------------------------------------------------------------------------
// The server

/** The server under test: our own child, or one already running (`--port`, `--pid`). */
interface ServerHandle {
  host: string;
  port: number;
  pid?: number;
  own?: ChildServer;
  stderrTail: string[];
}

// ---------------------------------------------------------------------------------------------
// Clients

let runStarted = performance.now();
let deadline = 0;
let serverGone = false;

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} took over ${opts.opTimeout} s`)),
      opts.opTimeout * 1000,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function collect(stream: NodeJS.ReadableStream, expected: Buffer): Promise<void> {
  let at = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (at + chunk.length > expected.length) {
      throw new Error(`READ sent more than the ${expected.length} bytes announced`);
    }
    if (!chunk.equals(expected.subarray(at, at + chunk.length))) {
      let i = 0;
      while (chunk[i] === expected[at + i]) i++;
      throw new Error(`READ byte ${at + i} differs from the known content`);
    }
    at += chunk.length;
  }
  if (at !== expected.length) throw new Error(`READ ended after ${at} of ${expected.length} bytes`);
  stats.bytesRead += at;
}

function expectError(promise: Promise<unknown>, code: string | string[]): Promise<void> {
  const codes = Array.isArray(code) ? code : [code];
  return promise.then(
    () => {
      throw new Error(`expected ERR ${codes.join(' or ')}, got OK`);
    },
    (error: unknown) => {
      if (!(error instanceof ProtocolError) || !codes.includes(error.code)) throw error;
      stats.expectedErrors++;
    },
  );
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function checkListing(entries: CatalogEntry[], type: CatalogEntry['type'] | undefined): void {
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (i > 0 && byteOrder(entries[i - 1].name, entry.name) >= 0) {
      throw new Error(
        `LIST not sorted: ${JSON.stringify(entries[i - 1].name)} before ${entry.name}`,
      );
    }
    if (type !== undefined && entry.type !== type) {
      throw new Error(`LIST,${type} holds ${entry.type} ${JSON.stringify(entry.name)}`);
    }
    if (Number.isNaN(entry.mtime.getTime())) {
      throw new Error(`LIST entry ${JSON.stringify(entry.name)} has a bad mtime`);
    }
    const file = known.get(entry.name);
    if (file && !file.retiring) {
      if (file.size !== entry.size || file.type !== entry.type) {
        throw new Error(
          `LIST says ${entry.type} ${JSON.stringify(entry.name)} ${entry.size} B, ` +
            `known ${file.type} ${file.size} B`,
        );
      }
    }
  }
  const names = new Set(entries.map((entry) => entry.name));
  for (const file of seededFiles) {
    if ((type === undefined || file.type === type) && !names.has(file.name)) {
      throw new Error(`LIST${type ? `,${type}` : ''} is missing ${JSON.stringify(file.name)}`);
    }
  }
}

class SoakClient {
  private client?: IoeClient;
  private uploads = 0;
  private readonly rng: Rng;

  constructor(
    private readonly id: number,
    private readonly server: { host: string; port: number },
    private readonly prefix: string,
  ) {
    this.rng = new Rng(SEED, id + 1);
  }

  private async connection(): Promise<IoeClient> {
    this.client ??= await IoeClient.connect(this.server);
    return this.client;
  }

  private drop(): void {
    this.client?.destroy();
    this.client = undefined;
  }

  async run(): Promise<void> {
    while (performance.now() < deadline && !serverGone) {
      let verb: Verb = 'LIST';
      let what = 'connect';
      try {
        const client = await withTimeout(this.connection(), 'connect');
        const op = this.chooseOp();
        verb = op.verb;
        what = op.what;
        const started = performance.now();
        await withTimeout(op.run(client), what);
        stats.latencies.get(verb)!.push(performance.now() - started);
        stats.ops.set(verb, stats.ops.get(verb)! + 1);
      } catch (error) {
        recordError(this.id, what, error);
        // An ERR that leaves the connection open keeps it in step; anything else reconnects.
        if (!(error instanceof ProtocolError) || error.closes) {
          this.drop();
          stats.reconnects++;
          await sleep(100); // no busy loop against a server that refuses
        }
      }
    }
    const client = this.client;
    this.client = undefined;
    if (client) {
      await withTimeout(client.close(), 'BYE').catch((error: unknown) => {
        recordError(this.id, 'BYE', error);
        client.destroy();
      });
    }
  }

  private pickFile(): KnownFile {
    return this.rng.pick(live);
  }

  /** Runs `body` with `file` protected from deletion. */
  private async using(file: KnownFile, body: () => Promise<void>): Promise<void> {
    file.users++;
    try {
      await body();
    } finally {
      release(file);
    }
  }

  private chooseOp(): { verb: Verb; what: string; run: (client: IoeClient) => Promise<void> } {
    const roll = this.rng.int(100);
    if (roll < 5) {
      return { verb: 'LIST', what: 'LIST', run: (client) => this.list(client, undefined) };
    }
    if (roll < 10) {
      const type = this.rng.pick(TYPES);
      return { verb: 'LIST', what: `LIST,${type}`, run: (client) => this.list(client, type) };
    }
    if (roll < 48) {
      const file = this.pickFile();
      const offset = this.rng.chance(0.1) ? 0 : this.rng.int(file.size + 1);
      const mode = this.rng.int(4); // 0: no range, 1: offset only, 2-3: offset and length
      const length =
        mode >= 2
          ? this.rng.chance(0.1)
            ? file.size + 10
            : this.rng.int(file.size + 1)
          : undefined;
      const range = mode === 0 ? {} : length === undefined ? { offset } : { offset, length };
      const what = `READ,${file.name}${mode === 0 ? '' : `,${offset}`}${length === undefined ? '' : `,${length}`}`;
      return { verb: 'READ', what, run: (client) => this.read(client, file, range) };
    }
    if (roll < 72) {
      const size = this.writeSize();
      const type = this.rng.pick(TYPES);
      const name =
        `${this.prefix}/c${this.id}/${++this.uploads}` +
        `${this.rng.pick(NAME_FLAVOURS)}${this.rng.pick(EXTENSIONS[type])}`;
      const seed = this.rng.next();
      return {
        verb: 'WRITE',
        what: `WRITE,${name},${size}`,
        run: (client) => this.write(client, name, type, size, seed),
      };
    }
    if (roll < 95) {
      const file = this.pickFile();
      return { verb: 'HASH', what: `HASH,${file.name}`, run: (client) => this.hash(client, file) };
    }
    // Error paths under load: each must answer its code and leave the connection in step.
    const kind = this.rng.int(4);
    const file = this.pickFile();
    if (kind === 0) {
      const what = `READ,${file.name},${file.size + 1} (expect BAD_RANGE)`;
      return {
        verb: 'READ',
        what,
        run: (client) =>
          this.using(file, () =>
            expectError(
              collect(client.read(file.name, { offset: file.size + 1 }), Buffer.alloc(0)),
              'BAD_RANGE',
            ),
          ),
      };
    }
    if (kind === 1) {
      const name = `${this.prefix}/missing/${this.rng.next()}.mp3`;
      return {
        verb: 'HASH',
        what: `HASH,${name} (expect NOT_FOUND)`,
        run: (client) => expectError(client.hash(name), 'NOT_FOUND'),
      };
    }
    if (kind === 2) {
      const name = `${this.prefix}/missing/${this.rng.next()}.jpg`;
      return {
        verb: 'READ',
        what: `READ,${name} (expect NOT_FOUND)`,
        run: (client) => expectError(collect(client.read(name), Buffer.alloc(0)), 'NOT_FOUND'),
      };
    }
    const seeded = this.rng.pick(seededFiles);
    const size = this.rng.int(4096);
    // LOCKED is checked before EXISTS: another client's WRITE to that name may be in progress.
    return {
      verb: 'WRITE',
      what: `WRITE,${seeded.name},${size} (expect EXISTS or LOCKED)`,
      run: (client) =>
        expectError(client.write(seeded.name, content(this.rng.next(), 0, size), size), [
          'EXISTS',
          'LOCKED',
        ]),
    };
  }

  private writeSize(): number {
    const roll = this.rng.int(100);
    if (roll < 3) return 0;
    if (roll < 40) return this.rng.int(Math.min(opts.maxSize, 16 * 1024) + 1);
    return this.rng.int(opts.maxSize + 1);
  }

  private async list(client: IoeClient, type: CatalogEntry['type'] | undefined): Promise<void> {
    checkListing(await client.list(type), type);
  }

  private read(
    client: IoeClient,
    file: KnownFile,
    range: { offset?: number; length?: number },
  ): Promise<void> {
    return this.using(file, async () => {
      const offset = range.offset ?? 0;
      const count = Math.min(range.length ?? Infinity, file.size - offset);
      const reply = client.read(file.name, range);
      const expected = content(file.seed, offset, count);
      const [announced] = await Promise.all([reply.size, collect(reply, expected)]);
      if (announced !== count)
        throw new Error(`READ announced ${announced} bytes, expected ${count}`);
    });
  }

  private async write(
    client: IoeClient,
    name: string,
    type: CatalogEntry['type'],
    size: number,
    seed: number,
  ): Promise<void> {
    const data = content(seed, 0, size);
    const sha = sha256(data);
    const receipt = await client.write(name, data, size);
    if (receipt.size !== size || receipt.sha256 !== sha) {
      throw new Error(`WRITE receipt ${receipt.size} ${receipt.sha256}, expected ${size} ${sha}`);
    }
    stats.bytesWritten += size;
    addKnown({ name, type, size, seed, sha256: sha, seeded: false, users: 0, retiring: false });
  }

  private hash(client: IoeClient, file: KnownFile): Promise<void> {
    return this.using(file, async () => {
      const result = await client.hash(file.name);
      if (result.sha256 !== file.sha256 || result.size !== file.size) {
        throw new Error(
          `HASH says ${result.sha256} ${result.size}, expected ${file.sha256} ${file.size}`,
        );
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The run

async function seedFiles(server: { host: string; port: number }, prefix: string): Promise<void> {
  const rng = new Rng(SEED, 0);
  const client = await IoeClient.connect(server);
  const fixedSizes = [0, 1, 4095, 4096, 65_537, opts.maxSize];
  const writes: Promise<void>[] = [];
  for (let i = 0; i < opts.seedFiles; i++) {
    const type = TYPES[i % TYPES.length];
    const size = Math.min(opts.maxSize, fixedSizes[i] ?? rng.int(opts.maxSize + 1));
    const name = `${prefix}/seed/${i}${rng.pick(NAME_FLAVOURS)}${rng.pick(EXTENSIONS[type])}`;
    const seed = rng.next();
    const data = content(seed, 0, size);
    const sha = sha256(data);
    writes.push(
      client.write(name, data, size).then((receipt) => {
        if (receipt.sha256 !== sha || receipt.size !== size) {
          throw new Error(`seeding ${name}: receipt ${receipt.sha256} ${receipt.size}`);
        }
        addKnown({ name, type, size, seed, sha256: sha, seeded: true, users: 0, retiring: false });
      }),
    );
  }
  await Promise.all(writes);
  await client.close();
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<number> {
  const tempRoot = opts.port === undefined ? await mkdtemp(join(tmpdir(), 'ioe-soak-')) : undefined;
  // Also on an interrupt (process.exit skips `finally`).
  if (tempRoot) process.on('exit', () => rmSync(tempRoot, { recursive: true, force: true }));
  const own = tempRoot
    ? await startChildServer([
        '--host',
        opts.host,
        '--root',
        join(tempRoot, 'media'),
        '--log-level',
        'warn',
        '--threads',
        String(opts.threads),
      ])
    : undefined;
  const server: ServerHandle = own
    ? { host: own.host, port: own.port, pid: own.child.pid, own, stderrTail: own.stderrTail }
    : { host: opts.host, port: opts.port!, pid: opts.pid, stderrTail: [] };
  if (tempRoot) serverRoot = join(tempRoot, 'media');
  let stopping = false;
  void server.own?.exited.then((how) => {
    if (!stopping) {
      serverGone = true;
      recordError(-1, 'server', new Error(`the server ended during the run (${how})`));
    }
  });
  const prefix = `soak-${SEED}-${Date.now().toString(36)}`;
  const target = { host: server.host, port: server.port };

  console.log(
    `soak: ${opts.clients} clients for ${opts.seconds} s against ${server.host}:${server.port}` +
      `${server.own ? ` (server pid ${server.pid}, root ${serverRoot})` : ''}; seed ${SEED}`,
  );
  try {
    await seedFiles(target, prefix);
    const seeded = await sample(server.pid);
    console.log(
      `seeded ${opts.seedFiles} files` +
        (seeded ? `; server idle: RSS ${mib(seeded.rssMiB)}, ${seeded.fds} fds` : ''),
    );

    runStarted = performance.now();
    deadline = runStarted + opts.seconds * 1000;
    const clients = Array.from(
      { length: opts.clients },
      (_, i) => new SoakClient(i + 1, target, prefix),
    );
    const running = Promise.all(clients.map((client) => client.run()));

    // Samples every second from the start until the end sample (wind-down included).
    let start: Sample | undefined;
    let mid: Sample | undefined;
    /** The highest RSS from the warm-up sample to mid-run: the working size under load. */
    let plateauMiB = 0;
    let peak: Sample | undefined;
    let last: Sample | undefined;
    let sampling = true;
    const warmupAt = runStarted + WARMUP_S * 1000;
    const midAt = runStarted + (opts.seconds * 1000) / 2;
    const sampler = (async () => {
      while (sampling) {
        const toWarmup = warmupAt - performance.now();
        await sleep(toWarmup > 0 ? Math.max(10, Math.min(1000, toWarmup)) : 1000);
        const now = await sample(server.pid);
        if (!now) continue;
        last = now;
        if (!start && performance.now() >= warmupAt - 5) start = now;
        if (start && !mid) plateauMiB = Math.max(plateauMiB, now.rssMiB);
        if (!mid && performance.now() >= midAt) mid = now;
        peak = {
          rssMiB: Math.max(peak?.rssMiB ?? 0, now.rssMiB),
          fds: Math.max(peak?.fds ?? 0, now.fds),
        };
      }
    })();
    const progress = setInterval(() => {
      const total = [...stats.ops.values()].reduce((a, b) => a + b, 0);
      const elapsed = (performance.now() - runStarted) / 1000;
      console.log(
        `  ${elapsed.toFixed(0)} s: ${total} ops, ${stats.errors} errors, ${live.length} files live` +
          (last ? `; server RSS ${mib(last.rssMiB)}, ${last.fds} fds` : ''),
      );
    }, 10_000);
    await running;
    clearInterval(progress);
    const elapsed = (performance.now() - runStarted) / 1000;

    await sleep(opts.settle * 1000);
    sampling = false;
    await sampler;
    const end = await sample(server.pid);

    // A fresh connection still gets a LIST after everything.
    try {
      const client = await IoeClient.connect(target);
      const entries = await withTimeout(client.list(), 'final LIST');
      checkListing(entries, undefined);
      await client.close();
    } catch (error) {
      recordError(0, 'final LIST', error);
    }

    stopping = true;
    const stopped = server.own ? await quitChildServer(server.own) : 'not ours (left running)';
    if (server.own && stopped !== 'exit code 0') {
      recordError(-1, 'server stop', new Error(`server ${stopped}`));
    }

    // ---- Summary
    const total = [...stats.ops.values()].reduce((a, b) => a + b, 0);
    console.log('');
    console.log('=== soak summary ===');
    console.log(
      `clients: ${opts.clients}, ran ${elapsed.toFixed(1)} s, seed ${SEED}, max WRITE ${opts.maxSize} B`,
    );
    console.log(
      `operations: ${total} (${(total / elapsed).toFixed(0)}/s); ` +
        VERBS.map((verb) => `${verb} ${stats.ops.get(verb)}`).join(', ') +
        `; of which expected-ERR checks ${stats.expectedErrors}`,
    );
    console.log(
      `bytes verified: READ ${mib(stats.bytesRead / 2 ** 20)}, WRITE ${mib(stats.bytesWritten / 2 ** 20)}` +
        (serverRoot
          ? `; old uploads deleted (to stay under ${opts.maxFiles} files, ${opts.diskBudget} MiB): ${retiredFiles}`
          : ''),
    );
    console.log('latency (per verb):');
    for (const verb of VERBS) {
      const sorted = stats.latencies.get(verb)!.sort((a, b) => a - b);
      console.log(
        `  ${verb.padEnd(5)} p50 ${ms(percentile(sorted, 50)).padStart(10)}  ` +
          `p99 ${ms(percentile(sorted, 99)).padStart(10)}  max ${ms(sorted[sorted.length - 1] ?? NaN).padStart(10)}`,
      );
    }
    console.log(`reconnects: ${stats.reconnects}`);
    console.log(`errors: ${stats.errors}`);
    for (const line of stats.firstErrors) console.log(`  - ${line}`);
    if (stats.errors > stats.firstErrors.length) {
      console.log(`  (${stats.errors - stats.firstErrors.length} more not shown)`);
    }

    let flat = true;
    if (start && end) {
      const plateau = Math.max(plateauMiB, start.rssMiB);
      const rssLimit = plateau + Math.max(RSS_SLACK_MIB, RSS_SLACK_RATIO * plateau);
      const fdLimit = start.fds + FD_SLACK;
      const rssFlat = end.rssMiB <= rssLimit;
      const fdFlat = end.fds <= fdLimit;
      flat = rssFlat && fdFlat;
      console.log(
        `server RSS: start ${mib(start.rssMiB)} (after ${WARMUP_S} s warm-up), ` +
          (mid ? `mid-run ${mib(mid.rssMiB)}, ` : '') +
          `peak ${mib(peak!.rssMiB)}, end ${mib(end.rssMiB)} (after ${opts.settle} s settle) — ` +
          `${rssFlat ? 'flat' : 'NOT flat'} (threshold: end ≤ first-half plateau ` +
          `${mib(plateau)} + max(${RSS_SLACK_MIB} MiB, ` +
          `${RSS_SLACK_RATIO * 100}%) = ${mib(rssLimit)})`,
      );
      console.log(
        `server fds: start ${start.fds}, peak ${peak!.fds}, end ${end.fds} — ` +
          `${fdFlat ? 'flat' : 'NOT flat'} (threshold: end ≤ start + ${FD_SLACK} = ${fdLimit})`,
      );
    } else if (server.pid !== undefined) {
      flat = false;
      console.log('server RSS/fds: could not be sampled (run too short, or /proc unreadable)');
    } else {
      console.log('server RSS/fds: not measured (pass --pid with --port)');
    }
    if (server.own) console.log(`server stop (QUIT): ${stopped}`);
    if (server.stderrTail.length > 0) {
      console.log(`server stderr (last ${server.stderrTail.length} lines):`);
      for (const line of server.stderrTail) console.log(`  ${line}`);
    }
    const ok = stats.errors === 0 && flat;
    console.log(`result: ${ok ? 'PASS' : 'FAIL'}`);
    return ok ? 0 : 1;
  } finally {
    if (server.own) await killChildServer(server.own);
    if (tempRoot) await rm(tempRoot, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(
      `soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
    );
    process.exit(2);
  },
);
