/**
 * LOCKED across replicas: while a replica uploads a name it holds that name's lease, an object
 * `P/l/<sha256(name)>` taken with a create-only PUT (`If-None-Match: *`) and refreshed every
 * quarter of its time to live with `If-Match` on its last ETag. Another replica that finds it
 * answers LOCKED, unless the lease is stale: not refreshed for its TTL by the store's own clock
 * (the `Date` of the answer minus the lease's `Last-Modified`), so no replica's clock matters.
 * A stale lease is taken over with `If-Match` on the ETag seen stale: of several replicas
 * trying at once, one wins.
 *
 * The lease only keeps uploads from colliding; no guarantee rests on it alone: publishing is a
 * conditional write of the name's record (s3-storage.ts), and the gc keeps the bytes of an
 * upload whose lease is live.
 */
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { performance } from 'node:perf_hooks';
import { ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import { bareEtag, type S3Layout } from './s3-layout.js';
import { isNotFound, isPreconditionFailed, sendWithDate, type S3Sender } from './s3-client.js';

export const DEFAULT_LEASE_SECONDS = 30;
/** The store's clocks count whole seconds: a lease is stale only this much past its TTL. */
const CLOCK_SLACK_MS = 1000;

export interface LeaseBody {
  /** The replica (one server process) holding it. */
  replica: string;
  /** The data id of the upload it protects: the gc keeps those bytes. */
  upload: string;
  /** Seconds without a refresh after which the lease is stale. */
  ttl: number;
  /** Refresh count: every refresh changes the body, so its ETag. */
  n: number;
}

export interface LeaseState {
  key: string;
  etag: string;
  body?: LeaseBody;
  /** Milliseconds since its last refresh, by the store's clock. */
  ageMs: number;
  stale: boolean;
}

function parseBody(text: string): LeaseBody | undefined {
  try {
    const body = JSON.parse(text) as Partial<LeaseBody>;
    if (
      typeof body.replica === 'string' &&
      typeof body.upload === 'string' &&
      typeof body.ttl === 'number' &&
      typeof body.n === 'number'
    ) {
      return body as LeaseBody;
    }
  } catch {
    // not one of ours
  }
  return undefined;
}

function locked(): ProtocolError {
  return new ProtocolError('LOCKED', 'an upload of that name is in progress');
}

/** Reads a lease object; undefined when there is none. */
export async function readLease(
  client: S3Sender,
  bucket: string,
  key: string,
  defaultTtlSeconds = DEFAULT_LEASE_SECONDS,
): Promise<LeaseState | undefined> {
  let answer;
  try {
    answer = await sendWithDate<{
      Body?: { transformToString(): Promise<string> };
      ETag?: string;
      LastModified?: Date;
    }>(client, new GetObjectCommand({ Bucket: bucket, Key: key }));
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
  const { output, date } = answer;
  const body = parseBody((await output.Body?.transformToString()) ?? '');
  const now = date?.getTime() ?? Date.now();
  const ageMs = Math.max(0, now - (output.LastModified?.getTime() ?? now));
  const ttlMs = (body?.ttl ?? defaultTtlSeconds) * 1000;
  return { key, etag: bareEtag(output.ETag), body, ageMs, stale: ageMs > ttlMs + CLOCK_SLACK_MS };
}

export interface LeaseManagerOptions {
  client: S3Sender;
  layout: S3Layout;
  /** This replica's id (random per process). */
  replica: string;
  ttlSeconds?: number;
  log?: Logger;
}

export class LeaseManager {
  readonly client: S3Sender;
  readonly layout: S3Layout;
  readonly replica: string;
  readonly ttlSeconds: number;
  readonly log?: Logger;
  /** Data ids of this replica's uploads that hold a lease now. */
  readonly active = new Set<string>();
  /** Lease keys this replica holds now. */
  readonly heldKeys = new Set<string>();

  constructor(options: LeaseManagerOptions) {
    this.client = options.client;
    this.layout = options.layout;
    this.replica = options.replica;
    this.ttlSeconds = options.ttlSeconds ?? DEFAULT_LEASE_SECONDS;
    this.log = options.log;
  }

  private body(upload: string, n: number): string {
    const body: LeaseBody = { replica: this.replica, upload, ttl: this.ttlSeconds, n };
    return JSON.stringify(body);
  }

  private put(key: string, body: string, condition: { IfNoneMatch?: string; IfMatch?: string }) {
    return this.client.send(
      new PutObjectCommand({
        Bucket: this.layout.bucket,
        Key: key,
        Body: body,
        ContentLength: Buffer.byteLength(body),
        ContentType: 'application/json',
        ...condition,
      }),
    ) as Promise<{ ETag?: string }>;
  }

  /** Takes the lease of `name` for the upload `upload`; LOCKED when another holds it. */
  async acquire(name: string, upload: string): Promise<Lease> {
    const key = this.layout.leaseKey(name);
    const body = this.body(upload, 0);
    const mine = (state: LeaseState | undefined): boolean =>
      state?.body?.replica === this.replica && state.body.upload === upload;
    // The store stamps a lease at some moment of the request: count its age from the start.
    const started = performance.now();
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const { ETag } = await this.put(key, body, { IfNoneMatch: '*' });
        return new Lease(this, key, upload, started, bareEtag(ETag));
      } catch (error) {
        if (!isPreconditionFailed(error)) throw error;
      }
      const current = await readLease(this.client, this.layout.bucket, key, this.ttlSeconds);
      if (!current) continue; // released meanwhile: try again
      // A retried PUT whose first attempt had landed answers 412 against itself.
      if (mine(current))
        return new Lease(this, key, upload, started, current.etag, current.body!.n);
      // One of this replica's own, left by an upload that is over: no need to wait it out.
      const leftOver =
        current.body?.replica === this.replica && !this.active.has(current.body.upload);
      if (!current.stale && !leftOver) throw locked();
      try {
        const { ETag } = await this.put(key, body, { IfMatch: current.etag });
        this.log?.info({ key, ageMs: current.ageMs }, 's3: took over a stale lease');
        return new Lease(this, key, upload, started, bareEtag(ETag));
      } catch (error) {
        if (!isPreconditionFailed(error)) throw error;
        const now = await readLease(this.client, this.layout.bucket, key, this.ttlSeconds);
        if (mine(now)) return new Lease(this, key, upload, started, now!.etag, now!.body!.n);
        throw locked(); // another replica took it over first
      }
    }
    throw locked();
  }

  /** Refreshes the lease (If-Match); resolves with the new ETag, undefined if it was lost. */
  async refresh(lease: Lease, n: number): Promise<string | undefined> {
    try {
      const { ETag } = await this.put(lease.key, this.body(lease.upload, n), {
        IfMatch: lease.etag,
      });
      return bareEtag(ETag);
    } catch (error) {
      if (!isPreconditionFailed(error)) throw error;
      const now = await readLease(this.client, this.layout.bucket, lease.key, this.ttlSeconds);
      // A retried refresh that had landed the first time.
      if (now?.body?.replica === this.replica && now.body.upload === lease.upload) {
        return now.body.n === n ? now.etag : undefined;
      }
      return undefined;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.layout.bucket, Key: key }));
  }
}

