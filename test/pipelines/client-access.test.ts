// The client library's access options (access.md): `connect({ user, password, tls })` and
// `whoami()` against a real in-process MediaServer with accounts, with and without TLS; the
// certificate pin, proved to send nothing on a mismatch; TLS_REQUIRED from a non-loopback address.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect, createServer, type AddressInfo, type Server } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import {
  connect,
  FingerprintMismatchError,
  ProtocolError,
  type ConnectOptions,
  type IoeClient,
} from '../../pipelines/client.js';
import { Access, type AccessOptions } from '../../lib/access.js';
import { hashPassword } from '../../lib/accounts.js';
import type { ErrorCode } from '../../lib/errors.js';
import { fingerprintOf, TlsSetup } from '../../lib/tls.js';
import { MediaServer } from '../../pipelines/server.js';

/** Cheap credentials for tests (the file format's floor, N = 2^15). */
const FAST = { ln: 15, r: 1, p: 1 };
const PASSWORD = 'correct horse, battery staple'; // a comma: everything after the 2nd one
const WAIT_MS = 5_000;

const base = await mkdtemp(join(tmpdir(), 'ioe-client-access-'));
t.teardown(() => rm(base, { recursive: true, force: true }));

const usersFile = join(base, 'ioe-users');
await writeFile(
  usersFile,
  [
    '# test accounts',
    `alice:${await hashPassword(PASSWORD, FAST)}:rw=/`,
    `bob:${await hashPassword('bobs password', FAST)}:r=/music`,
    'anonymous::r=/music',
    '',
  ].join('\n'),
  { mode: 0o600 },
);
const tls = await TlsSetup.load({ selfSignedDir: join(base, 'tls'), hosts: ['127.0.0.1'] });
const certPem = tls.pem.cert;
// Another certificate: what an impostor presents.
const other = await TlsSetup.load({ selfSignedDir: join(base, 'other'), hosts: ['127.0.0.1'] });

const root = join(base, 'media');
await mkdir(join(root, 'music'), { recursive: true });
await mkdir(join(root, 'films'), { recursive: true });
await writeFile(join(root, 'music', 'song.mp3'), 'la la la');
await writeFile(join(root, 'films', 'film.mp4'), 'a film');

interface Running {
  port: number;
  host: string;
}

async function start(
  tt: Test,
  options: { tls?: boolean; host?: string; access?: Partial<AccessOptions> } = {},
): Promise<Running> {
  const host = options.host ?? '127.0.0.1';
  const access = await Access.create({ usersFile, bindHost: host, ...options.access });
  const server = await MediaServer.create({
    root,
    host,
    port: 0,
    access,
    tls: options.tls ? tls : undefined,
  });
  const { port } = await server.listen();
  tt.teardown(() => server.forceQuit());
  return { port, host };
}

async function open(tt: Test, options: ConnectOptions): Promise<IoeClient> {
  const client = await connect(options);
  tt.teardown(() => client.destroy());
  return client;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => {
      if (value && typeof value === 'object' && 'destroy' in value) {
        (value as IoeClient).destroy();
      }
      return undefined;
    },
    (reason: unknown) => reason,
  );
}

async function rejectsWith(
  tt: Test,
  promise: Promise<unknown>,
  code: ErrorCode,
  what: string,
): Promise<void> {
  const error = await rejection(promise);
  tt.ok(error instanceof ProtocolError, `${what}: a ProtocolError (${String(error)})`);
  tt.equal((error as ProtocolError | undefined)?.code, code, `${what}: ${code}`);
}

const names = async (client: IoeClient): Promise<string[]> =>
  (await client.list()).map((entry) => entry.name);

