#!/usr/bin/env node
/**
 * The benchmark's raw-node baseline: a bare `net` server in the same runtime, with no protocol,
 * doing what the IOE server must do at least as fast. Prints `listening on HOST:PORT`.
 *
 *   --mode stream --file F   on connect, stream F (fs.createReadStream, 1 MiB chunks) and close
 *   --mode upload --dir D    pipe the socket into a new file in D (1 MiB buffer) until the client
 *                            half-closes, fsync, reply `OK <bytes>\n`, close (and delete the file)
 *     --sha256               also hash the bytes as they pass, as IOE must (`OK <bytes> <sha256>`):
 *                            a reference that shows what the protocol's SHA-256 costs
 *   --mode named --root R    for each line `<name>\n`, stream R/<name> (1 MiB chunks); the
 *                            client knows the sizes; the connection stays open
 *   --mode small --root R    for each line `READ,<name>\n` (or `<name>\n`), answer as IOE does,
 *                            `OK <size>\n` and the bytes: the file read synchronously (open,
 *                            fstat, one read into a buffer that already holds the head, close)
 *                            and sent with one socket.write, no stream: the fastest plain Node
 *                            way to serve a named small file per request on one process, the
 *                            ceiling of the many-small scenario (files must be small: each
 *                            reply is one buffer, and the event loop waits on the disk); on
 *                            Node 22.12 and later, four listening sockets share the port, as
 *                            in the IOE server
 *     --processes N          N processes (node:cluster) share the port: what a second core
 *                            would give a Node server that shared nothing between them
 *
 * Only for the benchmark: names are not checked.
 */
import cluster from 'node:cluster';
import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fstatSync,
  openSync,
  readSync,
} from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { positive } from './options.js';
import { reusePortSupported } from '../../pipelines/listeners.js';

const CHUNK = 1024 * 1024;

const program = new Command('raw-node-server')
  .addOption(
    new Option('--mode <mode>')
      .choices(['stream', 'upload', 'named', 'small'])
      .makeOptionMandatory(),
  )
  .option('--file <file>', 'file streamed in stream mode')
  .option('--dir <dir>', 'folder for uploads in upload mode')
  .option('--root <dir>', 'folder of named files in named and small modes')
  .option('--sha256', 'upload mode: hash the bytes on the way, as IOE does', false)
  .option('--processes <n>', 'processes sharing the port (node:cluster)', positive, 1)
  .option('--host <host>', 'address to bind', '127.0.0.1')
  .option('--port <port>', 'port; 0 picks a free one', '0');
program.parse();
const opts = program.opts<{
  mode: 'stream' | 'upload' | 'named' | 'small';
  file?: string;
  dir?: string;
  root?: string;
  sha256: boolean;
  processes: number;
  host: string;
  port: string;
}>();

function need(value: string | undefined, flag: string): string {
  if (value === undefined) {
    console.error(`--mode ${opts.mode} needs ${flag}`);
    process.exit(2);
  }
  return value;
}

function stream(socket: Socket, file: string): void {
  const source = createReadStream(file, { highWaterMark: CHUNK });
  source.on('error', () => socket.destroy());
  source.pipe(socket);
}

let uploads = 0;
function upload(socket: Socket, dir: string): void {
  const path = join(dir, `upload-${process.pid}-${uploads++}.bin`);
  // flush: fsync before the descriptor is closed; 'close' comes after both.
  const sink = createWriteStream(path, { highWaterMark: CHUNK, flush: true });
  const fail = (): void => {
    socket.destroy();
    sink.destroy();
    void unlink(path).catch(() => undefined);
  };
  sink.on('error', fail);
  socket.on('error', fail);
  const hash = opts.sha256 ? createHash('sha256') : undefined;
  if (hash) socket.on('data', (chunk: Buffer) => hash.update(chunk));
  sink.on('close', () => {
    if (socket.destroyed) return;
    socket.end(`OK ${sink.bytesWritten}${hash ? ` ${hash.digest('hex')}` : ''}\n`);
    void unlink(path).catch(() => undefined);
  });
  socket.pipe(sink);
}

