/**
 * Buffers for one connection's download chunks, reused once the socket has sent them, so a
 * download allocates no buffer per chunk and leaves no garbage for the collector to catch up
 * with (at hundreds of MB/s, garbage chunks were most of the server's RSS). A buffer is free
 * again when the bytes the socket has handed to the kernel reach the end of its chunk in the
 * connection's output; `sent()` reports those bytes, and the router reports where each chunk
 * ends (`track`).
 */
export class ChunkPool {
  private readonly sent: () => number;
  private readonly keep: number;
  private readonly inFlight: { memory: ArrayBuffer; end: number }[] = [];
  private readonly free: ArrayBuffer[] = [];
  private unsafe = false;

  /**
   * @param sent bytes of the connection's output the socket has finished writing
   * @param keep free buffers kept for reuse at most
   */
  constructor(sent: () => number, keep = 4) {
    this.sent = sent;
    this.keep = keep;
  }

  /** A buffer of exactly `size` bytes, reused when one is free. */
  take(size: number): Buffer {
    this.reclaim();
    const index = this.free.findIndex((memory) => memory.byteLength >= size);
    if (index >= 0) {
      const [memory] = this.free.splice(index, 1);
      return Buffer.from(memory, 0, size);
    }
    // Not from Node's shared pool: each chunk must own its memory to be reused alone.
    return Buffer.allocUnsafeSlow(size);
  }

  /** `chunk` (from `take`) is in the output and ends at output byte `end`. */
  track(chunk: Buffer, end: number): void {
    if (this.unsafe) return;
    if (this.sent() > end) {
      // The socket sent more than the output holds: something else writes to it, and its
      // counts cannot tell when a chunk is done. Stop reusing rather than risk a live buffer.
      this.unsafe = true;
      this.inFlight.length = 0;
      this.free.length = 0;
      return;
    }
    this.inFlight.push({ memory: chunk.buffer as ArrayBuffer, end });
  }

  /**
   * The download is over: lets go of every buffer (those still in the socket are freed once
   * sent), so an idle connection holds none.
   */
  release(): void {
    this.inFlight.length = 0;
    this.free.length = 0;
  }

  private reclaim(): void {
    if (this.unsafe || this.inFlight.length === 0) return;
    const sent = this.sent();
    while (this.inFlight.length > 0 && this.inFlight[0].end <= sent) {
      const { memory } = this.inFlight.shift()!;
      if (this.free.length < this.keep) this.free.push(memory);
    }
  }
}
