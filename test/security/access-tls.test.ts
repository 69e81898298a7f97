/**
 * TLS on both doors, black-box on real sockets (access.md, "TLS"), with certificates made by
 * the test (openssl, ECDSA P-256) or by the server (`--tls-self-signed`):
 * - both doors speak TLS only (implicit TLS): clear text gets no answer;
 * - a password over TLS from a non-loopback address is accepted (TLS_REQUIRED is for clear);
 * - TLS 1.2 at least, `--tls-min 1.3`; ALPN on the TCP door refuses a browser's protocols;
 * - a client that has not finished its handshake is cut (10 s by the executable's default);
 * - the self-signed certificate: its fingerprint printed and presented, key 0600, P-256,
 *   ECDSA-SHA256, reused on the next start;
 * - SIGHUP reloads the certificate; open connections keep theirs; a broken one changes nothing.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { copyFile, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { fingerprintOfDer, TlsSetup, type TlsConfig } from '../../lib/tls.js';
import {
  accountLine,
  basic,
  checkNoSecrets,
  launchServer,
  nonLoopbackAddress,
  startAccessServer,
  tempDir,
  type AccessEnv,
} from '../helpers/access-env.js';

const run = promisify(execFile);
const PASSWORD = 'alice-Tls-Pw-404';
/** ecdsa-with-SHA256, 1.2.840.10045.4.3.2, as DER. */
const ECDSA_SHA256_OID = Buffer.from('06082a8648ce3d040302', 'hex');

const remote = await nonLoopbackAddress(t);
const dir = await tempDir(t, 'ioe-access-tls-');

/** A self-signed ECDSA P-256 certificate for 127.0.0.1, localhost and the remote address. */
async function makeCert(name: string): Promise<{ cert: string; key: string; pem: Buffer }> {
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  await run(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-sha256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      `/CN=ioe-test-${name}`,
      '-addext',
      `subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${remote}`,
    ],
    { timeout: 10_000 },
  );
  return { cert, key, pem: await readFile(cert) };
}

const one = await makeCert('one');
const two = await makeCert('two');
const fingerprintOne = new X509Certificate(one.pem).fingerprint256;
const fingerprintTwo = new X509Certificate(two.pem).fingerprint256;
const users = [await accountLine('alice', PASSWORD, 'r=/')];
const logs: string[][] = [];

// The executable with certificate files, started first: its 10 s handshake limit is measured
// by sockets opened now and checked by the last test, while the others run.
const liveCert = join(dir, 'live-cert.pem');
const liveKey = join(dir, 'live-key.pem');
await copyFile(one.cert, liveCert);
await copyFile(one.key, liveKey);
const usersFile = join(dir, 'users');
await writeFile(usersFile, `${users.join('\n')}\n`, { mode: 0o600 });
const cli = await launchServer(t, [
  '--tls-cert',
  liveCert,
  '--tls-key',
  liveKey,
  '--users',
  usersFile,
]);
const silentStart = Date.now();
/** Resolves with the ms from `silentStart` to the server's close, or -1 after `ms`. */
function silent(port: number, send?: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    if (send) socket.once('connect', () => socket.write(send));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(-1);
    }, 16_000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - silentStart);
    });
  });
}
/** The first bytes of a ClientHello: a handshake begun and never finished. */
const PARTIAL_HELLO = Buffer.from('16030100f4010000f00303', 'hex');
const silentSockets = {
  'TCP door, nothing sent': silent(cli.tcpPort),
  'TCP door, half a ClientHello': silent(cli.tcpPort, PARTIAL_HELLO),
  'HTTPS door, nothing sent': silent(cli.httpPort!),
  'HTTPS door, half a ClientHello': silent(cli.httpPort!, PARTIAL_HELLO),
};

/** A TLS connection with line reading, bounded waits. */
class TlsLines {
  private buffer = Buffer.alloc(0);
  private ended = false;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** `from`: connect from (and to) that address, over a socket made here. */
  static connect(port: number, options: ConnectionOptions = {}, from?: string): Promise<TlsLines> {
    return new Promise((resolve, reject) => {
      const raw = from ? netConnect({ host: from, port, localAddress: from }) : undefined;
      const socket = tlsConnect({
        host: '127.0.0.1',
        port,
        ca: [one.pem, two.pem],
        socket: raw,
        servername: from ? 'localhost' : undefined,
        ...options,
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('TLS connect timed out'));
      }, 5000);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(new TlsLines(socket));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private until<T>(ready: () => T | undefined, ms: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
      const check = (): void => {
        const value = ready();
        if (value === undefined) {
          this.waiters.push(check);
          return;
        }
        clearTimeout(timer);
        resolve(value);
      };
      check();
    });
  }

