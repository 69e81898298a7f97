/**
 * The S3 scenarios of the benchmark: IOE replicas serving a bucket (`--storage s3://…`) against
 * bare SDK programs on the same gateway. They need a store (IOE_S3_ENDPOINTS and AWS_*, as
 * scripts/ceph-rgw.sh writes them to $CEPH_BASE/s3.env), so a default run leaves them out
 * when none is configured, and `--only s3` (all of them) refuses to start without one.
 *
 * Every run writes under a prefix of its own (`ioe-bench/run-<time>`) and deletes it at the
 * end; only the LIST scenario's small files stay (`ioe-bench/list-<count>`), for the next run.
 */
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createS3Client } from '../../lib/s3-client.js';
import { MiB, listName } from './fixtures.js';
import { runLoad, type LoadResult } from './load.js';
import { startIoeOn, startListening } from './proc.js';
import {
  interleave,
  logFile,
  pool,
  sampled,
  using,
  withServer,
  withServers,
  type Context,
  type Metrics,
  type Outcome,
  type Scenario,
} from './scenarios.js';
import { mbPerSecond, median, type MetricDef } from './stats.js';
import { HOST, Payload, ioeList, ioeRead, ioeWrite } from './wire.js';

/** `--only s3` names every S3 scenario. */
export const S3_ALIAS = 's3';
/** The bare Node program that pipes a GetObject Body to the socket (s3-baseline-server.ts). */
export const S3_GET_PIPE = 'getobject-pipe';
/** A bare @aws-sdk/lib-storage Upload of the same bytes, in the bench process. */
export const S3_SDK_UPLOAD = 'sdk-upload';
export const S3_BIG_BYTES = 256 * MiB;
export const S3_LIST_COUNT = 10_000;
/** The larger LIST the issue asks to report (no target): its files are uploaded once, kept. */
export const S3_LIST_LARGE_COUNT = 100_000;
const REPLICA_CLIENTS = 50;
const REPLICA_OBJECT_BYTES = MiB;
/** Objects per client in the replicas scenario (each client cycles over its own). */
const REPLICA_OBJECTS_PER_CLIENT = 2;
const BIG_TIMEOUT_MS = 300_000;
/** The S3 scenarios' sizes, for the line above the results. */
export const S3_SIZES =
  `s3 read/write ${S3_BIG_BYTES / MiB} MiB, ` +
  `s3 list ${S3_LIST_COUNT} and ${S3_LIST_LARGE_COUNT} entries, s3 replicas ` +
  `${REPLICA_CLIENTS} clients × ${REPLICA_OBJECT_BYTES / MiB} MiB objects for --load-seconds`;

export const S3_HOWTO =
  'the S3 scenarios need an S3 store and IOE_S3_ENDPOINTS is not set: start one with ' +
  '`scripts/ceph-rgw.sh up`, then `set -a; . $CEPH_BASE/s3.env; set +a` ' +
  '(CEPH_BASE defaults to /tmp/ioe-s3) and run again';

export interface S3Store {
  /** Gateways; replica i uses endpoint i (modulo their count). */
  endpoints: string[];
  bucket: string;
}

