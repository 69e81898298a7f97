/**
 * The real Ceph RGW the S3 tests run against, and server replicas on it as child processes.
 *
 * CI (`.ci/run`) starts the cluster with scripts/ceph-rgw.sh and passes its settings in the
 * environment (IOE_S3_ENDPOINTS, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, IOE_S3_BUCKET,
 * CEPH_BASE). Without them (a developer's `npm test`), the first S3 test file brings a cluster
 * up itself under $TMPDIR/ioe-s3-test (installing Ceph if needed), the files share it, and the
 * last one to finish brings it down. If no cluster can be had, the tests fail: never skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Test } from 'tap';
import { createS3Client } from '../../lib/s3-client.js';
import { built, ROOT } from '../helpers/paths.js';

export const SCRIPT = join(ROOT, 'scripts/ceph-rgw.sh');
const SERVER_JS = built('scripts/server.js');
/** Installing Ceph (~20 s) and starting it (~5 s), with room for a slow machine. */
const UP_TIMEOUT_MS = 240_000;
const START_TIMEOUT_MS = 15_000;

export interface Rig {
  /** Gateways a and b: two radosgw daemons over one cluster. */
  endpoints: [string, string];
  /** Gateway c, started and stopped by the fault test alone. */
  spare: string;
  bucket: string;
  cephBase: string;
  /** AWS_* for the servers and clients (not the endpoint: each picks one). */
  credentials: { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string; AWS_REGION: string };
  /** A prefix no other test file or run uses. */
  prefix(label: string): string;
  /** Runs scripts/ceph-rgw.sh with this cluster's CEPH_BASE. */
  script(...args: string[]): Promise<string>;
}

/** Runs a command; rejects with its output when it fails or runs over `timeoutMs`. */
export function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')}: no end in ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new Error(`${command} ${args.join(' ')} exited ${code}:\n${output}`));
    });
  });
}

function parseEnvFile(path: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (match) values[match[1]] = match[2];
  }
  return values;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A lock between test files: a directory, taken over when its owner is dead. */