  get fingerprint(): string {
    return fingerprintOfDer(this.socket.getPeerCertificate().raw);
  }

  send(text: string): void {
    this.socket.write(text);
  }

  readLine(ms = 5000): Promise<string> {
    return this.until(
      () => {
        const at = this.buffer.indexOf(0x0a);
        if (at < 0) {
          if (this.ended) throw new Error(`closed before a line: ${this.buffer.toString()}`);
          return undefined;
        }
        const line = this.buffer.subarray(0, at).toString();
        this.buffer = this.buffer.subarray(at + 1);
        return line;
      },
      ms,
      'a line',
    );
  }

  async ask(line: string): Promise<string> {
    this.send(`${line}\n`);
    return this.readLine();
  }

  async waitClose(ms = 3000): Promise<Buffer> {
    await this.until(() => (this.ended ? true : undefined), ms, 'the close');
    return this.buffer;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

interface HttpsAnswer {
  status: number;
  body: string;
  fingerprint: string;
  protocol: string | null;
}

/** One HTTPS GET, bounded to 5 s. */
function httpsGet(
  port: number,
  path: string,
  options: { host?: string; localAddress?: string; headers?: Record<string, string> } & Pick<
    ConnectionOptions,
    'maxVersion' | 'minVersion'
  > = {},
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: options.host ?? '127.0.0.1',
        port,
        path,
        localAddress: options.localAddress,
        headers: options.headers,
        ca: [one.pem, two.pem],
        maxVersion: options.maxVersion,
        minVersion: options.minVersion,
        agent: false,
        timeout: 5000,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const fingerprint = fingerprintOfDer(socket.getPeerCertificate().raw);
        const protocol = socket.getProtocol();
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, fingerprint, protocol }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** What a client speaking clear text gets from a TLS port: bytes, and whether it closed. */
function clearText(port: number, text: string): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket: Socket = netConnect(port, '127.0.0.1', () => socket.write(text));
    let reply = '';
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ reply, closed: false });
    }, 3000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ reply, closed: true });
    });
  });
}

async function tlsServer(t: Test, config: Partial<TlsConfig> = {}): Promise<AccessEnv> {
  const tls = await TlsSetup.load({ certFile: one.cert, keyFile: one.key, ...config });
  const env = await startAccessServer(t, {
    host: '0.0.0.0',
    users,
    files: { 'a.mp3': 'aaa' },
    tls,
  });
  logs.push(env.log.lines);
  return env;
}

