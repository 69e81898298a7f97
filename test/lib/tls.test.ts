/**
 * TLS: the self-signed certificate (ECDSA P-256, ECDSA-SHA256, key 0600, reused, names),
 * certificate files, the fingerprint's form, the version limits and the handshake limit on a
 * real tls.Server, ALPN on the TCP door, and the SIGHUP reload with setSecureContext.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  connect,
  createServer,
  type ConnectionOptions,
  type SecureVersion,
  type Server,
  type TlsOptions,
} from 'node:tls';
import { createServer as createHttpsServer } from 'node:https';
import {
  certificateNames,
  cutFailedHandshakes,
  fingerprintOf,
  fingerprintOfDer,
  parseFingerprint,
  SELF_SIGNED_CERT,
  SELF_SIGNED_KEY,
  TlsSetup,
} from '../../lib/tls.js';

const DAY = 86_400_000;
/** ecdsa-with-SHA256, 1.2.840.10045.4.3.2, as DER. */
const ECDSA_SHA256_OID = Buffer.from('06082a8648ce3d040302', 'hex');

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-tls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function openssl(args: string[], input?: Buffer): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = execFile('openssl', args, { timeout: 10_000 }, (error, stdout) =>
      resolve(error ? undefined : stdout),
    );
    child.stdin?.end(input);
  });
}

async function listen(t: Test, options: TlsOptions): Promise<{ server: Server; port: number }> {
  const server = createServer(options, (socket) => socket.end('hello\n'));
  cutFailedHandshakes(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { server, port: (server.address() as AddressInfo).port };
}

interface Handshake {
  ok: boolean;
  protocol?: string | null;
  alpn?: string | false | null;
  fingerprint?: string;
  error?: string;
}

/** One TLS client connection, bounded to 5 s; trusts any certificate (it reads the print). */
function handshake(port: number, options: ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, 5000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve({
        ok: true,
        protocol: socket.getProtocol(),
        alpn: socket.alpnProtocol,
        fingerprint: fingerprintOfDer(socket.getPeerCertificate().raw),
      });
      socket.destroy();
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, error: error.code ?? error.message });
    });
  });
}

t.test(
  'self-signed: first start makes an ECDSA P-256 key (0600) and a SHA-256 certificate',
  async (t) => {
    const dir = join(await tempDir(t), 'tls');
    const setup = await TlsSetup.load({
      selfSignedDir: dir,
      hosts: ['media.example', '192.0.2.7'],
    });
    t.equal(setup.created, true);
    t.equal(setup.renewed, false);
    t.equal((await stat(join(dir, SELF_SIGNED_KEY))).mode & 0o777, 0o600, 'key mode 0600');
    t.equal((await stat(dir)).mode & 0o777, 0o700, 'the folder is 0700');
    const pem = await readFile(join(dir, SELF_SIGNED_CERT));
    const certificate = new X509Certificate(pem);
    t.equal(certificate.publicKey.asymmetricKeyType, 'ec');
    t.same(certificate.publicKey.asymmetricKeyDetails, { namedCurve: 'prime256v1' }, 'P-256');
    t.ok(certificate.raw.includes(ECDSA_SHA256_OID), 'signed with ecdsa-with-SHA256');
    t.notOk(
      certificate.raw.includes(Buffer.from('06072a8648ce3d0401', 'hex')),
      'not ecdsa-with-SHA1',
    );
    t.ok(certificate.verify(certificate.publicKey), 'self-signed: its own key verifies it');
    t.equal(certificate.ca, false);
    const names = certificate.subjectAltName ?? '';
    for (const name of [
      'DNS:media.example',
      'DNS:localhost',
      'IP Address:127.0.0.1',
      'IP Address:0:0:0:0:0:0:0:1',
      'IP Address:192.0.2.7',
    ]) {
      t.ok(names.includes(name), `names ${name}`);
    }
    t.equal(certificate.checkHost('localhost'), 'localhost');
    t.equal(certificate.checkIP('::1'), '::1');
    const days = (Date.parse(certificate.validTo) - Date.parse(certificate.validFrom)) / DAY;
    t.equal(Math.round(days), 825, 'valid 825 days');
    t.ok(Date.parse(certificate.validFrom) < Date.now() - 30 * 60_000, 'valid from a while ago');
    t.same(setup.warnings(), []);
    const text = await openssl(['x509', '-noout', '-text'], pem);
    if (text === undefined) t.comment('openssl not found: the DER check above stands alone');
    else {
      t.match(text, /Signature Algorithm: ecdsa-with-SHA256/, 'openssl: ecdsa-with-SHA256');
      t.match(text, /NIST CURVE: P-256|ASN1 OID: prime256v1/, 'openssl: P-256');
    }
  },
);

