/**
 * Shared set-up for the black-box access tests (test/security/access-*.test.ts): accounts files
 * written the way the server wants them, an in-process server on real sockets with a captured
 * log, the ioe-server executable with its stdout and pino log, a non-loopback address of this
 * machine, and a check that no secret reached any log line. Every wait is bounded.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';
import type { Test } from 'tap';
import { Access, type AccessOptions } from '../../lib/access.js';
import { hashPassword, type ScryptParams } from '../../lib/accounts.js';
import type { TlsSetup } from '../../lib/tls.js';
import { MediaServer } from '../../pipelines/server.js';
import { buildRequest, HttpConn, type HttpResponse, type RequestSpec } from './http-client.js';
import { RawClient } from './raw-client.js';
import { built } from './paths.js';

const run = promisify(execFile);

/** The compiled executable (`npm run build` first). */
export const SERVER = built('scripts/server.js');

/** The cheapest credential the contract allows (N = 2^15), with r = 1 so a check is ~20 ms. */
export const FAST_SCRYPT: ScryptParams = { ln: 15, r: 1, p: 1 };

/** A `$scrypt$…` credential for `password`, cheap to check. */
export function credential(password: string): Promise<string> {
  return hashPassword(password, FAST_SCRYPT);
}

/** `name:credential:rules` with a cheap credential. */
export async function accountLine(name: string, password: string, rules: string): Promise<string> {
  return `${name}:${await credential(password)}:${rules}`;
}

/**
 * The library and the rules both doors' access suites test (access-tcp, access-http): the
 * contract's longest-prefix rule on whole segments (`/music` is not `/musicals`), a nested `-`,
 * and anonymous's own line.
 */
export const RULE_FILES = [
  'music/a.mp3',
  'music/x/b.mp3',
  'music/uploads/u.mp3',
  'music/uploads/private/p.mp3',
  'musicals/c.mp3',
  'music.mp3',
  'public/pub.jpg',
  'public/secret/s.jpg',
  'public/drop/d.jpg',
  'publicity/q.jpg',
  'top.mp4',
];

export type RuleAccount = 'anonymous' | 'alice' | 'bob' | 'carol' | 'dan';

/** Who may read what under those rules (LIST's order). */
export const READABLE_BY: Record<RuleAccount, string[]> = {
  anonymous: ['public/drop/d.jpg', 'public/pub.jpg'],
  alice: ['music/a.mp3', 'music/uploads/u.mp3', 'music/x/b.mp3'],
  bob: [
    'music.mp3',
    'musicals/c.mp3',
    'public/drop/d.jpg',
    'public/pub.jpg',
    'public/secret/s.jpg',
    'publicity/q.jpg',
    'top.mp4',
  ],
  carol: [...RULE_FILES].sort(),
  dan: [],
};

/** The accounts file's lines for those rules, with each suite's own passwords. */
export async function ruleAccountLines(
  passwords: Record<Exclude<RuleAccount, 'anonymous'>, string>,
): Promise<string[]> {
  return [
    'anonymous::r=/public,-=/public/secret,rw=/public/drop',
    await accountLine(
      'alice',
      passwords.alice,
      'r=/music,rw=/music/uploads,-=/music/uploads/private',
    ),
    await accountLine('bob', passwords.bob, 'r=/,-=/music'),
    await accountLine('carol', passwords.carol, 'rw=/'),
    await accountLine('dan', passwords.dan, ''),
  ];
}

/** Writes an accounts file with mode 0600, atomically (a SIGHUP never reads half a file). */
export async function writeUsersFile(path: string, lines: readonly string[]): Promise<void> {
  const temp = join(dirname(path), `.users-${randomBytes(4).toString('hex')}`);
  await writeFile(temp, lines.map((line) => `${line}\n`).join(''), { mode: 0o600 });
  await chmod(temp, 0o600);
  await rename(temp, path);
}