t.test('both doors speak TLS only; a password over TLS is accepted from anywhere', async (t) => {
  const env = await tlsServer(t);
  const c = await TlsLines.connect(env.tcpPort, {}, remote);
  t.equal(c.fingerprint, fingerprintOne, 'the certificate given');
  t.equal(await c.ask(`AUTH,alice,${PASSWORD}`), 'OK AUTH alice', 'TCP over TLS from ' + remote);
  t.ok(
    env.log.auths.some((r) => r.result === 'OK' && String(r.peer).startsWith(`${remote}:`)),
    `the server saw ${remote}`,
  );
  t.equal(await c.ask('WHOAMI'), 'OK WHOAMI alice');
  c.destroy();
  const res = await httpsGet(env.httpPort, '/api/whoami', {
    host: remote,
    localAddress: remote,
    headers: { Authorization: basic('alice', PASSWORD) },
  });
  t.equal(res.status, 200, 'HTTPS Basic from ' + remote);
  t.same(JSON.parse(res.body), { name: 'alice', accounts: true });

  const tcpClear = await clearText(env.tcpPort, `AUTH,alice,${PASSWORD}\nWHOAMI\n`);
  t.notMatch(tcpClear.reply, /OK|ERR/, 'clear text on the TCP door: no protocol reply');
  t.ok(tcpClear.closed, 'and closed');
  const httpClear = await clearText(env.httpPort, 'GET /api/list HTTP/1.1\r\nHost: x\r\n\r\n');
  t.notMatch(httpClear.reply, /^HTTP\/1\.1 [23]/, 'clear HTTP on the HTTPS door: not served');
  t.ok(httpClear.closed, 'and closed');

  // The cross-protocol defence holds inside TLS too.
  const inside = await TlsLines.connect(env.tcpPort);
  inside.send('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  t.equal((await inside.waitClose()).length, 0, 'an HTTP request line over TLS: no reply');
  // ALPN: a browser's protocols are refused on the TCP door, `ioe` is fine.
  await t.rejects(TlsLines.connect(env.tcpPort, { ALPNProtocols: ['h2', 'http/1.1'] }));
  const ioe = await TlsLines.connect(env.tcpPort, { ALPNProtocols: ['ioe'] });
  t.equal(await ioe.ask('WHOAMI'), 'OK WHOAMI anonymous', 'ALPN ioe');
  ioe.destroy();
});

t.test('TLS 1.2 at least by default; --tls-min 1.3 on both doors', async (t) => {
  const env = await tlsServer(t);
  const v12 = await TlsLines.connect(env.tcpPort, { maxVersion: 'TLSv1.2' });
  t.equal(v12.socket.getProtocol(), 'TLSv1.2', 'TCP: TLS 1.2');
  v12.destroy();
  const v13 = await TlsLines.connect(env.tcpPort);
  t.equal(v13.socket.getProtocol(), 'TLSv1.3', 'TCP: TLS 1.3');
  v13.destroy();
  t.equal(
    (await httpsGet(env.httpPort, '/api/whoami', { maxVersion: 'TLSv1.2' })).protocol,
    'TLSv1.2',
  );
  const old = {
    minVersion: 'TLSv1.1' as const,
    maxVersion: 'TLSv1.1' as const,
    ciphers: 'DEFAULT@SECLEVEL=0',
  };
  await t.rejects(TlsLines.connect(env.tcpPort, old), 'TCP: TLS 1.1 refused');
  await t.rejects(TlsLines.connect(env.httpPort, old), 'HTTPS: TLS 1.1 refused');

  const strict = await tlsServer(t, { minVersion: 'TLSv1.3' });
  await t.rejects(
    TlsLines.connect(strict.tcpPort, { maxVersion: 'TLSv1.2' }),
    'TCP: TLS 1.2 refused',
  );
  await t.rejects(
    httpsGet(strict.httpPort, '/api/whoami', { maxVersion: 'TLSv1.2' }),
    'HTTPS: TLS 1.2 refused',
  );
  const ok = await TlsLines.connect(strict.tcpPort);
  t.equal(ok.socket.getProtocol(), 'TLSv1.3');
  ok.destroy();
  t.equal((await httpsGet(strict.httpPort, '/api/whoami')).status, 200, 'HTTPS: TLS 1.3');
});

t.test('a handshake not finished in time is cut, on both doors (short limit)', async (t) => {
  const env = await tlsServer(t, { handshakeTimeoutMs: 500 });
  const cases = [
    ['TCP, nothing sent', env.tcpPort, undefined],
    ['TCP, half a ClientHello', env.tcpPort, PARTIAL_HELLO],
    ['HTTPS, nothing sent', env.httpPort, undefined],
    ['HTTPS, half a ClientHello', env.httpPort, PARTIAL_HELLO],
  ] as const;
  // All at once: each waits for the server to cut it, at most 3 s.
  const closes = await Promise.all(
    cases.map(
      ([, port, send]) =>
        new Promise<number>((resolve) => {
          const started = Date.now();
          const socket = netConnect(port, '127.0.0.1');
          socket.on('error', () => undefined);
          if (send) socket.once('connect', () => socket.write(send));
          const timer = setTimeout(() => {
            socket.destroy();
            resolve(-1);
          }, 3000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve(Date.now() - started);
          });
        }),
    ),
  );
  cases.forEach(([what], i) => {
    const closed = closes[i];
    t.ok(closed >= 400 && closed < 1500, `${what}: cut after ${closed} ms (limit 500)`);
  });
  const c = await TlsLines.connect(env.tcpPort);
  t.equal(await c.ask('WHOAMI'), 'OK WHOAMI anonymous', 'a prompt client is served');
  c.destroy();
});

