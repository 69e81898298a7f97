/**
 * One upload to the S3 store. The bytes go to a data key never used before (`P/d/<id>`): in
 * one PutObject when the file fits in one part, else in a multipart upload whose parts are
 * filled from the payload and sent while the next one fills. Parts are buffers from the
 * server's shared PartBudget, so memory per upload is at most `buffersPerUpload` × part size,
 * and all uploads together stay within the budget. A part in a buffer can be retried (the
 * SDK does, on a 5xx or a reset), which a part streamed from the socket could not.
 *
 * Publishing is one small conditional PutObject of the name's record, whose body is the data
 * id: create-only (`If-None-Match: *`) without --overwrite, so of any number of replicas
 * publishing one name one wins and the others get EXISTS; with --overwrite, `If-Match` on the
 * record it replaces, after marking that record's data as possibly unreferenced (for the gc's
 * read grace). An outcome that is not clear (a fault, a 412 to a retried attempt) is settled by
 * reading the record back: if it names this upload's data, the upload won.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import type { Lease } from './s3-lease.js';
import {
  bareEtag,
  encodeNameMeta,
  FOLDER_MARKER_META,
  isDataId,
  md5Hex,
  parentsThatCouldBeFiles,
  type S3Layout,
} from './s3-layout.js';
import { kindAt } from './s3-objects.js';
import type { PartBudget } from './s3-part-budget.js';
import {
  isNotFound,
  isPreconditionFailed,
  isQuotaExceeded,
  statusOf,
  type S3Sender,
} from './s3-client.js';
import type { PublishedFile, Upload, UploadDigest } from './storage.js';

/** S3's limits: parts of 5 MiB at least (but the last), 10,000 parts, 5 TiB an object. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PARTS = 10_000;
export const MAX_OBJECT_BYTES = 5 * 1024 ** 4;
export const DEFAULT_PART_BYTES = 8 * 1024 * 1024;

/** The part size for a file of `size` bytes: `base`, or more when 10,000 would not hold it. */
export function partSizeFor(size: number, base = DEFAULT_PART_BYTES): number {
  const mib = 1024 * 1024;
  const needed = Math.ceil(size / MAX_PARTS / mib) * mib;
  return Math.max(base, MIN_PART_BYTES, needed);
}

/** A store fault during an upload as the contract says it: a full store is NO_SPACE. */
export function uploadFault(error: unknown): Error {
  if (error instanceof ProtocolError) return error;
  if (isQuotaExceeded(error)) return new ProtocolError('NO_SPACE', 'the store is full (quota)');
  return error instanceof Error ? error : new Error(String(error));
}

export interface S3UploadOptions {
  client: S3Sender;
  layout: S3Layout;
  name: string;
  size: number;
  id: string;
  /** Replace an existing file (--overwrite, and not HTTP's If-None-Match: *). */
  replace: boolean;
  /** Undefined only when leases are off (a test of the conditional publish alone). */
  lease?: Lease;
  budget: PartBudget;
  partBytes: number;
  buffersPerUpload: number;
  log?: Logger;
  /** Learns the published record's ETag and size (LIST then reads nothing for it). */
  remember?: (etag: string, size: number) => void;
  /** Called once when the upload is over (published or aborted): lets go of the local lock. */
  onDone: () => void;
}

type RecordOutcome = 'none' | 'ours' | 'refused' | 'unknown';

export class S3Upload implements Upload {
  private readonly o: S3UploadOptions;
  private readonly key: string;
  private readonly multipart: boolean;
  private readonly bufferBytes: number;
  private readonly controller = new AbortController();
  /** Buffers taken from the budget, and those free again. */
  private owned = 0;
  private readonly spare: Buffer[] = [];
  private current?: Buffer;
  private filled = 0;
  private received = 0;
  private partNumber = 0;
  private readonly parts: { PartNumber: number; ETag: string }[] = [];
  private readonly inFlight: Promise<void>[] = [];
  private creating?: Promise<string>;
  private uploadId?: string;
  private failure?: Error;
  private state: 'open' | 'publishing' | 'published' | 'aborted' = 'open';
  private dataComplete = false;
  private record: RecordOutcome = 'none';
  private aborting?: Promise<void>;
  private publishing?: Promise<PublishedFile>;

