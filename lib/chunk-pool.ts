/**
 * Buffers for one download's chunks, reused once the socket has sent them, so a download
 * allocates no buffer per chunk and leaves no garbage for the collector to catch up with (at
 * hundreds of MB/s, garbage chunks were most of the server's RSS). A buffer is free again once
 * its chunk is sent, which the consumer reports in one of two ways:
 * - `track(chunk, end)` with `sent()`: the chunk ends at byte `end` of the connection's output,
 *   and is free when the bytes the socket has handed to the kernel reach it (the TCP door,
 *   whose router sees its output only as a count);
 * - `free(chunk)`: the socket's write callback for this chunk has fired (the HTTP door).
 */
export class ChunkPool {
  private readonly sent?: () => number;
  private readonly keep: number;
  private readonly inFlight: { memory: ArrayBuffer; end: number }[] = [];
  private readonly spare: ArrayBuffer[] = [];
  /** Memory this pool handed out: only that may come back (a store may bring its own). */
  private readonly lent = new WeakSet<ArrayBuffer>();
  private unsafe = false;

  /**
   * @param sent bytes of the connection's output the socket has finished writing (for `track`)
   * @param keep free buffers kept for reuse at most
   */
  constructor(sent?: () => number, keep = 4) {
    this.sent = sent;
    this.keep = keep;
  }

  /** A buffer of exactly `size` bytes, reused when one is free. */
  take(size: number): Buffer {
    this.reclaim();
    const index = this.spare.findIndex((memory) => memory.byteLength >= size);
    if (index >= 0) {
      const [memory] = this.spare.splice(index, 1);
      return Buffer.from(memory, 0, size);
    }
    // Not from Node's shared pool: each chunk must own its memory to be reused alone.
    const chunk = Buffer.allocUnsafeSlow(size);
    this.lent.add(chunk.buffer as ArrayBuffer);
    return chunk;
  }

  /** `chunk` (from `take`) is in the output and ends at output byte `end`. */
  track(chunk: Buffer, end: number): void {
    if (this.unsafe || !this.sent || !this.lent.has(chunk.buffer as ArrayBuffer)) return;
    if (this.sent() > end) {
      // The socket sent more than the output holds: something else writes to it, and its
      // counts cannot tell when a chunk is done. Stop reusing rather than risk a live buffer.
      this.unsafe = true;
      this.inFlight.length = 0;
      this.spare.length = 0;
      return;
    }
    this.inFlight.push({ memory: chunk.buffer as ArrayBuffer, end });
  }

  /** `chunk` (from `take`) has been sent: its buffer may be reused. */
  free(chunk: Buffer): void {
    const memory = chunk.buffer as ArrayBuffer;
    if (!this.lent.has(memory) || this.spare.includes(memory)) return; // not ours, or freed
    if (this.spare.length < this.keep) this.spare.push(memory);
  }

  /**
   * The download is over: lets go of every buffer (those still in the socket are freed once
   * sent), so an idle connection holds none.
   */
  release(): void {
    this.inFlight.length = 0;
    this.spare.length = 0;
  }

  private reclaim(): void {
    if (this.unsafe || this.inFlight.length === 0 || !this.sent) return;
    const sent = this.sent();
    while (this.inFlight.length > 0 && this.inFlight[0].end <= sent) {
      const { memory } = this.inFlight.shift()!;
      if (this.spare.length < this.keep) this.spare.push(memory);
    }
  }
}
