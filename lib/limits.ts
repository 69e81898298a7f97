/**
 * Connection limits and the idle timer.
 */
import { LocalTally, type Tally } from './shared-counts.js';

/** The key that counts every connection; an address's key is `address:` and the address. */
const ALL = 'connections';

/**
 * Counts open connections, in all and per client address. With `--threads` the tally is
 * shared (shared-counts.ts), so the limits hold for the whole server, whichever thread accepts.
 */
export class ConnectionLimiter {
  /**
   * @param maxConnections open connections at once
   * @param maxPerAddress open connections from one address; 0 for no limit
   */
  constructor(
    private readonly maxConnections: number,
    private readonly maxPerAddress: number,
    private readonly tally: Tally = new LocalTally(),
  ) {}

  get open(): number {
    return this.tally.count(ALL);
  }

  /** Takes a slot; returns its release function (safe to call twice), or undefined when full. */
  acquire(address: string): (() => void) | undefined {
    const perAddress = this.maxPerAddress > 0 ? `address:${address}` : undefined;
    const admitted =
      perAddress === undefined
        ? this.tally.add(ALL, this.maxConnections)
        : this.tally.addAll([
            [ALL, this.maxConnections],
            [perAddress, this.maxPerAddress],
          ]);
    if (!admitted) return undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (perAddress !== undefined) this.tally.remove(perAddress);
      this.tally.remove(ALL);
    };
  }
}

export interface IdleTimerOptions {
  timeoutMs: number;
  onTimeout: () => void;
  /**
   * Bytes the connection has handed to the kernel so far: when this moves, the reader is
   * reading, which counts as progress.
   */
  sentBytes: () => number;
  /**
   * The server is working on a request (opening, listing, hashing, publishing): the client
   * waits for us, which is not idleness, however slow the disk.
   */
  serverWorking?: () => boolean;
}

/**
 * Fires when neither `touch()` (a complete command, payload bytes) nor sent bytes have moved
 * for `timeoutMs` while the server was not working on a request. It checks on a coarse tick
 * (a quarter of the timeout, 50 ms to 1 s) rather than re-arming a timer per chunk, so a busy
 * transfer costs nothing.
 */
export class IdleTimer {
  private last = Date.now();
  private lastSent: number;
  private readonly timer?: NodeJS.Timeout;

  constructor(private readonly options: IdleTimerOptions) {
    this.lastSent = options.sentBytes();
    if (options.timeoutMs <= 0) return;
    const tick = Math.min(1000, Math.max(50, options.timeoutMs / 4));
    this.timer = setInterval(() => this.check(), tick);
    this.timer.unref();
  }

  touch(): void {
    this.last = Date.now();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private check(): void {
    const sent = this.options.sentBytes();
    if (sent !== this.lastSent || this.options.serverWorking?.()) {
      this.lastSent = sent;
      this.last = Date.now();
    }
    if (Date.now() - this.last >= this.options.timeoutMs) {
      this.stop();
      this.options.onTimeout();
    }
  }
}
