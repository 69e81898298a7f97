/**
 * A raw-socket HTTP/1.1 client for black-box tests of the HTTP door: it sends exactly the bytes
 * a test builds (malformed requests, raw percent-escapes, half bodies, pipelined requests) and
 * parses exactly the bytes the server sends back, so a test can look at the response head as
 * bytes (no byte >= 0x80), at the framing (Content-Length, chunked or close) and at interim
 * `100 Continue` responses. Every wait has an upper bound and rejects instead of hanging.
 *
 * Also here: starting an in-process server with both doors on free ports, and small helpers
 * shared by the http-door test files.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Test } from 'tap';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';
import { WAIT_MS } from './raw-client.js';

/** Default upper bound for any single wait: the raw client's. */
export { WAIT_MS };

export interface HttpResponse {
  /** `HTTP/1.1` */
  version: string;
  status: number;
  reason: string;
  /** Header fields in the order sent, names as sent, values decoded as latin1 (byte = char). */
  rawHeaders: [string, string][];
  /** Lower-cased names; repeated fields joined with `, `. */
  headers: Record<string, string>;
  /** The head exactly as received, status line to the blank line included. */
  head: Buffer;
  body: Buffer;
  /** How the body was delimited. */
  framing: 'none' | 'length' | 'chunked' | 'close';
  /** The connection ended right after this response was read (only known for `close`). */
  closedAfter: boolean;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

export class HttpConn {
  readonly socket: Socket;
  /** Received and not yet read, as chunks: concatenated only when a read needs it. */
  private chunks: Buffer[] = [];
  private length = 0;
  ended = false;
  closed = false;
  error?: Error;
  /** Every byte received so far, read or not. */
  received = 0;
  private waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.received += chunk.length;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (error) => {
      this.error = error;
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.closed = true;
      this.wake();
    });
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<HttpConn> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, localAddress });
      socket.setNoDelay(true);
      const conn = new HttpConn(socket);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, WAIT_MS);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(conn);
      });
      const onError = (error: Error): void => {
        clearTimeout(timer);
        reject(error);
      };
      socket.once('error', onError);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private until<T>(ready: () => T | undefined, what: string, ms: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter !== check);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; buffered: ${this.show()}`));
      }, ms);
      const check = (): void => {
        let value: T | undefined;
        try {
          value = ready();
        } catch (error) {
          clearTimeout(timer);
          reject(error as Error);
          return;
        }
        if (value !== undefined) {
          clearTimeout(timer);
          resolve(value);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  private get buffer(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0];
  }

  private set buffer(value: Buffer) {
    this.chunks = [value];
    this.length = value.length;
  }

  private show(): string {
    return JSON.stringify(this.buffer.subarray(0, 300).toString('latin1'));
  }

  /** Sends bytes (a string is sent as latin1: one char, one byte). Never rejects on a
   *  connection the server already closed: the test looks at what came back instead. */
  send(data: string | Buffer): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    return new Promise((resolve) => {
      if (this.socket.destroyed || this.socket.writableEnded) return resolve();
      this.socket.write(bytes, () => resolve());
    });
  }

  /** Half-close: FIN from our side, replies still come. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Abortive close (RST). */
  reset(): void {
    this.socket.resetAndDestroy();
  }

  /** Stops reading from the kernel (the server then meets backpressure). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Bytes received and not read yet. */
  get pending(): Buffer {
    return this.buffer;
  }

  /** Reads one response head (status line and fields). */
  readHead(ms = WAIT_MS): Promise<Omit<HttpResponse, 'body' | 'framing' | 'closedAfter'>> {
    return this.until(
      () => {
        const at = this.buffer.indexOf(CRLFCRLF);
        if (at < 0) {
          if (this.ended) {
            throw new Error(`connection ended before a response head; got ${this.show()}`);
          }
          return undefined;
        }
        const head = Buffer.from(this.buffer.subarray(0, at + 4));
        this.buffer = this.buffer.subarray(at + 4);
        return parseHead(head);
      },
      'a response head',
      ms,
    );
  }

  /** Reads exactly `count` bytes. */
  readBytes(count: number, ms = WAIT_MS): Promise<Buffer> {
    return this.until(
      () => {
        if (this.length < count) {
          if (this.ended) {
            throw new Error(`connection ended after ${this.length} of ${count} bytes`);
          }
          return undefined;
        }
        const bytes = Buffer.from(this.buffer.subarray(0, count));
        this.buffer = this.buffer.subarray(count);
        return bytes;
      },
      `${count} bytes`,
      ms,
    );
  }

  /** Reads one CRLF-terminated line (without the CRLF). */
  private readLine(ms: number): Promise<string> {
    return this.until(
      () => {
        const at = this.buffer.indexOf('\r\n');
        if (at < 0) {
          if (this.ended) throw new Error(`connection ended inside a chunk line`);
          return undefined;
        }
        const line = this.buffer.subarray(0, at).toString('latin1');
        this.buffer = this.buffer.subarray(at + 2);
        return line;
      },
      'a line',
      ms,
    );
  }

  /**
   * Reads one response, head and body. `head` says the request was HEAD (no body whatever the
   * fields say). A 1xx response is returned as it is (the final one follows it).
   */
  async readResponse(options: { head?: boolean; ms?: number } = {}): Promise<HttpResponse> {
    const ms = options.ms ?? WAIT_MS;
    const head = await this.readHead(ms);
    const te = head.headers['transfer-encoding'];
    const cl = head.headers['content-length'];
    const noBody =
      options.head || (head.status >= 100 && head.status < 200) || [204, 304].includes(head.status);
    if (noBody) return { ...head, body: Buffer.alloc(0), framing: 'none', closedAfter: false };
    if (te !== undefined && /chunked/i.test(te)) {
      const parts: Buffer[] = [];
      for (;;) {
        const line = await this.readLine(ms);
        const size = parseInt(line.split(';')[0], 16);
        if (!Number.isFinite(size)) throw new Error(`bad chunk size line ${JSON.stringify(line)}`);
        if (size === 0) {
          while ((await this.readLine(ms)) !== '');
          break;
        }
        parts.push(await this.readBytes(size, ms));
        if ((await this.readLine(ms)) !== '') throw new Error('chunk not followed by CRLF');
      }
      return { ...head, body: Buffer.concat(parts), framing: 'chunked', closedAfter: false };
    }
    if (cl !== undefined) {
      if (!/^[0-9]+$/.test(cl)) throw new Error(`bad Content-Length ${JSON.stringify(cl)}`);
      const body = await this.readBytes(Number(cl), ms);
      return { ...head, body, framing: 'length', closedAfter: false };
    }
    const body = await this.waitClose(ms);
    return { ...head, body, framing: 'close', closedAfter: true };
  }

  /** Waits until the server ends the connection; resolves with the bytes not read before. */
  async waitClose(ms = WAIT_MS): Promise<Buffer> {
    await this.until(() => (this.ended ? true : undefined), 'the connection to close', ms);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Waits until at least `count` bytes are buffered (and not read), or the connection ends. */
  waitBuffered(count: number, ms = WAIT_MS): Promise<number> {
    return this.until(
      () => (this.length >= count || this.ended ? this.length : undefined),
      `${count} buffered bytes`,
      ms,
    );
  }
}

function parseHead(head: Buffer): Omit<HttpResponse, 'body' | 'framing' | 'closedAfter'> {
  const text = head.subarray(0, head.length - 4).toString('latin1');
  const [statusLine, ...lines] = text.split('\r\n');
  const match = /^(HTTP\/\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!match) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
  const rawHeaders: [string, string][] = [];
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`bad header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    rawHeaders.push([name, value]);
    const key = name.toLowerCase();
    headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
  }
  return {
    version: match[1],
    status: Number(match[2]),
    reason: match[3] ?? '',
    rawHeaders,
    headers,
    head,
  };
}

