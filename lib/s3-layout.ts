/**
 * Where the S3 store keeps what, under the bucket's prefix `P` (see ARCHITECTURE.md, "The S3
 * layout"). Everything the server writes lives under these five folders; anything else under
 * the prefix is ignored, never touched:
 *
 * | key                   | what                                                                   |
 * | --------------------- | ---------------------------------------------------------------------- |
 * | `P/n/<name>`          | the record of a name whose key fits in 1024 bytes: body = the data id  |
 * | `P/h/<sha256(name)>`  | the record of a longer name (its name in the `name` metadata)          |
 * | `P/d/<id>`            | the bytes of one upload; `id` is 32 random hex digits, never reused    |
 * | `P/l/<sha256(name)>`  | the lease (lock) of a name while one replica uploads it                |
 * | `P/g/<id>`            | data `id` may be unreferenced since this marker's time (a replace)     |
 *
 * A record's body is its data id and nothing else, so its ETag (the MD5 of the body on S3 and
 * RGW) names the data it points at: LIST joins the listing of records with the listing of data
 * without reading a record.
 */
import { createHash, randomBytes } from 'node:crypto';
import { isValidName } from './media-names.js';

/** S3 (and RGW) refuse keys over 1024 bytes. */
export const MAX_KEY_BYTES = 1024;
/** The longest prefix the contract promises to work with (scale-out.md). */
export const MAX_PREFIX_BYTES = 100;

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const ID_RE = /^[0-9a-f]{32}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;

export interface S3Location {
  bucket: string;
  /** '' or a prefix ending in '/'. */
  prefix: string;
}

/** Parses `s3://bucket[/prefix]`; throws an Error naming what is wrong. */
export function parseS3Url(url: string): S3Location {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!match) throw new Error(`--storage must look like s3://bucket[/prefix], not "${url}"`);
  const [, bucket, rest = ''] = match;
  if (!BUCKET_RE.test(bucket)) throw new Error(`"${bucket}" is not a valid S3 bucket name`);
  const trimmed = rest.replace(/\/+$/, '');
  if (trimmed.split('/').some((segment) => segment === '') && trimmed !== '') {
    throw new Error(`the prefix "${rest}" has an empty segment`);
  }
  const prefix = trimmed === '' ? '' : `${trimmed}/`;
  if (Buffer.byteLength(prefix) > MAX_PREFIX_BYTES + 1) {
    throw new Error(`the prefix is over ${MAX_PREFIX_BYTES} bytes`);
  }
  return { bucket, prefix };
}

/** A fresh data id: 128 random bits as hex. */
export function newDataId(): string {
  return randomBytes(16).toString('hex');
}

export function isDataId(text: string): boolean {
  return ID_RE.test(text);
}

/** The size of a record object: its body is a data id. Anything else at a record key is not one. */
export const RECORD_BYTES = 32;

/**
 * The metadata of a folder marker: an empty object at the record key of a parent path that
 * could also be a file's name (`a.mp4` of `a.mp4/b.jpg`), so that a file there and a file
 * under it contend for one key (s3-upload.ts, `claimParents`).
 */
export const FOLDER_MARKER_META = { folder: '1' } as const;

export function isFolderMarker(metadata: Record<string, string> | undefined): boolean {
  return metadata?.folder === FOLDER_MARKER_META.folder;
}

/** The parent paths of a name that are valid names themselves: the ones a file could hold. */
export function parentsThatCouldBeFiles(name: string): string[] {
  const parents: string[] = [];
  for (let slash = name.indexOf('/'); slash >= 0; slash = name.indexOf('/', slash + 1)) {
    const parent = name.slice(0, slash);
    if (isValidName(parent)) parents.push(parent);
  }
  return parents;
}

export function isSha256Hex(text: string | undefined): text is string {
  return text !== undefined && HEX64_RE.test(text);
}

export function md5Hex(text: string): string {
  return createHash('md5').update(text).digest('hex');
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** An ETag as S3 sends it ("…"), without the quotes. */
export function bareEtag(etag: string | undefined): string {
  return (etag ?? '').replaceAll('"', '');
}

/** The keys of one bucket prefix. */
export class S3Layout {
  readonly bucket: string;
  readonly prefix: string;
  readonly records: string;
  readonly hashedRecords: string;
  readonly data: string;
  readonly leases: string;
  readonly markers: string;

  constructor({ bucket, prefix }: S3Location) {
    this.bucket = bucket;
    this.prefix = prefix;
    this.records = `${prefix}n/`;
    this.hashedRecords = `${prefix}h/`;
    this.data = `${prefix}d/`;
    this.leases = `${prefix}l/`;
    this.markers = `${prefix}g/`;
  }

  /** Whether a name's record is `n/<name>` (true) or `h/<sha256>` (a name too long for a key). */
  fitsInKey(name: string): boolean {
    return Buffer.byteLength(this.records) + Buffer.byteLength(name) <= MAX_KEY_BYTES;
  }

  /** The one record key of a name: the conditional write on it is what makes a name taken. */
  recordKey(name: string): string {
    return this.fitsInKey(name) ? this.records + name : this.hashedRecords + sha256Hex(name);
  }

  /** The name a `n/` record key stands for, or undefined for a key outside `n/`. */
  nameOfRecordKey(key: string): string | undefined {
    return key.startsWith(this.records) ? key.slice(this.records.length) : undefined;
  }

  dataKey(id: string): string {
    return this.data + id;
  }

  /** The data id of a `d/` key, or undefined for anything the server did not write. */
  idOfDataKey(key: string): string | undefined {
    if (!key.startsWith(this.data)) return undefined;
    const id = key.slice(this.data.length);
    return isDataId(id) ? id : undefined;
  }

  leaseKey(name: string): string {
    return this.leases + sha256Hex(name);
  }

  markerKey(id: string): string {
    return this.markers + id;
  }

  idOfMarkerKey(key: string): string | undefined {
    if (!key.startsWith(this.markers)) return undefined;
    const id = key.slice(this.markers.length);
    return isDataId(id) ? id : undefined;
  }
}

/** A long name travels in the record's metadata, which must be ASCII: base64url of its UTF-8. */
export function encodeNameMeta(name: string): string {
  return Buffer.from(name).toString('base64url');
}

export function decodeNameMeta(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(
      Buffer.from(value, 'base64url'),
    );
  } catch {
    return undefined;
  }
}