export async function tempDir(t: Test, prefix = 'ioe-access-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `Authorization: Basic …` for a name and password (UTF-8). */
export function basic(name: string, password: string): string {
  return `Basic ${Buffer.from(`${name}:${password}`, 'utf8').toString('base64')}`;
}

/** A pino logger whose JSON lines are kept in memory. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly logger: Logger;

  constructor(level = 'debug') {
    this.logger = pino({ level }, { write: (line: string) => void this.lines.push(line) });
  }

  /** Parsed lines. */
  get records(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** The `auth` lines (one per AUTH outcome). */
  get auths(): Record<string, unknown>[] {
    return this.records.filter((record) => record.msg === 'auth');
  }
}

/** Parses pino JSON lines out of a stderr text (other lines are skipped). */
export function logRecords(text: string): Record<string, unknown>[] {
  const records: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      records.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut short: not a record
    }
  }
  return records;
}

/**
 * Asserts that no line of `lines` holds any of `secrets`, nor its base64 (as in a Basic
 * header), nor its URL-encoding. Reports the first offending line.
 */
export function checkNoSecrets(
  t: Test,
  lines: readonly string[],
  secrets: readonly string[],
  what: string,
): void {
  const forms = secrets.flatMap((secret) => [
    secret,
    Buffer.from(secret).toString('base64'),
    encodeURIComponent(secret),
  ]);
  const offending = lines.filter((line) => forms.some((form) => line.includes(form)));
  t.same(offending, [], `${what}: no password or token in any of ${lines.length} lines`);
}

/** True when `address` can be bound and connected to from itself within a second. */
async function reachable(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer((socket) => socket.end('ok\n'));
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      server.close();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), 1000);
    server.once('error', () => finish(false));
    server.listen(0, address, () => {
      const { port } = server.address() as { port: number };
      const socket = connect({ port, host: address, localAddress: address });
      socket.once('data', () => {
        socket.destroy();
        finish(true);
      });
      socket.once('error', () => finish(false));
    });
  });
}

/**
 * An IPv4 address of this machine outside 127.0.0.0/8 (what the contract calls non-loopback),
 * that a test can bind to and connect from. One from an interface when there is one; else one
 * added to `lo` for the test (root only), removed at teardown. Throws, loudly, when neither
 * works: these tests must not be skipped.
 */
export async function nonLoopbackAddress(t: Test): Promise<string> {
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.family === 'IPv4' && !entry.address.startsWith('127.')) {
        if (await reachable(entry.address)) return entry.address;
      }
    }
  }
  const added = '10.231.0.1';
  try {
    await run('ip', ['addr', 'add', `${added}/32`, 'dev', 'lo']);
  } catch (error) {
    throw new Error(
      `no non-loopback IPv4 address on this machine, and adding ${added} to lo failed ` +
        `(${(error as Error).message}); run as root or on a machine with a network interface`,
    );
  }
  t.teardown(() => run('ip', ['addr', 'del', `${added}/32`, 'dev', 'lo']).catch(() => undefined));
  if (!(await reachable(added))) throw new Error(`${added} was added to lo but is not reachable`);
  return added;
}

export interface AccessEnvOptions {
  /** The accounts file's lines; undefined: no accounts file. */
  users?: readonly string[];
  /** The bind address (default 127.0.0.1). */
  host?: string;
  readOnly?: boolean;
  public?: boolean;
  insecureAuth?: boolean;
  maxUpload?: number;
  tls?: TlsSetup;
  authenticator?: AccessOptions['authenticator'];
  /** Files put in the root before the server starts. */
  files?: Record<string, string | Buffer>;
  idleTimeoutSeconds?: number;
}

export interface AccessEnv {
  server: MediaServer;
  access: Access;
  log: LogCapture;
  base: string;
  root: string;
  usersFile?: string;
  host: string;
  tcpPort: number;
  httpPort: number;
  put(name: string, data: string | Buffer): Promise<void>;
  exists(name: string): Promise<boolean>;
  /** Every regular file under the root, hidden ones included (relative names, sorted). */
  files(): Promise<string[]>;
  /** A TCP client; `from` picks the source address (and the server address when non-loopback). */
  connect(from?: string): Promise<RawClient>;
  /** One HTTP request on a fresh connection, from `from` (default 127.0.0.1). */
  http(spec: RequestSpec, from?: string): Promise<HttpResponse>;
}

