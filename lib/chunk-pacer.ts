/**
 * Chooses the size of the next chunk read for a download from the pace of its reader. Large
 * chunks are what make Node fast on a fast reader (1 MiB streams about twice as fast as
 * 64 KiB), but each stage between the file and the socket may hold one chunk while a slow
 * reader catches up, so a slow reader should get small ones. The size is what the reader takes
 * in `windowMs` at its pace over the last few chunks (waits included), as a power of two within
 * [min, max]. It starts at `start`: a reader proves it is fast before it gets large chunks.
 *
 * A pace can mislead (kernel socket buffers absorb megabytes before a slow reader shows), so
 * all downloads also share a ChunkBudget: each may use at most its share, whatever its pace.
 */
/**
 * Chunks of one download that may be held at once: one read ahead from the file, one in the
 * router, one in the connection's chain, one in the socket's buffer.
 */
export const CHUNKS_IN_FLIGHT = 4;
/**
 * What all downloads together may hold in chunks, by default. 16 MiB: 100 slow readers peaked
 * at 102 MiB (worst of 3 rounds 107) against 117 (122) with 32 MiB, their chunks 32 KiB instead
 * of 64; 100 downloads at full speed together went 661 MB/s instead of 740. One fast reader
 * still gets 2 MiB chunks.
 */
export const DEFAULT_BUDGET_BYTES = 16 * 1024 * 1024;

/** The bytes all downloads together may hold in chunks; each gets an equal share. */
export class ChunkBudget {
  readonly bytes: number;
  private active = 0;

  constructor(bytes = DEFAULT_BUDGET_BYTES) {
    this.bytes = bytes;
  }

  /** Downloads in progress. */
  get downloads(): number {
    return this.active;
  }

  /** The largest chunk one download may read now. */
  get share(): number {
    return this.bytes / (CHUNKS_IN_FLIGHT * Math.max(1, this.active));
  }

  /** A download starts; call the returned function (once or more) when it ends. */
  enter(): () => void {
    this.active++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.active--;
    };
  }
}

export interface ChunkPacerOptions {
  min?: number;
  max?: number;
  /** The size before the reader's pace is known. */
  start?: number;
  /** A chunk should last the reader about this long. */
  windowMs?: number;
  /** Shared with every other download; none by default. */
  budget?: ChunkBudget;
}

export const MIN_CHUNK_BYTES = 32 * 1024;
/** A 64 KiB media file (a thumbnail, a short clip) leaves in one chunk. */
export const START_CHUNK_BYTES = 64 * 1024;
/** 2 MiB: a fast reader on loopback took READ from 0.95× to 1.26× of raw-node's 1 MiB. */
export const MAX_CHUNK_BYTES = 2 * 1024 * 1024;
/**
 * The pace is taken over this many chunks: one chunk alone misleads, because a chunk handed on
 * right after a long wait goes at once (the wait was counted against the chunk before it).
 */
const PACE_CHUNKS = 4;

export class ChunkPacer {
  readonly min: number;
  readonly max: number;
  private readonly windowMs: number;
  private readonly budget?: ChunkBudget;
  private current: number;
  private readonly recent: { bytes: number; ms: number }[] = [];

  constructor({
    min = MIN_CHUNK_BYTES,
    max = MAX_CHUNK_BYTES,
    start = START_CHUNK_BYTES,
    windowMs = 10,
    budget,
  }: ChunkPacerOptions = {}) {
    this.budget = budget;
    this.min = min;
    this.max = Math.max(min, max);
    this.windowMs = windowMs;
    this.current = Math.min(this.max, Math.max(min, start));
  }

  /** The size for the next read: its pace's, within its share of the budget. */
  get size(): number {
    if (!this.budget) return this.current;
    return Math.min(this.current, powerOfTwoWithin(this.budget.share, this.min, this.max));
  }

  /** The reader took a chunk of `bytes`, `ms` after it took the one before. */
  paced(bytes: number, ms: number): void {
    this.recent.push({ bytes, ms });
    if (this.recent.length > PACE_CHUNKS) this.recent.shift();
    let totalBytes = 0;
    let totalMs = 0;
    for (const chunk of this.recent) {
      totalBytes += chunk.bytes;
      totalMs += chunk.ms;
    }
    const wanted = totalMs > 0 ? (totalBytes / totalMs) * this.windowMs : this.max;
    this.current = powerOfTwoWithin(wanted, this.min, this.max);
  }
}

/** The largest power of two times `min` that is at most `bytes`, within [min, max]. */
function powerOfTwoWithin(bytes: number, min: number, max: number): number {
  let size = min;
  while (size * 2 <= bytes && size * 2 <= max) size *= 2;
  return size;
}
