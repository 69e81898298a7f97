/**
 * TLS for both doors (access.md, "TLS"): the server options from `--tls-cert/--tls-key`, or a
 * self-signed certificate kept in `--tls-self-signed DIR`; the minimum version; the 10 s
 * handshake limit; the certificate's fingerprint; and the reload for SIGHUP.
 *
 * The fingerprint is written as Node's `X509Certificate.fingerprint256` and
 * `openssl x509 -noout -fingerprint -sha256` write it: the SHA-256 of the DER certificate in
 * upper-case hex pairs joined by colons (`2F:9E:…:3F`). `parseFingerprint` accepts it in any
 * case, with or without the colons, so a client may compare whatever it was given.
 *
 * The self-signed certificate: an ECDSA P-256 key (`key.pem`, mode 0600) made with
 * node:crypto, and a certificate signed with ECDSA-SHA256 by `selfsigned` (its default
 * signature is SHA-1, hence `algorithm: 'sha256'`), for the bound host names, `localhost`,
 * 127.0.0.1 and ::1, valid 825 days (the most Apple's clients accept). Later starts reuse
 * both, so the fingerprint stays; the certificate alone is made again when it is missing, does
 * not match the key, or expires within 30 days (the fingerprint then changes, and
 * `TlsSetup.renewed` says so).
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { basename, dirname, join } from 'node:path';
import {
  createSecureContext,
  type SecureContextOptions,
  type Server as TlsServer,
  type TLSSocket,
  type TlsOptions,
} from 'node:tls';

export type TlsMinVersion = 'TLSv1.2' | 'TLSv1.3';
export const TLS_MIN_VERSIONS: readonly TlsMinVersion[] = ['TLSv1.2', 'TLSv1.3'];
/** access.md: a client that has not finished its handshake in 10 s is cut (Node's default 120). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
export const SELF_SIGNED_KEY = 'key.pem';
export const SELF_SIGNED_CERT = 'cert.pem';
export const SELF_SIGNED_DAYS = 825;
/** A self-signed certificate that expires sooner than this is made again at load. */
export const RENEW_BEFORE_MS = 30 * 86_400_000;
/** ALPN the TCP door accepts (a client may also offer none). */
export const TCP_ALPN = 'ioe';

export interface TlsConfig {
  /** `--tls-cert FILE`: PEM, the server's certificate first (a chain may follow). */
  certFile?: string;
  /** `--tls-key FILE`: PEM, unencrypted. */
  keyFile?: string;
  /** `--tls-self-signed DIR`. */
  selfSignedDir?: string;
  /** The bound host names (`--host`), for a new self-signed certificate and the warnings. */
  hosts?: readonly string[];
  /** `--tls-min`: default TLSv1.2. */
  minVersion?: TlsMinVersion;
  /** Default HANDSHAKE_TIMEOUT_MS (tests shorten it). */
  handshakeTimeoutMs?: number;
  /** The clock for expiry checks and new certificates. */
  now?: () => number;
}

/** A TLS configuration that cannot be used; the message names the file and never a key. */
export class TlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsError';
  }
}

/** The certificate and key in force, with what a start-up message needs. */
interface Material {
  key: Buffer;
  cert: Buffer;
  fingerprint: string;
  validTo: Date;
  certificate: X509Certificate;
  created: boolean;
  renewed: boolean;
}

/**
 * The TLS setup of both doors. `serverOptions(door)` for `tls.createServer` (TCP) and
 * `https.createServer` (HTTP); `reload()` for SIGHUP, then `server.setSecureContext(options)`
 * on both servers (open connections keep their certificate).
 */
export class TlsSetup {
  private material: Material;

  private constructor(
    private readonly config: TlsConfig,
    material: Material,
  ) {
    this.material = material;
  }

  /** Reads (or, self-signed, makes) the key and certificate. Throws TlsError. */
  static async load(config: TlsConfig): Promise<TlsSetup> {
    return new TlsSetup(config, await loadMaterial(config));
  }

  get minVersion(): TlsMinVersion {
    return this.config.minVersion ?? 'TLSv1.2';
  }

  /** The certificate's SHA-256 fingerprint, `AA:BB:…` (see the module's comment). */
  get fingerprint(): string {
    return this.material.fingerprint;
  }

  /** The line the server prints on stdout at start. */
  get fingerprintLine(): string {
    return `tls fingerprint sha256 ${this.fingerprint}`;
  }

  /** Self-signed: the key and certificate were made by this load (first start). */
  get created(): boolean {
    return this.material.created;
  }

  /** Self-signed: the certificate was made again (expiring, or not the key's); a new fingerprint. */
  get renewed(): boolean {
    return this.material.renewed;
  }

  get validTo(): Date {
    return this.material.validTo;
  }