/** An in-process server with both doors on free ports and the given accounts. */
export async function startAccessServer(
  t: Test,
  options: AccessEnvOptions = {},
): Promise<AccessEnv> {
  const base = await tempDir(t);
  const root = join(base, 'media');
  await mkdir(root);
  const host = options.host ?? '127.0.0.1';
  let usersFile: string | undefined;
  if (options.users) {
    usersFile = join(base, 'users');
    await writeUsersFile(usersFile, options.users);
  }
  const put = async (name: string, data: string | Buffer): Promise<void> => {
    const path = join(root, name);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, data);
  };
  for (const [name, data] of Object.entries(options.files ?? {})) await put(name, data);
  const log = new LogCapture();
  const access = await Access.create({
    usersFile,
    bindHost: host,
    readOnly: options.readOnly,
    public: options.public,
    insecureAuth: options.insecureAuth,
    log: log.logger,
    authenticator: options.authenticator,
  });
  const server = await MediaServer.create({
    root,
    host,
    port: 0,
    httpPort: 0,
    access,
    tls: options.tls,
    readOnly: options.readOnly ?? false,
    maxUpload: options.maxUpload,
    idleTimeoutSeconds: options.idleTimeoutSeconds ?? 30,
    logger: log.logger,
  });
  const { port: tcpPort } = await server.listen();
  const httpPort = server.httpAddress!.port;
  const clients: { destroy(): void }[] = [];
  t.teardown(async () => {
    for (const client of clients) client.destroy();
    await server.forceQuit();
  });
  const target = (from: string | undefined): string =>
    from === undefined || from.startsWith('127.') ? '127.0.0.1' : from;
  return {
    server,
    access,
    log,
    base,
    root,
    usersFile,
    host,
    tcpPort,
    httpPort,
    put,
    async exists(name) {
      try {
        await stat(join(root, name));
        return true;
      } catch {
        return false;
      }
    },
    async files() {
      const found: string[] = [];
      const walk = async (dir: string, prefix: string): Promise<void> => {
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          const name = prefix + entry.name;
          if (entry.isDirectory()) await walk(join(dir, entry.name), `${name}/`);
          else found.push(name);
        }
      };
      await walk(root, '');
      return found.sort();
    },
    async connect(from) {
      const client = await RawClient.connect(tcpPort, target(from), from);
      clients.push(client);
      return client;
    },
    async http(spec, from) {
      const conn = await HttpConn.connect(httpPort, target(from), from);
      clients.push(conn);
      try {
        await conn.send(buildRequest(httpPort, spec));
        return await conn.readResponse({ head: spec.method === 'HEAD' });
      } finally {
        conn.destroy();
      }
    },
  };
}

/** Sends one command line and reads one reply line. */
export async function ask(client: RawClient, line: string): Promise<string> {
  await client.send(`${line}\n`);
  return client.readLine();
}

/** The code of a TCP reply: `OK` or the ERR code. */
export function codeOf(reply: string): string {
  return reply.startsWith('OK') ? 'OK' : (reply.split(' ')[1] ?? reply);
}

/** Reads a LIST reply whole; returns the names. */
export async function readList(client: RawClient): Promise<string[]> {
  const head = await client.readLine();
  const match = /^OK (\d+)$/.exec(head);
  if (!match) throw new Error(`LIST answered ${JSON.stringify(head)}`);
  const lines = await client.readLines(Number(match[1]));
  return lines.map((line) => line.split('\t')[1]);
}

// ---------------------------------------------------------------------------------------------
// The executable

