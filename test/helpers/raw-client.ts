/**
 * A tiny raw-socket client for black-box tests: connect, send bytes, read exactly N reply
 * lines or N raw bytes, and wait for the server to close. It buffers everything it receives,
 * so a test may read replies at its own pace. Every wait has an upper bound and rejects
 * (instead of hanging the test) when it is reached.
 */
import { connect, type Socket } from 'node:net';

/**
 * Default upper bound for any single wait: long, because it only bounds a failure. On a shared
 * 2-core VM a reply that needs an fsync once took over 5 s while other suites wrote and
 * deleted big files (CI, 2026-12-02).
 */
export const WAIT_MS = 20_000;

export class RawClient {
  readonly socket: Socket;
  /** Received and not yet read, as chunks: concatenated only when a read needs it. */
  private chunks: Buffer[] = [];
  private length = 0;
  /** The server ended its side (FIN) or the socket closed. */
  ended = false;
  closed = false;
  /** An error seen on the socket (ECONNRESET and the like), if any. */
  error?: Error;
  private waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (error) => {
      this.error = error;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.closed = true;
      this.wake();
    });
  }

  /** Connects; `localAddress` picks the source address (any 127.x.y.z works on Linux). */
  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, localAddress });
      socket.setNoDelay(true);
      const client = new RawClient(socket);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(client);
      });
      socket.once('error', reject);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  /** Waits until `ready()` returns a value other than undefined, or the time is up. */
  private until<T>(ready: () => T | undefined, what: string, ms: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter !== check);
        reject(
          new Error(
            `timed out after ${ms} ms waiting for ${what}; buffered: ${JSON.stringify(
              this.buffer.subarray(0, 200).toString('latin1'),
            )}`,
          ),
        );
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

  /** Sends bytes; resolves once they are handed to the kernel. */
  send(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Half-closes: no more bytes from us, replies still come. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Bytes received and not yet read. */
  get pending(): Buffer {
    return this.buffer;
  }

  private get buffer(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0];
  }

  private set buffer(value: Buffer) {
    this.chunks = [value];
    this.length = value.length;
  }

  /** Index of the first `\n` received and not yet read, or -1; concatenates only on a hit. */
  private newline(): number {
    let offset = 0;
    for (const chunk of this.chunks) {
      const at = chunk.indexOf(0x0a);
      if (at >= 0) return offset + at;
      offset += chunk.length;
    }
    return -1;
  }

  /** Reads one reply line (without its `\n`). */
  readLine(ms = WAIT_MS): Promise<string> {
    return this.until(
      () => {
        const newline = this.newline();
        if (newline < 0) {
          if (this.ended)
            throw new Error(`connection ended before a full line; got ${this.show()}`);
          return undefined;
        }
        const line = this.buffer.subarray(0, newline).toString('utf8');
        this.buffer = this.buffer.subarray(newline + 1);
        return line;
      },
      'a reply line',
      ms,
    );
  }

  /** Reads exactly `count` reply lines. */
  async readLines(count: number, ms = WAIT_MS): Promise<string[]> {
    const lines: string[] = [];
    for (let i = 0; i < count; i++) lines.push(await this.readLine(ms));
    return lines;
  }

  /** Reads exactly `count` raw bytes. */
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

  /**
   * Waits until the server has ended the connection (FIN or reset); resolves with whatever
   * was received and not read before that.
   */
  async waitClose(ms = WAIT_MS): Promise<Buffer> {
    await this.until(() => (this.ended ? true : undefined), 'the connection to close', ms);
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    return rest;
  }

  /** Waits until the socket is fully closed (both directions). */
  async waitFullyClosed(ms = WAIT_MS): Promise<void> {
    await this.until(() => (this.closed ? true : undefined), 'the socket to close', ms);
  }

  private show(): string {
    return JSON.stringify(this.buffer.subarray(0, 200).toString('latin1'));
  }
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

/** True when a new connection is refused, or accepted only to be told SHUTTING_DOWN. */
export async function refused(port: number, host = '127.0.0.1'): Promise<boolean> {
  let client: RawClient;
  try {
    client = await RawClient.connect(port, host);
  } catch {
    return true;
  }
  try {
    const rest = (await client.waitClose()).toString();
    return rest === '' || rest.startsWith('ERR SHUTTING_DOWN');
  } finally {
    client.destroy();
  }
}