/** The store the environment names, or undefined when IOE_S3_ENDPOINTS is unset or empty. */
export function s3StoreFromEnv(env: NodeJS.ProcessEnv = process.env): S3Store | undefined {
  const endpoints = (env.IOE_S3_ENDPOINTS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return endpoints.length ? { endpoints, bucket: env.IOE_S3_BUCKET || 'ioe' } : undefined;
}

/** --only with the alias `s3` replaced by the S3 scenarios' ids. */
export function expandS3Alias(only: string | undefined): string | undefined {
  if (only === undefined) return undefined;
  return only
    .split(',')
    .flatMap((id) => (id.trim() === S3_ALIAS ? S3_SCENARIOS.map((s) => s.id) : [id]))
    .join(',');
}

/**
 * What runs when no store is configured: an explicit --only naming an S3 scenario is an error
 * (the message says how to start one); a default run drops them and says so in `skipped`.
 */
export function withoutStore(
  ids: readonly string[],
  explicit: boolean,
): { ids: string[]; skipped?: string; error?: string } {
  const s3 = new Set(S3_SCENARIOS.map((s) => s.id));
  const wanted = ids.filter((id) => s3.has(id));
  if (!wanted.length) return { ids: [...ids] };
  if (explicit) return { ids: [...ids], error: `${wanted.join(', ')}: ${S3_HOWTO}` };
  return {
    ids: ids.filter((id) => !s3.has(id)),
    skipped: `s3: skipped, no S3 store configured (IOE_S3_ENDPOINTS unset); to run it: \`scripts/ceph-rgw.sh up\`, then \`set -a; . $CEPH_BASE/s3.env; set +a\``,
  };
}

/** This run's state on the store: its prefix and one SDK client, made on first use. */
let current: { store: S3Store; client: S3Client; run: string } | undefined;
function s3(): { store: S3Store; client: S3Client; run: string } {
  if (!current) {
    const store = s3StoreFromEnv();
    if (!store) throw new Error(S3_HOWTO);
    const client = createS3Client({ endpoint: store.endpoints[0], pathStyle: true });
    current = { store, client, run: `ioe-bench/run-${Date.now()}` };
  }
  return current;
}

/** Every key under `prefix` (without a trailing slash). */
async function keysUnder(prefix: string): Promise<string[]> {
  const { client, store } = s3();
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: store.bucket,
        Prefix: `${prefix}/`,
        ContinuationToken: token,
      }),
    );
    for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Deletes everything under `prefix` (memstore keeps bytes in RAM: big objects must go). */
async function removePrefix(prefix: string): Promise<void> {
  const { client, store } = s3();
  const keys = await keysUnder(prefix);
  await pool(keys.length, 32, (i) =>
    client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: keys[i] })),
  );
}

/** The key of the bytes IOE stored for `name` (see lib/s3-layout.ts: P/n/<name> holds the id). */
async function dataKey(prefix: string, name: string): Promise<string> {
  const { client, store } = s3();
  const record = await client.send(
    new GetObjectCommand({ Bucket: store.bucket, Key: `${prefix}/n/${name}` }),
  );
  const id = (await record.Body!.transformToString()).trim();
  return `${prefix}/d/${id}`;
}

/** An IOE replica on gateway `index` serving `prefix` of the bucket, on the servers' Node. */
function startReplica(ctx: Context, index: number, prefix: string, label: string) {
  const { store } = s3();
  const endpoint = store.endpoints[index % store.endpoints.length];
  return startIoeOn(
    ctx.config.node,
    ['--storage', `s3://${store.bucket}/${prefix}`, '--s3-path-style'],
    logFile(ctx, label),
    [],
    { ...process.env, AWS_ENDPOINT_URL: endpoint, IOE_S3_GC_INTERVAL_SECONDS: '0' },
  );
}

const BASELINE_JS = fileURLToPath(new URL('./s3-baseline-server.js', import.meta.url));

/** Writes `names` (`size` bytes each) through a replica on `concurrency` connections. */
async function writeMany(port: number, names: string[], size: number, concurrency: number) {
  const payload = new Payload(randomBytes(Math.min(size, MiB)), size);
  payload.sha256();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, names.length) }, () =>
      using(port, async (wire) => {
        while (next < names.length) await ioeWrite(wire, names[next++], payload, 60_000);
      }),
    ),
  );
}

const PEAK: MetricDef = { key: 'peak_rss_mib', label: 'peak RSS MiB (VmHWM)', better: 'lower' };
const MB_S: MetricDef = { key: 'mb_s', label: 'MB/s', better: 'higher', chart: true };

