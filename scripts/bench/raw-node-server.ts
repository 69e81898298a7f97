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
 *
 * Only for the benchmark: names are not checked.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { Command, Option } from 'commander';

const CHUNK = 1024 * 1024;

const program = new Command('raw-node-server')
  .addOption(
    new Option('--mode <mode>').choices(['stream', 'upload', 'named']).makeOptionMandatory(),
  )
  .option('--file <file>', 'file streamed in stream mode')
  .option('--dir <dir>', 'folder for uploads in upload mode')
  .option('--root <dir>', 'folder of named files in named mode')
  .option('--sha256', 'upload mode: hash the bytes on the way, as IOE does', false)
  .option('--host <host>', 'address to bind', '127.0.0.1')
  .option('--port <port>', 'port; 0 picks a free one', '0');
program.parse();
const opts = program.opts<{
  mode: 'stream' | 'upload' | 'named';
  file?: string;
  dir?: string;
  root?: string;
  sha256: boolean;
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

const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy());
  if (opts.mode === 'stream') stream(socket, need(opts.file, '--file'));
  else if (opts.mode === 'upload') upload(socket, need(opts.dir, '--dir'));
  else named(socket, need(opts.root, '--root'));
});
server.listen(Number(opts.port), opts.host, () => {
  const address = server.address() as AddressInfo;
  console.log(`listening on ${address.address}:${address.port}`);
});
const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