/**
 * A held lease: refreshed in the background until released. `held()` is false once it was
 * lost (taken over) or not refreshed for three quarters of its TTL (counted from when the last
 * refresh was sent, before the store stamped it): from then on another
 * replica may soon see it stale, so the upload must not publish.
 */
export class Lease {
  readonly key: string;
  readonly upload: string;
  etag: string;
  private n: number;
  /** When the last successful refresh (or the take) was sent: the store stamped it later. */
  private lastRefresh: number;
  private lostReason?: Error;
  private released = false;
  private refreshing = false;
  private readonly timer: NodeJS.Timeout;
  private readonly manager: LeaseManager;

  constructor(
    manager: LeaseManager,
    key: string,
    upload: string,
    sentAt: number,
    etag: string,
    n = 0,
  ) {
    this.manager = manager;
    this.lastRefresh = sentAt;
    this.key = key;
    this.upload = upload;
    this.etag = etag;
    this.n = n;
    manager.active.add(upload);
    manager.heldKeys.add(key);
    this.timer = setInterval(() => void this.refresh(), (manager.ttlSeconds * 1000) / 4);
    this.timer.unref();
  }

  /** Why the lease is not held, or undefined while it is. */
  get lost(): Error | undefined {
    if (this.lostReason) return this.lostReason;
    const silentMs = performance.now() - this.lastRefresh;
    if (silentMs > (this.manager.ttlSeconds * 1000 * 3) / 4) {
      return new Error(`the upload's lease could not be refreshed for ${Math.round(silentMs)} ms`);
    }
    return undefined;
  }

  held(): boolean {
    return !this.released && this.lost === undefined;
  }

  private async refresh(): Promise<void> {
    if (this.released || this.refreshing || this.lostReason) return;
    this.refreshing = true;
    const sentAt = performance.now();
    try {
      const etag = await this.manager.refresh(this, this.n + 1);
      if (this.released) return;
      if (etag === undefined) {
        this.lostReason = new Error('the upload lost its lease to another replica');
        this.manager.log?.warn({ key: this.key }, 's3: lease lost');
        return;
      }
      this.n++;
      this.etag = etag;
      this.lastRefresh = sentAt;
    } catch (error) {
      this.manager.log?.warn({ err: error, key: this.key }, 's3: lease refresh failed');
    } finally {
      this.refreshing = false;
    }
  }

  /**
   * Lets go of the lease: deletes it while it is still surely ours (DeleteObject takes no
   * condition on RGW 16.2). A failed delete is retried in the background until the lease
   * would be stale anyway.
   */
  async release(): Promise<void> {
    if (this.released) return;
    const ours = this.held();
    this.released = true;
    clearInterval(this.timer);
    this.manager.active.delete(this.upload);
    this.manager.heldKeys.delete(this.key);
    if (!ours) return;
    try {
      await this.manager.delete(this.key);
    } catch (error) {
      this.manager.log?.warn({ err: error, key: this.key }, 's3: lease release failed; retrying');
      this.retryRelease();
    }
  }

  private retryRelease(): void {
    const until = this.lastRefresh + this.manager.ttlSeconds * 1000;
    const retry = setInterval(() => {
      // Stale by then; or this replica took the name again (a left-over is taken over at once).
      if (performance.now() > until || this.manager.heldKeys.has(this.key)) {
        clearInterval(retry);
        return;
      }
      this.manager.delete(this.key).then(
        () => clearInterval(retry),
        () => undefined,
      );
    }, 1000);
    retry.unref();
  }
}
