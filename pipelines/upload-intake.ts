/**
 * The WRITE branch, for both doors: the contract's checks after the size (AUTH_REQUIRED,
 * READ_ONLY, the name, DENIED, then the store's LOCKED, EXISTS and NO_SPACE; access.md's
 * order), then a Writable that takes the `size` payload
 * bytes. Accepted, they go to the upload sink (SHA-256, temporary object, fsync, no-clobber
 * publish); refused, up front or by a fault mid-way, they are counted and dropped, so the
 * TCP door stays in step and the HTTP door can answer at once. Destroying the intake aborts the
 * upload and reports 'close' only once its temporary object is gone.
 */
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ProtocolError } from '../lib/errors.js';
import type { HashCache } from '../lib/hash-cache.js';
import { checkName } from '../lib/media-names.js';
import type { Storage } from '../lib/storage.js';
import { writeThen } from '../lib/backpressure.js';
import { uploadSink, type UploadReceipt, type UploadSink } from './upload-sink.js';

/** Who may write where (lib/access.ts, bound to the client): each throws its refusal. */
export interface WriteGuard {
  /** AUTH_REQUIRED: the client has no account and anonymous may not write this name. */
  account(name: string): void;
  /** DENIED: the account's rules do not allow `rw` for this name. */
  write(name: string): void;
}

export interface UploadIntakeOptions {
  storage: Storage;
  name: string;
  /** The payload's size, already checked against the upload limit. */
  size: number;
  readOnly?: boolean;
  /** Learns the receipt's hash, so a HASH of the new file does not read it again. */
  hashes?: HashCache;
  /** The SHA-256 the payload must have (HTTP `Content-Digest`). */
  expectedSha256?: Buffer;
  /** Never replace an existing file, whatever --overwrite says (HTTP `If-None-Match: *`). */
  createOnly?: boolean;
  /** Accounts and rules; without it everyone may write (no accounts). */
  guard?: WriteGuard;
  /**
   * Checked once the upload holds the name (LOCKED and EXISTS passed), so nothing else of
   * ours can change the file between this check and the publish: HTTP's `If-Match` and
   * `If-Unmodified-Since` on a PUT. Throws the refusal; the upload is then aborted.
   */
  precondition?: () => Promise<void>;
  /** The payload's chunks are the upload's alone: see UploadSinkOptions.consumesChunks. */
  consumesChunks?: boolean;
}

export interface UploadIntake extends Writable {
  /** Why the upload was refused, once it is (up front, or a fault mid-payload). */
  refusal?: Error;
  /** Payload bytes taken so far, stored or dropped. */
  received: number;
  /**
   * Settles once the input has ended: the receipt of the published file, or the refusal (a
   * ProtocolError, or a fault to be answered INTERNAL). Never rejects unobserved.
   */
  readonly result: Promise<UploadReceipt>;
}

/**
 * Runs the checks and opens the upload. The returned intake is never in error: a refusal is
 * its `refusal` (and a 'refused' event when it comes mid-payload), its input is drained, and
 * `result` rejects with that same error once the input ends; a door answers each error once.
 */
export async function uploadIntake(options: UploadIntakeOptions): Promise<UploadIntake> {
  const {
    storage,
    name,
    size,
    readOnly,
    hashes,
    expectedSha256,
    createOnly,
    guard,
    precondition,
    consumesChunks,
  } = options;
  let sink: UploadSink | undefined;
  let refusal: Error | undefined;
  try {
    guard?.account(name);
    if (readOnly) throw new ProtocolError('READ_ONLY', 'the server is read-only');
    checkName(name);
    guard?.write(name);
    const upload = await storage.beginUpload(name, size, { createOnly });
    try {
      await precondition?.();
    } catch (error) {
      await upload.abort();
      throw error;
    }
    sink = uploadSink({ upload, size, expectedSha256, consumesChunks });
  } catch (error) {
    refusal = error instanceof Error ? error : new Error(String(error));
  }

  let settle!: { resolve: (receipt: UploadReceipt) => void; reject: (error: Error) => void };
  const result = new Promise<UploadReceipt>((resolve, reject) => {
    settle = { resolve, reject };
  });
  result.catch(() => undefined); // observed by the door; never an unhandled rejection

  let ending = false;
  // Mid-payload only: a failure once the input is complete (a publish that finds the name
  // taken, a digest mismatch) is the result's.
  const refuse = (error: Error): void => {
    if (ending || intake.refusal) return;
    intake.refusal = error;
    sink = undefined;
    intake.emit('refused', error);
  };

  const intake: UploadIntake = Object.assign(
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        intake.received += chunk.length;
        if (sink) writeThen(sink, chunk, callback);
        else callback(); // refused: dropped
      },
      final(callback) {
        ending = true;
        const target = sink;
        if (!target) {
          settle.reject(intake.refusal ?? new Error('the upload was refused'));
          callback();
          return;
        }
        target.end();
        finished(target).then(
          () => {
            const receipt = target.receipt!;
            hashes?.remember(receipt.published.version, { sha256: receipt.sha256, size });
            settle.resolve(receipt);
            callback();
          },
          (error: Error) => {
            settle.reject(intake.refusal ?? error);
            callback();
          },
        );
      },
      // Never an 'error' event: why it ended is the result's rejection.
      destroy(error, callback) {
        const reason = error ?? new Error('the upload was cut short');
        settle.reject(reason);
        const target = sink;
        sink = undefined;
        if (!target || target.closed) {
          callback();
          return;
        }
        // Report closed only once the temporary object is gone.
        target.once('close', () => callback());
        target.destroy(reason);
      },
    }),
    { refusal, result, received: 0 },
  );
  sink?.on('error', (error) => refuse(error));
  return intake;
}
