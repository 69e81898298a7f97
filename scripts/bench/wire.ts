/**
 * The benchmark's client side: one raw TCP connection to 127.0.0.1 with just enough framing
 * to read a reply line, an HTTP header block, or a counted run of bytes without keeping them.
 * Every wait has a deadline and fails instead of hanging; the clients for each peer (IOE, the
 * raw-node baseline, nginx over HTTP/1.1) are built on it.
 */
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export const HOST = '127.0.0.1';

/** How a counted read may be slowed down: after every `every` bytes, pause `pauseMs`. */
export interface Throttle {
  every: number;
  pauseMs: number;
}

type Want =
  | { kind: 'until'; separator: Buffer; limit: number }
  | { kind: 'skip'; remaining: number; throttle?: Throttle; sincePause: number }
  | { kind: 'lines'; remaining: number; bytes: number }
  | { kind: 'end'; bytes: number };

interface Waiter {
  want: Want;
  resolve: (value: Buffer | number) => void;
  reject: (error: Error) => void;
  timer?: NodeJS.Timeout;
}

/**
 * One receive buffer shared by every connection (Node's `onread`): libuv reads into it and
 * calls back before any other read, so it is safe to share as long as nothing keeps a view of
 * it. Counted bytes are never copied; bytes a reader keeps (reply lines, headers) are. This
 * client reads ~3 GB/s from nginx on this machine, ~1.5× what `'data'` events reach, so the
 * client is not the ceiling of the throughput scenarios.
 */
const RECEIVE_BUFFER = Buffer.allocUnsafe(1024 * 1024);

export class Wire {
  readonly socket: Socket;
  private chunks: Buffer[] = [];
  private waiter?: Waiter;
  private failure?: Error;
  private ended = false;
  /** Bytes received in all. */
  received = 0;

  private constructor(port: number, receiveBytes: number) {
    const receive = RECEIVE_BUFFER.subarray(0, Math.min(receiveBytes, RECEIVE_BUFFER.length));
    this.socket = connect({
      port,
      host: HOST,
      allowHalfOpen: true,
      noDelay: true,
      onread: {
        buffer: receive,
        callback: (length: number): boolean => {
          this.ingest(receive, length);
          return true; // false would pause the socket
        },
      },
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.pump();
    });
    this.socket.on('error', (error) => {
      this.failure ??= error;
      this.pump();
    });
    this.socket.on('close', () => {
      this.ended = true;
      this.pump();
    });
  }

