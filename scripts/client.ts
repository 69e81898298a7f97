#!/usr/bin/env node
/**
 * ioe: the command-line client. list, get (resumable, verified by SHA-256), put (verified
 * against the server's receipt), hash, whoami. Progress bars on a terminal only, on stderr.
 *
 * Access (access.md): `--user NAME` (or IOE_USER) authenticates first. The password comes from
 * the first line of stdin with `--password-stdin`; else from IOE_PASSWORD; else from a prompt
 * on the terminal, not echoed. It is never an argument, and stdin is never read unless asked:
 * a script whose stdin is something else (`while read f; do ioe put "$f"; done < list`) must
 * not have a line taken as a password. With none of the three, it fails at once, saying so.
 * `--tls` connects with TLS; `--ca FILE` (IOE_CA) trusts that PEM, `--fingerprint SHA256`
 * (IOE_FINGERPRINT) pins the certificate; either implies `--tls`.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Cancelled, HiddenLineReader, readOneLine } from '../lib/terminal-input.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import {
  connect,
  FingerprintMismatchError,
  ProtocolError,
  type ConnectOptions,
  type IoeClient,
} from '../pipelines/client.js';
import { parseMediaType, type MediaType } from '../lib/media-names.js';

interface GlobalOptions {
  host: string;
  port: number;
  user?: string;
  passwordStdin?: boolean;
  tls?: boolean;
  ca?: string;
  fingerprint?: string;
}

/** Ctrl-C or Ctrl-D at the password prompt: exit 130, as for an interrupt. */

function port(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || parsed < 1 || parsed > 65535) {
    throw new InvalidArgumentError('must be a port number from 1 to 65535');
  }
  return parsed;
}

function usesTls(options: GlobalOptions): boolean {
  return Boolean(options.tls || options.ca !== undefined || options.fingerprint !== undefined);
}

/** The password for `--user`: `--password-stdin`, IOE_PASSWORD, or the terminal. */
async function password(options: GlobalOptions, user: string): Promise<string> {
  const fromEnv = process.env.IOE_PASSWORD;
  let typed: string | undefined;
  if (options.passwordStdin) {
    typed = await readOneLine(process.stdin);
    if (typed === undefined) throw new Error('--password-stdin: nothing on stdin');
  } else if (fromEnv) {
    typed = fromEnv;
  } else if (process.stdin.isTTY) {
    const reader = new HiddenLineReader(process.stdin, process.stderr);
    try {
      typed = await reader.next(`password for ${user} at ${options.host}:${options.port}: `);
    } finally {
      reader.close();
    }
  } else {
    throw new Error(
      `no password for ${user}: set IOE_PASSWORD, pass --password-stdin, or run ioe on a terminal`,
    );
  }
  if (typed === '') throw new Error(`the password for ${user} is empty`);
  return typed;
}

/** What `connect` takes, from the global options (reading the CA file, asking the password). */
async function connectOptions(options: GlobalOptions): Promise<ConnectOptions> {
  const settings: ConnectOptions = { host: options.host, port: options.port };
  if (options.passwordStdin && options.user === undefined) {
    throw new Error('--password-stdin needs --user (or IOE_USER)');
  }
  if (usesTls(options)) {
    if (options.fingerprint !== undefined) {
      // Loaded only for TLS: lib/tls.ts brings the certificate maker along.
      const { parseFingerprint } = await import('../lib/tls.js');
      if (!parseFingerprint(options.fingerprint)) {
        throw new Error(
          `--fingerprint ${options.fingerprint}: not a SHA-256 fingerprint (64 hex digits, colons optional)`,
        );
      }
    }
    let ca: Buffer | undefined;
    if (options.ca !== undefined) {
      try {
        ca = await readFile(options.ca);
      } catch (error) {
        throw new Error(`cannot read the CA file ${options.ca}: ${(error as Error).message}`);
      }
    }
    settings.tls = { ca, fingerprint: options.fingerprint };
  }
  if (options.user !== undefined) {
    settings.user = options.user;
    settings.password = await password(options, options.user);
  }
  return settings;
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
  const client = await connect(await connectOptions(options));
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
  .addOption(
    new Option(
      '--user <name>',
      'authenticate as this account; the password comes from IOE_PASSWORD, --password-stdin or a prompt',
    ).env('IOE_USER'),
  )
  .option('--password-stdin', 'with --user: read the password from the first line of stdin')
  .option('--tls', "connect with TLS, checking the server's certificate against the system's CAs")
  .addOption(
    new Option('--ca <file>', 'TLS, trusting the certificate(s) in this PEM file').env('IOE_CA'),
  )
  .addOption(
    new Option(
      '--fingerprint <sha256>',
      'TLS, accepting only the certificate with this SHA-256 fingerprint (as ioe-server prints it)',
    ).env('IOE_FINGERPRINT'),
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

program
  .command('whoami')
  .description('print the account the server knows this client as (or anonymous)')
  .action(async () => {
    const name = await withClient(program.opts(), (client) => client.whoami());
    process.stdout.write(`${name}\n`);
  });

/** OpenSSL's verdicts on a certificate that no trusted CA vouches for. */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

function hint(error: ProtocolError, options: GlobalOptions): string {
  if (error.code === 'AUTH_REQUIRED' && options.user === undefined) {
    return ' (sign in with --user NAME)';
  }
  if (error.code === 'TLS_REQUIRED' && !usesTls(options)) {
    return ' (add --tls, with --ca FILE or --fingerprint SHA256 for a self-signed certificate)';
  }
  return '';
}

function describe(error: unknown): string {
  const options = program.opts<GlobalOptions>();
  const where = `${options.host}:${options.port}`;
  if (error instanceof ProtocolError)
    return `${error.code}: ${error.message}${hint(error, options)}`;
  if (error instanceof FingerprintMismatchError) return error.message;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'ECONNREFUSED') {
    return `cannot connect to ${where} (is ioe-server running? see --host, --port, IOE_HOST, IOE_PORT)`;
  }
  if (UNTRUSTED.has(code)) {
    return (
      `the server's TLS certificate is not trusted (${code}: ${message}); pass --ca FILE, or ` +
      `--fingerprint SHA256 with the fingerprint ioe-server printed at start ("tls fingerprint sha256 …")`
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the server's TLS certificate does not name ${options.host} (${message}); connect by a name it carries, or pin it with --fingerprint`;
  }
  if (
    usesTls(options) &&
    (code.startsWith('ERR_SSL_') || /TLS connection|handshake/i.test(message))
  ) {
    return `the TLS handshake with ${where} failed (${message}); does the server run with TLS (--tls-cert or --tls-self-signed)?`;
  }
  if (!usesTls(options) && message === 'the connection closed') {
    return `${message} (if the server runs with TLS, add --tls)`;
  }
  return message;
}

program.parseAsync().catch((error: unknown) => {
  if (error instanceof Cancelled) {
    process.stderr.write('ioe: cancelled\n');
    process.exitCode = 130;
    return;
  }
  process.stderr.write(`ioe: ${describe(error)}\n`);
  process.exitCode = 1;
});
