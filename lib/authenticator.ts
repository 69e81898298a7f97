/**
 * Password checks (access.md, "Authenticating" and "Answers"): (name, password) → a principal
 * or AUTH_FAILED, with
 * - scrypt on libuv's thread pool, at most 2 checks at once (a FIFO queue for the rest);
 * - an unknown name hashing a dummy credential of the file's usual cost, and the digests
 *   compared with timingSafeEqual, so both failures take the same time and get the same bytes;
 * - per-address failure counting: 10 failures within 10 minutes → RATE_LIMITED until 10
 *   minutes pass without a failure (FailureLimiter, with an injectable clock);
 * - a short cache of recent successes, so HTTP Basic (a password on every request) does not
 *   run scrypt per request; only successes are cached, so it tells nothing a login would not;
 * - the accounts swapped in one assignment on reload, all or nothing.
 *
 * The errors are AccessErrors: ProtocolErrors whose codes errors.ts does not list yet.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  type Accounts,
  deriveKey,
  DEFAULT_SCRYPT,
  HASH_BYTES,
  SALT_BYTES,
  passwordBytes,
  type ScryptParams,
} from './accounts.js';
import { type ErrorCode, ProtocolError } from './errors.js';
import { canonicalAddress } from './loopback.js';

export type AccessErrorCode = Extract<
  ErrorCode,
  'AUTH_REQUIRED' | 'AUTH_FAILED' | 'DENIED' | 'RATE_LIMITED' | 'TLS_REQUIRED' | 'PROTECTED'
>;

export const ACCESS_ERROR_CODES: readonly AccessErrorCode[] = [
  'AUTH_REQUIRED',
  'AUTH_FAILED',
  'DENIED',
  'RATE_LIMITED',
  'TLS_REQUIRED',
  'PROTECTED',
];

/**
 * A refusal of the access layer. A ProtocolError, so `toReply()` and the doors' error paths
 * work unchanged.
 */
export class AccessError extends ProtocolError {
  /** RATE_LIMITED: whole seconds until the address may try again (HTTP `Retry-After`). */
  readonly retryAfterSeconds?: number;

  constructor(
    code: AccessErrorCode,
    message: string,
    options: { retryAfterSeconds?: number } = {},
  ) {
    super(code, message);
    this.name = 'AccessError';
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  get accessCode(): AccessErrorCode {
    return this.code as AccessErrorCode;
  }
}

export function isAccessError(error: unknown, code?: AccessErrorCode): error is AccessError {
  return error instanceof AccessError && (code === undefined || error.accessCode === code);
}

/** One text for a wrong name and a wrong password: the answer must not tell them apart. */
export const AUTH_FAILED_MESSAGE = 'wrong name or password';
export const RATE_LIMITED_MESSAGE = 'too many failed logins from this address; try again later';

/**
 * Who a connection has authenticated as. It holds the credential it was checked against, so
 * a reload that removes the account or replaces its password (a new token) ends the session:
 * see `Authenticator.resolve`.
 */
export interface Principal {
  readonly name: string;
  /** The credential's text in the file when the check passed. */
  readonly credential: string;
}

export type DeriveKey = (
  password: Buffer,
  salt: Buffer,
  keyLength: number,
  params: ScryptParams,
) => Promise<Buffer>;

/** Runs at most `limit` tasks at once; the rest wait in order. */
export class TaskQueue {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  get active(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next task, so `running` never dips and overshoots.
      if (next) next();
      else this.running--;
    }
  }
}

export interface FailureLimiterOptions {
  /** Failures within the window that start the limit (the last of them is still answered). */
  maxFailures?: number;
  windowMs?: number;
  /** The limit lasts until this long has passed without a failure. */
  quietMs?: number;
  now?: () => number;
  /** Addresses remembered at most; the longest quiet is forgotten first. */
  maxAddresses?: number;
}

interface FailureRecord {
  /** Times of the failures within the window, oldest first (at most maxFailures). */
  times: number[];
  limited: boolean;
  last: number;
}

/**
 * Failures per client address, across both doors (the caller passes one canonical spelling:
 * `canonicalAddress`). Nothing is ever counted per account, so no one can lock a user out.
 */
export class FailureLimiter {
  readonly maxFailures: number;
  readonly windowMs: number;
  readonly quietMs: number;
  private readonly now: () => number;
  private readonly maxAddresses: number;
  /** In order of last failure, so the front is the longest quiet. */
  private readonly records = new Map<string, FailureRecord>();

