/**
 * An in-process S3 for the S3 store's unit tests: the commands the store sends, with S3's and
 * RGW's semantics where the store depends on them (MD5 ETags, create-only and If-Match PUTs
 * refused with 412, keys listed in UTF-8 byte order and 1000 a page, ranged GETs, multipart
 * uploads invisible until completed, 404 NoSuchKey / NoSuchUpload). Its clock can be moved
 * (`advance`), and faults injected per call (`fault`). The real RGW tests (test/s3/) prove the
 * same guarantees against the real thing.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { S3Sender } from '../../lib/s3-client.js';

interface StoredObject {
  body: Buffer;
  etag: string;
  metadata: Record<string, string>;
  lastModified: Date;
}

interface MultipartUpload {
  key: string;
  parts: Map<number, { body: Buffer; etag: string }>;
  initiated: Date;
}

export class FakeS3Error extends Error {
  readonly $metadata: { httpStatusCode: number };
  constructor(name: string, status: number, message = name) {
    super(message);
    this.name = name;
    this.$metadata = { httpStatusCode: status };
  }
}

/** What a fault hook sees: the command's name (`PutObject`…) and its input. */
export interface FakeCall {
  command: string;
  input: Record<string, unknown>;
}

/**
 * A fault hook's answer: throw this error instead of acting (`before`), or act and then throw
 * it (`after`: the answer is lost, as when a connection breaks after the store applied it).
 */
export type FaultAnswer = { before: Error } | { after: Error } | undefined;

const md5 = (bytes: Buffer): string => createHash('md5').update(bytes).digest('hex');

function commandName(command: object): string {
  return command.constructor.name.replace(/Command$/, '');
}

function toBuffer(body: unknown): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  if (typeof body === 'string') return Buffer.from(body);
  if (Buffer.isBuffer(body)) return Buffer.from(body); // a copy: the caller reuses its buffers
  if (body instanceof Uint8Array) return Buffer.from(body);
  throw new Error('the fake takes string and buffer bodies only');
}