  /** The certificate and key in force (PEM). */
  get pem(): { cert: Buffer; key: Buffer } {
    return { cert: this.material.cert, key: this.material.key };
  }

  /** For the start-up log: an expired or expiring certificate, a bound host it does not name. */
  warnings(): string[] {
    const warnings: string[] = [];
    const now = this.config.now?.() ?? Date.now();
    const { certificate, validTo } = this.material;
    if (validTo.getTime() <= now) warnings.push(`the TLS certificate expired on ${validTo}`);
    else if (validTo.getTime() - now < RENEW_BEFORE_MS) {
      warnings.push(`the TLS certificate expires on ${validTo}`);
    }
    for (const host of this.config.hosts ?? []) {
      if (isWildcardHost(host)) continue;
      const named = isIP(host) ? certificate.checkIP(host) : certificate.checkHost(host);
      if (named === undefined) {
        warnings.push(`the TLS certificate does not name ${host}: clients that check names fail`);
      }
    }
    return warnings;
  }

  /** What `setSecureContext` takes: key, certificate and minimum version. */
  secureContextOptions(): SecureContextOptions {
    return { key: this.material.key, cert: this.material.cert, minVersion: this.minVersion };
  }

  /**
   * Options for the door's server. TCP also refuses, in the handshake, a client that offers
   * ALPN without `ioe` (a browser offers `http/1.1`, `h2`): one certificate serves both doors,
   * so a page must not be able to make a browser speak HTTPS to the TCP door (ALPACA).
   */
  serverOptions(door: 'tcp' | 'http'): TlsOptions {
    const options: TlsOptions = {
      ...this.secureContextOptions(),
      handshakeTimeout: this.config.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
    };
    if (door === 'tcp') {
      options.ALPNCallback = ({ protocols }) =>
        protocols.includes(TCP_ALPN) ? TCP_ALPN : undefined;
    } else {
      options.ALPNProtocols = ['http/1.1'];
    }
    return options;
  }

  /**
   * SIGHUP: reads the key and certificate again (self-signed: as at start, making a new
   * certificate if the one in DIR is expiring). All or nothing: on failure it throws TlsError
   * and the setup keeps what it had. On success the new options are in force here and returned
   * for each server's `setSecureContext`.
   */
  async reload(): Promise<SecureContextOptions> {
    this.material = await loadMaterial(this.config);
    return this.secureContextOptions();
  }
}

/** The SHA-256 fingerprint of a PEM (or DER) certificate: `AA:BB:…`. */
export function fingerprintOf(cert: string | Buffer): string {
  return new X509Certificate(cert).fingerprint256;
}

/**
 * Cuts a client whose handshake failed or ran out of time. Node's `tls.Server` only reports
 * these (`tlsClientError`), `handshakeTimeout` included, and leaves the socket open: without
 * this a client that connects and says nothing holds its socket for good. (`https.Server`
 * destroys it itself; calling this on it too does no harm.) `onError` is for the log.
 */
export function cutFailedHandshakes(
  server: TlsServer,
  onError?: (error: Error, socket: TLSSocket) => void,
): void {
  server.on('tlsClientError', (error: Error, socket: TLSSocket) => {
    onError?.(error, socket);
    socket.destroy();
  });
}

/**
 * A fingerprint as given by a user (hex in any case, colons optional, 64 digits) in the form
 * `fingerprintOf` writes, or undefined when it is not one.
 */
export function parseFingerprint(text: string): string | undefined {
  const trimmed = text.trim();
  const hex = /^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}$/.test(trimmed)
    ? trimmed.replaceAll(':', '')
    : trimmed;
  if (!/^[0-9A-Fa-f]{64}$/.test(hex)) return undefined;
  return hex.toUpperCase().match(/../g)!.join(':');
}

/** The SHA-256 of a DER certificate (a TLS peer's `raw`), `AA:BB:…`: for a client pinning. */
export function fingerprintOfDer(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

async function loadMaterial(config: TlsConfig): Promise<Material> {
  if (config.selfSignedDir !== undefined) {
    if (config.certFile !== undefined || config.keyFile !== undefined) {
      throw new TlsError('--tls-self-signed cannot be combined with --tls-cert or --tls-key');
    }
    return selfSigned(config.selfSignedDir, config);
  }
  if (config.certFile === undefined || config.keyFile === undefined) {
    throw new TlsError('--tls-cert and --tls-key go together');
  }
  const cert = await readPem(config.certFile, 'certificate');
  const key = await readPem(config.keyFile, 'key');
  return { ...check(cert, key, config.certFile, config.keyFile), created: false, renewed: false };
}

async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new TlsError(`cannot read the TLS ${what} ${path}: ${(error as Error).message}`);
  }
}

