/**
 * Reading the S3 store's objects: whole listings, and records (s3-layout.ts), for LIST, the
 * upload's checks and the gc alike.
 */
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { isNotFound, sendWithDate, statusOf, type S3Sender } from './s3-client.js';
import { decodeNameMeta, isDataId, isFolderMarker, isSha256Hex } from './s3-layout.js';

/**
 * What is at a record key (one HEAD): nothing, a folder marker, or something else (a file's
 * record, or an object of another tool, which counts as a file).
 */
export async function kindAt(
  client: S3Sender,
  bucket: string,
  key: string,
): Promise<'none' | 'folder' | 'other'> {
  try {
    const head = (await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))) as {
      Metadata?: Record<string, string>;
    };
    return isFolderMarker(head.Metadata) ? 'folder' : 'other';
  } catch (error) {
    if (isNotFound(error)) return 'none';
    throw error;
  }
}

/** A record's body is a 32-digit data id: a larger object there is not one (nor read whole). */
export const RECORD_RANGE = 'bytes=0-63';
export interface ListedObject {
  Key?: string;
  ETag?: string;
  Size?: number;
  LastModified?: Date;
}

/** Every object under a prefix (ListObjectsV2, 1000 a page), and the store's clock. */
export async function listAll(
  client: S3Sender,
  bucket: string,
  prefix: string,
): Promise<{ objects: ListedObject[]; date?: Date }> {
  const objects: ListedObject[] = [];
  let token: string | undefined;
  let date: Date | undefined;
  do {
    const page = await sendWithDate<{
      Contents?: ListedObject[];
      IsTruncated?: boolean;
      NextContinuationToken?: string;
    }>(
      client,
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    date ??= page.date;
    objects.push(...(page.output.Contents ?? []));
    token = page.output.IsTruncated ? page.output.NextContinuationToken : undefined;
  } while (token);
  return { objects, date };
}

/** What a record says, once read: the data it names (and the name, for a long one). */
export interface RecordContent {
  id: string;
  name?: string;
  size?: number;
  sha256?: string;
}

/** Reads a record: the data id it names, and its metadata; undefined when it is not one. */
export async function readRecord(
  client: S3Sender,
  bucket: string,
  key: string,
): Promise<RecordContent | undefined> {
  let output: {
    Body?: { transformToString(): Promise<string> };
    Metadata?: Record<string, string>;
  };
  try {
    output = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: key, Range: RECORD_RANGE }),
    );
  } catch (error) {
    if (isNotFound(error) || statusOf(error) === 416) return undefined;
    throw error;
  }
  const id = (await output.Body?.transformToString()) ?? '';
  if (!isDataId(id)) return undefined;
  const metadata = output.Metadata ?? {};
  const size = Number(metadata.size);
  return {
    id,
    name: decodeNameMeta(metadata.name),
    size: Number.isSafeInteger(size) ? size : undefined,
    sha256: isSha256Hex(metadata.sha256) ? metadata.sha256 : undefined,
  };
}