t.test('self-signed: later starts reuse key and certificate; the fingerprint stays', async (t) => {
  const dir = await tempDir(t);
  const first = await TlsSetup.load({ selfSignedDir: dir, hosts: ['127.0.0.1'] });
  const key = await readFile(join(dir, SELF_SIGNED_KEY));
  const again = await TlsSetup.load({ selfSignedDir: dir, hosts: ['other.example'] });
  t.equal(again.created, false);
  t.equal(again.renewed, false);
  t.equal(again.fingerprint, first.fingerprint, 'the same fingerprint');
  t.ok((await readFile(join(dir, SELF_SIGNED_KEY))).equals(key), 'the same key file');
  t.match(
    again.warnings(),
    [/does not name other.example/],
    'a host it was not made for: a warning',
  );
  t.equal(again.fingerprintLine, `tls fingerprint sha256 ${first.fingerprint}`);

  // The certificate alone lost: made again for the same key, with a new fingerprint.
  await rm(join(dir, SELF_SIGNED_CERT));
  const remade = await TlsSetup.load({ selfSignedDir: dir });
  t.equal(remade.renewed, true);
  t.not(remade.fingerprint, first.fingerprint);
  t.ok((await readFile(join(dir, SELF_SIGNED_KEY))).equals(key), 'the key stays');

  // Expiring within 30 days: renewed at load.
  const later = await TlsSetup.load({ selfSignedDir: dir, now: () => Date.now() + 800 * DAY });
  t.equal(later.renewed, true);
  t.ok(later.validTo.getTime() > Date.now() + 1600 * DAY);
  const stays = await TlsSetup.load({ selfSignedDir: dir, now: () => Date.now() + 800 * DAY });
  t.equal(stays.renewed, false, 'and then reused');
  t.equal(stays.fingerprint, later.fingerprint);

  // A certificate that is not the key's: made again.
  const elsewhere = await tempDir(t);
  await TlsSetup.load({ selfSignedDir: elsewhere });
  await copyFile(join(elsewhere, SELF_SIGNED_CERT), join(dir, SELF_SIGNED_CERT));
  const fixed = await TlsSetup.load({ selfSignedDir: dir });
  t.equal(fixed.renewed, true);
  t.ok(
    new X509Certificate(fixed.pem.cert).checkPrivateKey(
      (await import('node:crypto')).createPrivateKey(key),
    ),
  );
});

t.test('self-signed: a key others may read is refused; the umask does not widen it', async (t) => {
  const dir = await tempDir(t);
  const old = process.umask(0);
  try {
    await TlsSetup.load({ selfSignedDir: dir });
  } finally {
    process.umask(old);
  }
  t.equal((await stat(join(dir, SELF_SIGNED_KEY))).mode & 0o777, 0o600, 'with umask 0 too');
  await chmod(join(dir, SELF_SIGNED_KEY), 0o640);
  await t.rejects(TlsSetup.load({ selfSignedDir: dir }), {
    name: 'TlsError',
    message: /key\.pem has mode 0640: .*chmod 600/,
  });
  await chmod(join(dir, SELF_SIGNED_KEY), 0o600);
  await writeFile(join(dir, SELF_SIGNED_KEY), 'not a key');
  await t.rejects(TlsSetup.load({ selfSignedDir: dir }), {
    message: /not an unencrypted PEM private key/,
  });
});