t.test('--tls-self-signed: made once, printed, presented, reused', async (t) => {
  const selfDir = join(dir, 'self');
  const root = join(dir, 'self-root');
  const first = await launchServer(t, ['--tls-self-signed', selfDir, '--root', root]);
  t.equal(first.scheme, 'https', 'web on https://');
  t.match(first.fingerprint ?? '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'tls fingerprint sha256 …');
  const c = await TlsLines.connect(first.tcpPort, { ca: undefined, rejectUnauthorized: false });
  t.equal(c.fingerprint, first.fingerprint, 'the TCP door presents the printed certificate');
  // A round trip before leaving: a client that drops during the handshake's last flight holds
  // QUIT until the handshake limit (see the report).
  t.equal(await c.ask('WHOAMI'), 'OK WHOAMI anonymous');
  c.destroy();
  const keyPem = await readFile(join(selfDir, 'key.pem'));
  const certPem = await readFile(join(selfDir, 'cert.pem'));
  const https = await new Promise<string>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: first.httpPort!, ca: certPem });
    socket.once('secureConnect', () => {
      resolve(fingerprintOfDer(socket.getPeerCertificate().raw));
      socket.destroy();
    });
    socket.once('error', reject);
  });
  t.equal(https, first.fingerprint, 'the HTTPS door too, and it verifies against cert.pem');
  t.equal((await stat(join(selfDir, 'key.pem'))).mode & 0o777, 0o600, 'key.pem is 0600');
  const key = createPrivateKey(keyPem);
  t.equal(key.asymmetricKeyType, 'ec');
  t.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1', 'P-256');
  const x509 = new X509Certificate(certPem);
  t.ok(x509.raw.includes(ECDSA_SHA256_OID), 'signed with ECDSA-SHA256');
  t.equal(x509.checkIP('127.0.0.1'), '127.0.0.1', 'names the bound address');
  t.equal(x509.fingerprint256, first.fingerprint);
  t.notMatch(first.stderr() + first.stdout(), /PRIVATE KEY/, 'the key is never printed');
  await first.stop();

  const second = await launchServer(t, ['--tls-self-signed', selfDir, '--root', root]);
  t.equal(second.fingerprint, first.fingerprint, 'the next start: the same fingerprint');
  t.same(await readFile(join(selfDir, 'key.pem')), keyPem, 'the same key');
  t.same(await readFile(join(selfDir, 'cert.pem')), certPem, 'the same certificate');
  const again = await TlsLines.connect(second.tcpPort, { ca: certPem });
  t.equal(again.fingerprint, first.fingerprint);
  t.equal(await again.ask('WHOAMI'), 'OK WHOAMI anonymous');
  again.destroy();
  await second.stop();
});

t.test('SIGHUP reloads the certificate; open connections keep theirs', async (t) => {
  t.equal(cli.fingerprint, fingerprintOne, 'started with the first certificate');
  const held = await TlsLines.connect(cli.tcpPort);
  t.equal(await held.ask(`AUTH,alice,${PASSWORD}`), 'OK AUTH alice');
  const reloaded = (): number => cli.logs().filter((r) => r.msg === 'certificate reloaded').length;
  const failed = (): number =>
    cli.logs().filter((r) => r.msg === 'certificate not reloaded; the previous one stays').length;

  // Both files replaced atomically, then SIGHUP.
  await copyFile(two.key, `${liveKey}.new`);
  await copyFile(two.cert, `${liveCert}.new`);
  await rename(`${liveKey}.new`, liveKey);
  await rename(`${liveCert}.new`, liveCert);
  cli.child.kill('SIGHUP');
  await cli.waitLog((r) => r.msg === 'certificate reloaded');
  t.equal(reloaded(), 1);
  const fresh = await TlsLines.connect(cli.tcpPort);
  t.equal(fresh.fingerprint, fingerprintTwo, 'TCP: new connections get the new certificate');
  fresh.destroy();
  t.equal((await httpsGet(cli.httpPort!, '/api/whoami')).fingerprint, fingerprintTwo, 'HTTPS too');
  t.equal(held.fingerprint, fingerprintOne, 'the open connection keeps its certificate');
  t.equal(await held.ask('WHOAMI'), 'OK WHOAMI alice', 'and its session');

  // A broken certificate: logged, and the one in force stays.
  await writeFile(liveCert, '-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n');
  cli.child.kill('SIGHUP');
  await cli.waitLog((r) => r.msg === 'certificate not reloaded; the previous one stays');
  t.equal(failed(), 1, 'the failure is logged');
  t.equal(
    cli.logs().find((r) => r.msg === 'certificate not reloaded; the previous one stays')?.level,
    50,
    'at error',
  );
  const still = await TlsLines.connect(cli.tcpPort);
  t.equal(still.fingerprint, fingerprintTwo, 'the certificate in force stays');
  t.equal(await still.ask(`AUTH,alice,${PASSWORD}`), 'OK AUTH alice');
  still.destroy();
  t.equal(await held.ask('WHOAMI'), 'OK WHOAMI alice');
  held.destroy();
});

t.test('the executable cuts an unfinished handshake after 10 s, on both doors', async (t) => {
  for (const [what, closed] of Object.entries(silentSockets)) {
    const ms = await closed;
    t.ok(ms >= 9500 && ms <= 11_500, `${what}: cut after ${ms} ms (10 s)`);
  }
});

t.test('no password appears in any log line', async (t) => {
  checkNoSecrets(t, [...logs.flat(), ...cli.stderr().split('\n')], [PASSWORD], 'the TLS tests');
});
