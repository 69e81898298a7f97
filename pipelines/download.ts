/**
 * The READ branch, for both doors: `length` bytes of one open stored file from `offset`, as
 * chunks sized to the reader's pace (ChunkPacer) within every download's shared ChunkBudget,
 * in buffers from the download's ChunkPool. The consumer takes chunks one at a time and hands
 * each on with backpressure before it asks for the next, so the time between two of its asks
 * is the reader's pace. The bytes all come from the one open file; if it yields fewer than `length`
 * (it shrank), the iteration throws `ShrunkError`, so no door ever sends fewer bytes than it
 * announced.
 */
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { ChunkBudget, ChunkPacer } from '../lib/chunk-pacer.js';
import type { ChunkPool } from '../lib/chunk-pool.js';
import type { StoredFile } from '../lib/storage.js';

export interface DownloadOptions {
  offset: number;
  length: number;
  /** The connection's pacer: it learns the reader's pace from this download's asks. */
  pacer: ChunkPacer;
  /** Shared by every download of the server, to bound the memory their chunks hold. */
  budget?: ChunkBudget;
  /** Where chunk buffers come from (default: a new buffer each). */
  pool?: ChunkPool;
  /**
   * Bytes that lead the first chunk (the TCP door's `OK <n>\n`): written into room the store
   * keeps free before it when it can, copied in front of it otherwise.
   */
  header?: Buffer;
}

export class ShrunkError extends Error {
  constructor(sent: number, length: number) {
    super(`the file shrank while it was sent (${sent} of ${length} bytes)`);
    this.name = 'ShrunkError';
  }
}

/** The chunks of one download; `return()` (a consumer that stops) always closes the file. */
export interface Download extends AsyncIterableIterator<Buffer> {
  return(): Promise<IteratorResult<Buffer, void>>;
}

/**
 * Yields the chunks; closes the file when done, when the consumer stops early (even before the
 * first chunk), or on a fault. Takes ownership of `file`.
 */
export function download(file: StoredFile, options: DownloadOptions): Download {
  return new ChunkDownload(file, options);
}

/**
 * What may change the file stream's state; 'error' must have a listener, or it ends the
 * process.
 */
const WAKING_EVENTS = ['readable', 'end', 'error', 'close'] as const;

/**
 * One download as one hand-written iterator: each `next()` takes the file stream's next chunk
 * with `read()`, or waits for the stream to say something; the stream's own state (`errored`,
 * `destroyed`, `readableEnded`) says what, so one listener on four events is all it takes.
 * This replaced an async generator looping `for await` over the stream: Node's stream
 * iterator tracks the stream's end (`finished`) and binds async resources, and the generator
 * added its own resumption and a promise hop per chunk. On many small READs, one chunk each,
 * that was measurable (ARCHITECTURE.md, "Many small reads").
 *
 * The stores' streams end, fail and close through `push` and `destroy`, which set the state
 * first and emit later; a stream that emitted 'error' or 'close' by hand would not be seen.
 */
class ChunkDownload implements Download {
  private readonly file: StoredFile;
  private readonly options: DownloadOptions;
  private source?: Readable;
  private leave?: () => void;
  private finished = false;
  private sent = 0;
  /** The header, until it leaves with the first chunk. */
  private lead?: Buffer;
  /** The chunk last handed out, in bytes: the consumer asking again means it was handed on. */
  private handed = 0;
  private since = 0;
  private wake?: () => void;
  private readonly notify = (): void => {
    const resolve = this.wake;
    this.wake = undefined;
    resolve?.();
  };