t.test('certificate files: loaded, checked, refused clearly', async (t) => {
  const dir = await tempDir(t);
  const made = await TlsSetup.load({ selfSignedDir: join(dir, 'a') });
  const other = await TlsSetup.load({ selfSignedDir: join(dir, 'b') });
  const certFile = join(dir, 'a', SELF_SIGNED_CERT);
  const keyFile = join(dir, 'a', SELF_SIGNED_KEY);
  const setup = await TlsSetup.load({ certFile, keyFile });
  t.equal(setup.fingerprint, made.fingerprint);
  t.equal(setup.created, false);
  await t.rejects(TlsSetup.load({ certFile, keyFile: join(dir, 'b', SELF_SIGNED_KEY) }), {
    name: 'TlsError',
    message: /does not belong to the certificate/,
  });
  await t.rejects(TlsSetup.load({ certFile: join(dir, 'nope.pem'), keyFile }), {
    message: /cannot read the TLS certificate .*nope\.pem/,
  });
  await writeFile(join(dir, 'junk.pem'), 'junk');
  await t.rejects(TlsSetup.load({ certFile: join(dir, 'junk.pem'), keyFile }), {
    message: /is not a PEM certificate/,
  });
  await t.rejects(TlsSetup.load({ certFile }), { message: /go together/ });
  await t.rejects(TlsSetup.load({ certFile, keyFile, selfSignedDir: dir }), {
    message: /cannot be combined/,
  });
  // A chain: the first certificate is the server's.
  const chain = join(dir, 'chain.pem');
  await writeFile(
    chain,
    `${made.pem.cert.toString().trim()}\n${other.pem.cert.toString().trim()}\n`,
  );
  t.equal((await TlsSetup.load({ certFile: chain, keyFile })).fingerprint, made.fingerprint);
});