/** A GetObject body as the SDK gives it: a Readable with transformToString. */
function bodyOf(
  bytes: Buffer,
  pieceBytes: number,
  breakAfter?: number,
  pieces?: Buffer[],
): Readable {
  let sent = 0;
  const stream = new Readable({
    highWaterMark: 0,
    read() {
      if (breakAfter !== undefined && sent >= breakAfter) {
        this.destroy(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
        return;
      }
      if (sent >= bytes.length) {
        this.push(null);
        return;
      }
      const end = Math.min(bytes.length, sent + pieceBytes, breakAfter ?? Infinity);
      // Memory of its own, as Node's http gives each piece (Buffer.from may share a pool).
      const piece = Buffer.allocUnsafeSlow(end - sent);
      bytes.copy(piece, 0, sent, end);
      pieces?.push(piece);
      this.push(piece);
      sent = end;
    },
  });
  return Object.assign(stream, {
    transformToString: async () => bytes.toString('utf8'),
  });
}

export class FakeS3 implements S3Sender {
  readonly buckets = new Set<string>(['bucket']);
  readonly objects = new Map<string, StoredObject>();
  readonly uploads = new Map<string, MultipartUpload>();
  /** Calls per command name. */
  readonly calls = new Map<string, number>();
  /** GetObject calls per key. */
  readonly gets = new Map<string, number>();
  /** Called before each command; see FaultAnswer. */
  fault?: (call: FakeCall) => FaultAnswer;
  /** Honour If-None-Match / If-Match (a store that does not is refused at start-up). */
  conditional = true;
  /** Bytes per piece of a GET body. */
  pieceBytes = 64 * 1024;
  /** Every body piece GETs have sent, when a test wants to see what became of them. */
  sentPieces?: Buffer[];
  /** Break the next GET body of this key after this many bytes (once). */
  breakNextGet?: { key: string; after: number };
  private clockOffset = 0;
  private nextUpload = 1;

  /** The store's clock, which `advance` moves. */
  now(): Date {
    return new Date(Date.now() + this.clockOffset);
  }

  advance(ms: number): void {
    this.clockOffset += ms;
  }

  private id(bucket: unknown, key: unknown): string {
    if (!this.buckets.has(String(bucket))) throw new FakeS3Error('NoSuchBucket', 404);
    return `${bucket}\n${key}`;
  }

  keys(prefix = ''): string[] {
    return [...this.objects.keys()]
      .map((id) => id.slice(id.indexOf('\n') + 1))
      .filter((key) => key.startsWith(prefix))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  }

  async send(command: object): Promise<unknown> {
    const name = commandName(command);
    const input = (command as { input: Record<string, unknown> }).input;
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
    // Like the network: an answer never comes back in the same tick.
    await new Promise((resolve) => setImmediate(resolve));
    const answer = this.fault?.({ command: name, input });
    if (answer && 'before' in answer) throw answer.before;
    const output = this.act(name, input);
    if (answer && 'after' in answer) throw answer.after;
    return output;
  }

  private act(name: string, input: Record<string, unknown>): unknown {
    const { Bucket, Key } = input;
    switch (name) {
      case 'HeadBucket':
        if (!this.buckets.has(String(Bucket))) throw new FakeS3Error('NotFound', 404);
        return {};
      case 'PutObject':
        return this.put(this.id(Bucket, Key), input);
      case 'GetObject':
      case 'HeadObject':
        return this.get(name, String(Key), this.id(Bucket, Key), input);
      case 'DeleteObject':
        this.objects.delete(this.id(Bucket, Key));
        return {};
      case 'ListObjectsV2':
        return this.list(String(Bucket), input);
      case 'CreateMultipartUpload': {
        this.id(Bucket, Key);
        const uploadId = `upload-${this.nextUpload++}`;
        this.uploads.set(uploadId, { key: String(Key), parts: new Map(), initiated: this.now() });
        return { UploadId: uploadId };
      }
      case 'UploadPart': {
        const upload = this.uploads.get(String(input.UploadId));
        if (!upload) throw new FakeS3Error('NoSuchUpload', 404);
        const body = toBuffer(input.Body);
        const etag = `"${md5(body)}"`;
        upload.parts.set(Number(input.PartNumber), { body, etag });
        return { ETag: etag };
      }
      case 'CompleteMultipartUpload': {
        const upload = this.uploads.get(String(input.UploadId));
        if (!upload) throw new FakeS3Error('NoSuchUpload', 404);
        const listed = (input.MultipartUpload as { Parts: { PartNumber: number; ETag: string }[] })
          .Parts;
        const bodies = listed.map(({ PartNumber, ETag }, index) => {
          const part = upload.parts.get(PartNumber);
          if (!part || part.etag !== ETag) throw new FakeS3Error('InvalidPart', 400);
          if (index < listed.length - 1 && part.body.length < 5 * 1024 * 1024) {
            throw new FakeS3Error('EntityTooSmall', 400);
          }
          return part.body;
        });
        this.uploads.delete(String(input.UploadId));
        const body = Buffer.concat(bodies);
        const etag = `"${md5(Buffer.concat(bodies.map((b) => Buffer.from(md5(b), 'hex'))))}-${bodies.length}"`;
        this.objects.set(this.id(Bucket, Key), {
          body,
          etag,
          metadata: {},
          lastModified: this.now(),
        });
        return { ETag: etag };
      }
      case 'AbortMultipartUpload':
        if (!this.uploads.delete(String(input.UploadId))) {
          throw new FakeS3Error('NoSuchUpload', 404);
        }
        return {};
      case 'ListMultipartUploads': {
        const prefix = String(input.Prefix ?? '');
        return {
          Uploads: [...this.uploads]
            .filter(([, upload]) => upload.key.startsWith(prefix))
            .map(([id, upload]) => ({
              Key: upload.key,
              UploadId: id,
              Initiated: upload.initiated,
            })),
          IsTruncated: false,
        };
      }
      default:
        throw new Error(`the fake S3 does not know ${name}`);
    }
  }

  private put(id: string, input: Record<string, unknown>): unknown {
    const existing = this.objects.get(id);
    if (this.conditional) {
      if (input.IfNoneMatch === '*' && existing) throw new FakeS3Error('PreconditionFailed', 412);
      if (input.IfMatch !== undefined && existing?.etag !== `"${input.IfMatch}"`) {
        throw new FakeS3Error('PreconditionFailed', 412);
      }
    }
    const body = toBuffer(input.Body);
    const etag = `"${md5(body)}"`;
    this.objects.set(id, {
      body,
      etag,
      metadata: { ...((input.Metadata as Record<string, string>) ?? {}) },
      lastModified: this.now(),
    });
    return { ETag: etag };
  }

  private get(name: string, key: string, id: string, input: Record<string, unknown>): unknown {
    const object = this.objects.get(id);
    if (!object) throw new FakeS3Error(name === 'HeadObject' ? 'NotFound' : 'NoSuchKey', 404);
    const base = {
      ETag: object.etag,
      LastModified: new Date(Math.floor(object.lastModified.getTime() / 1000) * 1000),
      Metadata: { ...object.metadata },
      ContentLength: object.body.length,
      $date: this.now(),
    };
    if (name === 'HeadObject') return base;
    this.gets.set(key, (this.gets.get(key) ?? 0) + 1);
    let bytes = object.body;
    let range: string | undefined;
    if (typeof input.Range === 'string') {
      const match = /^bytes=(\d+)-(\d*)$/.exec(input.Range)!;
      const start = Number(match[1]);
      const end = match[2] === '' ? bytes.length - 1 : Math.min(Number(match[2]), bytes.length - 1);
      if (start >= bytes.length) throw new FakeS3Error('InvalidRange', 416);
      bytes = bytes.subarray(start, end + 1);
      range = `bytes ${start}-${end}/${object.body.length}`;
    }
    let breakAfter: number | undefined;
    if (this.breakNextGet?.key === key) {
      breakAfter = this.breakNextGet.after;
      this.breakNextGet = undefined;
    }
    return {
      ...base,
      ContentLength: bytes.length,
      ContentRange: range,
      Body: bodyOf(bytes, this.pieceBytes, breakAfter, this.sentPieces),
    };
  }

  private list(bucket: string, input: Record<string, unknown>): unknown {
    if (!this.buckets.has(bucket)) throw new FakeS3Error('NoSuchBucket', 404);
    const prefix = String(input.Prefix ?? '');
    const all = this.keys(prefix);
    const start = input.ContinuationToken ? Number(input.ContinuationToken) : 0;
    const max = Math.min(Number(input.MaxKeys ?? 1000), 1000);
    const page = all.slice(start, start + max);
    const truncated = start + max < all.length;
    return {
      Contents: page.map((key) => {
        const object = this.objects.get(`${bucket}\n${key}`)!;
        return {
          Key: key,
          ETag: object.etag,
          Size: object.body.length,
          LastModified: object.lastModified,
        };
      }),
      KeyCount: page.length,
      IsTruncated: truncated,
      NextContinuationToken: truncated ? String(start + max) : undefined,
      $date: this.now(),
    };
  }
}