export interface RequestSpec {
  method?: string;
  /** The request-target as sent: a string is sent as latin1, a Buffer as it is. */
  target: string | Buffer;
  /** Fields in order; `host` defaults to 127.0.0.1:<port> (null: no Host field at all). */
  headers?: Record<string, string | null>;
  /** Appended after the head; a Content-Length is added unless `headers` has one, or a
   *  Transfer-Encoding, or `noLength` is set. */
  body?: string | Buffer;
  noLength?: boolean;
}

/** The bytes of one request. */
export function buildRequest(port: number, spec: RequestSpec): Buffer {
  const method = spec.method ?? 'GET';
  const fields: [string, string][] = [];
  const given = spec.headers ?? {};
  const lower = Object.keys(given).map((name) => name.toLowerCase());
  if (!lower.includes('host')) fields.push(['Host', `127.0.0.1:${port}`]);
  for (const [name, value] of Object.entries(given)) {
    if (value !== null) fields.push([name, value]);
  }
  const body =
    spec.body === undefined
      ? undefined
      : typeof spec.body === 'string'
        ? Buffer.from(spec.body, 'utf8')
        : spec.body;
  if (
    body !== undefined &&
    !spec.noLength &&
    !lower.includes('content-length') &&
    !lower.includes('transfer-encoding')
  ) {
    fields.push(['Content-Length', String(body.length)]);
  }
  const target = typeof spec.target === 'string' ? Buffer.from(spec.target, 'latin1') : spec.target;
  const head = fields.map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return Buffer.concat([
    Buffer.from(`${method} `, 'latin1'),
    target,
    Buffer.from(` HTTP/1.1\r\n${head}\r\n`, 'latin1'),
    body ?? Buffer.alloc(0),
  ]);
}

