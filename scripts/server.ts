#!/usr/bin/env -S MALLOC_TRIM_THRESHOLD_=131072 node --max-semi-space-size=2
/**
 * ioe-server: serves a media folder over protocol v1 (TCP) and HTTP, with the web page.
 * Console (stdin): QUIT waits for transfers in flight, FORCEQUIT ends them now.
 * SIGTERM and SIGINT act as QUIT; a second SIGINT at least 0.5 s later acts as FORCEQUIT.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { integer } from '../lib/cli-options.js';
import { Command, Option } from 'commander';
import split2 from 'split2';
import { DEFAULT_HTTP_PORT, DEFAULT_OPTIONS, MediaServer } from '../pipelines/server.js';
import { createLogger, LOG_LEVELS } from '../lib/log.js';
import { loadWebAssets } from '../lib/web-assets.js';
import { Access } from '../lib/access.js';
import { TlsSetup } from '../lib/tls.js';

/** Exit within a second of FORCEQUIT even if deleting partial uploads hangs. */
const FORCE_EXIT_MS = 900;
/** One Ctrl-C under npm can deliver SIGINT twice at once; only a later one forces. */
const SECOND_SIGINT_MS = 500;

// `ioe-server gc --storage s3://…`: the S3 store's clean-up pass (scripts/gc.ts). The S3 modules
// load only when used: the AWS SDK takes a third of a second to import.
if (process.argv[2] === 'gc') await (await import('./gc.js')).gcMain(process.argv.slice(3));
// `ioe-server users add|token|remove|list`: the accounts file (scripts/users.ts).
if (process.argv[2] === 'users') {
  process.exit(await (await import('./users.js')).runUsersCommand(process.argv.slice(3)));
}

const program = new Command('ioe-server')
  .description('Serve a media folder (videos, music, pictures) over the IOE protocol v1.')
  .option('--root <dir>', 'media root, created if missing', DEFAULT_OPTIONS.root)
  .option('--storage <url>', 'serve an S3 bucket instead of --root: s3://bucket[/prefix]')
  .option('--s3-path-style', 'path-style S3 addressing (RGW on an IP address)', false)
  .option('--host <host>', 'address to bind', DEFAULT_OPTIONS.host)
  .option('--port <port>', 'port; 0 picks a free one', integer(0, 65535), DEFAULT_OPTIONS.port)
  .option(
    '--http-port <port>',
    `HTTP port for browsers and players; 0 picks a free one (default: ${DEFAULT_HTTP_PORT})`,
    integer(0, 65535),
  )
  .option('--no-http', 'serve the TCP protocol only')
  .option(
    '--max-connections <n>',
    'open connections at once',
    integer(1),
    DEFAULT_OPTIONS.maxConnections,
  )
  .option(
    '--max-connections-per-ip <n>',
    'open connections from one address; 0 for no limit',
    integer(0),
    0,
  )
  .option(
    '--max-upload <bytes>',
    'largest WRITE in bytes (default: no limit but free disk)',
    integer(0),
  )
  .option(
    '--idle-timeout <seconds>',
    'close a connection idle this long; 0 turns it off',
    integer(0),
    120,
  )
  .option(
    '--threads <n>',
    'threads serving the TCP door on one port (Node 22.12+; a local --root, no --users, no TLS)',
    integer(1, 64),
    1,
  )
  .option('--read-only', 'refuse every WRITE', false)
  .option('--overwrite', 'let a WRITE replace an existing file atomically', false)
  .option('--users <file>', 'accounts and their rules (see ioe-server users --help)')
  .option('--public', 'no accounts on a non-loopback address: share everything with everyone')
  .option('--insecure-auth', 'accept passwords without TLS from other machines', false)
  .option('--tls-cert <file>', 'TLS certificate (PEM) for both doors; needs --tls-key')
  .option('--tls-key <file>', 'TLS private key (PEM) for both doors')
  .option('--tls-self-signed <dir>', 'make (once) and use a self-signed certificate kept in DIR')
  .addOption(
    new Option('--tls-min <version>', 'lowest TLS version').choices(['1.2', '1.3']).default('1.2'),
  )
  .addOption(
    new Option('--log-level <level>', 'log level on stderr').choices(LOG_LEVELS).default('info'),
  )
  .addHelpText(
    'after',
    '\nS3 clean-up pass: ioe-server gc --storage s3://bucket[/prefix] [--s3-path-style]',
  )
  .showHelpAfterError();

