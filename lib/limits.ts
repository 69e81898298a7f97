/**
 * Connection limits and the idle timer.
 */

/** Counts open connections, in all and per client address. */
export class ConnectionLimiter {
  private total = 0;
  private readonly perAddress = new Map<string, number>();

  /**
   * @param maxConnections open connections at once
   * @param maxPerAddress open connections from one address; 0 for no limit
   */
  constructor(
    private readonly maxConnections: number,
    private readonly maxPerAddress: number,
  ) {}

  get open(): number {
    return this.total;
  }

  /** Takes a slot; returns its release function (safe to call twice), or undefined when full. */
  acquire(address: string): (() => void) | undefined {
    const fromAddress = this.perAddress.get(address) ?? 0;
    if (this.total >= this.maxConnections) return undefined;
    if (this.maxPerAddress > 0 && fromAddress >= this.maxPerAddress) return undefined;
    this.total++;
    this.perAddress.set(address, fromAddress + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
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
}

/**
 * Fires when neither `touch()` (a complete command, payload bytes) nor sent bytes have moved
 * for `timeoutMs`. It checks on a coarse tick (a quarter of the timeout, 50 ms to 1 s) rather
 * than re-arming a timer per chunk, so a busy transfer costs nothing.
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
    if (sent !== this.lastSent) {
      this.lastSent = sent;
      this.last = Date.now();
    }
    if (Date.now() - this.last >= this.options.timeoutMs) {
      this.stop();
      this.options.onTimeout();
    }
  }
}