/** Parses both, checks that they belong together and that OpenSSL takes them. */
function check(
  cert: Buffer,
  key: Buffer,
  certFile: string,
  keyFile: string,
): Omit<Material, 'created' | 'renewed'> {
  let certificate: X509Certificate;
  try {
    // A chain file: the server's certificate is the first (X509Certificate takes one).
    const first = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(
      cert.toString('latin1'),
    );
    certificate = new X509Certificate(first ? first[0] : cert);
  } catch {
    throw new TlsError(`${certFile} is not a PEM certificate`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new TlsError(`${keyFile} is not an unencrypted PEM private key`);
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsError(`the key ${keyFile} does not belong to the certificate ${certFile}`);
  }
  try {
    createSecureContext({ key, cert });
  } catch (error) {
    throw new TlsError(`OpenSSL refuses ${certFile} with ${keyFile}: ${(error as Error).message}`);
  }
  return {
    key,
    cert,
    certificate,
    fingerprint: certificate.fingerprint256,
    validTo: new Date(certificate.validTo),
  };
}

async function selfSigned(dir: string, config: TlsConfig): Promise<Material> {
  const now = config.now?.() ?? Date.now();
  const keyFile = join(dir, SELF_SIGNED_KEY);
  const certFile = join(dir, SELF_SIGNED_CERT);
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let key = await readIfExists(keyFile);
  let created = false;
  if (key) {
    const mode = (await stat(keyFile)).mode & 0o777;
    if (mode & 0o077) {
      throw new TlsError(
        `${keyFile} has mode ${mode.toString(8).padStart(4, '0')}: group or others may read it; run chmod 600 ${keyFile}`,
      );
    }
    try {
      createPrivateKey(key);
    } catch {
      throw new TlsError(`${keyFile} is not an unencrypted PEM private key`);
    }
  } else {
    key = await newKey();
    await writeAtomically(keyFile, key, 0o600);
    await rm(certFile, { force: true }); // it belonged to another key
    created = true;
  }

  const cert = await readIfExists(certFile);
  if (cert) {
    try {
      const current = check(cert, key, certFile, keyFile);
      if (current.validTo.getTime() - now >= RENEW_BEFORE_MS) {
        return { ...current, created: false, renewed: false };
      }
    } catch (error) {
      if (!(error instanceof TlsError)) throw error;
      // Not the key's, or unreadable: make a new one below.
    }
  }
  const fresh = await newCertificate(key, config.hosts ?? [], now);
  await writeAtomically(certFile, fresh, 0o644);
  return { ...check(fresh, key, certFile, keyFile), created, renewed: !created };
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TlsError(`cannot read ${path}: ${(error as Error).message}`);
  }
}

function newKey(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    generateKeyPair('ec', { namedCurve: 'P-256' }, (error, _publicKey, privateKey) => {
      if (error) reject(error);
      else resolve(Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' })));
    });
  });
}

/** The names a new certificate carries: the bound hosts (a wildcard bind: this machine's). */
export function certificateNames(hosts: readonly string[]): { dns: string[]; ips: string[] } {
  const dns = new Set<string>(['localhost']);
  const ips = new Set<string>(['127.0.0.1', '::1']);
  const add = (host: string): void => {
    const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
    if (isIP(bare)) ips.add(bare);
    else if (/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$/.test(bare)) dns.add(bare.replace(/\.$/, ''));
  };
  for (const host of hosts) {
    if (!isWildcardHost(host)) {
      add(host);
      continue;
    }
    add(hostname());
    for (const entries of Object.values(networkInterfaces())) {
      for (const entry of entries ?? []) {
        if (!entry.internal && !entry.address.includes('%')) add(entry.address);
      }
    }
  }
  return { dns: [...dns], ips: [...ips] };
}

function isWildcardHost(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::' || host === '[::]';
}

async function newCertificate(key: Buffer, hosts: readonly string[], now: number): Promise<Buffer> {
  const privateKey = createPrivateKey(key);
  const names = certificateNames(hosts);
  // An hour back, so a client whose clock is a little behind does not see it as not yet valid.
  const notBeforeDate = new Date(now - 3_600_000);
  // Loaded only to make a certificate: it and its X.509 libraries cost a tenth of a second and
  // a few MiB at every start otherwise.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: 'ioe-server' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate: new Date(notBeforeDate.getTime() + SELF_SIGNED_DAYS * 86_400_000),
    keyPair: {
      privateKey: key.toString(),
      publicKey: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString(),
    },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...names.dns.map((value) => ({ type: 2 as const, value })),
          ...names.ips.map((ip) => ({ type: 7 as const, ip })),
        ],
      },
    ],
  });
  return Buffer.from(pems.cert);
}

/** Temp file in the same folder (created with `mode`, never wider), fsync, rename. */
async function writeAtomically(path: string, data: Buffer, mode: number): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    mode,
  );
  try {
    await handle.chmod(mode); // exactly `mode`, whatever the umask
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  await rename(temp, path);
}
