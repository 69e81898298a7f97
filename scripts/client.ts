#!/usr/bin/env node
/**
 * ioe: the command-line client. list, get (resumable, verified by SHA-256), put (verified
 * against the server's receipt), hash. Progress bars on a terminal only, on stderr.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { connect, ProtocolError, type IoeClient } from '../pipelines/client.js';
import { parseMediaType, type MediaType } from '../lib/media-names.js';

interface GlobalOptions {
  host: string;
  port: number;
}

function port(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || parsed < 1 || parsed > 65535) {
    throw new InvalidArgumentError('must be a port number from 1 to 65535');
  }
  return parsed;
}

function mediaType(value: string): MediaType {
  const type = parseMediaType(value);
  if (!type) throw new InvalidArgumentError('must be video, music or picture');
  return type;
}

/** A progress bar on stderr when it is a terminal; a no-op stream when piped. */
function progress(total: number, start: number, label: string): Transform {
  if (!process.stderr.isTTY) return new PassThrough();
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {value}/{total} bytes | {eta_formatted}`,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, start);
  let done = start;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      done += chunk.length;
      bar.update(done);
      callback(null, chunk);
    },
    flush(callback) {
      bar.stop();
      callback();
    },
  });
}

/** SHA-256 of a stream's bytes as they pass. */
function hashing(): Transform & { hex: () => string } {
  const hash = createHash('sha256');
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  }) as Transform & { hex: () => string };
  stream.hex = () => hash.digest('hex');
  return stream;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk);
  return hash.digest('hex');
}

async function fileSize(path: string): Promise<number | undefined> {
  return stat(path).then(
    (stats) => stats.size,
    () => undefined,
  );
}

async function withClient<T>(
  options: GlobalOptions,
  work: (client: IoeClient) => Promise<T>,
): Promise<T> {
  const client = await connect(options);
  try {
    return await work(client);
  } finally {
    await client.close().catch(() => client.destroy());
  }
}

function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

const program = new Command('ioe')
  .description('Client for the IOE media server.')
  .addOption(new Option('--host <host>', 'server address').env('IOE_HOST').default('127.0.0.1'))
  .addOption(
    new Option('--port <port>', 'server port').env('IOE_PORT').argParser(port).default(10000),
  )
  .showHelpAfterError();

program
  .command('list')
  .description('list the media files, optionally of one type (video, music, picture)')
  .argument('[type]', 'video, music or picture', mediaType)
  .option('--json', 'print the entries as JSON')
  .action(async (type: MediaType | undefined, options: { json?: boolean }) => {
    const entries = await withClient(program.opts(), (client) => client.list(type));
    if (options.json) {
      process.stdout.write(JSON.stringify(entries, null, 2) + '\n');
    } else if (entries.length === 0) {
      process.stdout.write(`The server holds no ${type ?? 'media'} files.\n`);
    } else {
      for (const entry of entries) {
        const size = humanSize(entry.size).padStart(10);
        process.stdout.write(
          `${entry.type.padEnd(8)}${size}  ${entry.mtime.toISOString()}  ${entry.name}\n`,
        );
      }
    }
  });

program
  .command('get')
  .description('download a file; verified against the server SHA-256 before it is kept')
  .argument('<name>', 'the name on the server')
  .option('-o, --output <path>', 'where to save it (default: the name without folders)')
  .option('--resume', 'continue an interrupted download from <path>.part')
  .option('--force', 'replace <path> if it exists')
  .action(async (name: string, options: { output?: string; resume?: boolean; force?: boolean }) => {
    const target = options.output ?? basename(name);
    const partial = `${target}.part`;
    if (!options.force && (await fileSize(target)) !== undefined) {
      throw new Error(`${target} exists; use --force to replace it or -o to save elsewhere`);
    }
    const offset = options.resume ? ((await fileSize(partial)) ?? 0) : 0;
    await withClient(program.opts(), async (client) => {
      const reply = client.read(name, { offset });
      // A refused READ errors the stream and rejects `size`; we report it through `size`.
      reply.once('error', () => undefined);
      const size = await reply.size.catch((error: unknown) => {
        if (error instanceof ProtocolError && error.code === 'BAD_RANGE') {
          throw new Error(
            `${partial} is longer than ${name} on the server; delete it and get again`,
          );
        }
        throw error;
      });
      await pipeline(
        reply,
        progress(offset + size, offset, name),
        createWriteStream(partial, { flags: offset > 0 ? 'a' : 'w' }),
      );
      const handle = await open(partial, 'r+');
      await handle.sync();
      await handle.close();
      const [remote, local] = await Promise.all([client.hash(name), sha256OfFile(partial)]);
      if (remote.sha256 !== local) {
        await unlink(partial);
        throw new Error(
          `${name}: SHA-256 mismatch (the file changed on the server?); removed ${partial}, get it again`,
        );
      }
      await rename(partial, target);
      process.stdout.write(`saved ${name} to ${target} (${remote.size} bytes, sha256 ${local})\n`);
    });
  });

program
  .command('put')
  .description('upload a file; checks the server receipt against the local SHA-256')
  .argument('<file>', 'the local file')
  .option('--as <name>', 'the name on the server (default: the file name)')
  .action(async (file: string, options: { as?: string }) => {
    const name = options.as ?? basename(file);
    const stats = await stat(file);
    if (!stats.isFile()) throw new Error(`${file} is not a regular file`);
    const localHash = hashing();
    const source = createReadStream(file, { highWaterMark: 1024 * 1024 });
    const receipt = await withClient(program.opts(), (client) =>
      client.write(name, source.pipe(localHash).pipe(progress(stats.size, 0, name)), stats.size),
    );
    if (receipt.sha256 !== localHash.hex()) {
      throw new Error(`${name}: the server stored bytes whose SHA-256 differs from ${file}`);
    }
    process.stdout.write(
      `uploaded ${file} as ${name} (${receipt.size} bytes, sha256 ${receipt.sha256})\n`,
    );
  });

program
  .command('hash')
  .description('print the SHA-256 and size of a file on the server')
  .argument('<name>', 'the name on the server')
  .action(async (name: string) => {
    const { sha256, size } = await withClient(program.opts(), (client) => client.hash(name));
    process.stdout.write(`${sha256}  ${size}  ${name}\n`);
  });

function describe(error: unknown): string {
  if (error instanceof ProtocolError) return `${error.code}: ${error.message}`;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') {
    const { host, port: p } = program.opts<GlobalOptions>();
    return `cannot connect to ${host}:${p} (is ioe-server running? see --host, --port, IOE_HOST, IOE_PORT)`;
  }
  return error instanceof Error ? error.message : String(error);
}

program.parseAsync().catch((error: unknown) => {
  process.stderr.write(`ioe: ${describe(error)}\n`);
  process.exitCode = 1;
});
