/**
 * Counts that every thread of the server sees at once (`--threads`, pipelines/threads.ts): the
 * names of uploads in progress (LOCKED), the open connections in all and per client address,
 * and the bytes reserved for uploads (NO_SPACE). One thread alone uses the plain versions; the
 * shared ones live in SharedArrayBuffers that each thread maps, so a check and its change are
 * one step for the whole process, with no message and no wait for another thread's turn.
 *
 * The shared table is open addressing with linear probing over fixed slots: a key's SHA-256
 * (its first 32 bytes) and a count. A count that falls to 0 empties its slot and shifts the
 * slots after it back (no tombstones, so a probe never walks a full table). One spin lock
 * orders every change; it is held for a few hundred nanoseconds.
 */
import { createHash } from 'node:crypto';

/** Counts by key, each capped by its caller. */
export interface Tally {
  /** Adds one to `key` unless it is at `max` already; false (and nothing changed) when it is. */
  add(key: string, max: number): boolean;
  /**
   * Adds one to every key, or to none when one is at its max: one step, so that no other
   * thread sees the first added while the second is refused.
   */
  addAll(entries: readonly (readonly [key: string, max: number])[]): boolean;
  /** Takes one from `key` (never below 0). */
  remove(key: string): void;
  count(key: string): number;
}

/** A Tally for one thread. */
export class LocalTally implements Tally {
  private readonly counts = new Map<string, number>();

  addAll(entries: readonly (readonly [key: string, max: number])[]): boolean {
    if (entries.some(([key, max]) => this.count(key) >= max)) return false;
    for (const [key, max] of entries) this.add(key, max);
    return true;
  }

  add(key: string, max: number): boolean {
    const now = this.counts.get(key) ?? 0;
    if (now >= max) return false;
    this.counts.set(key, now + 1);
    return true;
  }

  remove(key: string): void {
    const now = this.counts.get(key) ?? 0;
    if (now <= 1) this.counts.delete(key);
    else this.counts.set(key, now - 1);
  }

  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }
}

const KEY_WORDS = 8; // 32 bytes of SHA-256
const SLOT_WORDS = KEY_WORDS + 1; // then the count
const LOCK = 0;
const ENTRIES = 1;
const HEADER_WORDS = 2;

function digest(key: string): Int32Array {
  const bytes = createHash('sha256').update(key).digest();
  return new Int32Array(bytes.buffer, bytes.byteOffset, KEY_WORDS);
}

/** A Tally in shared memory: the same table for every thread that attaches its buffer. */
export class SharedTally implements Tally {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly capacity: number;

  /** A new table with room for `capacity` keys at once (rounded up to a power of two). */
  static create(capacity: number): SharedTally {
    let slots = 16;
    while (slots < capacity) slots *= 2;
    return new SharedTally(
      new SharedArrayBuffer((HEADER_WORDS + slots * SLOT_WORDS) * Int32Array.BYTES_PER_ELEMENT),
    );
  }

