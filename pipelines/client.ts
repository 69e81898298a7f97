/**
 * The IOE client library: one TCP connection, any number of requests in flight. Requests are
 * sent in order (a WRITE's payload goes out whole before the next command line) and replies
 * are matched to them in order.
 *
 * Access (access.md): `tls` connects with TLS (ALPN `ioe`), verifying the server's certificate
 * against the system's CAs, a given `ca` (host names checked as usual), or a pinned SHA-256
 * `fingerprint` (exactly that certificate, self-signed or not; with `ca` too, both must hold).
 * The certificate is checked before a single byte of ours is sent, and a failed check never
 * falls back to plain TCP. `user` sends `AUTH,<user>,<password>` before `connect` resolves.
 *
 * Replies arrive through the same binary-safe frame splitter the server uses: READ payloads
 * share the socket with reply lines, so a text splitter (split2) would corrupt them. The
 * splitter's `payloadLength` hook is where replies are decoded, in arrival order.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { once } from 'node:events';
import {
  connect as tlsConnect,
  type ConnectionOptions as TlsConnectionOptions,
  type TLSSocket,
} from 'node:tls';
import { isErrorCode, ProtocolError } from '../lib/errors.js';
import { parseMediaType, type MediaType } from '../lib/media-names.js';
import type { CatalogEntry } from '../lib/storage.js';
import { frameSplitter, type Frame } from './frame-splitter.js';

export { ProtocolError } from '../lib/errors.js';
export type { CatalogEntry } from '../lib/storage.js';

/** How to check the server's certificate (`connect({ tls })`). */
export interface TlsClientOptions {
  /** PEM certificate(s) to trust instead of the system's CAs; host names are still checked. */
  ca?: string | Buffer;
  /**
   * The SHA-256 fingerprint of the server's certificate (hex in any case, colons optional, as
   * `ioe-server` prints it): only that certificate is accepted, with no CA or name check
   * unless `ca` is given too.
   */
  fingerprint?: string;
  /** The name the certificate must carry (SNI); default `host` when it is not an IP address. */
  servername?: string;
}

export interface ConnectOptions {
  host?: string;
  port?: number;
  /** An account: `connect` authenticates (AUTH) before it resolves. Needs `password`. */
  user?: string;
  password?: string;
  /** TLS: `true` checks the certificate against the system's CAs. */
  tls?: boolean | TlsClientOptions;
}

/** The server's certificate is not the pinned one; nothing was sent on the connection. */
export class FingerprintMismatchError extends Error {
  readonly code = 'ERR_IOE_FINGERPRINT_MISMATCH';

  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `the server's TLS certificate is not the pinned one: expected sha256 ${expected}, ` +
        `the server presented sha256 ${actual}; disconnected before sending anything`,
    );
    this.name = 'FingerprintMismatchError';
  }
}

export interface ReadOptions {
  offset?: number;
  length?: number;
}

export interface WriteReceipt {
  size: number;
  sha256: string;
}

export interface HashResult {
  sha256: string;
  size: number;
}

/** A READ's bytes. `size` resolves with the announced byte count once the header arrives. */
export interface ReadReply extends Readable {
  size: Promise<number>;
}

/** A request waiting for its reply; `line` returns the payload bytes that follow the line. */
interface Pending {
  line(text: string): { done: boolean; payload?: number };
  fail(error: Error): void;
}

const MAX_REPLY_LINE = 1024 * 1024;

/** Parses `ERR <CODE> <message>`. */
function parseError(text: string): ProtocolError {
  const match = /^ERR ([A-Z_]+) ?(.*)$/.exec(text);
  const code = match?.[1] ?? '';
  if (!match || !isErrorCode(code))
    return new ProtocolError('INTERNAL', `unexpected reply: ${text}`);
  return new ProtocolError(code, match[2]);
}

function okFields(text: string): string[] {
  if (text !== 'OK' && !text.startsWith('OK ')) throw new Error(`unexpected reply: ${text}`);
  return text.split(' ').slice(1);
}

function parseCount(field: string | undefined): number {
  const value = Number(field);
  if (field === undefined || !/^[0-9]+$/.test(field) || !Number.isSafeInteger(value)) {
    throw new Error(`malformed count in reply: ${field}`);
  }
  return value;
}

