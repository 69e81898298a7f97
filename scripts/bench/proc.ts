/**
 * Child processes of the benchmark: the IOE server, the raw-node baseline and nginx, each
 * started on a free loopback port and stopped by its pid; plus /proc RSS sampling.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo } from 'node:net';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kibToMb, parseVmRss } from './stats.js';
import { HOST } from './wire.js';

export const SERVER_JS = fileURLToPath(new URL('../server.js', import.meta.url));
export const RAW_NODE_JS = fileURLToPath(new URL('./raw-node-server.js', import.meta.url));

export interface Running {
  name: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** VmRSS of a process in MB (10^6 bytes), or NaN if it is gone. */
export function rssMb(pid: number): number {
  try {
    return kibToMb(parseVmRss(readFileSync(`/proc/${pid}/status`, 'utf8')));
  } catch {
    return NaN;
  }
}

/** Samples a process's RSS every `intervalMs` until stopped; keeps the first, peak and last. */
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
    this.start = rssMb(pid);
    this.peak = this.start;
    this.last = this.start;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Calls `fn` with every sample (e.g. to abort past a safety limit). */
  onSample(fn: (rss: number) => void): void {
    this.listeners.push(fn);
  }

  sample(): number {
    const rss = rssMb(this.pid);
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

/** Starts a node script that prints `listening on HOST:PORT`; resolves with its port. */
async function startListening(
  name: string,
  script: string,
  args: string[],
  logFile: string,
): Promise<Running> {
  const log = openSync(logFile, 'a');
  const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', log] });
  closeSync(log);
  const port = await new Promise<number>((resolve, reject) => {
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
      const match = /listening on \S+:(\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once('exit', (code, signal) =>
      fail(new Error(`${name} exited (${code ?? signal}) before listening; see ${logFile}`)),
    );
    child.once('error', fail);
  });
  child.stdout!.resume(); // keep draining whatever else it prints
  return { name, port, pid: child.pid!, stop: () => stopChild(child) };
}

/** The IOE server (compiled), on a free port, logging to `logFile`. */
export function startIoe(root: string, logFile: string, extra: string[] = []): Promise<Running> {
  return startListening(
    'ioe',
    SERVER_JS,
    ['--port', '0', '--http-port', '0', '--host', HOST, '--root', root, ...extra],
    logFile,
  );
}

export function startRawNode(args: string[], logFile: string): Promise<Running> {
  return startListening('raw-node', RAW_NODE_JS, ['--port', '0', '--host', HOST, ...args], logFile);
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