const s3Read: Scenario = {
  id: 's3-read',
  title: `S3: READ of a ${S3_BIG_BYTES / MiB} MiB object through a replica vs a bare GetObject piped to a socket`,
  subject: 'ioe',
  peers: ['ioe', S3_GET_PIPE],
  metrics: [MB_S, PEAK],
  async run(ctx) {
    const prefix = `${s3().run}/read`;
    const name = `big-${S3_BIG_BYTES / MiB}m.mp4`;
    const payload = new Payload(randomBytes(MiB), S3_BIG_BYTES);
    try {
      await withServers({ ioe: () => startReplica(ctx, 0, prefix, 'ioe-s3-read') }, async (r) => {
        ctx.log(`  uploading ${name} through the replica`);
        await using(r.ioe.port, (wire) => ioeWrite(wire, name, payload, BIG_TIMEOUT_MS));
        const { store } = s3();
        const args = [
          BASELINE_JS,
          ...['--endpoint', store.endpoints[0], '--bucket', store.bucket],
          ...['--key', await dataKey(prefix, name)],
        ];
        const starters = {
          [S3_GET_PIPE]: () =>
            startListening(S3_GET_PIPE, process.execPath, args, logFile(ctx, S3_GET_PIPE)),
        };
        await withServers(starters, (baseline) => {
          const servers = { ...r, ...baseline };
          return interleave(ctx, this.id, this.peers, (peer) =>
            sampled(servers[peer], async () => {
              const start = performance.now();
              const bytes = await using(servers[peer].port, (wire) =>
                peer === 'ioe' ? ioeRead(wire, name, BIG_TIMEOUT_MS) : wire.toEnd(BIG_TIMEOUT_MS),
              );
              const ms = performance.now() - start;
              if (bytes !== S3_BIG_BYTES) throw new Error(`got ${bytes} of ${S3_BIG_BYTES} bytes`);
              return { metrics: { mb_s: mbPerSecond(bytes, ms), seconds: ms / 1000 } };
            }),
          );
        });
      });
    } finally {
      await removePrefix(prefix);
    }
  },
};

const s3Write: Scenario = {
  id: 's3-write',
  title: `S3: WRITE of ${S3_BIG_BYTES / MiB} MiB through a replica vs a bare lib-storage Upload (in the bench process)`,
  subject: 'ioe',
  peers: ['ioe', S3_SDK_UPLOAD],
  metrics: [MB_S, PEAK],
  async run(ctx) {
    const prefix = `${s3().run}/write`;
    const sdkPrefix = `${s3().run}/sdk-upload`;
    const payload = new Payload(randomBytes(MiB), S3_BIG_BYTES);
    ctx.log(`  hashing the ${S3_BIG_BYTES / MiB} MiB payload once (to check the receipts)`);
    payload.sha256();
    const { client, store } = s3();
    const timed = async (send: () => Promise<unknown>): Promise<Outcome> => {
      const start = performance.now();
      await send();
      const ms = performance.now() - start;
      return { metrics: { mb_s: mbPerSecond(payload.size, ms), seconds: ms / 1000 } };
    };
    try {
      await withServers({ ioe: () => startReplica(ctx, 0, prefix, 'ioe-s3-write') }, (r) =>
        interleave(ctx, this.id, this.peers, async (peer, round) => {
          const name = `w-${round}.mp4`;
          try {
            if (peer === 'ioe') {
              return await sampled(r.ioe, () =>
                timed(() =>
                  using(r.ioe.port, (wire) => ioeWrite(wire, name, payload, BIG_TIMEOUT_MS)),
                ),
              );
            }
            const params = {
              Bucket: store.bucket,
              Key: `${sdkPrefix}/${name}`,
              Body: Readable.from(payload.chunks()),
            };
            return await timed(() => new Upload({ client, params }).done());
          } finally {
            // The bytes go at once: the store (memstore) holds them in RAM.
            await removePrefix(peer === 'ioe' ? prefix : sdkPrefix);
          }
        }),
      );
    } finally {
      await removePrefix(prefix);
      await removePrefix(sdkPrefix);
    }
  },
};

/**
 * LIST of `count` small files through a replica: the first call after a start, then repeated.
 * The files are kept between runs under their own prefix: uploading them takes longer than
 * listing them many times.
 */