program.parse();
const opts = program.opts<{
  root: string;
  host: string;
  port: number;
  httpPort?: number;
  http: boolean;
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxUpload?: number;
  idleTimeout: number;
  readOnly: boolean;
  overwrite: boolean;
  threads: number;
  logLevel: string;
  users?: string;
  public?: boolean;
  insecureAuth: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsSelfSigned?: string;
  tlsMin: '1.2' | '1.3';
  storage?: string;
  s3PathStyle: boolean;
}>();
if (opts.storage !== undefined && program.getOptionValueSource('root') === 'cli') {
  program.error('error: --root and --storage name two libraries; give one');
}

const logger = createLogger(opts.logLevel);

/** The web page: scripts/web (copied next to the compiled script), and the hash library. */
async function webAssets() {
  const here = dirname(fileURLToPath(import.meta.url));
  const noble = dirname(fileURLToPath(import.meta.resolve('@noble/hashes/sha2.js')));
  const vendor = ['sha2.js', '_md.js', '_u64.js', 'utils.js'];
  return loadWebAssets({
    page: join(here, 'web'),
    extra: Object.fromEntries(vendor.map((file) => [`noble-hashes/${file}`, join(noble, file)])),
  });
}

/** `http://host:port/` (https with TLS), with brackets around an IPv6 address. */
function webUrl(scheme: string, address: string, port: number): string {
  return `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}/`;
}

/** TLS for both doors, when asked for; a one-line reason when it cannot be had. */
async function tlsSetup(): Promise<TlsSetup | undefined> {
  const { tlsCert, tlsKey, tlsSelfSigned } = opts;
  if (tlsCert === undefined && tlsKey === undefined && tlsSelfSigned === undefined) return;
  if (tlsSelfSigned !== undefined && (tlsCert !== undefined || tlsKey !== undefined)) {
    throw new Error('give either --tls-self-signed or --tls-cert and --tls-key, not both');
  }
  const tls = await TlsSetup.load({
    certFile: tlsCert,
    keyFile: tlsKey,
    selfSignedDir: tlsSelfSigned,
    hosts: [opts.host],
    minVersion: opts.tlsMin === '1.3' ? 'TLSv1.3' : 'TLSv1.2',
  });
  for (const warning of tls.warnings()) logger.warn(warning);
  return tls;
}

