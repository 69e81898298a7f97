/**
 * When a small read may run on the event loop. A read from the page cache takes microseconds;
 * sending it to libuv's thread pool costs a wake-up of a pool thread and a hop back, which on a
 * small, busy machine cost more than the read (a 64 KiB READ spent a fifth of the server's time
 * handing reads to the pool). A read that has to wait for the disk takes milliseconds, and on
 * the event loop it would hold every connection up. So small reads run in place while they are
 * fast; reads that are slow because of the disk send every read to the pool for a while, after
 * which a read in place is tried again.
 *
 * A read can also be slow because the thread lost its core in the middle of it: on a busy
 * machine (two cores, two server threads and their clients) that was a read of over 5 ms about
 * once a second per thread, and each sent all reads to the pool for a second, about half the
 * time, at a cost of a quarter of the server's throughput. The pool does not help a preempted
 * thread. So a slow read counts as the disk's when the process's block input (`fsRead`,
 * counted by the kernel when a read goes to a block device) grew since the last look; the
 * pool follows at once, as it always did. A slow read with no block input behind it is the
 * machine's (or a network filesystem's, which the kernel does not count as block input): it
 * sends reads to the pool only when `unexplainedLimit` of them come within a cool-down.
 * The worst case is `unexplainedLimit` slow reads in place per cool-down. A root on a network
 * or FUSE filesystem, whose slow reads never show as block input, keeps the old rule: every
 * slow read is the storage's (`unexplainedLimitFor`).
 */
import { performance } from 'node:perf_hooks';

export interface ReadPolicyOptions {
  /** Reads up to this many bytes may run in place. */
  maxInPlaceBytes?: number;
  /** A read in place slower than this may be the disk (default 5 ms). */
  slowMs?: number;
  /** How long reads go to the pool after the disk was seen. */
  coolDownMs?: number;
  /** Slow reads with no block input that, within one cool-down, send reads to the pool. */
  unexplainedLimit?: number;
  now?: () => number;
  /** The process's block input so far, in any unit that grows (default: `fsRead`). */
  blockInput?: () => number;
}

/**
 * `statfs` types of filesystems that wait on something the kernel does not count as block
 * input: the network (NFS, SMB/CIFS, Ceph, 9P, AFS) or a process (FUSE: sshfs, rclone, s3fs).
 */
const NETWORK_FILESYSTEMS = new Set([
  0x6969, // NFS
  0x517b, // SMB
  0xff534d42, // CIFS
  0xfe534d42, // SMB2
  0x00c36400, // Ceph
  0x01021997, // 9P
  0x5346414f, // AFS
  0x65735546, // FUSE
]);

/** The unexplained slow reads a root on a filesystem of `statfs` type `type` may take. */
export function unexplainedLimitFor(type: number): number {
  return NETWORK_FILESYSTEMS.has(type) ? 1 : UNEXPLAINED_LIMIT;
}

/** Preempted reads over 5 ms came about once a second per thread on a busy two-core machine. */
const UNEXPLAINED_LIMIT = 5;

/** How old the block-input count may be when a slow read is judged, ms. */
const RECOUNT_MS = 100;

export class ReadPolicy {
  private readonly maxInPlaceBytes: number;
  private readonly slowMs: number;
  private readonly coolDownMs: number;
  private readonly unexplainedLimit: number;
  private readonly now: () => number;
  private readonly blockInput: () => number;
  /** Until this time every read goes to the pool. */
  private poolUntil = 0;
  /** Block input as last counted, and when: a slow read compares against it. */
  private counted: number;
  private countedAt: number;
  /** When the recent slow reads with no block input behind them ended. */
  private unexplained: number[] = [];

  constructor({
    maxInPlaceBytes = 128 * 1024,
    // Above most preemptions on a busy machine (a few ms), below a disk seek.
    slowMs = 5,
    coolDownMs = 1000,
    unexplainedLimit = UNEXPLAINED_LIMIT,
    now = () => performance.now(),
    blockInput = () => process.resourceUsage().fsRead,
  }: ReadPolicyOptions = {}) {
    this.maxInPlaceBytes = maxInPlaceBytes;
    this.slowMs = slowMs;
    this.coolDownMs = coolDownMs;
    this.unexplainedLimit = unexplainedLimit;
    this.now = now;
    this.blockInput = blockInput;
    this.counted = blockInput();
    this.countedAt = now();
  }

  /** May a read of `bytes` run in place now? If so, report its duration with `took`. */
  inPlace(bytes: number): boolean {
    return bytes <= this.maxInPlaceBytes && this.now() >= this.poolUntil;
  }

  /** A read in place took `ms`. */
  took(ms: number): void {
    const now = this.now();
    if (ms <= this.slowMs) {
      // Kept recent, so that only what happened just before a slow read is blamed on it
      // (a look costs some microseconds: not on every read).
      if (now - this.countedAt >= RECOUNT_MS) this.recount(now);
      return;
    }
    const before = this.counted;
    if (this.recount(now) !== before) {
      this.goToPool(now); // the disk
      return;
    }
    this.unexplained = this.unexplained.filter((at) => now - at < this.coolDownMs);
    this.unexplained.push(now);
    if (this.unexplained.length >= this.unexplainedLimit) this.goToPool(now);
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

  private recount(now: number): number {
    this.counted = this.blockInput();
    this.countedAt = now;
    return this.counted;
  }

  private goToPool(now: number): void {
    this.poolUntil = now + this.coolDownMs;
    this.unexplained = [];
  }
}