async function withLock<T>(path: string, work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + UP_TIMEOUT_MS + 30_000;
  for (;;) {
    try {
      await mkdir(path);
      await writeFile(join(path, 'pid'), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(existsSync(join(path, 'pid')) ? readFileSync(join(path, 'pid')) : 0);
      if (owner > 0 && !alive(owner)) await rm(path, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`the lock ${path} was not released`);
      await delay(200);
    }
  }
  try {
    return await work();
  } finally {
    await rm(path, { recursive: true, force: true });
  }
}

function fromEnv(values: NodeJS.ProcessEnv, cephBase: string): Omit<Rig, 'prefix' | 'script'> {
  const endpoints = (values.IOE_S3_ENDPOINTS ?? '').split(',').filter(Boolean);
  if (endpoints.length < 2) throw new Error('IOE_S3_ENDPOINTS must name two gateways');
  const spare =
    values.IOE_S3_SPARE_ENDPOINT ??
    endpoints[0].replace(/:(\d+)$/, (_, port: string) => `:${Number(port) + 2}`);
  return {
    endpoints: [endpoints[0], endpoints[1]],
    spare,
    bucket: values.IOE_S3_BUCKET ?? 'ioe',
    cephBase,
    credentials: {
      AWS_ACCESS_KEY_ID: values.AWS_ACCESS_KEY_ID ?? '',
      AWS_SECRET_ACCESS_KEY: values.AWS_SECRET_ACCESS_KEY ?? '',
      AWS_REGION: values.AWS_REGION ?? 'us-east-1',
    },
  };
}

/**
 * The cluster for this test file: CI's, or one shared by the test files of this run (started
 * by the first, stopped by the last). Fails the test file if there is none.
 */
export async function rig(t: Test): Promise<Rig> {
  let base: Omit<Rig, 'prefix' | 'script'>;
  let scriptEnv: NodeJS.ProcessEnv;
  if (process.env.IOE_S3_ENDPOINTS) {
    base = fromEnv(process.env, process.env.CEPH_BASE ?? join(tmpdir(), 'ioe-s3'));
    const port = /:(\d+)$/.exec(base.endpoints[0])?.[1];
    scriptEnv = { CEPH_BASE: base.cephBase, ...(port ? { RGW_PORT: port } : {}) };
  } else {
    const cephBase = join(tmpdir(), 'ioe-s3-test');
    const users = `${cephBase}.users`;
    const lock = `${cephBase}.lock`;
    // Ports of its own, so that a cluster someone runs on the defaults (7480) is no obstacle.
    const env = { ...process.env, CEPH_BASE: cephBase, RGW_PORT: '17480', MON_PORT: '13300' };
    await withLock(lock, async () => {
      const up = await run(SCRIPT, ['status'], env, 10_000).then(
        () => existsSync(join(cephBase, 's3.env')),
        () => false,
      );
      if (!up) {
        t.comment(`starting a Ceph RGW test cluster under ${cephBase} (scripts/ceph-rgw.sh up)`);
        await run(SCRIPT, ['down'], env, 60_000).catch(() => undefined);
        await rm(users, { recursive: true, force: true });
        await run(SCRIPT, ['up'], env, UP_TIMEOUT_MS);
      }
      await mkdir(users, { recursive: true });
      await writeFile(join(users, String(process.pid)), '');
    });
    t.teardown(() =>
      withLock(lock, async () => {
        await rm(join(users, String(process.pid)), { force: true });
        const left = (await readdir(users).catch(() => [] as string[])).filter((pid) =>
          alive(Number(pid)),
        );
        if (left.length > 0) return;
        await rmdir(users).catch(() => undefined);
        await run(SCRIPT, ['down'], env, 60_000);
      }),
    );
    base = fromEnv({ ...parseEnvFile(join(cephBase, 's3.env')) }, cephBase);
    scriptEnv = env;
  }
  const runId = randomBytes(4).toString('hex');
  return {
    ...base,
    prefix: (label) => `t-${runId}-${label}`,
    script: (...args) => run(SCRIPT, args, { ...process.env, ...scriptEnv }, UP_TIMEOUT_MS),
  };
}

/** `ioe-server gc` on `prefix` of the rig's bucket through `endpoint`; resolves with its output. */
export function runGc(rig: Rig, prefix: string, endpoint = rig.endpoints[0]): Promise<string> {
  return run(
    process.execPath,
    [SERVER_JS, 'gc', '--storage', `s3://${rig.bucket}/${prefix}`, '--s3-path-style'],
    { ...process.env, ...rig.credentials, AWS_ENDPOINT_URL: endpoint },
    30_000,
  );
}

/** An SDK client on one gateway, for looking at the bucket directly. */
export function s3Client(rig: Rig, endpoint = rig.endpoints[0]) {
  process.env.AWS_ACCESS_KEY_ID ??= rig.credentials.AWS_ACCESS_KEY_ID;
  process.env.AWS_SECRET_ACCESS_KEY ??= rig.credentials.AWS_SECRET_ACCESS_KEY;
  return createS3Client({ endpoint, pathStyle: true, maxAttempts: 1 });
}

export interface Replica {
  label: string;
  endpoint: string;
  port: number;
  httpPort: number;
  child: ChildProcess;
  exited: Promise<string>;
  stderr: string[];
}

export interface ReplicaOptions {
  endpoint: string;
  prefix: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  label?: string;
}

/** Lease time of the test replicas: a crash's lock is gone in seconds, not half a minute. */
export const TEST_LEASE_SECONDS = 4;

/** `ioe-server --storage s3://bucket/prefix` on one gateway, as a child process. */
export async function startReplica(t: Test, rig: Rig, options: ReplicaOptions): Promise<Replica> {
  const child = spawn(
    process.execPath,
    [
      SERVER_JS,
      '--storage',
      `s3://${rig.bucket}/${options.prefix}`,
      '--s3-path-style',
      '--port',
      '0',
      '--http-port',
      '0',
      '--log-level',
      'warn',
      ...(options.args ?? []),
    ],
    {
      env: {
        ...process.env,
        ...rig.credentials,
        AWS_ENDPOINT_URL: options.endpoint,
        IOE_S3_LEASE_SECONDS: String(TEST_LEASE_SECONDS),
        IOE_S3_GC_INTERVAL_SECONDS: '0',
        ...options.env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.on('exit', kill);
  t.teardown(() => stopReplica(replica));
  child.stdin!.on('error', () => undefined);
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderr.push(...text.split('\n').filter(Boolean));
    stderr.splice(0, Math.max(0, stderr.length - 40));
  });
  const exited = new Promise<string>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `exit code ${code}`)),
  );
  const replica: Replica = {
    label: options.label ?? options.endpoint,
    endpoint: options.endpoint,
    port: 0,
    httpPort: 0,
    child,
    exited,
    stderr,
  };
  const ports = await new Promise<{ port: number; httpPort: number }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`a replica did not start in ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      out += text;
      const tcp = /listening on \S+:([0-9]+)/.exec(out);
      const web = /web on http:\/\/\S+:([0-9]+)\//.exec(out);
      if (tcp && web) {
        clearTimeout(timer);
        resolve({ port: Number(tcp[1]), httpPort: Number(web[1]) });
      }
    });
    void exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`a replica ${how}: ${stderr.join('\n')}`));
    });
  });
  return Object.assign(replica, ports);
}

/** QUIT, then SIGKILL if it has not exited within 10 s. */
export async function stopReplica(replica: Replica): Promise<void> {
  const { child } = replica;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.stdin!.write('QUIT\n');
  const timeout = delay(10_000).then(() => 'timeout');
  if ((await Promise.race([replica.exited, timeout])) === 'timeout') {
    child.kill('SIGKILL');
    await replica.exited;
  }
}

/** Waits until `check` resolves true, polling; rejects after `timeoutMs`. */
export async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  everyMs = 100,
): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await delay(everyMs);
  }
}
