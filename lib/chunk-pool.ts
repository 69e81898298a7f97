/**
 * Download chunk memory, reused once the socket has sent it, so that downloads allocate no
 * buffer per chunk and leave no garbage for the collector to catch up with (at hundreds of
 * MB/s, garbage chunks were most of the server's RSS; on many small READs, a new 64 KiB buffer
 * per READ was a good part of the collector's work).
 *
 * A `ChunkPool` is one connection's: stores read chunks into memory it takes, and the door
 * calls `free(chunk)` from the socket's write callback for that chunk, when the kernel has the
 * bytes. A download in progress reuses a few freed buffers of its own; the rest, and all of
 * them when it ends, go to the server's `BufferShelf`, where any connection's next chunk of
 * that size finds them. Only memory a pool lent comes back: a store may bring its own buffers,
 * and reply lines come from Node's shared pool.
 */

/** Chunk memory is allocated in whole pages, so that like sizes share a shelf. */
const PAGE = 4096;

function roundUp(size: number): number {
  return Math.max(PAGE, Math.ceil(size / PAGE) * PAGE);
}

/**
 * Memory no shelf keeps, given back now rather than at V8's next full collection: a chunk
 * has outlived several young collections by the time it is freed, so it waits for a major
 * one, and when 100 slow readers start together, some 17 MiB of dropped chunks waited with it
 * (ARCHITECTURE.md, "Chunk sizes and memory"). `ArrayBuffer.prototype.transfer`
 * (Node 21 and later) detaches the buffer and frees its memory at once; every view of it
 * becomes empty, which is why only memory that is no chunk's any more comes here. Node 20
 * has no `transfer`: there the collector frees it, as before.
 */
function letGo(memory: ArrayBuffer): void {
  (memory as { transfer?: (length: number) => ArrayBuffer }).transfer?.(0);
}

/**
 * Gives back at once the memory under `chunk` when the chunk spans all of it, as a socket
 * read's or an HTTP body's own buffer does; a chunk that is a part of larger memory is left to
 * the collector. For a chunk whose every view is done with: they all become empty. Uploads
 * (upload-sink.ts) hand each chunk on once stored and hashed: left to the collector, a GiB
 * of socket reads set off a full collection every 16–32 MiB (ARCHITECTURE.md, "The path of a
 * WRITE").
 */
export function letGoWhole(chunk: Buffer): void {
  if (chunk.byteOffset === 0 && chunk.length === chunk.buffer.byteLength) {
    letGo(chunk.buffer as ArrayBuffer);
  }
}

/** Freed chunk memory, for any connection's next chunks; past `maxBytes` it is let go. */
export class BufferShelf {
  readonly maxBytes: number;
  private bytes = 0;
  private readonly bySize = new Map<number, ArrayBuffer[]>();

  constructor(maxBytes = 4 * 1024 * 1024) {
    this.maxBytes = maxBytes;
  }

  /** Memory for a chunk of `size` bytes (its page-rounded size), if the shelf has some. */
  take(size: number): ArrayBuffer | undefined {
    const memory = this.bySize.get(roundUp(size))?.pop();
    if (memory) this.bytes -= memory.byteLength;
    return memory;
  }

  /** Keeps `memory` (no chunk's any more) for a next chunk, or lets it go if full. */
  put(memory: ArrayBuffer): void {
    if (this.bytes + memory.byteLength > this.maxBytes) {
      letGo(memory);
      return;
    }
    let list = this.bySize.get(memory.byteLength);
    if (!list) this.bySize.set(memory.byteLength, (list = []));
    list.push(memory);
    this.bytes += memory.byteLength;
  }

  /** Bytes on the shelf. */
  get size(): number {
    return this.bytes;
  }
}

export class ChunkPool {
  private readonly shelf: BufferShelf;
  private readonly keep: number;
  /** Freed memory this connection keeps for its own download in progress. */
  private readonly spare: ArrayBuffer[] = [];
  /** A download is in progress (between its first `take` and `release`). */
  private active = false;
  /** Memory this pool lent and that has not come back: only that may come back, once. */
  private readonly lent = new WeakSet<ArrayBuffer>();

  /**
   * @param shelf the server's; a shelf of its own when alone (tests, a single download)
   * @param keep freed buffers a download in progress keeps for itself: a slow reader's
   *   chunks are then the same few buffers over and over, not garbage for the collector
   */
  constructor(shelf = new BufferShelf(), keep = 4) {
    this.shelf = shelf;
    this.keep = keep;
  }

  /**
   * A buffer of exactly `size` bytes: on this download's own freed memory (of that size, or up
   * to twice it), the shelf's, or new.
   */
  take(size: number): Buffer {
    this.active = true;
    const rounded = roundUp(size);
    // A spare up to twice the size serves (a reader's pace often flips between two sizes), but
    // not a larger one: a slowed-down reader's 64 KiB chunk must not keep 2 MiB of memory alive.
    // Spares that no longer fit go to the shelf, for readers that want their size.
    const index = this.spare.findIndex(
      (memory) => memory.byteLength >= rounded && memory.byteLength <= 2 * rounded,
    );
    if (index < 0) this.shelveSpares();
    // Not from Node's shared pool: each chunk must own its memory to be reused alone.
    const memory =
      index >= 0
        ? this.spare.splice(index, 1)[0]
        : (this.shelf.take(size) ?? new ArrayBuffer(rounded));
    this.lent.add(memory);
    return Buffer.from(memory, 0, size);
  }

  /**
   * `chunk` (or a view of memory from `take`) has been sent: its memory may be reused, by this
   * download or, past `keep` or once it has ended, by any. Memory the pool did not lend, or
   * that came back already, is ignored; but once lent again it is another chunk's, so free each
   * chunk once.
   */
  free(chunk: Buffer): void {
    const memory = chunk.buffer as ArrayBuffer;
    if (!this.lent.has(memory)) return;
    this.lent.delete(memory);
    if (this.active && this.spare.length < this.keep) this.spare.push(memory);
    else this.shelf.put(memory);
  }

  /** The download is over: its spare memory goes to the shelf, so an idle connection holds none. */
  release(): void {
    this.active = false;
    this.shelveSpares();
  }

  private shelveSpares(): void {
    for (const memory of this.spare) this.shelf.put(memory);
    this.spare.length = 0;
  }
}
