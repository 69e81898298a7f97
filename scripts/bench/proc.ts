/**
 * Child processes of the benchmark: the IOE server, the raw-node baseline, the Python reference
 * and nginx, each started on a free loopback port and stopped by its pid; plus their memory
 * and CPU time from /proc: the kernel's own peak (VmHWM) and current RSS (VmRSS), and the
 * utime + stime, of the server's whole process tree.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo } from 'node:net';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kibToMib, parseStatusKb } from './stats.js';
import { HOST } from './wire.js';

/**
 * A compiled script under dist/scripts/: beside this module when it runs compiled, and still
 * the compiled one when the tests load this module as TypeScript (`npm test` builds first).
 */
function compiled(path: string): string {
  return fileURLToPath(
    import.meta.url.endsWith('.ts')
      ? new URL(`../../dist/scripts/${path}`, import.meta.url)
      : new URL(`../${path}`, import.meta.url),
  );
}

export const SERVER_JS = compiled('server.js');

/**
 * V8 flags the server runs with, as `npm start` and the `ioe-server` command (its `#!` line)
 * start it: semi-spaces of 2 MiB instead of V8's up to 16. Each chunk a download sends leaves a
 * little short-lived garbage; with room for it V8 lets the young generation grow to some 40
 * MiB of RSS, a third of the memory of 100 slow readers (150 → 117 MiB peak). At 1 MiB, a
 * small READ's objects outlived the young collections that came every few milliseconds under
 * 200 clients, and were promoted and marked: 2 MiB made 7 % more READs with two threads, and
 * the slow readers' peak stayed about where it was (median 114.2 → 112.1 MiB, worst round
 * 114.5 → 117.3; with 4 MiB, 123.0 and 144.6; ARCHITECTURE.md, "Chunk sizes and memory").
 */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=2'];

/**
 * The environment the server runs with, beside those flags, as `npm start` and `ioe-server` set
 * it. glibc's malloc raises its mmap and trim thresholds each time a large block is freed (up to
 * 32 and 64 MiB); after the first 2 MiB chunks of a fast download, freed chunk memory then
 * stayed in the process for good. A fixed trim threshold keeps both at their 128 KiB defaults,
 * so memory freed by the collector goes back to the system: 100 slow readers peaked at 128
 * MiB before, 104 after (medians of 3 runs), for no measurable change in throughput. Other C
 * libraries ignore the variable.
 */
export const SERVER_ENV = { MALLOC_TRIM_THRESHOLD_: '131072' };
export const RAW_NODE_JS = compiled('bench/raw-node-server.js');

/**
 * The package's root: the nearest folder above this module with a package.json (the same
 * from scripts/bench/ under the tests' loader and from dist/scripts/bench/ compiled).
 */
export function packageRoot(from = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from);
  for (let i = 0; i < 20; i++) {
    try {
      accessSync(join(dir, 'package.json'), constants.R_OK);
      return dir;
    } catch {
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  throw new Error(`no package.json above ${from}`);
}

/** The Python reference server: a source file, never compiled, so not under dist/. */
export const PYTHON_REFERENCE = join(packageRoot(), 'scripts', 'bench', 'python-reference.py');

export interface Running {
  name: string;
  port: number;
  /** The HTTP door's port (IOE only). */
  httpPort?: number;
  pid: number;
  stop(): Promise<void>;
}

/** A process and its descendants (from /proc/PID/task/TID/children), parent first. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length && out.length < 1000) {
    const next = queue.shift()!;
    out.push(next);
    let tasks: string[] = [];
    try {
      tasks = readFileSync(`/proc/${next}/task/${next}/children`, 'utf8').split(/\s+/);
    } catch {
      // gone, or no CONFIG_PROC_CHILDREN: the process alone
    }
    for (const child of tasks) if (child) queue.push(Number(child));
  }
  return out;
}

export interface Memory {
  /** VmRSS summed over the tree, MiB. */
  rssMib: number;
  /** VmHWM (the kernel's peak RSS since start or since the last resetPeak) summed, MiB. */
  hwmMib: number;
  processes: number;
}

