/**
 * The storage interface: everything the pipelines need from where media lives. The local
 * directory is one implementation (local-storage.ts); an S3 object store will be another.
 * Implementations throw ProtocolError for the contract's failures (NOT_FOUND, EXISTS, LOCKED,
 * NO_SPACE, BAD_NAME) and plain errors for faults, which the server answers as INTERNAL.
 */
import type { Readable } from 'node:stream';
import type { MediaType } from './media-names.js';

export interface CatalogEntry {
  type: MediaType;
  name: string;
  size: number;
  mtime: Date;
}

export interface StreamOptions {
  /** The size of the next chunk, asked before each read (default: the store's own). */
  chunkBytes?: () => number;
  /** Where chunk buffers come from (default: a new buffer each). */
  buffers?: { take(size: number): Buffer };
  /**
   * Bytes to leave free just before the first chunk, in the same memory, so that the consumer
   * can write a header there instead of copying the chunk behind it. A store that does so sets
   * the stream's `headroom` property to this number; one that does not leaves it undefined.
   */
  headroom?: number;
}

/** A catalog file opened for reading: its size and bytes are those of this one open file. */
export interface StoredFile {
  readonly size: number;
  /** The time the content was last modified (LIST's mtime, HTTP's Last-Modified). */
  readonly mtime: Date;
  /**
   * Changes whenever the content may have changed, also when a file is replaced by another of
   * the same size and mtime: the HASH cache's key and the source of HTTP's strong ETag.
   */
  readonly version: string;
  /**
   * The SHA-256 (hex) of these bytes when the store kept its upload's receipt (the S3 store
   * does), so that HASH answers it without reading them; undefined when it must be computed.
   */
  readonly sha256?: string;
  /**
   * Streams `length` bytes from `offset`, then closes the file. Call at most once; call
   * `close()` instead when the bytes are not wanted.
   */
  stream(offset: number, length: number, options?: StreamOptions): Readable;
  /**
   * A store that can read a small range at once, without waiting (the local store, while the
   * page cache answers): `length` bytes from `offset` as one buffer (fewer if the file ended
   * first), read on the caller's thread, in `buffers` memory after `headroom` free bytes (any
   * `chunkBytes` is ignored). It closes the file when it returns bytes or throws; it returns
   * undefined, and leaves the file open for `stream`, when it cannot answer now.
   */
  readNow?(offset: number, length: number, options?: StreamOptions): Buffer | undefined;
  close(): Promise<void>;
}

/** What a publish made visible: the `version` and `mtime` a StoredFile of it will carry. */
export interface PublishedFile {
  version: string;
  mtime: Date;
  /** An existing file of the name was replaced (only ever with --overwrite). */
  replaced?: boolean;
}

/** What the upload sink knows of the bytes once they are all in. */
export interface UploadDigest {
  /** SHA-256 (hex) of every byte written: a store may keep it as the file's receipt. */
  sha256: string;
}

/** An upload in progress: bytes go to a hidden temporary object until `publish`. */
export interface Upload {
  /** Resolves once the store needs none of the chunks' memory any more (written or copied). */
  write(chunks: Buffer[]): Promise<void>;
  /**
   * Makes the bytes durable and visible under the name; EXISTS if the name was taken meanwhile.
   * `digest` is the sink's hash of the bytes (a store that keeps receipts records it).
   */
  publish(digest?: UploadDigest): Promise<PublishedFile>;
  /** Deletes what was written. Safe to call more than once, and after a failed publish. */
  abort(): Promise<void>;
}

export interface UploadOptions {
  /**
   * Never replace an existing file, even on a store that may (--overwrite): HTTP's
   * `If-None-Match: *`. EXISTS when the name is taken, at the check or at publish.
   */
  createOnly?: boolean;
}

export interface Storage {
  /** The whole catalog, sorted by name in UTF-8 byte order. */
  list(): Promise<CatalogEntry[]>;
  /** Opens a catalog entry; NOT_FOUND for anything invisible. */
  open(name: string): Promise<StoredFile>;
  /** Starts an upload after the contract's checks: BAD_NAME, LOCKED, EXISTS, NO_SPACE, in order. */
  beginUpload(name: string, size: number, options?: UploadOptions): Promise<Upload>;
  /**
   * Aborts every upload still in progress and lets go of what the store holds open (the local
   * store's folder watchers). The server calls it when it quits; LIST may still be answered.
   */
  close(): Promise<void>;
  /**
   * Whether a fault is the store's being unreachable or failing on its side (refused, reset,
   * timed out, a 5xx after the retries): `INTERNAL` on TCP, and `503` on HTTP (scale-out.md),
   * since the same request may succeed once the store is back. Absent: never (a folder).
   */
  unavailable?(error: unknown): boolean;
}
