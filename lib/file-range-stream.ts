/**
 * A Readable of one byte range of an open file, read on demand: a chunk is read only when the
 * consumer asks for one, so at most one chunk waits here. Its size is asked of `chunkBytes()`
 * before every read, so that a consumer can follow its reader's pace (see chunk-pacer.ts).
 * `prefix` (the reply header) is read into the front of the first chunk's buffer: header and
 * first bytes leave in one write without a copy. The file is closed when the stream ends or is
 * destroyed.
 */
import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';

export interface FileRangeOptions {
  offset: number;
  length: number;
  /** Bytes for the next read; consulted before each read. */
  chunkBytes: () => number;
  /** Bytes that lead the first chunk, in the same buffer. */
  prefix?: Buffer;
  /** Where chunk buffers come from (default: a new buffer each). */
  buffers?: { take(size: number): Buffer };
}

export class FileRangeStream extends Readable {
  private readonly handle: FileHandle;
  private readonly chunkBytes: () => number;
  private position: number;
  private left: number;
  private prefix?: Buffer;
  private readonly buffers?: { take(size: number): Buffer };

  constructor(
    handle: FileHandle,
    { offset, length, chunkBytes, prefix, buffers }: FileRangeOptions,
  ) {
    // No read-ahead beyond the chunk being read: memory follows the consumer, not the file.
    super({ highWaterMark: 0 });
    this.handle = handle;
    this.chunkBytes = chunkBytes;
    this.position = offset;
    this.left = length;
    this.prefix = prefix;
    this.buffers = buffers;
  }

  override _read(): void {
    if (this.left <= 0) {
      this.push(null);
      return;
    }
    const lead = this.prefix?.length ?? 0;
    const want = Math.max(1, Math.min(this.chunkBytes(), this.left));
    // Not from Node's shared pool: a chunk may wait in a socket buffer for a long time.
    const buffer = this.buffers?.take(lead + want) ?? Buffer.allocUnsafeSlow(lead + want);
    if (this.prefix) this.prefix.copy(buffer);
    // Through the FileHandle, not its fd: close() then waits for a read in flight, so a
    // destroy mid-read can never let the number be reused under us.
    this.handle.read(buffer, lead, want, this.position).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        this.prefix = undefined;
        this.position += bytesRead;
        this.left -= bytesRead;
        // Zero bytes: the file shrank under us; end early and let the consumer count.
        if (bytesRead === 0) this.left = 0;
        const filled = lead + bytesRead;
        this.push(filled === buffer.length ? buffer : buffer.subarray(0, filled));
        if (this.left <= 0) this.push(null);
      },
      (error: Error) => this.destroy(error),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.handle.close().then(
      () => callback(error),
      (closeError: Error) => callback(error ?? closeError),
    );
  }
}