t.test('the fingerprint: as openssl and Node write it; parsed in any form', async (t) => {
  const setup = await TlsSetup.load({ selfSignedDir: await tempDir(t) });
  const print = setup.fingerprint;
  t.match(print, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  t.equal(print, new X509Certificate(setup.pem.cert).fingerprint256);
  t.equal(print, fingerprintOf(setup.pem.cert));
  t.equal(print, fingerprintOfDer(new X509Certificate(setup.pem.cert).raw));
  const out = await openssl(['x509', '-noout', '-fingerprint', '-sha256'], setup.pem.cert);
  if (out !== undefined)
    t.equal(out.trim().replace(/^.*Fingerprint=/i, ''), print, 'openssl agrees');
  const bare = print.replaceAll(':', '');
  t.equal(parseFingerprint(bare), print);
  t.equal(parseFingerprint(bare.toLowerCase()), print);
  t.equal(parseFingerprint(print.toLowerCase()), print);
  t.equal(parseFingerprint(` ${print}\n`), print);
  t.equal(parseFingerprint(bare.slice(2)), undefined, 'too short');
  t.equal(parseFingerprint(`${bare}00`), undefined, 'too long');
  t.equal(parseFingerprint(bare.replace(/.$/, 'G')), undefined, 'not hex');
  t.equal(parseFingerprint(print.slice(0, 5) + print.slice(6)), undefined, 'a colon missing');
});

t.test('the names of a new certificate', async (t) => {
  const local = certificateNames(['127.0.0.1']);
  t.same(local, { dns: ['localhost'], ips: ['127.0.0.1', '::1'] });
  const named = certificateNames(['media.example.', '[2001:db8::1]', 'bad_name!']);
  t.same(named.dns, ['localhost', 'media.example']);
  t.same(named.ips, ['127.0.0.1', '::1', '2001:db8::1']);
  const wildcard = certificateNames(['0.0.0.0']);
  t.ok(wildcard.dns.length >= 1, `a wildcard bind names this machine (${wildcard.dns.join(' ')})`);
});

t.test('TLS 1.2 at least: older clients are refused by the server', async (t) => {
  const setup = await TlsSetup.load({ selfSignedDir: await tempDir(t) });
  const { server, port } = await listen(t, setup.serverOptions('tcp'));
  const refusals: string[] = [];
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => refusals.push(error.code ?? ''));
  const v12 = await handshake(port, { maxVersion: 'TLSv1.2' });
  t.match(v12, { ok: true, protocol: 'TLSv1.2', fingerprint: setup.fingerprint });
  const v13 = await handshake(port);
  t.match(v13, { ok: true, protocol: 'TLSv1.3' });
  // A TLS 1.1 client (OpenSSL 3 needs security level 0 for it). First a control: a server that
  // allows 1.1 takes it, so a refusal below is the server's doing.
  const old = {
    minVersion: 'TLSv1.1' as SecureVersion,
    maxVersion: 'TLSv1.1' as SecureVersion,
    ciphers: 'DEFAULT@SECLEVEL=0',
  };
  const control = await listen(t, { ...setup.serverOptions('tcp'), ...old });
  const controlled = await handshake(control.port, old);
  if (!controlled.ok) t.comment(`this OpenSSL cannot speak TLS 1.1 at all (${controlled.error})`);
  else t.equal(controlled.protocol, 'TLSv1.1', 'control: TLS 1.1 works where allowed');
  const v11 = await handshake(port, old);
  t.equal(v11.ok, false, `TLS 1.1 is refused (${v11.error})`);
  if (controlled.ok) {
    t.ok(
      refusals.some((code) => /UNSUPPORTED_PROTOCOL|VERSION/.test(code)),
      `the server refused it (${refusals.join(', ')})`,
    );
  }
});

t.test('--tls-min 1.3: TLS 1.2 clients are refused', async (t) => {
  const setup = await TlsSetup.load({ selfSignedDir: await tempDir(t), minVersion: 'TLSv1.3' });
  const { server, port } = await listen(t, setup.serverOptions('http'));
  const refusals: string[] = [];
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => refusals.push(error.code ?? ''));
  const v12 = await handshake(port, { maxVersion: 'TLSv1.2' });
  t.equal(v12.ok, false, `TLS 1.2 refused (${v12.error})`);
  t.ok(
    refusals.some((code) => /UNSUPPORTED_PROTOCOL|VERSION/.test(code)),
    `by the server (${refusals.join(', ')})`,
  );
  t.match(await handshake(port), { ok: true, protocol: 'TLSv1.3' });
  t.match(await handshake(port, { ALPNProtocols: ['http/1.1'] }), { ok: true, alpn: 'http/1.1' });
});

