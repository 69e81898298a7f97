/**
 * The S3 store's clean-up: one pass deletes what no record names and nothing live needs.
 * Every replica runs one every few minutes (s3-storage.ts); `ioe-server gc` runs one at once.
 *
 * The order of the scans is what makes a pass safe while replicas keep working:
 * 1. the data objects (`d/`), and the store's clock;
 * 2. the multipart uploads in progress under `d/`;
 * 3. the leases (`l/`): an upload takes its lease before it creates anything, and releases it
 *    only after its record is published, so data or a multipart upload seen in 1 or 2 either
 *    has a live lease in 3, or has its record in 4, or belongs to an upload that is over;
 * 4. the records (`n/`, `h/`): the data they name is referenced;
 * 5. the replace markers (`g/`): a replace writes one for the old data before the record
 *    stops naming it.
 * Then: data neither referenced nor leased is deleted at once when it has no marker (it was
 * never published, so no READ can be on it), else once its marker is older than the read
 * grace (a READ that began before the replace may still be reading it); a multipart upload
 * without a live lease is aborted; leases stale for two TTLs, and markers whose data is gone or
 * still referenced after the grace, are deleted.
 */
import { AbortMultipartUploadCommand, DeleteObjectCommand } from '@aws-sdk/client-s3';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import type { Logger } from './log.js';
import { isNotFound, mapLimit, type S3Sender } from './s3-client.js';
import { readLease } from './s3-lease.js';
import { bareEtag, md5Hex, RECORD_BYTES, type S3Layout } from './s3-layout.js';
import { listAll, readRecord } from './s3-objects.js';

/** Requests at once during a pass. */
const PARALLEL = 16;

export interface GcContext {
  client: S3Sender;
  layout: S3Layout;
  /** Replaced data is kept this long after its marker. */
  readGraceMs: number;
  /** The TTL for a lease whose body does not say (one not written by this server). */
  leaseSeconds: number;
  log?: Logger;
}

export interface GcReport {
  /** Data objects deleted, and their bytes. */
  deleted: number;
  deletedBytes: number;
  /** Multipart uploads aborted. */
  aborted: number;
  /** Stale leases and old markers deleted. */
  leases: number;
  markers: number;
  /** Kept: data and multipart uploads of uploads in progress (live lease). */
  inProgress: number;
  /** Kept: replaced data still in its read grace. */
  inGrace: number;
  /** Data objects referenced by a record. */
  referenced: number;
}