/** A listener that records every byte it receives and every connection, and answers nothing. */
async function recorder(
  tt: Test,
  onConnection?: (socket: import('node:net').Socket) => void,
): Promise<{
  port: number;
  bytes: () => Buffer;
  connections: () => number;
  closed: Promise<void>;
}> {
  const chunks: Buffer[] = [];
  let connections = 0;
  let closeSeen!: () => void;
  const closed = new Promise<void>((resolve) => (closeSeen = resolve));
  const server: Server = createServer((socket) => {
    connections++;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => closeSeen());
    onConnection?.(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  tt.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return {
    port: (server.address() as AddressInfo).port,
    bytes: () => Buffer.concat(chunks),
    connections: () => connections,
    closed,
  };
}

/** Resolves when `promise` does, or after `ms` (a bounded wait). */
function within<T>(promise: Promise<T>, ms = WAIT_MS): Promise<T | 'timeout'> {
  return Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms).unref()),
  ]);
}

t.test('user and password: AUTH first, then the account rules', async (t) => {
  const { port } = await start(t);
  const alice = await open(t, { port, user: 'alice', password: PASSWORD });
  t.equal(await alice.whoami(), 'alice', 'whoami names the account');
  t.same(await names(alice), ['films/film.mp4', 'music/song.mp3'], 'alice sees everything');

  const anonymous = await open(t, { port });
  t.equal(await anonymous.whoami(), 'anonymous', 'no user: anonymous');
  t.same(await names(anonymous), ['music/song.mp3'], "anonymous sees anonymous's share");
  await rejectsWith(t, anonymous.hash('films/film.mp4'), 'AUTH_REQUIRED', 'anonymous HASH');
  t.equal(await anonymous.auth('bob', 'bobs password'), 'bob', 'auth() switches accounts');
  t.equal(await anonymous.whoami(), 'bob');
  await rejectsWith(t, anonymous.hash('films/film.mp4'), 'DENIED', 'bob HASH of a film');
  await rejectsWith(t, anonymous.auth('bob', 'wrong'), 'AUTH_FAILED', 'a failed auth()');
  t.equal(await anonymous.whoami(), 'bob', 'a failed AUTH keeps the account');
  await rejectsWith(
    t,
    anonymous.write('music/new.mp3', Buffer.from('x'), 1),
    'DENIED',
    'bob may not write',
  );
  await anonymous.close();
});

t.test('a wrong password or an unknown name rejects connect with AUTH_FAILED', async (t) => {
  const { port } = await start(t);
  await rejectsWith(
    t,
    connect({ port, user: 'alice', password: 'wrong' }),
    'AUTH_FAILED',
    'wrong password',
  );
  await rejectsWith(
    t,
    connect({ port, user: 'nobody', password: PASSWORD }),
    'AUTH_FAILED',
    'unknown name',
  );
});

t.test('unusable credentials are refused before connecting', async (t) => {
  const listener = await recorder(t);
  const cases: [ConnectOptions, RegExp][] = [
    [{ user: 'alice' }, /no password/],
    [{ password: 'x' }, /needs a user/],
    [{ user: 'alice', password: 'a\nLIST' }, /line break/],
    [{ user: 'al,ice', password: 'x' }, /commas/],
    [{ user: '', password: 'x' }, /non-empty/],
  ];
  for (const [options, message] of cases) {
    const error = await rejection(connect({ port: listener.port, ...options }));
    t.ok(error instanceof TypeError, `${JSON.stringify(options)}: a TypeError`);
    t.match((error as Error).message, message);
  }
  t.equal(listener.connections(), 0, 'no connection was made');
});

t.test('RATE_LIMITED rejects connect, even with the right password', async (t) => {
  const { port } = await start(t, { access: { authenticator: { limiter: { maxFailures: 2 } } } });
  for (let i = 0; i < 2; i++) {
    await rejectsWith(t, connect({ port, user: 'alice', password: 'no' }), 'AUTH_FAILED', `#${i}`);
  }
  await rejectsWith(
    t,
    connect({ port, user: 'alice', password: PASSWORD }),
    'RATE_LIMITED',
    'then limited',
  );
});