  /** The table another thread created. */
  constructor(
    buffer: SharedArrayBuffer,
    private readonly lockTimeoutMs = 2000,
  ) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer);
    this.capacity = (this.words.length - HEADER_WORDS) / SLOT_WORDS;
  }

  add(key: string, max: number): boolean {
    return this.addAll([[key, max]]);
  }

  addAll(entries: readonly (readonly [key: string, max: number])[]): boolean {
    if (entries.some(([, max]) => max <= 0)) return false;
    const keys = entries.map(([key, max]) => [digest(key), max] as const);
    return this.locked(() => {
      for (const [key, max] of keys) if (this.countAt(this.find(key)) >= max) return false;
      const fresh = keys.filter(([key]) => this.countAt(this.find(key)) === 0).length;
      // Keep one slot empty so that every probe ends.
      if (Atomics.load(this.words, ENTRIES) + fresh > this.capacity - 1) {
        throw new Error('the shared table is full');
      }
      for (const [key] of keys) {
        const slot = this.find(key);
        const count = this.countAt(slot);
        if (count === 0) {
          this.words.set(key, this.base(slot));
          Atomics.add(this.words, ENTRIES, 1);
        }
        Atomics.store(this.words, this.base(slot) + KEY_WORDS, count + 1);
      }
      return true;
    });
  }

  remove(key: string): void {
    const wanted = digest(key);
    this.locked(() => {
      const slot = this.find(wanted);
      const count = this.countAt(slot);
      if (count > 1) Atomics.store(this.words, this.base(slot) + KEY_WORDS, count - 1);
      else if (count === 1) this.empty(slot);
    });
  }

  count(key: string): number {
    const wanted = digest(key);
    return this.locked(() => this.countAt(this.find(wanted)));
  }

  /** Keys held now (for tests and leak checks). */
  get entries(): number {
    return Atomics.load(this.words, ENTRIES);
  }

  private base(slot: number): number {
    return HEADER_WORDS + slot * SLOT_WORDS;
  }

  private countAt(slot: number): number {
    return Atomics.load(this.words, this.base(slot) + KEY_WORDS);
  }

  private home(key: Int32Array): number {
    return (key[0]! >>> 0) & (this.capacity - 1);
  }

  /** The key's slot, or the empty slot where it would go. */
  private find(key: Int32Array): number {
    for (let slot = this.home(key); ; slot = (slot + 1) & (this.capacity - 1)) {
      if (this.countAt(slot) === 0) return slot;
      if (this.keyAt(slot, key)) return slot;
    }
  }

  private keyAt(slot: number, key: Int32Array): boolean {
    const base = this.base(slot);
    for (let i = 0; i < KEY_WORDS; i++) if (this.words[base + i] !== key[i]) return false;
    return true;
  }

  /** Empties a slot and moves back the slots after it that probed past it. */
  private empty(slot: number): void {
    const mask = this.capacity - 1;
    let hole = slot;
    for (let next = (hole + 1) & mask; this.countAt(next) !== 0; next = (next + 1) & mask) {
      const home = this.home(this.words.subarray(this.base(next), this.base(next) + KEY_WORDS));
      // `next` may fill the hole unless its home lies cyclically in (hole, next].
      const stays = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (stays) continue;
      this.words.copyWithin(this.base(hole), this.base(next), this.base(next) + SLOT_WORDS);
      hole = next;
    }
    Atomics.store(this.words, this.base(hole) + KEY_WORDS, 0);
    Atomics.sub(this.words, ENTRIES, 1);
  }

  private locked<T>(work: () => T): T {
    let since: number | undefined;
    while (Atomics.compareExchange(this.words, LOCK, 0, 1) !== 0) {
      // Held for microseconds; held this long, its thread died holding it (terminated): fail
      // loudly rather than hang the event loop for good.
      since ??= performance.now();
      if (performance.now() - since > this.lockTimeoutMs) {
        throw new Error('the shared table stayed locked');
      }
      Atomics.wait(this.words, LOCK, 1, 1);
    }
    try {
      return work();
    } finally {
      Atomics.store(this.words, LOCK, 0);
      Atomics.notify(this.words, LOCK, 1);
    }
  }
}

/** Bytes promised to uploads in progress, so that concurrent uploads cannot overcommit. */
export interface Reservations {
  /** Reserves `bytes` if `free` minus what is reserved leaves room; false otherwise. */
  reserve(bytes: number, free: number): boolean;
  release(bytes: number): void;
  readonly reserved: number;
}

/** Reservations for one thread. */
export class LocalReservations implements Reservations {
  reserved = 0;

  reserve(bytes: number, free: number): boolean {
    if (free - this.reserved < bytes) return false;
    this.reserved += bytes;
    return true;
  }

  release(bytes: number): void {
    this.reserved -= bytes;
  }
}

/** Reservations in shared memory: one sum for every thread that attaches its buffer. */
export class SharedReservations implements Reservations {
  readonly buffer: SharedArrayBuffer;
  private readonly sum: BigInt64Array;

  constructor(buffer = new SharedArrayBuffer(BigInt64Array.BYTES_PER_ELEMENT)) {
    this.buffer = buffer;
    this.sum = new BigInt64Array(buffer);
  }

  get reserved(): number {
    return Number(Atomics.load(this.sum, 0));
  }

  reserve(bytes: number, free: number): boolean {
    const want = BigInt(bytes);
    for (;;) {
      const now = Atomics.load(this.sum, 0);
      if (BigInt(Math.floor(free)) - now < want) return false;
      if (Atomics.compareExchange(this.sum, 0, now, now + want) === now) return true;
    }
  }

  release(bytes: number): void {
    Atomics.sub(this.sum, 0, BigInt(bytes));
  }
}