/** One request on a fresh connection; the connection is closed after the response. */
export async function request(
  port: number,
  spec: RequestSpec,
  ms = WAIT_MS,
): Promise<HttpResponse> {
  const conn = await HttpConn.connect(port);
  try {
    await conn.send(buildRequest(port, spec));
    return await conn.readResponse({ head: spec.method === 'HEAD', ms });
  } finally {
    conn.destroy();
  }
}

/** Percent-encodes a protocol name per segment (what a player or the page sends). */
export function mediaPath(name: string): string {
  return '/media/' + name.split('/').map(encodeURIComponent).join('/');
}

export function sha256(data: Buffer | string): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Deterministic content of `size` bytes; `seed` makes different files differ. */
export function content(size: number, seed = 0): Buffer {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return data;
}

/** The JSON body of an error reply, or undefined when it is not one. */
export function errorBody(res: HttpResponse): { code: string; message: string } | undefined {
  try {
    const value = JSON.parse(res.body.toString('utf8')) as { code?: unknown; message?: unknown };
    if (typeof value.code === 'string' && typeof value.message === 'string') {
      return { code: value.code, message: value.message };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 20 ms until it returns true; rejects after `ms`. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = WAIT_MS,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

export interface Started {
  server: MediaServer;
  /** A scratch folder; the media root is `<base>/media`, so `<base>` is outside the root. */
  base: string;
  root: string;
  httpPort: number;
  tcpPort: number;
  /** Puts a file straight on disk under the root (folders created); optional mtime (s). */
  put(name: string, data: Buffer | string, mtimeSeconds?: number): Promise<void>;
  /** Hidden upload temporaries (`.ioe-upload-*`) anywhere under the root. */
  temps(): Promise<string[]>;
  req(spec: RequestSpec, ms?: number): Promise<HttpResponse>;
}

/** Starts a server with both doors on free ports on 127.0.0.1; torn down with the test. */
export async function startServer(t: Test, options: Partial<ServerOptions> = {}): Promise<Started> {
  const base = await mkdtemp(join(tmpdir(), 'ioe-http-'));
  const root = join(base, 'media');
  await mkdir(root);
  const server = await MediaServer.create({
    root,
    host: '127.0.0.1',
    port: 0,
    httpPort: 0,
    ...options,
  });
  const { port: tcpPort } = await server.listen();
  const httpPort = server.httpAddress!.port;
  t.teardown(async () => {
    await server.forceQuit();
    await rm(base, { recursive: true, force: true });
  });
  return {
    server,
    base,
    root,
    httpPort,
    tcpPort,
    async put(name, data, mtimeSeconds) {
      const path = join(root, name);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, data);
      if (mtimeSeconds !== undefined) await utimes(path, mtimeSeconds, mtimeSeconds);
    },
    async temps() {
      const found: string[] = [];
      const walk = async (dir: string): Promise<void> => {
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          if (entry.name.startsWith('.ioe-upload')) found.push(join(dir, entry.name));
          if (entry.isDirectory()) await walk(join(dir, entry.name));
        }
      };
      await walk(root);
      return found;
    },
    req: (spec, ms) => request(httpPort, spec, ms),
  };
}

/** What every response of the door must satisfy: a head of ASCII bytes only, and no CORS. */
export function checkHead(t: Test, res: HttpResponse, what = ''): void {
  const high = res.head.findIndex((byte) => byte >= 0x80);
  t.equal(high, -1, `${what}no byte >= 0x80 in the response head`);
  const cors = res.rawHeaders.filter(([name]) => /^access-control-allow-/i.test(name));
  t.same(cors, [], `${what}no Access-Control-Allow-* header`);
}