/** Parses a LIST line; extra tab-separated fields after the fourth are ignored. */
export function parseEntry(text: string): CatalogEntry {
  const [typeField, name, size, mtime] = text.split('\t');
  const type = parseMediaType(typeField ?? '');
  if (type === undefined || name === undefined || mtime === undefined) {
    throw new Error(`malformed LIST line: ${text}`);
  }
  return { type, name, size: parseCount(size), mtime: new Date(mtime) };
}

export class IoeClient {
  private readonly socket: Socket;
  private readonly pending: Pending[] = [];
  /** READ replies whose payload is still arriving, in order. */
  private readonly payloadTargets: { stream: Readable; left: number }[] = [];
  private resumeReceive?: () => void;
  private sendQueue: Promise<void> = Promise.resolve();
  private closedWith?: Error;
  /** A reply could not be decoded: the stream is out of step, so later lines mean nothing. */
  private outOfStep = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    const splitter = frameSplitter({
      maxLineBytes: MAX_REPLY_LINE,
      payloadLength: (line) => this.onReplyLine(line),
    });
    const receiver = new Writable({
      objectMode: true,
      write: (frame: Frame, _encoding, callback) => this.onFrame(frame, callback),
    });
    socket.pipe(splitter).pipe(receiver);
    splitter.on('error', (error) => socket.destroy(error));
    socket.on('error', (error) => this.shutdown(error));
    socket.on('close', () => this.shutdown(this.closedWith ?? new Error('the connection closed')));
  }

  static async connect(options: ConnectOptions = {}): Promise<IoeClient> {
    const credentials = checkCredentials(options);
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? 10000;
    const socket = options.tls
      ? await connectTls(host, port, options.tls === true ? {} : options.tls)
      : await connectPlain(host, port);
    const client = new IoeClient(socket);
    if (credentials) {
      try {
        await client.auth(credentials.user, credentials.password);
      } catch (error) {
        client.destroy();
        throw error;
      }
    }
    return client;
  }

  /**
   * AUTH: switches the connection to the account; resolves with its name. Rejects with the
   * server's refusal (AUTH_FAILED, RATE_LIMITED, TLS_REQUIRED…) and keeps the account it had.
   */
  auth(user: string, password: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const problem = credentialProblem(user, password);
      if (problem) {
        reject(new TypeError(problem));
        return;
      }
      this.request(`AUTH,${user},${password}`, {
        line: (text) => {
          const [verb, name] = okFields(text);
          if (verb !== 'AUTH' || name === undefined) throw new Error(`unexpected reply: ${text}`);
          resolve(name);
          return { done: true };
        },
        fail: reject,
      });
    });
  }

  /** WHOAMI: the account this connection holds, or `anonymous`. */
  whoami(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.request('WHOAMI', {
        line: (text) => {
          const [verb, name] = okFields(text);
          if (verb !== 'WHOAMI' || name === undefined) {
            throw new Error(`unexpected reply: ${text}`);
          }
          resolve(name);
          return { done: true };
        },
        fail: reject,
      });
    });
  }

  /** The catalog, optionally of one type. */
  list(type?: MediaType): Promise<CatalogEntry[]> {
    return new Promise((resolve, reject) => {
      const entries: CatalogEntry[] = [];
      let remaining: number | undefined;
      this.request(type ? `LIST,${type}` : 'LIST', {
        line: (text) => {
          if (remaining === undefined) {
            remaining = parseCount(okFields(text)[0]);
          } else {
            entries.push(parseEntry(text));
            remaining--;
          }
          if (remaining > 0) return { done: false };
          resolve(entries);
          return { done: true };
        },
        fail: reject,
      });
    });
  }

  /** A file's bytes, from `offset`, at most `length` of them. */
  read(name: string, options: ReadOptions = {}): ReadReply {
    let announce!: (size: number) => void;
    let refuse!: (error: Error) => void;
    const size = new Promise<number>((resolve, reject) => {
      announce = resolve;
      refuse = reject;
    });
    size.catch(() => undefined); // the stream's 'error' is where callers hear about it
    const stream = new Readable({
      read: () => this.resumeReceive?.(),
      // A consumer that gives up never calls read() again: if the receiver is paused on this
      // stream, let it go on (onFrame drains the rest), or every later reply would stall.
      destroy: (error, callback) => {
        if (this.payloadTargets[0]?.stream === stream) this.resumeReceive?.();
        callback(error);
      },
    }) as ReadReply;
    stream.size = size;
    let command = `READ,${name}`;
    if (options.offset !== undefined || options.length !== undefined)
      command += `,${options.offset ?? 0}`;
    if (options.length !== undefined) command += `,${options.length}`;
    this.request(command, {
      line: (text) => {
        const count = parseCount(okFields(text)[0]);
        announce(count);
        if (count === 0) stream.push(null);
        else this.payloadTargets.push({ stream, left: count });
        return { done: true, payload: count };
      },
      fail: (error) => {
        refuse(error);
        stream.destroy(error);
      },
    });
    return stream;
  }

  /** Uploads exactly `size` bytes from `source`; resolves with the server's receipt. */
  write(name: string, source: Readable | Buffer, size: number): Promise<WriteReceipt> {
    return new Promise((resolve, reject) => {
      this.request(
        `WRITE,${name},${size}`,
        {
          line: (text) => {
            const [sent, sha256] = okFields(text);
            resolve({ size: parseCount(sent), sha256: sha256 ?? '' });
            return { done: true };
          },
          fail: reject,
        },
        () => this.sendPayload(Buffer.isBuffer(source) ? Readable.from([source]) : source, size),
      );
    });
  }

  /** The SHA-256 and size of a file as it is now. */
  hash(name: string): Promise<HashResult> {
    return new Promise((resolve, reject) => {
      this.request(`HASH,${name}`, {
        line: (text) => {
          const [sha256, size] = okFields(text);
          resolve({ sha256: sha256 ?? '', size: parseCount(size) });
          return { done: true };
        },
        fail: reject,
      });
    });
  }

  /** Says BYE after every request sent so far, and waits for the server to close. */
  async close(): Promise<void> {
    if (this.socket.destroyed) return;
    const closed = once(this.socket, 'close');
    const bye = new Promise<void>((resolve, reject) => {
      this.request('BYE', { line: () => (resolve(), { done: true }), fail: reject });
    });
    await bye.catch(() => undefined);
    this.socket.end();
    await closed;
  }

  /** Drops the connection now; requests in flight fail. */
  destroy(): void {
    this.socket.destroy();
  }

  private request(command: string, pending: Pending, sendPayload?: () => Promise<void>): void {
    if (this.closedWith) {
      pending.fail(this.closedWith);
      return;
    }
    if (/[\r\n]/.test(command)) {
      pending.fail(new ProtocolError('BAD_REQUEST', 'a name cannot hold a line break'));
      return;
    }
    this.sendQueue = this.sendQueue.then(async () => {
      if (this.closedWith) {
        pending.fail(this.closedWith);
        return;
      }
      this.pending.push(pending);
      if (!this.socket.write(command + '\n')) await this.drained();
      if (sendPayload) await sendPayload();
    });
  }

  /** Waits for the socket to drain (or close), removing both listeners either way. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Sends exactly `size` bytes; anything else would break the framing, so it closes. */
  private async sendPayload(source: Readable, size: number): Promise<void> {
    let sent = 0;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        sent += chunk.length;
        if (sent > size) throw new Error(`the source holds more than the ${size} bytes announced`);
        if (!this.socket.write(chunk)) await this.drained();
        if (this.socket.destroyed) return;
      }
      if (sent < size) throw new Error(`the source ended after ${sent} of ${size} bytes`);
    } catch (error) {
      this.closedWith = error instanceof Error ? error : new Error(String(error));
      this.socket.destroy();
    }
  }

  /** Decodes one reply line, in arrival order; returns how many raw bytes follow it. */
  private onReplyLine(raw: Buffer): number {
    // The rest of a chunk still arrives after a bad line; it must neither answer a request
    // nor replace the first error, which is the one worth reporting.
    if (this.outOfStep) return 0;
    const text = raw.toString('utf8').replace(/\r$/, '');
    const head = this.pending[0];
    try {
      if (text.startsWith('ERR ')) {
        const error = parseError(text);
        if (error.closes) this.closedWith = error;
        if (head) {
          this.pending.shift();
          head.fail(error);
        }
        return 0;
      }
      if (!head) throw new Error(`reply with no request: ${text}`);
      const { done, payload = 0 } = head.line(text);
      if (done) this.pending.shift();
      return payload;
    } catch (error) {
      this.outOfStep = true;
      this.closedWith = error instanceof Error ? error : new Error(String(error));
      this.socket.destroy();
      return 0;
    }
  }

  private onFrame(frame: Frame, callback: () => void): void {
    if (frame.kind !== 'payload') {
      callback();
      return;
    }
    const target = this.payloadTargets[0];
    if (!target) {
      callback();
      return;
    }
    target.left -= frame.chunk.length;
    // A reader that gave up (destroyed its stream) still has its bytes drained, to stay in step.
    const more = target.stream.destroyed || target.stream.push(frame.chunk);
    if (target.left === 0) {
      this.payloadTargets.shift();
      if (!target.stream.destroyed) target.stream.push(null);
    }
    if (more || target.left === 0) callback();
    else this.resumeReceive = () => ((this.resumeReceive = undefined), callback());
  }

  private shutdown(error: Error): void {
    this.closedWith ??= error;
    for (const pending of this.pending.splice(0)) pending.fail(this.closedWith);
    for (const target of this.payloadTargets.splice(0)) target.stream.destroy(this.closedWith);
  }
}