  constructor(options: S3UploadOptions) {
    this.o = options;
    this.key = options.layout.dataKey(options.id);
    this.multipart = options.size > options.partBytes;
    this.bufferBytes = this.multipart ? options.partBytes : options.size;
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.state === 'aborted') throw new Error('the upload was aborted');
    const lost = this.o.lease?.lost;
    if (lost) throw lost;
  }

  async write(chunks: Buffer[]): Promise<void> {
    this.check();
    for (const chunk of chunks) {
      let offset = 0;
      while (offset < chunk.length) {
        if (this.received + chunk.length - offset > this.o.size) {
          throw new Error(`the upload got more than its ${this.o.size} bytes`);
        }
        this.current ??= await this.nextBuffer();
        this.check();
        const count = Math.min(chunk.length - offset, this.current.length - this.filled);
        chunk.copy(this.current, this.filled, offset, offset + count);
        this.filled += count;
        offset += count;
        this.received += count;
        if (this.multipart && this.filled === this.current.length) this.sendPart();
      }
    }
  }

  /** A buffer to fill: a spare one, a new one from the budget, or the oldest part's once sent. */
  private async nextBuffer(): Promise<Buffer> {
    for (;;) {
      const spare = this.spare.pop();
      if (spare) return spare;
      if (this.owned === 0) {
        await this.o.budget.take(this.bufferBytes, this.controller.signal);
        return this.allocate();
      }
      if (this.owned < this.o.buffersPerUpload && this.o.budget.tryTake(this.bufferBytes)) {
        return this.allocate();
      }
      if (this.inFlight.length === 0) throw new Error('no part buffer is free'); // cannot happen
      await this.inFlight[0];
      this.check();
    }
  }

  private allocate(): Buffer {
    this.owned++;
    return Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  private giveBuffersBack(): void {
    this.o.budget.give(this.owned * this.bufferBytes);
    this.owned = 0;
    this.spare.length = 0;
    this.current = undefined;
  }

  private createMultipart(): Promise<string> {
    this.creating ??= this.o.client
      .send(new CreateMultipartUploadCommand({ Bucket: this.o.layout.bucket, Key: this.key }), {
        abortSignal: this.controller.signal,
      })
      .then((output: { UploadId?: string }) => {
        if (!output.UploadId) throw new Error('the store gave no multipart upload id');
        this.uploadId = output.UploadId;
        return output.UploadId;
      });
    return this.creating;
  }

  /** Sends the current buffer as the next part, in the background. */
  private sendPart(): void {
    const buffer = this.current!;
    const bytes = this.filled;
    this.current = undefined;
    this.filled = 0;
    const number = ++this.partNumber;
    const sent = (async () => {
      const uploadId = await this.createMultipart();
      const output = (await this.o.client.send(
        new UploadPartCommand({
          Bucket: this.o.layout.bucket,
          Key: this.key,
          UploadId: uploadId,
          PartNumber: number,
          Body: buffer.subarray(0, bytes),
          ContentLength: bytes,
        }),
        { abortSignal: this.controller.signal },
      )) as { ETag?: string };
      if (!output.ETag) throw new Error(`the store gave part ${number} no ETag`);
      this.parts.push({ PartNumber: number, ETag: output.ETag });
    })().then(
      () => undefined,
      (error: unknown) => {
        this.failure ??= uploadFault(error);
      },
    );
    const done = sent.finally(() => {
      this.inFlight.splice(this.inFlight.indexOf(done), 1);
      if (this.owned > 0) this.spare.push(buffer);
    });
    this.inFlight.push(done);
  }

  publish(digest?: UploadDigest): Promise<PublishedFile> {
    this.publishing ??= this.doPublish(digest);
    return this.publishing;
  }

  private async doPublish(digest?: UploadDigest): Promise<PublishedFile> {
    this.check();
    if (this.received !== this.o.size) {
      throw new Error(`the upload got ${this.received} of ${this.o.size} bytes`);
    }
    this.state = 'publishing';
    try {
      await this.storeData();
    } finally {
      this.giveBuffersBack();
    }
    this.check(); // aborted meanwhile, or the lease lost: do not publish
    if (this.o.lease && !this.o.lease.held()) throw this.o.lease.lost ?? new Error('lease lost');
    await this.claimParents();
    const replaced = await this.putRecord(digest?.sha256);
    this.state = 'published';
    this.o.remember?.(md5Hex(this.o.id), this.o.size);
    const [mtime] = await Promise.all([this.publishedTime(), this.o.lease?.release()]);
    this.o.onDone();
    return { version: this.o.id, mtime, replaced };
  }

  /** All the bytes, durable at the data key. */
  private async storeData(): Promise<void> {
    const { client, layout } = this.o;
    try {
      if (!this.multipart) {
        await client.send(
          new PutObjectCommand({
            Bucket: layout.bucket,
            Key: this.key,
            Body: this.current?.subarray(0, this.filled) ?? Buffer.alloc(0),
            ContentLength: this.o.size,
          }),
          { abortSignal: this.controller.signal },
        );
        this.dataComplete = true;
        return;
      }
      if (this.filled > 0) this.sendPart();
      while (this.inFlight.length > 0) await this.inFlight[0];
      this.check();
      const uploadId = await this.createMultipart();
      const parts = [...this.parts].sort((a, b) => a.PartNumber - b.PartNumber);
      try {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket: layout.bucket,
            Key: this.key,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        );
      } catch (error) {
        // A retried complete whose first attempt landed: the upload id is gone, the data there.
        if (!isNotFound(error) || !(await this.dataIsThere())) throw error;
      }
      this.dataComplete = true;
    } catch (error) {
      throw uploadFault(error);
    }
  }

  private async dataIsThere(): Promise<boolean> {
    try {
      const head = (await this.o.client.send(
        new HeadObjectCommand({ Bucket: this.o.layout.bucket, Key: this.key }),
      )) as { ContentLength?: number };
      return head.ContentLength === this.o.size;
    } catch {
      return false;
    }
  }

  /** The record's ETag now (undefined: no record), or 'unknown' when the store cannot say. */
  private async recordEtag(): Promise<string | undefined | 'unknown'> {
    try {
      const head = (await this.o.client.send(
        new HeadObjectCommand({
          Bucket: this.o.layout.bucket,
          Key: this.o.layout.recordKey(this.o.name),
        }),
      )) as { ETag?: string };
      return bareEtag(head.ETag);
    } catch (error) {
      return isNotFound(error) ? undefined : 'unknown';
    }
  }

  /** The record there now: its ETag and the data id it names (if it is one of ours). */
  private async currentRecord(): Promise<{ etag: string; id?: string } | undefined> {
    try {
      const output = (await this.o.client.send(
        new GetObjectCommand({
          Bucket: this.o.layout.bucket,
          Key: this.o.layout.recordKey(this.o.name),
          Range: 'bytes=0-63',
        }),
      )) as { ETag?: string; Body?: { transformToString(): Promise<string> } };
      const body = (await output.Body?.transformToString()) ?? '';
      return { etag: bareEtag(output.ETag), id: isDataId(body) ? body : undefined };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      if (statusOf(error) === 416) return this.currentEmptyRecord(); // an empty foreign object
      throw error;
    }
  }

  private async currentEmptyRecord(): Promise<{ etag: string } | undefined> {
    const etag = await this.recordEtag();
    if (etag === 'unknown') throw new Error('the store did not answer a HEAD of the record');
    return etag === undefined ? undefined : { etag };
  }

  /**
   * A file and a file inside it (`a.mp4` and `a.mp4/b.jpg`) are never both published, as on
   * disk, where `mkdir` and `link` refuse the second. Each parent path that could be a file's
   * name gets a folder marker at its record key, created only where nothing is: so the
   * parent's own upload (create-only at that key) and this one contend for one key, and the
   * store's conditional write picks one, whatever the timing. A marker stays once made, as a
   * parent folder stays on disk.
   */
  private async claimParents(): Promise<void> {
    const { client, layout, name } = this.o;
    for (const parent of parentsThatCouldBeFiles(name)) {
      const key = layout.recordKey(parent);
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: layout.bucket,
            Key: key,
            Body: '',
            ContentLength: 0,
            Metadata: { ...FOLDER_MARKER_META },
            IfNoneMatch: '*',
          }),
        );
        continue;
      } catch (error) {
        if (!isPreconditionFailed(error)) throw uploadFault(error);
      }
      // Something is there: a marker (another upload's, or this one's retried attempt) is fine.
      const kind = await kindAt(client, layout.bucket, key).catch((error: unknown) => {
        throw uploadFault(error);
      });
      if (kind !== 'folder') throw new ProtocolError('EXISTS', 'a parent folder is a file');
    }
  }

  /** Publishes the record; returns whether it replaced one. */
  private async putRecord(sha256: string | undefined): Promise<boolean> {
    const { client, layout, name, size, id, replace } = this.o;
    const key = layout.recordKey(name);
    const ours = md5Hex(id);
    const metadata: Record<string, string> = { size: String(size) };
    if (sha256 !== undefined) metadata.sha256 = sha256;
    if (!layout.fitsInKey(name)) metadata.name = encodeNameMeta(name);
    for (let attempt = 0; attempt < 5; attempt++) {
      let condition: { IfNoneMatch: string } | { IfMatch: string } = { IfNoneMatch: '*' };
      let replaced = false;
      if (replace) {
        const current = await this.currentRecord();
        // A folder marker, or an object of another tool: never replaced by a file.
        if (current && current.id === undefined) {
          this.record = 'refused';
          throw new ProtocolError('EXISTS', 'a folder of that name exists');
        }
        if (current) {
          // Before the old data can become unreferenced: the gc keeps it for the read grace.
          await this.markReplaced(current.id!);
          condition = { IfMatch: current.etag };
          replaced = true;
        }
      }
      this.record = 'unknown';
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: layout.bucket,
            Key: key,
            Body: id,
            ContentLength: id.length,
            ContentType: 'text/plain',
            Metadata: metadata,
            ...condition,
          }),
        );
        this.record = 'ours';
        return replaced;
      } catch (error) {
        const now = await this.recordEtag();
        if (now === ours) {
          this.record = 'ours'; // an attempt the SDK retried had landed
          return replaced;
        }
        if (now === 'unknown' || !isPreconditionFailed(error)) throw uploadFault(error);
        if (!replace) {
          this.record = 'refused';
          throw new ProtocolError('EXISTS', 'a file of that name exists');
        }
        this.record = 'none'; // replaced by another meanwhile: read it again and retry
      }
    }
    throw new Error('the record kept changing while this upload replaced it');
  }

  private async markReplaced(oldId: string): Promise<void> {
    const { client, layout } = this.o;
    await client.send(
      new PutObjectCommand({
        Bucket: layout.bucket,
        Key: layout.markerKey(oldId),
        Body: '',
        ContentLength: 0,
      }),
    );
  }

  /** The published record's Last-Modified (the store's clock), which every open will carry. */
  private async publishedTime(): Promise<Date> {
    try {
      const head = (await this.o.client.send(
        new HeadObjectCommand({
          Bucket: this.o.layout.bucket,
          Key: this.o.layout.recordKey(this.o.name),
        }),
      )) as { ETag?: string; LastModified?: Date };
      if (bareEtag(head.ETag) === md5Hex(this.o.id) && head.LastModified) {
        return wholeSeconds(head.LastModified);
      }
    } catch {
      // replaced already, or a fault: the local clock will do
    }
    return wholeSeconds(new Date());
  }

  /**
   * Deletes what was stored, unless the record might name it (a publish whose outcome is
   * unknown): then the gc decides, by whether a record names it.
   */
  abort(): Promise<void> {
    if (this.state === 'published') return Promise.resolve();
    this.aborting ??= this.doAbort();
    return this.aborting;
  }

  private async doAbort(): Promise<void> {
    const wasPublishing = this.state === 'publishing';
    this.state = 'aborted';
    this.controller.abort();
    if (wasPublishing) await this.publishing?.catch(() => undefined);
    await Promise.allSettled(this.inFlight);
    if (this.owned > 0) this.giveBuffersBack();
    const { client, layout, log } = this.o;
    try {
      if (this.uploadId !== undefined && !this.dataComplete) {
        await client.send(
          new AbortMultipartUploadCommand({
            Bucket: layout.bucket,
            Key: this.key,
            UploadId: this.uploadId,
          }),
        );
      }
      if (this.dataComplete && (this.record === 'none' || this.record === 'refused')) {
        await client.send(new DeleteObjectCommand({ Bucket: layout.bucket, Key: this.key }));
      }
    } catch (error) {
      if (!isNotFound(error)) {
        log?.warn({ err: error, key: this.key }, 's3: clean-up of an aborted upload left to gc');
      }
    }
    await this.o.lease?.release();
    this.o.onDone();
  }
}

export function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}