t.test('TLS verified against a CA, host names checked as usual', async (t) => {
  const { port } = await start(t, { tls: true });
  const anonymous = await open(t, { port, tls: { ca: certPem } });
  t.equal(await anonymous.whoami(), 'anonymous', 'TLS with ca (a Buffer)');
  const alice = await open(t, {
    host: 'localhost',
    port,
    user: 'alice',
    password: PASSWORD,
    tls: { ca: certPem.toString() },
  });
  t.equal(await alice.whoami(), 'alice', 'TLS with ca (a string), by host name, with AUTH');
  t.same(await names(alice), ['films/film.mp4', 'music/song.mp3']);
  await alice.close();

  const wrongName = await rejection(
    connect({ port, tls: { ca: certPem, servername: 'elsewhere.example' } }),
  );
  t.equal(
    (wrongName as NodeJS.ErrnoException | undefined)?.code,
    'ERR_TLS_CERT_ALTNAME_INVALID',
    'a certificate that does not name the server is refused',
  );
  const untrusted = await rejection(connect({ port, tls: true }));
  t.ok(untrusted instanceof Error, 'tls: true with a self-signed certificate is refused');
  t.match((untrusted as NodeJS.ErrnoException).code, /SELF_SIGNED|UNABLE_TO/);
  const otherCa = await rejection(connect({ port, tls: { ca: other.pem.cert } }));
  t.ok(otherCa instanceof Error, 'another CA is refused');
  t.notOk(otherCa instanceof ProtocolError, 'by TLS, not by the server');
});

t.test('TLS pinned by fingerprint: exactly that certificate', async (t) => {
  const { port } = await start(t, { tls: true });
  const pin = tls.fingerprint; // AA:BB:…
  t.equal(pin, fingerprintOf(await readFile(join(base, 'tls', 'cert.pem'))));
  for (const spelling of [pin, pin.replaceAll(':', '').toLowerCase(), ` ${pin.toLowerCase()} `]) {
    const client = await open(t, {
      host: 'localhost',
      port,
      user: 'alice',
      password: PASSWORD,
      tls: { fingerprint: spelling },
    });
    t.equal(await client.whoami(), 'alice', `pinned as ${JSON.stringify(spelling.slice(0, 8))}…`);
    client.destroy();
  }
  // A pin with a CA: both must hold.
  const both = await open(t, { port, tls: { fingerprint: pin, ca: certPem } });
  t.equal(await both.whoami(), 'anonymous', 'pin and CA together');
  both.destroy();
  const error = await rejection(connect({ port, tls: { fingerprint: pin, ca: other.pem.cert } }));
  t.ok(
    error instanceof Error && !(error instanceof FingerprintMismatchError),
    'the CA still counts',
  );

  const mismatch = await rejection(connect({ port, tls: { fingerprint: other.fingerprint } }));
  t.ok(mismatch instanceof FingerprintMismatchError, 'another pin: FingerprintMismatchError');
  const message = (mismatch as Error).message;
  t.match(message, other.fingerprint, 'names the expected fingerprint');
  t.match(message, pin, 'and the one presented');
  t.equal((mismatch as FingerprintMismatchError).actual, pin);

  const malformed = await rejection(connect({ port, tls: { fingerprint: 'abc123' } }));
  t.ok(malformed instanceof TypeError, 'a malformed fingerprint is refused before connecting');
  t.match((malformed as Error).message, /64 hex digits/);
});

/**
 * An impostor: a TLS server with another certificate that records what it decrypts, behind a
 * proxy that records every byte on the wire and counts the connections.
 */
async function impostor(tt: Test, maxVersion: 'TLSv1.2' | 'TLSv1.3') {
  const decrypted: Buffer[] = [];
  let handshakes = 0;
  let closeSeen!: () => void;
  const closed = new Promise<void>((resolve) => (closeSeen = resolve));
  const server = createTlsServer(
    { ...other.serverOptions('tcp'), maxVersion },
    (socket: TLSSocket) => {
      handshakes++;
      socket.on('data', (chunk: Buffer) => decrypted.push(chunk));
      socket.on('error', () => undefined);
      socket.write('OK AUTH alice\n'); // a lure: it must not be taken as an answer
    },
  );
  server.on('connection', (raw: import('node:net').Socket) => raw.on('close', () => closeSeen()));
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  tt.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const proxy = await recorder(tt, (socket) => {
    const upstream = netConnect(port, '127.0.0.1');
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.end());
    // Ends pass through (not destroy): whatever the client sent reaches the impostor.
    socket.pipe(upstream).pipe(socket);
  });
  return { proxy, closed, decrypted, handshakes: () => handshakes };
}

