/**
 * Storage on an S3 bucket (Ceph RGW, AWS S3, anything that speaks the API and honours a
 * create-only PUT), shared by any number of server replicas as if they were one server. The
 * key layout is in s3-layout.ts; uploads and their publish in s3-upload.ts; the locks across
 * replicas in s3-lease.ts; the clean-up in s3-gc.ts. What makes each guarantee hold is in
 * ARCHITECTURE.md ("Many servers, one bucket").
 *
 * - LIST lists the records (ListObjectsV2, 1000 keys a page) and nothing else when it knows
 *   them: a record's ETag (the MD5 of the data id it holds) stands for one data id for good, so
 *   the size it names is remembered by ETag, from this replica's publishes and earlier LISTs.
 *   A few unknown records are read (one small GET each); many (a replica's first LIST) are
 *   joined with one scan of the data by that MD5: never a GET per entry. Nothing else is kept
 *   between LISTs, so a LIST after any replica's OK sees its file; LISTs that arrive while one
 *   runs share the next one.
 * - open() reads the record (one small GET): the data id, size and SHA-256 receipt. Its bytes
 *   come from that data key, which is never rewritten: an overwrite cannot mix bytes.
 */
import { HeadBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { ProtocolError, shuttingDown } from './errors.js';
import type { Logger } from './log.js';
import { checkName, isValidName, mediaTypeOf } from './media-names.js';
import {
  createS3Client,
  describeS3Error,
  endpointFromEnv,
  isNotFound,
  isPreconditionFailed,
  mapLimit,
  statusOf,
  type S3Sender,
  isStoreUnavailable,
} from './s3-client.js';
import { collectGarbage, type GcReport } from './s3-gc.js';
import {
  kindAt,
  listAll,
  readRecord,
  RECORD_RANGE,
  type ListedObject,
  type RecordContent,
} from './s3-objects.js';
import { DEFAULT_LEASE_SECONDS, LeaseManager, type Lease } from './s3-lease.js';
import {
  bareEtag,
  decodeNameMeta,
  isDataId,
  isSha256Hex,
  md5Hex,
  newDataId,
  parentsThatCouldBeFiles,
  parseS3Url,
  RECORD_BYTES,
  S3Layout,
} from './s3-layout.js';
import { DEFAULT_PART_BUDGET_BYTES, PartBudget } from './s3-part-budget.js';
import { S3RangeStream } from './s3-range-stream.js';
import {
  DEFAULT_PART_BYTES,
  MAX_OBJECT_BYTES,
  MIN_PART_BYTES,
  partSizeFor,
  S3Upload,
  wholeSeconds,
} from './s3-upload.js';
import type { CatalogEntry, Storage, StoredFile, Upload, UploadOptions } from './storage.js';
import { UnderWay } from './under-way.js';

/** Chunk size for a stream read without a pacer (HASH of a file without a receipt). */
const READ_CHUNK_BYTES = 1024 * 1024;
export const DEFAULT_GC_INTERVAL_SECONDS = 300;
export const DEFAULT_READ_GRACE_SECONDS = 3600;
/** Records read at once when a LIST has to read some. */
const RECORD_READS = 32;
/** Long names' record contents remembered by key and ETag (they never change for one ETag). */
const RECORD_CACHE_ENTRIES = 100_000;
/**
 * Part buffers per upload: one filling while three are sent. With one part in flight a WRITE of
 * 256 MiB made 0.79-0.83x of a bare lib-storage Upload (which sends 4 at once), with three
 * 0.86-0.88x, for 16 MiB more per upload (README.md, "What to expect").
 */
const DEFAULT_BUFFERS_PER_UPLOAD = 4;

/** Sizes remembered by record ETag: past this, LIST joins with a scan of the data again. */
const SIZE_CACHE_ENTRIES = 500_000;
/** Unknown records a LIST reads one by one; more, and it scans the data instead. */
const BULK_RESOLVE = 64;

export interface S3StorageOptions {
  /** Let an upload replace an existing file (atomically). */
  overwrite?: boolean;
  /** Path-style addressing (RGW on an IP address). */
  pathStyle?: boolean;
  /** The client to use instead of one from the environment (tests: a fake). */
  client?: S3Sender;
  log?: Logger;
  /** A name's lease lives this long without a refresh (at most 60). */
  leaseSeconds?: number;
  /** The smallest part of a multipart upload (files up to this size go in one PutObject). */
  partBytes?: number;
  /** Part buffers one upload may hold: one filling while the others are sent. */
  buffersPerUpload?: number;
  /** Part buffers of all uploads together. */
  partBudgetBytes?: number;
  /** Seconds between automatic clean-up passes; 0 turns them off. */
  gcIntervalSeconds?: number;
  /** Replaced data is kept this long for the READs still on it. */
  readGraceSeconds?: number;
  /**
   * Leases on (the default). Off only in a test that proves the conditional publish alone
   * keeps every name to one upload.
   */
  leases?: boolean;
  /** The start-up check of the bucket and of the conditional write (on by default). */
  check?: boolean;
}

/**
 * The store's tuning from the environment (documented in README.md): IOE_S3_LEASE_SECONDS,
 * IOE_S3_PART_MIB, IOE_S3_PART_BUDGET_MIB, IOE_S3_GC_INTERVAL_SECONDS, IOE_S3_READ_GRACE_SECONDS.
 */
export function s3OptionsFromEnv(env: NodeJS.ProcessEnv = process.env): S3StorageOptions {
  const number = (name: string, min: number, max: number): number | undefined => {
    const text = env[name];
    if (text === undefined || text === '') return undefined;
    const value = Number(text);
    if (!Number.isFinite(value) || value < min || value > max) {
      throw new Error(`${name} must be a number from ${min} to ${max}, not "${text}"`);
    }
    return value;
  };
  const mib = 1024 * 1024;
  const partMib = number('IOE_S3_PART_MIB', MIN_PART_BYTES / mib, 5 * 1024);
  const budgetMib = number('IOE_S3_PART_BUDGET_MIB', 16, 1024 * 1024);
  return {
    leaseSeconds: number('IOE_S3_LEASE_SECONDS', 2, 60),
    partBytes: partMib === undefined ? undefined : partMib * mib,
    partBudgetBytes: budgetMib === undefined ? undefined : budgetMib * mib,
    gcIntervalSeconds: number('IOE_S3_GC_INTERVAL_SECONDS', 0, 86_400),
    readGraceSeconds: number('IOE_S3_READ_GRACE_SECONDS', 0, 30 * 86_400),
  };
}

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export class S3Storage implements Storage {
  readonly client: S3Sender;
  readonly layout: S3Layout;
  readonly endpoint?: string;
  /** This process's id in the leases it takes. */
  readonly replica = randomBytes(8).toString('hex');
  private readonly overwrite: boolean;
  private readonly log?: Logger;
  private readonly leases?: LeaseManager;
  readonly budget: PartBudget;
  private readonly partBytes: number;
  private readonly buffersPerUpload: number;
  private readonly gcIntervalMs: number;
  readonly readGraceMs: number;
  private readonly locked = new Set<string>();
  private readonly uploads = new Set<Upload>();
  /** beginUpload calls under way, for close() to wait for. */
  private readonly beginning = new UnderWay<Upload>();
  private readonly recordCache = new Map<string, RecordContent>();
  private readonly sizeByEtag = new Map<string, number>();
  private listing?: Promise<CatalogEntry[]>;
  private nextListing?: Promise<CatalogEntry[]>;
  private gcTimer?: NodeJS.Timeout;
  private gcRunning?: Promise<GcReport | undefined>;
  private closed = false;

  constructor(client: S3Sender, layout: S3Layout, options: S3StorageOptions = {}) {
    this.client = client;
    this.layout = layout;
    this.endpoint = options.client ? undefined : endpointFromEnv();
    this.overwrite = options.overwrite ?? false;
    this.log = options.log;
    if (options.leases !== false) {
      this.leases = new LeaseManager({
        client,
        layout,
        replica: this.replica,
        ttlSeconds: options.leaseSeconds ?? DEFAULT_LEASE_SECONDS,
        log: options.log,
      });
    }
    this.partBytes = Math.max(MIN_PART_BYTES, options.partBytes ?? DEFAULT_PART_BYTES);
    this.buffersPerUpload = Math.max(1, options.buffersPerUpload ?? DEFAULT_BUFFERS_PER_UPLOAD);
    this.budget = new PartBudget(options.partBudgetBytes ?? DEFAULT_PART_BUDGET_BYTES);
    this.gcIntervalMs = (options.gcIntervalSeconds ?? DEFAULT_GC_INTERVAL_SECONDS) * 1000;
    this.readGraceMs = (options.readGraceSeconds ?? DEFAULT_READ_GRACE_SECONDS) * 1000;
  }

  /**
   * Opens `s3://bucket[/prefix]`: checks that the bucket is reachable and that the store
   * refuses a second create-only PUT (the conditional write every guarantee rests on), then
   * starts the periodic clean-up. Throws an Error with a one-line reason otherwise.
   */
  static async open(url: string, options: S3StorageOptions = {}): Promise<S3Storage> {
    const layout = new S3Layout(parseS3Url(url));
    const client = options.client ?? createS3Client({ pathStyle: options.pathStyle });
    const storage = new S3Storage(client, layout, options);
    if (options.check !== false) await storage.checkStore();
    storage.startGc();
    return storage;
  }

  get leaseSeconds(): number {
    return this.leases?.ttlSeconds ?? DEFAULT_LEASE_SECONDS;
  }

  private where(): string {
    const { bucket, prefix } = this.layout;
    return `s3://${bucket}/${prefix}${this.endpoint ? ` at ${this.endpoint}` : ''}`;
  }

  /** The start-up check: the bucket answers, and a create-only PUT is refused the second time. */
  async checkStore(): Promise<void> {
    const { bucket } = this.layout;
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: bucket }));
    } catch (error) {
      const status = statusOf(error);
      const why =
        status === 404
          ? 'no such bucket (HTTP 404)'
          : status === 403
            ? 'access denied (HTTP 403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY'
            : describeS3Error(error);
      throw new Error(`the bucket ${this.where()} is not reachable: ${why}`);
    }
    const key = `${this.layout.leases}.probe-${randomBytes(8).toString('hex')}`;
    const put = () =>
      this.client.send(
        new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'probe', IfNoneMatch: '*' }),
      );
    try {
      await put();
    } catch (error) {
      throw new Error(`cannot write to ${this.where()}: ${describeS3Error(error)}`);
    }
    let second: unknown;
    try {
      await put();
    } catch (error) {
      second = error;
    } finally {
      await this.client
        .send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
        .catch(() => undefined);
    }
    if (second === undefined) {
      throw new Error(
        `the store at ${this.where()} does not honour a create-only PUT (If-None-Match: *): ` +
          'it accepted the same one twice, and this server relies on that conditional write',
      );
    }
    if (!isPreconditionFailed(second)) {
      throw new Error(
        `the store at ${this.where()} does not support a create-only PUT ` +
          `(If-None-Match: *), which this server relies on: ${describeS3Error(second)}`,
      );
    }
  }

  // ---- LIST ----------------------------------------------------------------------------

  /**
   * The whole catalog, fresh from the store. A LIST that arrives while one is running waits
   * for the next one (which starts after it arrived, so it misses no OK before it), shared by
   * every LIST that arrived meanwhile.
   */
  list(): Promise<CatalogEntry[]> {
    if (!this.listing) return this.startListing();
    this.nextListing ??= this.listing
      .then(
        () => undefined,
        () => undefined,
      )
      .then(() => {
        this.nextListing = undefined;
        return this.startListing();
      });
    return this.nextListing;
  }

  private startListing(): Promise<CatalogEntry[]> {
    const listing = this.scan();
    this.listing = listing;
    const clear = (): void => {
      if (this.listing === listing) this.listing = undefined;
    };
    listing.then(clear, clear);
    return listing;
  }

  private async scan(): Promise<CatalogEntry[]> {
    const { bucket, records, hashedRecords } = this.layout;
    const [named, hashed] = await Promise.all([
      listAll(this.client, bucket, records),
      listAll(this.client, bucket, hashedRecords),
    ]);
    const entries: CatalogEntry[] = [];
    const unknown: { object: ListedObject; name: string; etag: string }[] = [];
    for (const object of named.objects) {
      // A record's body is a data id; folder markers (and other tools' objects) are not listed.
      if (object.Size !== RECORD_BYTES) continue;
      const name = this.layout.nameOfRecordKey(object.Key ?? '');
      if (name === undefined || !isValidName(name)) continue;
      const etag = bareEtag(object.ETag);
      const size = this.sizeByEtag.get(etag);
      if (size === undefined) unknown.push({ object, name, etag });
      else entries.push(entry(name, size, object.LastModified));
    }
    if (unknown.length > BULK_RESOLVE)
      await this.learnFromData(new Set(unknown.map((u) => u.etag)));
    const resolved = await mapLimit(unknown, RECORD_READS, async ({ object, name, etag }) => {
      let size = this.sizeByEtag.get(etag);
      if (size === undefined) {
        const content = await this.readRecordCached(object);
        if (content?.size === undefined) return undefined; // not one of ours
        size = content.size;
        this.rememberSize(etag, size);
      }
      return entry(name, size, object.LastModified);
    });
    const longRecords = hashed.objects.filter((object) => object.Size === RECORD_BYTES);
    const long = await mapLimit(longRecords, RECORD_READS, async (object) => {
      const content = await this.readRecordCached(object);
      const name = content?.name;
      if (!content || content.size === undefined || name === undefined) return undefined;
      if (!isValidName(name) || this.layout.fitsInKey(name)) return undefined; // misplaced
      return entry(name, content.size, object.LastModified);
    });
    const more = [...resolved, ...long].filter((item) => item !== undefined);
    if (more.length === 0) return entries; // S3 lists keys in UTF-8 byte order
    return [...entries, ...more].sort((a, b) => utf8Compare(a.name, b.name));
  }

  /**
   * Many records this replica has not seen (its first LIST, or many uploads elsewhere): one
   * scan of the data joined by ETag, the MD5 of the data id a record holds, instead of a GET
   * per record. After the records' scan, so the data of every record listed is in it.
   */
  private async learnFromData(wanted: Set<string>): Promise<void> {
    const { objects } = await listAll(this.client, this.layout.bucket, this.layout.data);
    for (const object of objects) {
      const id = this.layout.idOfDataKey(object.Key ?? '');
      if (id === undefined) continue;
      const etag = md5Hex(id);
      if (wanted.has(etag)) this.rememberSize(etag, object.Size ?? 0);
    }
  }

  /** A record's ETag stands for one data id for good: the size it names never changes. */
  private rememberSize(etag: string, size: number): void {
    this.sizeByEtag.set(etag, size);
    if (this.sizeByEtag.size > SIZE_CACHE_ENTRIES) {
      this.sizeByEtag.delete(this.sizeByEtag.keys().next().value as string);
    }
  }

  /** A listed record's content, read once per key and ETag. */
  private async readRecordCached(object: ListedObject): Promise<RecordContent | undefined> {
    const cacheKey = `${object.Key}\n${bareEtag(object.ETag)}`;
    const cached = this.recordCache.get(cacheKey);
    if (cached) return cached;
    const content = await readRecord(this.client, this.layout.bucket, object.Key!);
    if (!content) return undefined;
    this.recordCache.set(cacheKey, content);
    if (this.recordCache.size > RECORD_CACHE_ENTRIES) {
      this.recordCache.delete(this.recordCache.keys().next().value as string);
    }
    return content;
  }

  // ---- READ, HASH ----------------------------------------------------------------------

  async open(name: string): Promise<StoredFile> {
    const key = this.layout.recordKey(name);
    let output: {
      Body?: { transformToString(): Promise<string> };
      Metadata?: Record<string, string>;
      LastModified?: Date;
    };
    try {
      output = await this.client.send(
        new GetObjectCommand({ Bucket: this.layout.bucket, Key: key, Range: RECORD_RANGE }),
      );
    } catch (error) {
      if (isNotFound(error) || statusOf(error) === 416) throw notFound(); // 416: empty, not ours
      throw error;
    }
    const id = (await output.Body?.transformToString()) ?? '';
    const metadata = output.Metadata ?? {};
    const size = Number(metadata.size);
    if (!isDataId(id) || !Number.isSafeInteger(size) || size < 0) throw notFound();
    if (!this.layout.fitsInKey(name) && decodeNameMeta(metadata.name) !== name) throw notFound();
    let streamed = false;
    return {
      size,
      mtime: wholeSeconds(output.LastModified ?? new Date()),
      version: id,
      sha256: isSha256Hex(metadata.sha256) ? metadata.sha256 : undefined,
      stream: (offset, length, options = {}) => {
        if (streamed) throw new Error('a stored file streams once');
        streamed = true;
        return new S3RangeStream({
          client: this.client,
          bucket: this.layout.bucket,
          key: this.layout.dataKey(id),
          offset,
          length,
          chunkBytes: options.chunkBytes ?? (() => READ_CHUNK_BYTES),
          buffers: options.buffers,
        });
      },
      // Nothing is held open until the stream's GET.
      close: async () => {
        streamed = true;
      },
    };
  }

  // ---- WRITE ---------------------------------------------------------------------------

  beginUpload(name: string, size: number, options: UploadOptions = {}): Promise<Upload> {
    return this.beginning.add(this.startUpload(name, size, options));
  }

  private async startUpload(name: string, size: number, options: UploadOptions): Promise<Upload> {
    checkName(name); // the intake checked already; a store must never take a bad name
    // --overwrite replaces, unless this upload asked to create only (HTTP If-None-Match: *).
    const replace = this.overwrite && !options.createOnly;
    if (this.closed) throw shuttingDown();
    if (this.locked.has(name)) {
      throw new ProtocolError('LOCKED', 'an upload of that name is in progress');
    }
    this.locked.add(name);
    const id = newDataId();
    let lease: Lease | undefined;
    try {
      // The lease and the checks at once: LOCKED wins over EXISTS, as in the contract's order.
      const [taken, checked] = await Promise.allSettled([
        this.leases?.acquire(name, id),
        this.checkTarget(name, replace),
      ]);
      if (taken.status === 'rejected') throw taken.reason;
      lease = taken.value;
      if (checked.status === 'rejected') throw checked.reason;
      if (size > MAX_OBJECT_BYTES) {
        throw new ProtocolError('NO_SPACE', 'the store holds no object that large (5 TiB)');
      }
      // close() came while the lease was being taken: give it back now, not at its expiry.
      if (this.closed) throw shuttingDown();
    } catch (error) {
      await lease?.release();
      this.locked.delete(name);
      throw error;
    }
    let done = false;
    const upload: Upload = new S3Upload({
      client: this.client,
      layout: this.layout,
      name,
      size,
      id,
      replace,
      lease,
      budget: this.budget,
      partBytes: partSizeFor(size, this.partBytes),
      buffersPerUpload: this.buffersPerUpload,
      log: this.log,
      remember: (etag, bytes) => this.rememberSize(etag, bytes),
      onDone: () => {
        if (done) return;
        done = true;
        this.locked.delete(name);
        this.uploads.delete(upload);
      },
    });
    this.uploads.add(upload);
    return upload;
  }

  /**
   * EXISTS when the name has a record (unless replacing), when a parent path is a file, or
   * when files live under the name as a folder: the local store's rules, on flat keys. Only
   * the record's conditional write decides a race; these checks answer early.
   */
  private async checkTarget(name: string, replace: boolean): Promise<void> {
    const { bucket } = this.layout;
    const parents = parentsThatCouldBeFiles(name);
    const [here, parentKinds, isFolder] = await Promise.all([
      kindAt(this.client, bucket, this.layout.recordKey(name)),
      Promise.all(
        parents.map((parent) => kindAt(this.client, bucket, this.layout.recordKey(parent))),
      ),
      this.layout.fitsInKey(`${name}/`)
        ? this.client
            .send(
              new ListObjectsV2Command({
                Bucket: bucket,
                Prefix: `${this.layout.recordKey(name)}/`,
                MaxKeys: 1,
              }),
            )
            .then((page: { KeyCount?: number; Contents?: unknown[] }) =>
              Boolean(page.KeyCount ?? page.Contents?.length),
            )
        : false,
    ]);
    if (here === 'folder' || isFolder) {
      throw new ProtocolError('EXISTS', 'a folder of that name exists');
    }
    if (here === 'other' && !replace) {
      throw new ProtocolError('EXISTS', 'a file of that name exists');
    }
    // A folder marker is a parent folder (s3-upload.ts, `claimParents`); anything else, a file.
    if (parentKinds.includes('other')) {
      throw new ProtocolError('EXISTS', 'a parent folder is a file');
    }
  }

  // ---- clean-up ------------------------------------------------------------------------

  /** One clean-up pass now (what `ioe-server gc` runs). */
  collectGarbage(): Promise<GcReport> {
    return collectGarbage({
      client: this.client,
      layout: this.layout,
      readGraceMs: this.readGraceMs,
      leaseSeconds: this.leaseSeconds,
      log: this.log,
    });
  }

  private startGc(): void {
    if (this.gcIntervalMs <= 0) return;
    const schedule = (): void => {
      // Jittered, so that replicas started together do not all scan at once.
      const delay = this.gcIntervalMs * (0.8 + 0.4 * Math.random());
      this.gcTimer = setTimeout(() => {
        this.gcRunning = this.collectGarbage().then(
          (report) => {
            if (report.deleted + report.aborted > 0) this.log?.info({ gc: report }, 's3: gc pass');
            return report;
          },
          (error: unknown) => {
            this.log?.warn({ err: error }, 's3: gc pass failed');
            return undefined;
          },
        );
        void this.gcRunning.finally(() => {
          if (!this.closed) schedule();
        });
      }, delay);
      this.gcTimer.unref();
    };
    schedule();
  }

  unavailable(error: unknown): boolean {
    return isStoreUnavailable(error);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.gcTimer);
    await this.beginning.settled();
    await Promise.all([...this.uploads].map((upload) => upload.abort()));
    await this.gcRunning;
  }
}

function entry(name: string, size: number, lastModified: Date | undefined): CatalogEntry {
  return {
    type: mediaTypeOf(name)!,
    name,
    size,
    mtime: wholeSeconds(lastModified ?? new Date()),
  };
}

function notFound(): ProtocolError {
  return new ProtocolError('NOT_FOUND', 'no such media file');
}

/** `ioe-server gc`: checks the store, runs one clean-up pass, lets the connections go. */
export async function runGc(url: string, options: S3StorageOptions = {}): Promise<GcReport> {
  const storage = await S3Storage.open(url, { ...options, gcIntervalSeconds: 0 });
  try {
    return await storage.collectGarbage();
  } finally {
    await storage.close();
    (storage.client as { destroy?: () => void }).destroy?.();
  }
}
