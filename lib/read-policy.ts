/**
 * When a small read may run on the event loop. A read from the page cache takes microseconds;
 * sending it to libuv's thread pool costs a wake-up of a pool thread and a hop back, which on a
 * small, busy machine cost more than the read (a 64 KiB READ spent a fifth of the server's time
 * handing reads to the pool). A read that has to wait for the disk takes milliseconds, and on
 * the event loop it would hold every connection up. So small reads run in place while they are
 * fast; one that is slow (the disk) sends every read to the pool for a while, after which a
 * read in place is tried again. The worst case is one slow read in place per `coolDownMs`.
 */
import { performance } from 'node:perf_hooks';

export interface ReadPolicyOptions {
  /** Reads up to this many bytes may run in place. */
  maxInPlaceBytes?: number;
  /** A read in place slower than this means the disk: go to the pool (default 5 ms). */
  slowMs?: number;
  /** How long reads go to the pool after a slow one. */
  coolDownMs?: number;
  now?: () => number;
}

export class ReadPolicy {
  private readonly maxInPlaceBytes: number;
  private readonly slowMs: number;
  private readonly coolDownMs: number;
  private readonly now: () => number;
  /** Until this time every read goes to the pool. */
  private poolUntil = 0;

  constructor({
    maxInPlaceBytes = 128 * 1024,
    // Above a preemption on a busy machine (a few ms), below a disk seek.
    slowMs = 5,
    coolDownMs = 1000,
    now = () => performance.now(),
  }: ReadPolicyOptions = {}) {
    this.maxInPlaceBytes = maxInPlaceBytes;
    this.slowMs = slowMs;
    this.coolDownMs = coolDownMs;
    this.now = now;
  }

  /** May a read of `bytes` run in place now? If so, report its duration with `took`. */
  inPlace(bytes: number): boolean {
    return bytes <= this.maxInPlaceBytes && this.now() >= this.poolUntil;
  }

  /** A read in place took `ms`. */
  took(ms: number): void {
    if (ms > this.slowMs) this.poolUntil = this.now() + this.coolDownMs;
  }

  /** Times `read` (a read in place) and learns from it. */
  time<T>(read: () => T): T {
    const started = this.now();
    try {
      return read();
    } finally {
      this.took(this.now() - started);
    }
  }
}