export interface Cli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** The pino records on stderr so far. */
  logs(): Record<string, unknown>[];
  host: string;
  tcpPort: number;
  httpPort?: number;
  /** `https` or `http`, from the `web on` line. */
  scheme?: string;
  /** The `tls fingerprint sha256 …` value, when printed. */
  fingerprint?: string;
  waitStdout(pattern: RegExp, ms?: number): Promise<RegExpExecArray>;
  /** Waits until at least `count` log records satisfy `match`. */
  waitLog(
    match: (record: Record<string, unknown>) => boolean,
    count?: number,
    ms?: number,
  ): Promise<void>;
  /** SIGHUP, then waits for the accounts reload to be logged (either outcome). */
  sighup(ms?: number): Promise<Record<string, unknown>>;
  /** QUIT on stdin, then waits for the exit (SIGKILL after `ms`). */
  stop(ms?: number): Promise<void>;
}

/**
 * Starts the executable with `args` (add `--root`, `--port 0`, `--http-port 0` unless given)
 * and waits for `listening on` and, with the web door, `web on`. Killed at teardown.
 */
export async function launchServer(
  t: Test,
  args: readonly string[],
  options: { root?: string; noWeb?: boolean; ms?: number } = {},
): Promise<Cli> {
  const root = options.root ?? join(await tempDir(t, 'ioe-access-root-'), 'media');
  const full = [
    ...(args.includes('--root') ? [] : ['--root', root]),
    ...(args.includes('--port') ? [] : ['--port', '0']),
    ...(args.includes('--http-port') || args.includes('--no-http') ? [] : ['--http-port', '0']),
    ...args,
  ];
  const child = spawn(process.execPath, [SERVER, ...full], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  const wake = (): void => {
    for (const listener of [...listeners]) listener();
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    wake();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    wake();
  });
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', wake);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const waitFor = <T>(check: () => T | undefined, what: string, ms: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const test = (): void => {
        const value = check();
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done();
          reject(
            new Error(`the server exited before ${what}; stdout: ${stdout}; stderr: ${stderr}`),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`timed out after ${ms} ms: ${what}; stdout: ${stdout}; stderr: ${stderr}`),
        );
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        listeners.delete(test);
      };
      listeners.add(test);
      test();
    });
  const waitStdout = (pattern: RegExp, ms = 10_000): Promise<RegExpExecArray> =>
    waitFor(() => pattern.exec(stdout) ?? undefined, `stdout matching ${pattern}`, ms);
  const logs = (): Record<string, unknown>[] => logRecords(stderr);
  const listening = await waitStdout(/listening on (\S+):(\d+)\n/, options.ms);
  const web = args.includes('--no-http')
    ? undefined
    : await waitStdout(/web on (https?):\/\/(\S+):(\d+)\//, options.ms);
  const fingerprint = /tls fingerprint sha256 (\S+)\n/.exec(stdout)?.[1];
  let reloads = 0;
  const isReload = (record: Record<string, unknown>): boolean =>
    record.msg === 'accounts reloaded' ||
    record.msg === 'accounts not reloaded; the previous accounts stay in force';
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    logs,
    host: listening[1],
    tcpPort: Number(listening[2]),
    httpPort: web ? Number(web[3]) : undefined,
    scheme: web?.[1],
    fingerprint,
    waitStdout,
    async waitLog(match, count = 1, ms = 10_000) {
      await waitFor(
        () => (logs().filter(match).length >= count ? true : undefined),
        `${count} matching log record(s)`,
        ms,
      );
    },
    async sighup(ms = 10_000) {
      reloads++;
      const want = reloads;
      child.kill('SIGHUP');
      return waitFor(() => logs().filter(isReload)[want - 1], `reload #${want} to be logged`, ms);
    },
    async stop(ms = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin!.write('QUIT\n');
      const timer = setTimeout(() => child.kill('SIGKILL'), ms);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Runs `ioe-server users …` with `input` on stdin; resolves with its output and exit code. */
export function runUsers(
  args: readonly string[],
  input = '',
  ms = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVER, 'users', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`users ${args.join(' ')} took over ${ms} ms; stderr: ${stderr}`));
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(input);
  });
}
