/**
 * A Readable of one byte range of an open file, read on demand: a chunk is read only when the
 * consumer asks for one, so at most one chunk waits here. Its size is asked of `chunkBytes()`
 * before every read, so that a consumer can follow its reader's pace (see chunk-pacer.ts).
 * The file is closed when the stream ends or is destroyed.
 */
import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';

export interface FileRangeOptions {
  offset: number;
  length: number;
  /** Bytes for the next read; consulted before each read. */
  chunkBytes: () => number;
  /** Where chunk buffers come from (default: a new buffer each). */
  buffers?: { take(size: number): Buffer };
}

export class FileRangeStream extends Readable {
  private readonly handle: FileHandle;
  private readonly chunkBytes: () => number;
  private position: number;
  private left: number;
  private readonly buffers?: { take(size: number): Buffer };

  constructor(handle: FileHandle, { offset, length, chunkBytes, buffers }: FileRangeOptions) {
    // No read-ahead beyond the chunk being read: memory follows the consumer, not the file.
    super({ highWaterMark: 0 });
    this.handle = handle;
    this.chunkBytes = chunkBytes;
    this.position = offset;
    this.left = length;
    this.buffers = buffers;
  }

  override _read(): void {
    if (this.left <= 0) {
      this.push(null);
      return;
    }
    const want = Math.max(1, Math.min(this.chunkBytes(), this.left));
    // Not from Node's shared pool: a chunk may wait in a socket buffer for a long time.
    const buffer = this.buffers?.take(want) ?? Buffer.allocUnsafeSlow(want);
    // Through the FileHandle, not its fd: close() then waits for a read in flight, so a
    // destroy mid-read can never let the number be reused under us.
    this.handle.read(buffer, 0, want, this.position).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) {
          // The file shrank under us: end early and let the consumer count.
          this.left = 0;
          this.push(null);
          return;
        }
        this.position += bytesRead;
        this.left -= bytesRead;
        this.push(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead));
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