function named(socket: Socket, root: string): void {
  let pending = '';
  const queue: string[] = [];
  let busy = false;
  let ended = false;
  const next = (): void => {
    const name = queue.shift();
    if (name === undefined) {
      busy = false;
      if (ended) socket.end();
      return;
    }
    busy = true;
    const source = createReadStream(join(root, name), { highWaterMark: CHUNK });
    source.on('error', () => socket.destroy());
    source.on('end', next);
    source.pipe(socket, { end: false });
  };
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      queue.push(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
    }
    if (!busy) next();
  });
  socket.on('end', () => {
    ended = true;
    if (!busy) socket.end();
  });
}

const NOT_FOUND = Buffer.from('ERR NOT_FOUND no such file\n');

/** `OK <size>\n` and the whole file at `path`, in one buffer, read synchronously. */
function readWhole(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return NOT_FOUND;
  }
  try {
    const size = fstatSync(fd).size;
    const head = `OK ${size}\n`;
    const reply = Buffer.allocUnsafe(head.length + size);
    let at = reply.write(head, 0, 'latin1');
    while (at < reply.length) {
      const n = readSync(fd, reply, at, reply.length - at, at - head.length);
      if (n === 0) throw new Error(`${path} shrank while being read`);
      at += n;
    }
    return reply;
  } finally {
    closeSync(fd);
  }
}

function small(socket: Socket, root: string): void {
  const prefix = root.endsWith('/') ? root : `${root}/`;
  let pending = '';
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    pending = pending === '' ? text : pending + text;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      const name = line.startsWith('READ,') ? line.slice(5) : line;
      let reply: Buffer;
      try {
        reply = readWhole(prefix + name);
      } catch {
        socket.destroy();
        return;
      }
      socket.write(reply);
    }
  });
  socket.on('end', () => socket.end());
}

function onConnection(socket: Socket): void {
  socket.on('error', () => socket.destroy());
  if (opts.mode === 'stream') stream(socket, need(opts.file, '--file'));
  else if (opts.mode === 'upload') upload(socket, need(opts.dir, '--dir'));
  else if (opts.mode === 'named') named(socket, need(opts.root, '--root'));
  else small(socket, need(opts.root, '--root'));
}

/**
 * Listening sockets: in small mode, four on one port where Node can share it, as the IOE
 * server's doors do (libuv accepts one connection per listening socket per turn of the event
 * loop, so 200 clients connecting to a busy server would wait turns for their first reply).
 */
const PROCESSES = opts.processes;
const LISTENERS = opts.mode === 'small' && PROCESSES === 1 && reusePortSupported() ? 4 : 1;

const servers: Server[] = [];

function listen(port: number, reusePort: boolean): Promise<AddressInfo> {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
  servers.push(server);
  const options: { port: number; host: string; reusePort?: boolean } = { port, host: opts.host };
  if (reusePort) options.reusePort = true;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => resolve(server.address() as AddressInfo));
  });
}

async function start(): Promise<void> {
  const sharing = LISTENERS > 1;
  const address = await listen(Number(opts.port), sharing);
  for (let i = 1; i < LISTENERS; i++) await listen(address.port, true);
  // Workers of --processes share the primary's port (listen(0) in a worker gets the same one
  // for all): the primary says where once all of them listen.
  if (cluster.isPrimary) console.log(`listening on ${address.address}:${address.port}`);
  else process.send?.({ listening: address.port });
}

/** --processes N: the primary only forks the workers and says where they listen. */
function startWorkers(): void {
  let listening = 0;
  cluster.on('message', (_worker, message: { listening?: number }) => {
    if (message.listening !== undefined && ++listening === PROCESSES) {
      console.log(`listening on ${opts.host}:${message.listening}`);
    }
  });
  cluster.on('exit', (_worker, code) => {
    console.error(`a worker exited (${code})`);
    process.exit(1);
  });
  for (let i = 0; i < PROCESSES; i++) cluster.fork();
}

if (PROCESSES > 1 && cluster.isPrimary) {
  startWorkers();
} else {
  start().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
const stop = (): void => {
  for (const server of servers) server.close();
  if (cluster.isPrimary) {
    cluster.removeAllListeners('exit');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill();
  }
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