/**
 * The memory of a server: VmRSS and VmHWM of its process and every descendant, in MiB
 * (2^20 bytes), summed (for one process, exactly the kernel's figures; for several, the sum of
 * their peaks bounds the tree's peak from above). NaN if the process is gone.
 */
export function memoryOf(pid: number): Memory {
  let rss = 0;
  let hwm = 0;
  let processes = 0;
  for (const each of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${each}/status`, 'utf8');
      const r = parseStatusKb(status, 'VmRSS');
      const h = parseStatusKb(status, 'VmHWM');
      if (Number.isNaN(r) || Number.isNaN(h)) continue; // a zombie
      rss += r;
      hwm += h;
      processes++;
    } catch {
      // exited meanwhile
    }
  }
  if (processes === 0) return { rssMib: NaN, hwmMib: NaN, processes };
  return { rssMib: kibToMib(rss), hwmMib: kibToMib(hwm), processes };
}

/** VmRSS of a server's process tree in MiB, or NaN if it is gone. */
export function rssMib(pid: number): number {
  return memoryOf(pid).rssMib;
}

/**
 * Resets the kernel's peak RSS (VmHWM) of a server's processes to their current RSS
 * (`echo 5 > /proc/PID/clear_refs`, Linux ≥ 4.0). Returns false if any write failed.
 */
export function resetPeak(pid: number): boolean {
  let ok = true;
  for (const each of processTree(pid)) {
    try {
      writeFileSync(`/proc/${each}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

/**
 * Samples a server's RSS (MiB) every `intervalMs` until stopped; keeps the first, peak and
 * last. Only a guard (a round stops early past a safety limit): a sample can miss a short
 * spike, so the figures the benchmark reports are the kernel's VmHWM (memoryOf).
 */
export class RssSampler {
  readonly start: number;
  peak: number;
  last: number;
  private timer: NodeJS.Timeout;
  private readonly listeners: ((rss: number) => void)[] = [];

  constructor(
    readonly pid: number,
    intervalMs = 50,
  ) {
    this.start = rssMib(pid);
    this.peak = this.start;
    this.last = this.start;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Calls `fn` with every sample (e.g. to abort past a safety limit). */
  onSample(fn: (rss: number) => void): void {
    this.listeners.push(fn);
  }

  sample(): number {
    const rss = rssMib(this.pid);
    if (Number.isFinite(rss)) {
      this.last = rss;
      if (!(rss <= this.peak)) this.peak = rss;
      for (const fn of this.listeners) fn(rss);
    }
    return rss;
  }

  stop(): { start: number; peak: number; last: number } {
    clearInterval(this.timer);
    this.sample();
    return { start: this.start, peak: this.peak, last: this.last };
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** SIGTERM, then SIGKILL after `graceMs`. Only ever signals this child's own pid. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await waitExit(child, graceMs))) {
    child.kill('SIGKILL');
    await waitExit(child, 2000);
  }
}

/**
 * The ports in what a server printed: `listening on HOST:PORT` and, from IOE's HTTP door,
 * `web on http://HOST:PORT/` (or `web off: …`). undefined while a line is still missing.
 */
export function parseListening(
  out: string,
  wantHttp: boolean,
): { port: number; httpPort?: number } | undefined {
  const tcp = /listening on \S+:(\d+)\r?\n/.exec(out);
  if (!tcp) return undefined;
  if (!wantHttp) return { port: Number(tcp[1]) };
  const off = /web off: (.*)/.exec(out);
  if (off) throw new Error(`the HTTP door is off: ${off[1]}`);
  const web = /web on (https?):\/\/(?:\[[^\]]+\]|[^/:\s]+):(\d+)\/\r?\n/.exec(out);
  if (web?.[1] === 'https')
    throw new Error('the HTTP door speaks TLS; the benchmark needs plain HTTP');
  return web ? { port: Number(tcp[1]), httpPort: Number(web[2]) } : undefined;
}

/**
 * Starts a server (`command args…`: a node or python script) that prints `listening on
 * HOST:PORT` (and, with `wantHttp`, IOE's `web on http://HOST:PORT/`); resolves with its ports.
 */
export async function startListening(
  name: string,
  command: string,
  args: string[],
  logFile: string,
  wantHttp = false,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Running> {
  const log = openSync(logFile, 'a');
  const child = spawn(command, args, { env, stdio: ['pipe', 'pipe', log] });
  closeSync(log);
  const ports = await new Promise<{ port: number; httpPort?: number }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${name} did not start in 20 s`)), 20_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    };
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => {
      out += text;
      try {
        const found = parseListening(out, wantHttp);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        }
      } catch (error) {
        fail(error as Error);
      }
    });
    child.once('exit', (code, signal) =>
      fail(new Error(`${name} exited (${code ?? signal}) before listening; see ${logFile}`)),
    );
    child.once('error', fail);
  });
  child.stdout!.resume(); // keep draining whatever else it prints
  return { name, ...ports, pid: child.pid!, stop: () => stopChild(child) };
}

/**
 * The IOE server (compiled) run by the Node binary `node` on the library `library` (`--root
 * DIR` or `--storage s3://…`), TCP and HTTP doors on free ports, logging to `logFile`.
 */
export function startIoeOn(
  node: string,
  library: string[],
  logFile: string,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Running> {
  const ports = ['--port', '0', '--http-port', '0', '--host', HOST];
  const args = [...SERVER_NODE_FLAGS, SERVER_JS, ...ports, ...library, ...extra];
  return startListening('ioe', node, args, logFile, true, { ...env, ...SERVER_ENV });
}

/** The IOE server on the folder `root`. */
export function startIoe(
  node: string,
  root: string,
  logFile: string,
  extra: string[] = [],
): Promise<Running> {
  return startIoeOn(node, ['--root', root], logFile, extra);
}

/** The raw-node baseline (compiled) run by the Node binary `node`. */
export function startRawNode(node: string, args: string[], logFile: string): Promise<Running> {
  return startListening(
    'raw-node',
    node,
    [RAW_NODE_JS, '--port', '0', '--host', HOST, ...args],
    logFile,
  );
}

/** The Python reference (python-reference.py) run by `python`, serving `root`. */
export function startPython(python: string, root: string, logFile: string): Promise<Running> {
  return startListening(
    'python',
    python,
    [PYTHON_REFERENCE, '--root', root, '--host', HOST, '--port', '0'],
    logFile,
  );
}

/**
 * The version a Node binary reports (`v24.1.0`) and its absolute path; throws if `path` is
 * not an executable that answers `--version` as Node does.
 */
export function nodeBinary(path: string): { path: string; version: string } {
  const absolute = resolve(path);
  const result = spawnSync(absolute, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error) throw new Error(`--node ${path}: ${result.error.message}`);
  const version = (result.stdout ?? '').trim();
  if (result.status !== 0 || !/^v\d+\.\d+\.\d+/.test(version)) {
    throw new Error(
      `--node ${path}: not a Node binary (--version printed ${JSON.stringify(version.slice(0, 80))})`,
    );
  }
  return { path: absolute, version };
}

/**
 * The interpreter behind `python3` on PATH (sys.executable), so that the server's pid is
 * Python's own even where `python3` is a wrapper script (pyenv's shims); undefined if none.
 */
export function findPython(): string | undefined {
  const found = findExecutable('python3');
  if (!found) return undefined;
  const result = spawnSync(found, ['-c', 'import sys; print(sys.executable)'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  const real = (result.stdout ?? '').trim();
  return result.status === 0 && real ? real : found;
}

/** `python3 --version` without its `Python ` prefix, or '' if it does not answer. */
export function pythonVersion(path: string): string {
  const result = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return (result.stdout || result.stderr || '').trim().replace(/^Python\s+/, '');
}

/** The kernel's clock ticks per second (`getconf CLK_TCK`), the unit of utime and stime. */
export function clockTicks(): number {
  const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 10_000 });
  const ticks = Number((result.stdout ?? '').trim());
  return Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
}

/**
 * utime + stime (clock ticks) from the text of /proc/PID/stat: fields 14 and 15, counted after
 * the command name, which is in parentheses and may hold spaces. NaN if malformed.
 */
export function parseStatTicks(stat: string): number {
  const close = stat.lastIndexOf(')');
  if (close < 0) return NaN;
  const fields = stat.slice(close + 2).split(' '); // fields[0] is field 3, the state
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isInteger(utime) && Number.isInteger(stime) ? utime + stime : NaN;
}

let ticksPerSecond: number | undefined;

/**
 * CPU seconds (user + system) a server has used since it started: utime + stime of its process
 * (all its threads: libuv's pool, Python's per-connection threads) and of each descendant.
 * NaN if the process is gone.
 */
export function cpuSeconds(pid: number): number {
  ticksPerSecond ??= clockTicks();
  let ticks = 0;
  let found = 0;
  for (const each of processTree(pid)) {
    try {
      const value = parseStatTicks(readFileSync(`/proc/${each}/stat`, 'utf8'));
      if (Number.isNaN(value)) continue;
      ticks += value;
      found++;
    } catch {
      // exited meanwhile
    }
  }
  return found ? ticks / ticksPerSecond : NaN;
}

/** The path of an executable on PATH (or in /usr/sbin, where Debian puts nginx). */
export function findExecutable(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin']) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function nginxVersion(path: string): string {
  const result = spawnSync(path, ['-v'], { encoding: 'utf8' });
  return (result.stderr || result.stdout || '').trim().replace(/^nginx version:\s*/, '');
}

/** A port that was free a moment ago on the loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: HOST });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The nginx configuration of the benchmark: one process, sendfile, static files from `root`. */
export function nginxConfig(options: { root: string; dir: string; port: number }): string {
  const { root, dir, port } = options;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return [
    '# generated by the IOE benchmark',
    'daemon off;',
    'master_process off;',
    isRoot ? 'user root;' : '',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} warn;`,
    'worker_rlimit_nofile 16384;',
    'events { worker_connections 8192; }',
    'http {',
    '  access_log off;',
    '  sendfile on;',
    '  tcp_nopush on;',
    '  keepalive_timeout 300s;',
    '  keepalive_requests 1000000;',
    '  client_header_timeout 300s;',
    '  send_timeout 300s;',
    '  default_type application/octet-stream;',
    `  client_body_temp_path ${join(dir, 'body')};`,
    `  proxy_temp_path ${join(dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(dir, 'scgi')};`,
    '  server {',
    `    listen ${HOST}:${port};`,
    `    root ${root};`,
    '    location / { }',
    '  }',
    '}',
    '',
  ]
    .filter((line) => line !== '')
    .join('\n');
}

/** nginx in the foreground (one process) serving `root`; config and logs in `dir`. */
export async function startNginx(nginx: string, root: string, dir: string): Promise<Running> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig({ root, dir, port }));
  const log = openSync(join(dir, 'stderr.log'), 'a');
  const child = spawn(nginx, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], {
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`nginx did not start; see ${join(dir, 'error.log')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name: 'nginx', port, pid: child.pid!, stop: () => stopChild(child) };
}

/** `ulimit -n` of this process (soft limit), or NaN if it cannot be read. */
export function openFilesLimit(): number {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    if (!match) return NaN;
    return match[1] === 'unlimited' ? Infinity : Number(match[1]);
  } catch {
    return NaN;
  }
}

/** `wrk --version`'s first line, without its usage text. */
export function wrkVersion(path: string): string {
  const result = spawnSync(path, ['--version'], { encoding: 'utf8' });
  const line = (result.stdout || result.stderr || '').split('\n')[0] ?? '';
  return line.replace(/\s+Copyright.*$/, '').trim();
}