async function listUploads(
  client: S3Sender,
  bucket: string,
  prefix: string,
): Promise<{ Key: string; UploadId: string }[]> {
  const uploads: { Key: string; UploadId: string }[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    const page = (await client.send(
      new ListMultipartUploadsCommand({
        Bucket: bucket,
        Prefix: prefix,
        KeyMarker: keyMarker,
        UploadIdMarker: uploadIdMarker,
      }),
    )) as {
      Uploads?: { Key?: string; UploadId?: string }[];
      IsTruncated?: boolean;
      NextKeyMarker?: string;
      NextUploadIdMarker?: string;
    };
    for (const upload of page.Uploads ?? []) {
      if (upload.Key && upload.UploadId)
        uploads.push({ Key: upload.Key, UploadId: upload.UploadId });
    }
    if (!page.IsTruncated || !page.NextKeyMarker) return uploads;
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}

export async function collectGarbage(context: GcContext): Promise<GcReport> {
  const { client, layout, readGraceMs, leaseSeconds, log } = context;
  const { bucket } = layout;
  const report: GcReport = {
    deleted: 0,
    deletedBytes: 0,
    aborted: 0,
    leases: 0,
    markers: 0,
    inProgress: 0,
    inGrace: 0,
    referenced: 0,
  };
  // 1. data, 2. multipart uploads, 3. leases, 4. records, 5. markers: in this order.
  const data = await listAll(client, bucket, layout.data);
  const now = (data.date ?? new Date()).getTime();
  const uploads = await listUploads(client, bucket, layout.data);
  const leaseObjects = (await listAll(client, bucket, layout.leases)).objects;
  const leases = await mapLimit(leaseObjects, PARALLEL, (object) =>
    readLease(client, bucket, object.Key!, leaseSeconds),
  );
  const live = new Set<string>();
  for (const lease of leases) if (lease?.body && !lease.stale) live.add(lease.body.upload);

  const idByEtag = new Map<string, string>();
  const dataIds = new Set<string>();
  for (const object of data.objects) {
    const id = layout.idOfDataKey(object.Key ?? '');
    if (id === undefined) continue;
    dataIds.add(id);
    idByEtag.set(md5Hex(id), id);
  }
  const [named, hashed] = await Promise.all([
    listAll(client, bucket, layout.records),
    listAll(client, bucket, layout.hashedRecords),
  ]);
  const referenced = new Set<string>();
  const unresolved: string[] = [];
  for (const object of [...named.objects, ...hashed.objects]) {
    if (object.Size !== RECORD_BYTES) continue; // a folder marker, or not ours: names no data
    const id = idByEtag.get(bareEtag(object.ETag));
    if (id !== undefined) referenced.add(id);
    else unresolved.push(object.Key!);
  }
  // Records the ETags did not tell (newer than the data scan, or not MD5 ETags): read them.
  // A failure here fails the pass: deleting on a partial view could delete a file's bytes.
  for (const content of await mapLimit(unresolved, PARALLEL, (key) =>
    readRecord(client, bucket, key),
  )) {
    if (content) referenced.add(content.id);
  }
  const markers = new Map<string, number>();
  for (const object of (await listAll(client, bucket, layout.markers)).objects) {
    const id = layout.idOfMarkerKey(object.Key ?? '');
    if (id !== undefined) markers.set(id, object.LastModified?.getTime() ?? now);
  }

  const remove = async (key: string): Promise<void> => {
    try {
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  };

  const doomed: { id: string; size: number }[] = [];
  for (const object of data.objects) {
    const id = layout.idOfDataKey(object.Key ?? '');
    if (id === undefined) continue;
    if (referenced.has(id)) {
      report.referenced++;
      continue;
    }
    if (live.has(id)) {
      report.inProgress++;
      continue;
    }
    const marked = markers.get(id);
    if (marked !== undefined && now - marked < readGraceMs) {
      report.inGrace++;
      continue;
    }
    doomed.push({ id, size: object.Size ?? 0 });
  }
  await mapLimit(doomed, PARALLEL, async ({ id, size }) => {
    await remove(layout.dataKey(id));
    report.deleted++;
    report.deletedBytes += size;
    if (markers.delete(id)) {
      await remove(layout.markerKey(id));
      report.markers++;
    }
  });

  await mapLimit(uploads, PARALLEL, async (upload) => {
    const id = layout.idOfDataKey(upload.Key);
    if (id === undefined) return; // not one of ours
    if (live.has(id)) {
      report.inProgress++;
      return;
    }
    try {
      await client.send(
        new AbortMultipartUploadCommand({
          Bucket: bucket,
          Key: upload.Key,
          UploadId: upload.UploadId,
        }),
      );
      report.aborted++;
    } catch (error) {
      if (!isNotFound(error)) throw error; // completed or aborted meanwhile
    }
  });

  await mapLimit(leases, PARALLEL, async (lease) => {
    if (!lease?.stale) return;
    const ttlMs = (lease.body?.ttl ?? leaseSeconds) * 1000;
    if (lease.ageMs <= 2 * ttlMs) return;
    await remove(lease.key);
    report.leases++;
  });

  // Markers whose data is gone, or that outlived the grace with their data still named (a
  // replace that did not happen after all).
  await mapLimit([...markers], PARALLEL, async ([id, marked]) => {
    if (dataIds.has(id) && now - marked < readGraceMs) return;
    if (dataIds.has(id) && !referenced.has(id)) return; // deleted above, or kept
    await remove(layout.markerKey(id));
    report.markers++;
  });
  log?.debug({ gc: report }, 's3: gc pass done');
  return report;
}
