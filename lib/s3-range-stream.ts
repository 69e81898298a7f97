/**
 * A byte range of one immutable S3 object as a Readable: one ranged GET for the whole range,
 * whose body is read in pieces as the consumer asks for chunks, each of the size
 * `chunkBytes()` says at that moment (the reader's pace, as for a local file). Nothing is read
 * ahead beyond what the body's socket holds: the store's connection is paced by TCP, and a
 * chunk is the only buffer this stream fills. A body that breaks (a reset, a timeout, a
 * gateway restarting) is resumed with a new ranged GET from the first byte not yet received;
 * the object is never rewritten (data keys are never reused), so the bytes cannot mix.
 * Destroying the stream aborts the GET and frees its connection.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import { letGoWhole } from './chunk-pool.js';
import { setTimeout as delay } from 'node:timers/promises';
import { isNotFound, type S3Sender } from './s3-client.js';

/** Broken bodies in a row (no byte between them) before the stream gives up. */
const MAX_RESUMES = 3;

export interface S3RangeOptions {
  client: S3Sender;
  bucket: string;
  key: string;
  offset: number;
  length: number;
  /** Bytes for the next chunk; asked before each one. */
  chunkBytes: () => number;
  /** Where chunk buffers come from (default: a new buffer each). */
  buffers?: { take(size: number): Buffer };
}

type BodyIterator = AsyncIterator<Buffer>;

export class S3RangeStream extends Readable {
  private readonly client: S3Sender;
  private readonly bucket: string;
  private readonly key: string;
  private readonly chunkBytes: () => number;
  private readonly buffers?: { take(size: number): Buffer };
  /** The range's end (exclusive). */
  private readonly end: number;
  /** Bytes still to hand to the consumer. */
  private left: number;
  /** The next byte to receive from the store. */
  private nextByte: number;
  private body?: Readable;
  private pieces?: BodyIterator;
  /** The body's last piece, and how much of it is copied into chunks already. */
  private piece?: Buffer;
  private copied = 0;
  private failures = 0;
  private readonly controller = new AbortController();

  constructor(options: S3RangeOptions) {
    super({ highWaterMark: 0 });
    this.client = options.client;
    this.bucket = options.bucket;
    this.key = options.key;
    this.chunkBytes = options.chunkBytes;
    this.buffers = options.buffers;
    this.left = options.length;
    this.nextByte = options.offset;
    this.end = options.offset + options.length;
  }

  override _read(): void {
    this.fill().then(
      (chunk) => this.push(chunk),
      (error: Error) => this.destroy(error),
    );
  }

  private async fill(): Promise<Buffer | null> {
    if (this.left <= 0) {
      this.dropBody();
      return null;
    }
    const want = Math.max(1, Math.min(this.chunkBytes(), this.left));
    // Not from Node's shared pool: a chunk may wait in a socket buffer for a long time.
    const chunk = this.buffers?.take(want) ?? Buffer.allocUnsafeSlow(want);
    let filled = 0;
    while (filled < want) {
      if (!this.piece) {
        this.piece = await this.nextPiece();
        this.copied = 0;
      }
      const count = Math.min(want - filled, this.piece.length - this.copied);
      this.piece.copy(chunk, filled, this.copied, this.copied + count);
      this.copied += count;
      filled += count;
      // All of it copied: the piece (Node's own copy of what the socket brought) is no one's
      // any more. Given back now, not at a full collection (`letGoWhole`, as uploads do).
      if (this.copied === this.piece.length) {
        letGoWhole(this.piece);
        this.piece = undefined;
      }
    }
    this.left -= want;
    return chunk;
  }

  /** The next piece of the body, resuming with a new GET when the body broke. */
  private async nextPiece(): Promise<Buffer> {
    for (;;) {
      if (this.destroyed) throw new Error('the download was closed');
      try {
        this.pieces ??= await this.openBody();
        const { value, done } = await this.pieces.next();
        if (done) throw new Error(`the store's answer ended at byte ${this.nextByte}`);
        const piece = value.subarray(0, this.end - this.nextByte);
        if (piece.length === 0) throw new Error('the store sent more bytes than the range');
        this.nextByte += piece.length;
        this.failures = 0;
        return piece;
      } catch (error) {
        this.dropBody();
        if (this.destroyed || isNotFound(error) || ++this.failures > MAX_RESUMES) throw error;
        await delay(100 * 2 ** this.failures);
      }
    }
  }

  private async openBody(): Promise<BodyIterator> {
    const output = (await this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: this.key,
        Range: `bytes=${this.nextByte}-${this.end - 1}`,
      }),
      { abortSignal: this.controller.signal },
    )) as { Body?: Readable; ContentRange?: string };
    const body = output.Body;
    if (!body) throw new Error('the store answered a GET without a body');
    this.body = body;
    if (this.destroyed) {
      this.dropBody();
      throw new Error('the download was closed');
    }
    const range = output.ContentRange;
    if (range !== undefined && !range.startsWith(`bytes ${this.nextByte}-`)) {
      throw new Error(`the store answered the range ${range}, not from ${this.nextByte}`);
    }
    return body[Symbol.asyncIterator]() as BodyIterator;
  }

  private dropBody(): void {
    const body = this.body;
    this.body = undefined;
    this.pieces = undefined;
    // An unread body holds its connection: destroy it, so it is not reused half-read.
    body?.destroy();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.controller.abort();
    this.dropBody();
    this.piece = undefined;
    callback(error);
  }
}