  constructor(file: StoredFile, options: DownloadOptions) {
    this.file = file;
    this.options = options;
    this.lead = options.header;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Buffer, void>> {
    if (this.handed > 0) {
      // The time since the last ask is what the reader took for that chunk, waits included.
      const now = performance.now();
      this.options.pacer.paced(this.handed, now - this.since);
      this.since = now;
      this.handed = 0;
    }
    if (this.finished) return { value: undefined, done: true };
    let source = this.source;
    if (source === undefined) {
      if (this.options.length === 0) return this.return(); // nothing to send: just close
      const whole = this.readWhole();
      if (whole !== undefined) return { value: whole, done: false };
      source = this.start();
    }
    let chunk: Buffer | null | undefined;
    try {
      // Most chunks are there at once (a read from the page cache runs in place).
      chunk = this.readNow(source);
      if (chunk === undefined) chunk = await this.read(source);
    } catch (error) {
      this.finish();
      throw error;
    }
    if (chunk === null) {
      this.finish();
      if (this.sent !== this.options.length) throw new ShrunkError(this.sent, this.options.length);
      return { value: undefined, done: true };
    }
    this.sent += chunk.length;
    this.handed = chunk.length;
    const lead = this.lead;
    if (lead === undefined) return { value: chunk, done: false };
    this.lead = undefined;
    const roomBefore = (source as { headroom?: number }).headroom === lead.length;
    return { value: withHeader(lead, chunk, roomBefore), done: false };
  }

  /** A consumer that stops: the file is closed, whether or not a chunk was ever read. */
  async return(): Promise<IteratorResult<Buffer, void>> {
    if (!this.finished) {
      if (this.source) this.finish();
      else {
        this.finished = true;
        await this.file.close();
      }
    }
    return { value: undefined, done: true };
  }

  /**
   * The whole range as one chunk, header included, when it fits in one (the pacer's size) and
   * the store reads it at once (`readNow`: a small file in the page cache); undefined, the file
   * still open, otherwise. No stream is made and the file is closed: the stream cost a READ of a
   * 64 KiB file about 7 % of its main-thread instructions. The budget is not entered: the
   * chunk is no larger than the stream's first would be, and nothing is read ahead of it.
   */
  private readWhole(): Buffer | undefined {
    const { offset, length, pacer, pool, header } = this.options;
    if (this.file.readNow === undefined || length > pacer.size) return undefined;
    this.since = performance.now();
    let chunk: Buffer | undefined;
    try {
      chunk = this.file.readNow(offset, length, { buffers: pool, headroom: header?.length });
    } catch (error) {
      this.finish(); // the store closed the file
      throw error;
    }
    if (chunk === undefined) return undefined;
    this.finish();
    // Nothing has left yet: a file that shrank is an error the door can still answer.
    if (chunk.length !== length) throw new ShrunkError(chunk.length, length);
    this.handed = length; // paced when the consumer asks again
    return header === undefined ? chunk : withHeader(header, chunk, true);
  }

  /** Opens the file's stream. */
  private start(): Readable {
    const { offset, length, pacer, budget, pool, header } = this.options;
    const source = this.file.stream(offset, length, {
      chunkBytes: () => pacer.size,
      buffers: pool,
      headroom: header?.length,
    });
    for (const event of WAKING_EVENTS) source.on(event, this.notify);
    this.source = source;
    this.leave = budget?.enter();
    this.since = performance.now();
    return source;
  }

  /** The stream's next chunk; null at its end. Throws its error, or a close before its end. */
  private async read(stream: Readable): Promise<Buffer | null> {
    for (;;) {
      await new Promise<void>((resolve) => (this.wake = resolve));
      const chunk = this.readNow(stream);
      if (chunk !== undefined) return chunk;
    }
  }

  /** As read(), for what the stream says now; undefined: nothing yet, wait for it to speak. */
  private readNow(stream: Readable): Buffer | null | undefined {
    if (stream.errored) throw stream.errored;
    // A destroyed stream's buffered chunks are not handed on, as with Node's iterator.
    if (stream.destroyed) {
      if (stream.readableEnded) return null;
      throw prematureClose();
    }
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) return chunk;
    return stream.readableEnded ? null : undefined;
  }

  /** Gives back the budget and the pool's buffers, and destroys the stream (closing the file). */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.leave?.();
    this.options.pool?.release();
    this.source?.destroy();
  }
}

/** What Node's iterator throws for a stream closed before its end. */
function prematureClose(): Error {
  return Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** The header and the first chunk as one buffer: in place when the store left room for it. */
function withHeader(header: Buffer, chunk: Buffer, roomBefore: boolean): Buffer {
  if (!roomBefore) return Buffer.concat([header, chunk]);
  const whole = Buffer.from(
    chunk.buffer,
    chunk.byteOffset - header.length,
    header.length + chunk.length,
  );
  header.copy(whole, 0);
  return whole;
}