  constructor(options: FailureLimiterOptions = {}) {
    this.maxFailures = options.maxFailures ?? 10;
    this.windowMs = options.windowMs ?? 10 * 60_000;
    this.quietMs = options.quietMs ?? 10 * 60_000;
    this.now = options.now ?? Date.now;
    this.maxAddresses = options.maxAddresses ?? 100_000;
  }

  /** Addresses with a record: failures in the window, or a limit in force. */
  get size(): number {
    return this.records.size;
  }

  /** Milliseconds the address must still wait, or 0 when it may try. */
  retryAfterMs(address: string): number {
    const record = this.records.get(address);
    if (!record) return 0;
    const now = this.now();
    if (record.limited) {
      const left = record.last + this.quietMs - now;
      if (left > 0) return left;
      this.records.delete(address);
    } else if (now - record.last >= this.windowMs) {
      this.records.delete(address);
    }
    return 0;
  }

  isLimited(address: string): boolean {
    return this.retryAfterMs(address) > 0;
  }

  recordFailure(address: string): void {
    const now = this.now();
    const record = this.records.get(address) ?? { times: [], limited: false, last: now };
    this.records.delete(address); // re-inserted last: the map stays in order of last failure
    record.times = record.times.filter((time) => now - time < this.windowMs);
    record.times.push(now);
    if (record.times.length > this.maxFailures) record.times.shift();
    record.last = now;
    if (record.times.length >= this.maxFailures) record.limited = true;
    this.records.set(address, record);
    this.sweep(now);
  }

  /** Forgets records that no longer matter, oldest first, and any beyond maxAddresses. */
  private sweep(now: number): void {
    const keep = Math.max(this.windowMs, this.quietMs);
    for (const [address, record] of this.records) {
      if (this.records.size > this.maxAddresses || now - record.last >= keep) {
        this.records.delete(address);
      } else {
        break;
      }
    }
  }
}

export interface AuthenticatorOptions {
  accounts: Accounts;
  /** Password checks at once (access.md: at most 2). */
  maxConcurrent?: number;
  /** The clock of the rate limit and the success cache. */
  now?: () => number;
  /** The key derivation (tests wrap it to observe the queue); default crypto.scrypt. */
  derive?: DeriveKey;
  limiter?: Omit<FailureLimiterOptions, 'now'>;
  /** How long a success is remembered (0: never); default 5 minutes. */
  successCacheMs?: number;
  successCacheSize?: number;
}

interface CachedSuccess {
  readonly name: string;
  readonly credential: string;
  readonly until: number;
}

/** What a verification found, for the caller's log. */
export interface VerifyOutcome {
  readonly principal: Principal;
  /** True when a recent success answered without running scrypt. */
  readonly cached: boolean;
}

const defaultDerive: DeriveKey = (password, salt, keyLength, params) =>
  deriveKey(password, salt, keyLength, params);

export class Authenticator {
  readonly limiter: FailureLimiter;
  readonly queue: TaskQueue;
  private current: Accounts;
  private dummy: { params: ScryptParams; salt: Buffer; hash: Buffer };
  private readonly derive: DeriveKey;
  private readonly now: () => number;
  private readonly cacheMs: number;
  private readonly cacheSize: number;
  private readonly cache = new Map<string, CachedSuccess>();
  /** Keys the success cache: the cache holds no password, nor a fast hash of one. */
  private readonly cacheKey = randomBytes(32);

  constructor(options: AuthenticatorOptions) {
    this.current = options.accounts;
    this.dummy = dummyCredential(options.accounts);
    this.derive = options.derive ?? defaultDerive;
    this.now = options.now ?? Date.now;
    this.queue = new TaskQueue(options.maxConcurrent ?? 2);
    this.limiter = new FailureLimiter({ ...options.limiter, now: this.now });
    this.cacheMs = options.successCacheMs ?? 5 * 60_000;
    this.cacheSize = options.successCacheSize ?? 1000;
  }

  /** The accounts in force: read it per check, never keep it across commands. */
  get accounts(): Accounts {
    return this.current;
  }

  /** Puts new accounts in force in one assignment; sessions are judged by them from now on. */
  replaceAccounts(accounts: Accounts): void {
    this.current = accounts;
    this.dummy = dummyCredential(accounts);
    this.cache.clear();
  }

  /**
   * All or nothing: `load` (read, mode check, parse) either yields new accounts, which are put
   * in force, or throws, and the old ones stay. Rethrows the reason.
   */
  async reload(load: () => Promise<Accounts>): Promise<Accounts> {
    const accounts = await load();
    this.replaceAccounts(accounts);
    return accounts;
  }

