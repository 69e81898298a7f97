/**
 * The length-limited sink: takes exactly `size` bytes into an upload, hashing SHA-256 on the
 * way, and publishes it when the input ends complete. Short input, extra bytes, a write fault,
 * a digest that does not match or `destroy()` abort the upload, which deletes the temporary
 * file.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { letGoWhole } from '../lib/chunk-pool.js';
import { ProtocolError } from '../lib/errors.js';
import type { PublishedFile, Upload } from '../lib/storage.js';

export interface UploadReceipt {
  size: number;
  sha256: string;
  /** The published file's version and mtime, as a later open of it reports them. */
  published: PublishedFile;
}

export interface UploadSinkOptions {
  upload: Upload;
  /** Exactly this many bytes must arrive before `end()`. */
  size: number;
  /** The SHA-256 the bytes must have (HTTP `Content-Digest`); otherwise nothing is published. */
  expectedSha256?: Buffer;
  /**
   * The chunks written are the sink's alone (a door's socket reads or request body): once
   * stored and hashed, the memory of each is given back at once (`letGoWhole`), and every
   * view of it becomes empty. Without it, chunks are left as they are.
   */
  consumesChunks?: boolean;
}

export class ShortInputError extends Error {
  constructor(received: number, size: number) {
    super(`the upload ended after ${received} of ${size} bytes`);
    this.name = 'ShortInputError';
  }
}

export interface UploadSink extends Writable {
  /** Set once the upload is published ('finish'). */
  receipt?: UploadReceipt;
}

export function uploadSink({
  upload,
  size,
  expectedSha256,
  consumesChunks = false,
}: UploadSinkOptions): UploadSink {
  const hash = createHash('sha256');
  let received = 0;
  let published = false;

  const sink: UploadSink = new Writable({
    highWaterMark: 1024 * 1024,
    writev(entries, callback) {
      const chunks = entries.map((entry) => entry.chunk as Buffer);
      for (const chunk of chunks) received += chunk.length;
      if (received > size) {
        callback(new Error(`the upload sent more than its ${size} bytes`));
        return;
      }
      // The disk write runs on libuv's thread pool: hash the same bytes on this thread
      // meanwhile, so a chunk costs the longer of the two instead of their sum.
      const written = upload.write(chunks);
      for (const chunk of chunks) hash.update(chunk);
      written.then(() => {
        try {
          // Stored (the store needs none of it once `write` resolves) and hashed.
          if (consumesChunks) for (const chunk of chunks) letGoWhole(chunk);
        } finally {
          callback(); // whatever happens to the memory, the upload goes on
        }
      }, callback);
    },
    final(callback) {
      if (received !== size) {
        callback(new ShortInputError(received, size));
        return;
      }
      const digest = hash.digest();
      if (expectedSha256 && !digest.equals(expectedSha256)) {
        callback(
          new ProtocolError('DIGEST_MISMATCH', 'the body does not match its Content-Digest'),
        );
        return;
      }
      const sha256 = digest.toString('hex');
      upload.publish({ sha256 }).then((file) => {
        published = true;
        sink.receipt = { size, sha256, published: file };
        callback();
      }, callback);
    },
    destroy(error, callback) {
      if (published) {
        callback(error);
        return;
      }
      upload.abort().then(
        () => callback(error),
        () => callback(error),
      );
    },
  });
  return sink;
}