/** Milliseconds until the server closes a client that connects and says nothing (-1: never). */
function silentClient(port: number, waitMs = 3000): Promise<number> {
  const started = Date.now();
  return new Promise<number>((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(-1);
    }, waitMs);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

t.test('a client that does not finish its handshake is cut', async (t) => {
  const setup = await TlsSetup.load({ selfSignedDir: await tempDir(t), handshakeTimeoutMs: 300 });
  t.equal(setup.serverOptions('tcp').handshakeTimeout, 300);
  const defaults = await TlsSetup.load({ selfSignedDir: await tempDir(t) });
  t.equal(defaults.serverOptions('http').handshakeTimeout, 10_000, '10 s by default');

  const { server, port } = await listen(t, setup.serverOptions('tcp'));
  const errors: string[] = [];
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => errors.push(error.code ?? ''));
  const closedAfter = await silentClient(port);
  t.ok(closedAfter >= 250 && closedAfter < 2000, `cut after ${closedAfter} ms`);
  t.match(errors, ['ERR_TLS_HANDSHAKE_TIMEOUT']);

  // Why cutFailedHandshakes exists: tls.Server alone reports the timeout and keeps the socket.
  const bare = createServer(setup.serverOptions('tcp'), (socket) => socket.end());
  let reported = false;
  bare.on('tlsClientError', () => (reported = true));
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => bare.close(() => resolve())));
  const bareAfter = await silentClient((bare.address() as AddressInfo).port, 1000);
  t.ok(reported, 'the timeout is reported');
  t.comment(
    bareAfter < 0 ? 'tls.Server alone left the socket open' : `closed after ${bareAfter} ms`,
  );

  const https = createHttpsServer(setup.serverOptions('http'), (_req, res) => res.end());
  cutFailedHandshakes(https);
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => https.close(() => resolve())));
  const httpsAfter = await silentClient((https.address() as AddressInfo).port);
  t.ok(httpsAfter >= 250 && httpsAfter < 2000, `the HTTPS door too: cut after ${httpsAfter} ms`);
});

t.test('ALPN on the TCP door: a browser (http/1.1, h2) is refused in the handshake', async (t) => {
  const setup = await TlsSetup.load({ selfSignedDir: await tempDir(t) });
  const { server, port } = await listen(t, setup.serverOptions('tcp'));
  t.match(await handshake(port), { ok: true, alpn: false }, 'no ALPN: fine');
  t.match(await handshake(port, { ALPNProtocols: ['ioe'] }), { ok: true, alpn: 'ioe' });
  t.match(await handshake(port, { ALPNProtocols: ['h2', 'http/1.1'] }), { ok: false });
  t.match(await handshake(port, { ALPNProtocols: ['http/1.1', 'ioe'] }), { ok: true, alpn: 'ioe' });
  server.setSecureContext(await setup.reload());
  t.match(
    await handshake(port, { ALPNProtocols: ['http/1.1'] }),
    { ok: false },
    'still refused after a reload',
  );
});

t.test('reload: new connections get the new certificate; a bad one changes nothing', async (t) => {
  const dir = await tempDir(t);
  const first = await TlsSetup.load({ selfSignedDir: join(dir, 'one') });
  const second = await TlsSetup.load({ selfSignedDir: join(dir, 'two') });
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  await writeFile(certFile, first.pem.cert);
  await writeFile(keyFile, first.pem.key, { mode: 0o600 });
  const setup = await TlsSetup.load({ certFile, keyFile, minVersion: 'TLSv1.3' });
  const { server, port } = await listen(t, setup.serverOptions('http'));
  t.equal((await handshake(port)).fingerprint, first.fingerprint);

  // Held open across the reload: an open connection keeps its certificate.
  const held = connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  held.on('error', () => undefined);
  await new Promise((resolve) => held.once('secureConnect', resolve));
  t.teardown(() => held.destroy());

  await writeFile(certFile, second.pem.cert);
  await t.rejects(
    setup.reload(),
    { name: 'TlsError', message: /does not belong/ },
    'cert and key do not match yet',
  );
  t.equal(setup.fingerprint, first.fingerprint, 'a failed reload keeps what was in force');
  t.equal((await handshake(port)).fingerprint, first.fingerprint);

  await writeFile(keyFile, second.pem.key);
  const options = await setup.reload();
  t.equal(options.minVersion, 'TLSv1.3', 'the minimum version is part of the new context');
  server.setSecureContext(options);
  t.equal(setup.fingerprint, second.fingerprint);
  t.equal((await handshake(port)).fingerprint, second.fingerprint, 'new connections: the new one');
  t.equal((await handshake(port, { maxVersion: 'TLSv1.2' })).ok, false, 'still TLS 1.3 only');
  t.equal(
    fingerprintOfDer(held.getPeerCertificate().raw),
    first.fingerprint,
    'the open one kept its',
  );
});