  /**
   * Connects (allowHalfOpen, no Nagle), failing after `timeoutMs`. Each read takes at most
   * `receiveBytes` (1 MiB at most): a slow reader uses 64 KiB, as a plain 'data' reader gets.
   */
  static connect(
    port: number,
    { timeoutMs = 10_000, receiveBytes = RECEIVE_BUFFER.length } = {},
  ): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const wire = new Wire(port, receiveBytes);
      const socket = wire.socket;
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (error: Error) => {
        clearTimeout(timer);
        reject(error);
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(wire);
      });
    });
  }

  /** Bytes from the shared buffer: counted in place when a counted read is waiting, else copied. */
  private ingest(buffer: Buffer, length: number): void {
    this.received += length;
    let from = 0;
    const want = this.waiter?.want;
    if (this.chunks.length === 0 && want?.kind === 'skip') {
      from = Math.min(length, want.remaining);
      want.remaining -= from;
      want.sincePause += from;
    } else if (this.chunks.length === 0 && want?.kind === 'end') {
      want.bytes += length;
      from = length;
    }
    if (from < length) this.chunks.push(Buffer.from(buffer.subarray(from, length)));
    this.pump();
  }

  get closed(): boolean {
    return this.ended || this.failure !== undefined;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.chunks.reduce((sum, c) => sum + c.length, 0);
  }

  /** Writes, waiting for 'drain' when the socket's buffer is full. */
  async write(data: Buffer | string): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.socket.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (error?: Error) => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (error) reject(error);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(this.failure ?? new Error('connection closed while writing'));
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  /** Reads up to and including `separator`; returns the text before it. */
  async until(separator: string, timeoutMs: number, limit = 1 << 20): Promise<string> {
    const sep = Buffer.from(separator);
    const buf = (await this.wait({ kind: 'until', separator: sep, limit }, timeoutMs)) as Buffer;
    return buf.subarray(0, buf.length - sep.length).toString('utf8');
  }

  /** One reply line without its `\n`. */
  line(timeoutMs: number): Promise<string> {
    return this.until('\n', timeoutMs, 64 * 1024);
  }

  /** Consumes exactly `n` bytes without keeping them. */
  async skip(n: number, timeoutMs: number, throttle?: Throttle): Promise<void> {
    if (n === 0) return;
    await this.wait({ kind: 'skip', remaining: n, throttle, sincePause: 0 }, timeoutMs);
  }

  /** Consumes `count` lines (`\n`-terminated); returns their bytes. */
  async lines(count: number, timeoutMs: number): Promise<number> {
    if (count === 0) return 0;
    return (await this.wait({ kind: 'lines', remaining: count, bytes: 0 }, timeoutMs)) as number;
  }

  /** Consumes everything until the peer closes; returns the byte count. */
  async toEnd(timeoutMs: number): Promise<number> {
    return (await this.wait({ kind: 'end', bytes: 0 }, timeoutMs)) as number;
  }

  destroy(): void {
    this.socket.destroy();
    if (this.waiter) this.fail(new Error('destroyed'));
  }

  private wait(want: Want, timeoutMs: number): Promise<Buffer | number> {
    if (this.waiter) return Promise.reject(new Error('one read at a time'));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { want, resolve, reject };
      waiter.timer = setTimeout(() => {
        if (this.waiter !== waiter) return;
        this.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${want.kind}`));
        this.socket.destroy();
      }, timeoutMs);
      this.waiter = waiter;
      this.pump();
    });
  }

  private finish(value: Buffer | number): void {
    const waiter = this.waiter!;
    this.waiter = undefined;
    clearTimeout(waiter.timer);
    waiter.resolve(value);
  }

  private fail(error: Error): void {
    const waiter = this.waiter!;
    this.waiter = undefined;
    clearTimeout(waiter.timer);
    waiter.reject(error);
  }

  private pump(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    const want = waiter.want;
    switch (want.kind) {
      case 'skip': {
        while (want.remaining > 0 && this.chunks.length > 0) {
          const chunk = this.chunks[0];
          const take = Math.min(chunk.length, want.remaining);
          if (take === chunk.length) this.chunks.shift();
          else this.chunks[0] = chunk.subarray(take);
          want.remaining -= take;
          want.sincePause += take;
        }
        if (want.remaining === 0) return this.finish(0);
        if (want.throttle && want.sincePause >= want.throttle.every && !this.socket.isPaused()) {
          want.sincePause = 0;
          this.socket.pause();
          setTimeout(() => this.socket.resume(), want.throttle.pauseMs);
        }
        break;
      }
      case 'lines': {
        while (want.remaining > 0 && this.chunks.length > 0) {
          const chunk = this.chunks[0];
          let from = 0;
          let newline: number;
          while (want.remaining > 0 && (newline = chunk.indexOf(10, from)) >= 0) {
            want.remaining--;
            from = newline + 1;
          }
          if (want.remaining > 0) from = chunk.length;
          want.bytes += from;
          if (from === chunk.length) this.chunks.shift();
          else this.chunks[0] = chunk.subarray(from);
        }
        if (want.remaining === 0) return this.finish(want.bytes);
        break;
      }
      case 'until': {
        if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
        const data = this.chunks[0];
        const at = data ? data.indexOf(want.separator) : -1;
        if (at >= 0) {
          const end = at + want.separator.length;
          if (end === data.length) this.chunks = [];
          else this.chunks[0] = data.subarray(end);
          return this.finish(data.subarray(0, end));
        }
        if (data && data.length > want.limit) {
          return this.fail(new Error(`no ${JSON.stringify(want.separator.toString())} found`));
        }
        break;
      }
      case 'end': {
        for (const chunk of this.chunks) want.bytes += chunk.length;
        this.chunks = [];
        if (this.ended) return this.finish(want.bytes);
        break;
      }
    }
    if (this.failure) return this.fail(this.failure);
    if (this.ended) {
      this.fail(new Error(`connection closed early (${want.kind} after ${this.received} bytes)`));
    }
  }
}

/** A payload of `size` bytes made of one random block repeated, and its SHA-256. */
export class Payload {
  readonly block: Buffer;
  readonly size: number;
  private digest?: string;

  constructor(block: Buffer, size: number) {
    this.block = block;
    this.size = size;
  }

  *chunks(): Generator<Buffer> {
    for (let sent = 0; sent < this.size; sent += this.block.length) {
      yield this.block.subarray(0, Math.min(this.block.length, this.size - sent));
    }
  }

  sha256(): string {
    if (this.digest === undefined) {
      const hash = createHash('sha256');
      for (const chunk of this.chunks()) hash.update(chunk);
      this.digest = hash.digest('hex');
    }
    return this.digest;
  }

  async sendOn(wire: Wire): Promise<void> {
    for (const chunk of this.chunks()) await wire.write(chunk);
  }
}

/** `OK <n>` → n; anything else throws with the line. */
export function okSize(line: string): number {
  const match = /^OK (\d+)(?: [0-9a-f]{64})?$/.exec(line);
  if (!match) throw new Error(`unexpected reply: ${line.slice(0, 200)}`);
  return Number(match[1]);
}

/** IOE: READ one file on an open connection; returns its byte count. */
export async function ioeRead(
  wire: Wire,
  name: string,
  timeoutMs: number,
  throttle?: Throttle,
): Promise<number> {
  await wire.write(`READ,${name}\n`);
  const size = okSize(await wire.line(timeoutMs));
  await wire.skip(size, timeoutMs, throttle);
  return size;
}

/** IOE: WRITE the payload as `name`; checks the reply's size and SHA-256. */
export async function ioeWrite(
  wire: Wire,
  name: string,
  payload: Payload,
  timeoutMs: number,
): Promise<void> {
  await wire.write(`WRITE,${name},${payload.size}\n`);
  await payload.sendOn(wire);
  const reply = await wire.line(timeoutMs);
  const expected = `OK ${payload.size} ${payload.sha256()}`;
  if (reply !== expected) throw new Error(`unexpected WRITE reply: ${reply.slice(0, 200)}`);
}

/** IOE: LIST; returns the entry count and the listing's bytes (after the OK line). */
export async function ioeList(
  wire: Wire,
  timeoutMs: number,
): Promise<{ count: number; bytes: number }> {
  await wire.write('LIST\n');
  const count = okSize(await wire.line(timeoutMs));
  const bytes = await wire.lines(count, timeoutMs);
  return { count, bytes };
}

/** raw-node upload mode: send the payload, half-close, wait for `OK <n>`. */
export async function rawUpload(wire: Wire, payload: Payload, timeoutMs: number): Promise<void> {
  await payload.sendOn(wire);
  wire.socket.end();
  const size = okSize(await wire.line(timeoutMs));
  if (size !== payload.size) throw new Error(`raw-node stored ${size} of ${payload.size} bytes`);
}

/** raw-node named mode: ask for `name`, read the `size` bytes the client knows it has. */
export async function rawNamedRead(
  wire: Wire,
  name: string,
  size: number,
  timeoutMs: number,
  throttle?: Throttle,
): Promise<number> {
  await wire.write(`${name}\n`);
  await wire.skip(size, timeoutMs, throttle);
  return size;
}

/** Where an HTTP GET goes: the path before the name, and the Host header. */
export interface HttpTarget {
  /** '/' for nginx (the media root is its document root), '/media/' for IOE's HTTP door. */
  prefix: string;
  /** IOE's door accepts only its own loopback names with the port, e.g. `127.0.0.1:PORT`. */
  host: string;
}

/** nginx's target: any Host will do. */
export const NGINX_TARGET: HttpTarget = { prefix: '/', host: HOST };

/** IOE's HTTP door on `port`. */
export function ioeHttpTarget(port: number): HttpTarget {
  return { prefix: '/media/', host: `${HOST}:${port}` };
}

/** HTTP/1.1 keep-alive GET of prefix + name; checks 200 and reads Content-Length bytes. */
export async function httpGet(
  wire: Wire,
  name: string,
  timeoutMs: number,
  throttle?: Throttle,
  target: HttpTarget = NGINX_TARGET,
): Promise<number> {
  const path = name.split('/').map(encodeURIComponent).join('/');
  await wire.write(`GET ${target.prefix}${path} HTTP/1.1\r\nHost: ${target.host}\r\n\r\n`);
  const head = await wire.until('\r\n\r\n', timeoutMs);
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (!status || status[1] !== '200') throw new Error(`HTTP ${head.split('\r\n')[0]}`);
  const length = /^content-length:\s*(\d+)\s*$/im.exec(head);
  if (!length) throw new Error('HTTP reply without Content-Length');
  const size = Number(length[1]);
  await wire.skip(size, timeoutMs, throttle);
  return size;
}