function s3ListScenario(id: string, count: number): Scenario {
  return {
    id,
    title: `S3: LIST of ${count} small files through a replica: first call after a start, then repeated`,
    subject: 'ioe',
    peers: ['ioe'],
    metrics: [
      { key: 'first_ms', label: 'first call ms', better: 'lower', chart: true },
      { key: 'repeated_ms', label: 'repeated call ms (median)', better: 'lower', chart: true },
      PEAK,
    ],
    async run(ctx) {
      const prefix = `ioe-bench/list-${count}`;
      const start = () => startReplica(ctx, 0, prefix, `ioe-${id}`);
      const stored = new Set(
        (await keysUnder(`${prefix}/n`)).map((key) => key.slice(prefix.length + 3)),
      );
      const missing = Array.from({ length: count }, (_, i) => listName(i)).filter(
        (name) => !stored.has(name),
      );
      if (missing.length) {
        ctx.log(
          `  uploading ${missing.length} files of 200 bytes through a replica (kept for next runs)`,
        );
        await withServer(start, (server) => writeMany(server.port, missing, 200, 64));
      } else ctx.log(`  ${prefix}: ${count} files reused`);
      await interleave(ctx, id, ['ioe'], () =>
        withServer(start, (server) =>
          sampled(server, () =>
            using(server.port, async (wire) => {
              const notes: string[] = [];
              const timedList = async () => {
                const t = performance.now();
                const { count: listed } = await ioeList(wire, 300_000);
                if (listed !== count) notes.push(`listed ${listed}, expected ${count}`);
                return performance.now() - t;
              };
              const first = await timedList();
              const repeated: number[] = [];
              for (let i = 0; i < ctx.config.listRepeats; i++) repeated.push(await timedList());
              const metrics: Metrics = { first_ms: first, repeated_ms: median(repeated) };
              if (notes.length) metrics.errors = notes.length;
              return { metrics, notes };
            }),
          ),
        ),
      );
    },
  };
}

/** One replica, or two (on two gateways) with the clients split between them. */
const ONE = 'ioe×1';
const TWO = 'ioe×2';

const s3Replicas: Scenario = {
  id: 's3-replicas',
  title: `S3: ${REPLICA_CLIENTS} clients READ ${REPLICA_OBJECT_BYTES / MiB} MiB objects in a loop, on one replica (${ONE}) or split over two (${TWO})`,
  subject: TWO,
  peers: [TWO, ONE],
  metrics: [
    { key: 'ops_s', label: 'ops/s', better: 'higher', chart: true },
    MB_S,
    { key: 'p99_ms', label: 'p99 latency ms (worst replica)', better: 'lower' },
    { key: 'errors', label: 'errors', better: 'lower' },
  ],
  async run(ctx) {
    const { config } = ctx;
    const prefix = `${s3().run}/replicas`;
    const names = Array.from(
      { length: REPLICA_CLIENTS * REPLICA_OBJECTS_PER_CLIENT },
      (_, i) => `o-${String(i).padStart(4, '0')}.mp4`,
    );
    const load = (port: number, share: string[]): Promise<LoadResult> =>
      runLoad({
        port,
        host: HOST,
        kind: 'ioe',
        names: share,
        clients: share.length / REPLICA_OBJECTS_PER_CLIENT,
        perClient: REPLICA_OBJECTS_PER_CLIENT,
        size: REPLICA_OBJECT_BYTES,
        workers: config.loadWorkers,
        durationMs: config.loadSeconds * 1000,
        timeoutMs: 60_000,
      });
    try {
      const starters = {
        a: () => startReplica(ctx, 0, prefix, 'ioe-s3-replica-a'),
        b: () => startReplica(ctx, 1, prefix, 'ioe-s3-replica-b'),
      };
      await withServers(starters, async ({ a, b }) => {
        ctx.log(`  uploading ${names.length} objects of ${REPLICA_OBJECT_BYTES / MiB} MiB`);
        await writeMany(a.port, names, REPLICA_OBJECT_BYTES, 16);
        await interleave(ctx, this.id, this.peers, async (peer) => {
          const half = names.length / 2;
          const results =
            peer === ONE
              ? [await load(a.port, names)]
              : await Promise.all([
                  load(a.port, names.slice(0, half)),
                  load(b.port, names.slice(half)),
                ]);
          const ops = results.reduce((sum, r) => sum + r.opsPerSecond, 0);
          return {
            metrics: {
              ops_s: ops,
              mb_s: (ops * REPLICA_OBJECT_BYTES) / 1e6,
              p99_ms: Math.max(...results.map((r) => r.p99Ms)),
              errors: results.reduce((sum, r) => sum + r.errors, 0),
            },
            notes: results.flatMap((r) => r.notes),
          };
        });
      });
    } finally {
      await removePrefix(prefix);
    }
  },
};

export const S3_SCENARIOS: Scenario[] = [
  s3Read,
  s3Write,
  s3ListScenario('s3-list', S3_LIST_COUNT),
  s3ListScenario('s3-list-100k', S3_LIST_LARGE_COUNT),
  s3Replicas,
];