for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
  t.test(
    `a pin mismatch sends nothing (${version}): no AUTH, no fallback to clear text`,
    async (t) => {
      const { proxy, closed, decrypted, handshakes } = await impostor(t, version);
      const error = await rejection(
        connect({
          port: proxy.port,
          user: 'alice',
          password: PASSWORD,
          tls: { fingerprint: tls.fingerprint },
        }),
      );
      t.ok(error instanceof FingerprintMismatchError, `refused: ${String(error)}`);
      t.not(await within(proxy.closed), 'timeout', 'the client closed the connection');
      t.not(await within(closed), 'timeout', 'the impostor saw it close');
      if (version === 'TLSv1.2') {
        // In TLS 1.2 the server's handshake is done before the client's: the impostor had a
        // working channel, and still heard nothing on it.
        t.equal(handshakes(), 1, 'the impostor finished its handshake');
      }
      t.equal(decrypted.length, 0, 'the impostor decrypted nothing: no AUTH, no command');
      t.equal(proxy.connections(), 1, 'one connection: no second try in clear');
      const wire = proxy.bytes();
      t.equal(wire[0], 0x16, 'what went out began with a TLS handshake record');
      t.notOk(wire.includes('AUTH'), 'no AUTH on the wire');
      t.notOk(wire.includes(PASSWORD), 'no password on the wire');
    },
  );
}

t.test('TLS to a plain listener fails; nothing is sent in clear', async (t) => {
  // A plain TCP listener (as a server without TLS): it hears a ClientHello, answers nothing
  // that is TLS, and closes; the client must not then speak in clear.
  const plain = await recorder(t, (socket) => {
    socket.once('data', () => socket.end('ERR UNKNOWN_COMMAND unknown command\n'));
  });
  const error = await rejection(
    connect({ port: plain.port, user: 'alice', password: PASSWORD, tls: { ca: certPem } }),
  );
  t.ok(error instanceof Error, `refused: ${String(error)}`);
  t.notOk(error instanceof ProtocolError, 'a TLS failure, not a reply taken as one');
  t.not(await within(plain.closed), 'timeout', 'the connection closed');
  t.equal(plain.connections(), 1, 'no second connection');
  t.equal(plain.bytes()[0], 0x16, 'a TLS record');
  t.notOk(plain.bytes().includes('AUTH'), 'no AUTH');
  t.notOk(plain.bytes().includes(PASSWORD), 'no password');

  // And the real server's plain door closes a TLS client at once (cross-protocol defence).
  const { port } = await start(t);
  const refused = await rejection(connect({ port, tls: { fingerprint: tls.fingerprint } }));
  t.ok(refused instanceof Error, `the plain door: ${String(refused)}`);
});

/** A non-loopback IPv4 address of this machine, if it has one. */
const outside = Object.values(networkInterfaces())
  .flat()
  .find((entry) => entry && entry.family === 'IPv4' && !entry.internal)?.address;

t.test(
  'TLS_REQUIRED: a password in clear from another address is refused; over TLS it is taken',
  { skip: outside ? false : 'this machine has no non-loopback IPv4 address' },
  async (t) => {
    const host = outside!;
    const plain = await start(t, { host });
    await rejectsWith(
      t,
      connect({ host, port: plain.port, user: 'alice', password: PASSWORD }),
      'TLS_REQUIRED',
      'in clear',
    );
    const anonymous = await open(t, { host, port: plain.port });
    t.equal(await anonymous.whoami(), 'anonymous', 'without a password the door stays open');
    await rejectsWith(t, anonymous.auth('alice', PASSWORD), 'TLS_REQUIRED', 'auth() in clear');
    t.equal(await anonymous.whoami(), 'anonymous', 'and it is still anonymous');

    const secure = await start(t, { host, tls: true });
    const alice = await open(t, {
      host,
      port: secure.port,
      user: 'alice',
      password: PASSWORD,
      tls: { fingerprint: tls.fingerprint },
    });
    t.equal(await alice.whoami(), 'alice', 'over TLS');
  },
);