async function main(): Promise<void> {
  const access = await Access.create({
    usersFile: opts.users,
    readOnly: opts.readOnly,
    public: opts.public,
    bindHost: opts.host,
    insecureAuth: opts.insecureAuth,
    log: logger,
  });
  for (const warning of access.startWarnings()) logger.warn(warning);
  if (opts.readOnly) logger.warn('--read-only: every account may read at most');
  const tls = await tlsSetup();
  // An S3 bucket (many replicas may serve it) instead of the local folder: AWS_* variables.
  const s3 = opts.storage === undefined ? undefined : await import('../lib/s3-storage.js');
  const storage =
    opts.storage === undefined || !s3
      ? undefined
      : await s3.S3Storage.open(opts.storage, {
          ...s3.s3OptionsFromEnv(),
          overwrite: opts.overwrite,
          pathStyle: opts.s3PathStyle,
          log: logger,
        });
  const server = await MediaServer.create({
    storage,
    root: opts.root,
    host: opts.host,
    port: opts.port,
    httpPort: opts.http ? (opts.httpPort ?? DEFAULT_HTTP_PORT) : undefined,
    // Without --http-port, a taken 10080 leaves the TCP door alone rather than no server.
    httpPortOptional: opts.httpPort === undefined,
    webAssets: opts.http ? await webAssets() : undefined,
    access,
    tls,
    maxConnections: opts.maxConnections,
    maxConnectionsPerIp: opts.maxConnectionsPerIp,
    maxUpload: opts.maxUpload,
    idleTimeoutSeconds: opts.idleTimeout,
    readOnly: opts.readOnly,
    overwrite: opts.overwrite,
    threads: opts.threads,
    logger,
  });
  // Another thread failed: a fault there ends the server as one here would.
  server.on('error', (error: unknown) => {
    logger.fatal({ err: error }, 'a server thread failed');
    void server.forceQuit().finally(() => process.exit(1));
  });
  const address = await server.listen();
  logger.info({ root: opts.storage ?? opts.root, ...address }, 'ready');
  process.stdout.write(`listening on ${address.address}:${address.port}\n`);
  if (tls) process.stdout.write(`${tls.fingerprintLine}\n`);
  if (access.protectedMode) {
    process.stdout.write(
      'protected mode: only this machine may connect until accounts exist ' +
        '(ioe-server users add NAME, then --users FILE) or --public is given\n',
    );
  }
  if (server.httpAddress) {
    const web = server.httpAddress;
    logger.info({ door: 'http', ...web }, 'web ready');
    const scheme = tls ? 'https' : 'http';
    process.stdout.write(`web on ${webUrl(scheme, web.address, web.port)}\n`);
  } else if (server.httpOff) {
    process.stdout.write(`web off: ${server.httpOff}; use --http-port\n`);
  }

  let forcing = false;
  const forceQuit = (): void => {
    if (forcing) return;
    forcing = true;
    process.stdout.write('FORCEQUIT: closing every connection now\n');
    setTimeout(() => process.exit(0), FORCE_EXIT_MS).unref();
    server.forceQuit().then(
      () => process.exit(0),
      () => process.exit(0),
    );
  };

  let quitStarted = 0;
  const quit = (): void => {
    if (server.isQuitting) return;
    quitStarted = Date.now();
    const left = server.connectionCount;
    process.stdout.write(
      left === 0
        ? 'QUIT: no connections open, shutting down\n'
        : `QUIT: waiting for ${left} connection(s) to finish; type FORCEQUIT to end them now\n`,
    );
    server.on('connections', (count: number) => {
      if (count > 0) {
        process.stdout.write(`QUIT: ${count} connection(s) left; type FORCEQUIT to end them now\n`);
      }
    });
    server.quit().then(
      () => {
        process.stdout.write('QUIT: all connections closed, bye\n');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };

  process.stdin.pipe(split2()).on('data', (line: string) => {
    const command = line.trim().toUpperCase();
    if (command === 'QUIT') quit();
    else if (command === 'FORCEQUIT') forceQuit();
    else if (command !== '') process.stdout.write('console commands: QUIT, FORCEQUIT\n');
  });
  // End of stdin is not a command: the server may run detached.
  process.stdin.on('error', () => undefined);

  // SIGHUP: the accounts file and the certificate again, each all or nothing.
  process.on('SIGHUP', () => {
    void access.reload();
    if (tls) {
      tls.reload().then(
        (context) => {
          server.setSecureContext(context);
          logger.info({ fingerprint: tls.fingerprint }, 'certificate reloaded');
        },
        (error: unknown) =>
          logger.error({ err: error }, 'certificate not reloaded; the previous one stays'),
      );
    }
  });
  process.on('SIGTERM', quit);
  process.on('SIGINT', () => {
    if (server.isQuitting && Date.now() - quitStarted >= SECOND_SIGINT_MS) forceQuit();
    else quit();
  });
}

main().catch((error: unknown) => {
  logger.fatal({ err: error }, 'the server could not start');
  process.stderr.write(`ioe-server: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