export function connect(options: ConnectOptions = {}): Promise<IoeClient> {
  return IoeClient.connect(options);
}

/** What is wrong with a name and password for AUTH, or undefined. */
function credentialProblem(user: string, password: string): string | undefined {
  if (user === '' || [...user].some((char) => char === ',' || char < ' ' || char === '\x7f')) {
    return 'the account name must be non-empty, without commas or control characters';
  }
  // A line break would end the AUTH line and send the rest as a command.
  if (/[\r\n]/.test(password)) return 'the password cannot hold a line break';
  return undefined;
}

/** The credentials to send on connect, or undefined; throws before connecting if unusable. */
function checkCredentials(options: ConnectOptions): { user: string; password: string } | undefined {
  const { user, password } = options;
  if (user === undefined) {
    if (password !== undefined) throw new TypeError('a password needs a user');
    return undefined;
  }
  if (password === undefined) throw new TypeError(`no password for the account ${user}`);
  const problem = credentialProblem(user, password);
  if (problem) throw new TypeError(problem);
  return { user, password };
}

async function connectPlain(host: string, port: number): Promise<Socket> {
  const socket = netConnect({ host, port });
  socket.setNoDelay(true);
  await once(socket, 'connect');
  return socket;
}

/**
 * A TLS connection whose certificate has been checked, before anything is written on it: by
 * OpenSSL against `ca` (or the system's CAs) and the host name, and/or against the pinned
 * fingerprint. A failed check destroys the socket and rejects.
 */