  /**
   * The account a principal still holds under the accounts in force, or undefined (anonymous)
   * when it was removed or its credential replaced since the check.
   */
  resolve(principal: Principal | undefined): string | undefined {
    if (!principal) return undefined;
    const account = this.current.get(principal.name);
    return account?.credential?.text === principal.credential ? account.name : undefined;
  }

  /**
   * Checks a name and password from `address`. Resolves with the principal, or rejects with
   * AUTH_FAILED (counted against the address) or RATE_LIMITED (not counted). An unknown name,
   * `anonymous`, and a malformed name all cost one scrypt of the usual parameters.
   */
  async verify(name: string, password: string | Buffer, address: string): Promise<VerifyOutcome> {
    const key = canonicalAddress(address);
    this.refuseIfLimited(key);
    const secret = passwordBytes(password);
    const cached = this.cachedSuccess(name, secret);
    if (cached) return { principal: cached, cached: true };
    const credential = this.current.get(name)?.credential;
    const dummy = this.dummy;
    await this.queue.run(async () => {
      // Waiting in the queue took time: failures from this address may have come in.
      this.refuseIfLimited(key);
      const derived = await this.derive(
        secret,
        credential?.salt ?? dummy.salt,
        (credential?.hash ?? dummy.hash).length,
        credential ?? dummy.params,
      );
      const matched = timingSafeEqual(derived, credential?.hash ?? dummy.hash) && !!credential;
      // The limit may have been reached while this one hashed (checks run two at a time):
      // every AUTH after the 10th failure is RATE_LIMITED, right or wrong, and not counted.
      // Checked and counted in one step, so exactly the 10th failure is the last AUTH_FAILED.
      this.refuseIfLimited(key);
      if (!matched) {
        this.limiter.recordFailure(key);
        throw new AccessError('AUTH_FAILED', AUTH_FAILED_MESSAGE);
      }
    });
    const principal: Principal = { name, credential: credential!.text };
    this.remember(principal, secret);
    return { principal, cached: false };
  }

  private refuseIfLimited(address: string): void {
    const wait = this.limiter.retryAfterMs(address);
    if (wait > 0) {
      throw new AccessError('RATE_LIMITED', RATE_LIMITED_MESSAGE, {
        retryAfterSeconds: Math.ceil(wait / 1000),
      });
    }
  }

  private cacheId(name: string, secret: Buffer): string {
    return createHmac('sha256', this.cacheKey)
      .update(name)
      .update('\0')
      .update(secret)
      .digest('base64');
  }

  private cachedSuccess(name: string, secret: Buffer): Principal | undefined {
    if (this.cacheMs <= 0) return undefined;
    const id = this.cacheId(name, secret);
    const hit = this.cache.get(id);
    if (!hit) return undefined;
    if (hit.until <= this.now() || this.current.get(name)?.credential?.text !== hit.credential) {
      this.cache.delete(id);
      return undefined;
    }
    return { name: hit.name, credential: hit.credential };
  }

  private remember(principal: Principal, secret: Buffer): void {
    if (this.cacheMs <= 0) return;
    const id = this.cacheId(principal.name, secret);
    this.cache.delete(id);
    this.cache.set(id, { ...principal, until: this.now() + this.cacheMs });
    for (const oldest of this.cache.keys()) {
      if (this.cache.size <= this.cacheSize) break;
      this.cache.delete(oldest);
    }
  }
}

/**
 * What an unknown name is hashed against: the parameters and hash length most credentials in
 * the file use (the more costly on a tie), so its check costs what a real one costs. A file
 * that mixes costs lets a name with a cheaper credential be told apart by time: `users` writes
 * one cost for all.
 */
function dummyCredential(accounts: Accounts): {
  params: ScryptParams;
  salt: Buffer;
  hash: Buffer;
} {
  const counts = new Map<string, { params: ScryptParams; length: number; count: number }>();
  for (const account of accounts.accounts) {
    const credential = account.credential;
    if (!credential) continue;
    const id = `${credential.ln},${credential.r},${credential.p},${credential.hash.length}`;
    const entry = counts.get(id) ?? {
      params: { ln: credential.ln, r: credential.r, p: credential.p },
      length: credential.hash.length,
      count: 0,
    };
    entry.count++;
    counts.set(id, entry);
  }
  const cost = (params: ScryptParams): number => 2 ** params.ln * params.r * params.p;
  let best = { params: DEFAULT_SCRYPT, length: HASH_BYTES, count: 0 };
  for (const entry of counts.values()) {
    if (
      entry.count > best.count ||
      (entry.count === best.count && cost(entry.params) > cost(best.params))
    ) {
      best = entry;
    }
  }
  return { params: best.params, salt: randomBytes(SALT_BYTES), hash: randomBytes(best.length) };
}
