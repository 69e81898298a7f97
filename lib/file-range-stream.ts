/**
 * A Readable of one byte range of an open file, read on demand: a chunk is read only when the
 * consumer asks for one, so at most one chunk waits here. Its size is asked of `chunkBytes()`
 * before every read, so that a consumer can follow its reader's pace (see chunk-pacer.ts).
 * The stream owns the descriptor and closes it when it ends or is destroyed.
 *
 * A small read runs in place while reads are fast (the page cache), else on libuv's thread pool
 * (a cold file may wait for the disk): `policy` decides (read-policy.ts). The close is always
 * in place: one cheap syscall, where a hop to the pool cost as much as a small read.
 */
import { Readable } from 'node:stream';
import { closeSync, read, readSync } from 'node:fs';
import type { ReadPolicy } from './read-policy.js';

export interface FileRangeOptions {
  offset: number;
  length: number;
  /** Bytes for the next read; consulted before each read. */
  chunkBytes: () => number;
  /** Where chunk buffers come from (default: a new buffer each). */
  buffers?: { take(size: number): Buffer };
  /** Which reads may run in place; without it every read goes to the thread pool. */
  policy?: ReadPolicy;
  /** Free bytes to keep before the first chunk in its memory (see StreamOptions). */
  headroom?: number;
}

/**
 * Memory for a chunk of `size` bytes, with `room` free bytes before it in the same memory. Not
 * from Node's shared pool: a chunk may wait in a socket buffer for a long time.
 */
function chunkMemory(size: number, buffers?: { take(size: number): Buffer }, room = 0): Buffer {
  const memory = buffers?.take(room + size) ?? Buffer.allocUnsafeSlow(room + size);
  return room === 0 ? memory : memory.subarray(room);
}

/**
 * `length` bytes of `fd` from `offset`, read in place into one buffer (with `headroom` free bytes
 * before it in its memory); fewer if the file ends first. For a small read the page cache
 * answers (read-policy.ts): one read, no stream.
 */
export function readRangeNow(
  fd: number,
  offset: number,
  length: number,
  { buffers, headroom }: Pick<FileRangeOptions, 'buffers' | 'headroom'> = {},
): Buffer {
  const buffer = chunkMemory(length, buffers, headroom);
  let got = 0;
  while (got < length) {
    const bytesRead = readSync(fd, buffer, got, length - got, offset + got);
    if (bytesRead === 0) break; // it shrank
    got += bytesRead;
  }
  return got === length ? buffer : buffer.subarray(0, got);
}

export class FileRangeStream extends Readable {
  private fd: number | undefined;
  private readonly chunkBytes: () => number;
  private position: number;
  private left: number;
  private readonly buffers?: { take(size: number): Buffer };
  private readonly policy?: ReadPolicy;
  /** Bytes kept free before the first chunk, in its memory; then 0 for the others. */
  readonly headroom?: number;
  private room: number;
  /** A read is in flight: the descriptor must outlive it (its number could be reused). */
  private reading = false;
  private closeWhenRead?: () => void;

  constructor(
    fd: number,
    { offset, length, chunkBytes, buffers, policy, headroom }: FileRangeOptions,
  ) {
    // No read-ahead beyond the chunk being read: memory follows the consumer, not the file.
    super({ highWaterMark: 0 });
    this.fd = fd;
    this.chunkBytes = chunkBytes;
    this.position = offset;
    this.left = length;
    this.buffers = buffers;
    this.policy = policy;
    this.headroom = headroom;
    this.room = headroom ?? 0;
  }

  override _read(): void {
    if (this.left <= 0 || this.fd === undefined) {
      this.push(null);
      return;
    }
    const want = Math.max(1, Math.min(this.chunkBytes(), this.left));
    const buffer = chunkMemory(want, this.buffers, this.room);
    this.room = 0;
    const fd = this.fd;
    const policy = this.policy;
    if (policy?.inPlace(want)) {
      let bytesRead: number;
      try {
        bytesRead = policy.time(() => readSync(fd, buffer, 0, want, this.position));
      } catch (error) {
        this.destroy(error as Error);
        return;
      }
      this.deliver(buffer, bytesRead);
      return;
    }
    this.reading = true;
    read(fd, buffer, 0, want, this.position, (error, bytesRead) => {
      this.reading = false;
      if (this.closeWhenRead) {
        this.closeWhenRead();
        return;
      }
      if (error) {
        this.destroy(error);
        return;
      }
      this.deliver(buffer, bytesRead);
    });
  }

  private deliver(buffer: Buffer, bytesRead: number): void {
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
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const close = (): void => {
      const fd = this.fd;
      this.fd = undefined;
      let closeError: Error | null = null;
      if (fd !== undefined) {
        try {
          closeSync(fd);
        } catch (caught) {
          closeError = caught as Error;
        }
      }
      callback(error ?? closeError);
    };
    if (this.reading) this.closeWhenRead = close;
    else close();
  }
}
