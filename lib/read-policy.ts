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
 * once a second per thread, and each sent all reads to the pool for a second, about 40 % of the
 * READs, at a cost of a quarter of the server's throughput. The pool does not help a preempted
 * thread. So a slow read counts as the disk's when the block input of the process (`fsRead`,
 * which the kernel counts when a read is sent to a block device; any thread's) grew at the last
 * look or shortly before: then the pool follows at once. A read that waits on pages someone
 * asked for earlier may not be seen that way; nor is a preempted read while other threads read
 * from the disk (it is blamed on the disk: the safe side). A slow read with no block input
 * behind it sends reads to the pool only when `unexplainedLimit` of them come within a
 * cool-down: the worst case is that many slow reads in place per cool-down. A root on a
 * filesystem whose reads the kernel does not count as block input (the network, FUSE, ZFS
 * before OpenZFS 2.3) keeps the old rule: every slow read is the storage's
 * (`unexplainedLimitFor`; a mount below the root is not looked at).
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

/** Preempted reads over 5 ms came about once a second per thread on a busy two-core machine. */
const UNEXPLAINED_LIMIT = 5;

/**
 * `statfs` types of filesystems whose reads wait on something the kernel does not count as
 * block input: the network, a process (FUSE: sshfs, rclone, s3fs; virtiofs and fuseblk report
 * it too), or ZFS's own I/O (counted only from OpenZFS 2.3).
 */
const UNCOUNTED_FILESYSTEMS = new Set([
  0x6969, // NFS
  0x517b, // SMB (old smbfs)
  0xff534d42, // CIFS
  0xfe534d42, // SMB2
  0x00c36400, // Ceph
  0x01021997, // 9P
  0x5346414f, // AFS
  0x73757245, // Coda
  0x0bd00bd0, // Lustre
  0x47504653, // GPFS
  0x19830326, // BeeGFS
  0x20030528, // OrangeFS
  0x65735546, // FUSE
  0x2fc12fc1, // ZFS
]);

/**
 * The unexplained slow reads a root on a filesystem of `statfs` type `type` may take. The type
 * is taken as 32 bits: a 32-bit build reports the ones above 2^31 (CIFS, SMB2) sign-extended.
 */
export function unexplainedLimitFor(type: bigint): number {
  return UNCOUNTED_FILESYSTEMS.has(Number(BigInt.asUintN(32, type))) ? 1 : UNEXPLAINED_LIMIT;
}

/**
 * A fast read looks at the block input at most this often, ms; growth seen this recently is
 * blamed on a slow read.
 */
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
  /** When a look last found the block input grown. */
  private grewAt = Number.NEGATIVE_INFINITY;
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
    this.counted = this.count();
    this.countedAt = now();
  }

  /** May a read of `bytes` run in place now? If so, report its duration with `took`. */
  inPlace(bytes: number): boolean {
    return bytes <= this.maxInPlaceBytes && this.now() >= this.poolUntil;
  }

  /** A read in place took `ms`; it ended at `now`. */
  took(ms: number, now = this.now()): void {
    if (ms <= this.slowMs) {
      // Kept recent, so that only what happened just before a slow read is blamed on it
      // (a look costs some microseconds: not on every read).
      if (now - this.countedAt >= RECOUNT_MS) this.look(now);
      return;
    }
    this.look(now);
    const fromDisk = now - this.grewAt <= RECOUNT_MS;
    if (!fromDisk) {
      this.unexplained = this.unexplained.filter((at) => now - at < this.coolDownMs);
      this.unexplained.push(now);
      if (this.unexplained.length < this.unexplainedLimit) return;
    }
    this.poolUntil = now + this.coolDownMs;
  }

  /** Times `read` (a read in place) and learns from it. */
  time<T>(read: () => T): T {
    const started = this.now();
    try {
      return read();
    } finally {
      const ended = this.now();
      this.took(ended - started, ended);
    }
  }

  /** Counts the block input again; one that fell or could not be counted counts as grown. */
  private look(now: number): void {
    const input = this.count();
    if (input !== this.counted) this.grewAt = now;
    this.counted = input;
    this.countedAt = now;
  }

  /** The block input so far; NaN (never equal to anything) if it cannot be counted. */
  private count(): number {
    try {
      return this.blockInput();
    } catch {
      return Number.NaN;
    }
  }
}