async function connectTls(
  host: string,
  port: number,
  options: TlsClientOptions,
): Promise<TLSSocket> {
  // Loaded here: lib/tls.ts brings the certificate maker, which a plain connection never needs.
  const { fingerprintOfDer, parseFingerprint, TCP_ALPN } = await import('../lib/tls.js');
  const pinned =
    options.fingerprint === undefined ? undefined : parseFingerprint(options.fingerprint);
  if (options.fingerprint !== undefined && pinned === undefined) {
    throw new TypeError(
      'the fingerprint must be the SHA-256 of the server certificate: 64 hex digits, colons optional',
    );
  }
  const settings: TlsConnectionOptions = {
    host,
    port,
    ALPNProtocols: [TCP_ALPN],
    servername: options.servername,
    ca: options.ca,
  };
  if (pinned !== undefined && options.ca === undefined) {
    // The pin is the whole check: a self-signed certificate, any name. Compared below, once
    // the handshake is done and before the socket is handed out for writing.
    settings.rejectUnauthorized = false;
    settings.checkServerIdentity = () => undefined;
  }
  const socket = tlsConnect(settings);
  socket.setNoDelay(true);
  try {
    await once(socket, 'secureConnect');
  } catch (error) {
    socket.destroy();
    throw error;
  }
  if (pinned !== undefined) {
    const certificate = socket.getPeerX509Certificate();
    const actual = certificate
      ? certificate.fingerprint256
      : fingerprintOfDer(socket.getPeerCertificate().raw ?? Buffer.alloc(0));
    if (actual !== pinned) {
      socket.destroy();
      throw new FingerprintMismatchError(pinned, actual);
    }
  }
  return socket;
}
