/**
 * Validators, conditional requests and ranges of the HTTP door (RFC 9110 §8.8, §13, §14).
 * `fresh` judges If-None-Match / If-Modified-Since and `range-parser` evaluates ranges; this
 * module adds what they leave out: strong ETags from a file's version, If-Match,
 * If-Unmodified-Since, If-Range (never satisfied by a weak validator), and the range grammar
 * check that makes a malformed header ignored rather than unsatisfiable.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import fresh from 'fresh';
import rangeParser from 'range-parser';

export interface Validators {
  /** A strong entity tag, quoted. */
  etag: string;
  lastModified: Date;
}

/**
 * A strong ETag for a stored file's version (it changes whenever the content may have): a
 * digest, so the version's inode numbers are not shown.
 */
export function strongEtag(version: string): string {
  return `"${createHash('sha256').update(version).digest('base64url').slice(0, 27)}"`;
}

/** The validators as response headers (Last-Modified has whole seconds). */
export function validatorHeaders({ etag, lastModified }: Validators): Record<string, string> {
  return { ETag: etag, 'Last-Modified': lastModified.toUTCString() };
}

/** Entity tags of an If-Match / If-None-Match list (`*` stays `*`). */
function entityTags(header: string): string[] {
  return header.match(/\*|(?:W\/)?"[^"]*"/g) ?? [];
}

function wholeSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

function parseDate(value: string): number | undefined {
  const time = Date.parse(value);
  return Number.isNaN(time) ? undefined : Math.floor(time / 1000);
}

export type Precondition = 'proceed' | 'not-modified' | 'failed';

/**
 * RFC 9110 §13.2.2, for a representation that exists: If-Match, else If-Unmodified-Since, can
 * fail (412); then If-None-Match, else If-Modified-Since (GET/HEAD only), can make a GET or
 * HEAD `not-modified` (304) and fail anything else.
 */
export function evaluatePreconditions(
  method: string,
  headers: IncomingHttpHeaders,
  validators: Validators,
): Precondition {
  const ifMatch = headers['if-match'];
  if (ifMatch !== undefined) {
    // Strong comparison: a weak tag never matches.
    const matches = entityTags(ifMatch).some((tag) => tag === '*' || tag === validators.etag);
    if (!matches) return 'failed';
  } else if (headers['if-unmodified-since'] !== undefined) {
    const since = parseDate(headers['if-unmodified-since']);
    if (since !== undefined && wholeSeconds(validators.lastModified) > since) return 'failed';
  }
  const safe = method === 'GET' || method === 'HEAD';
  // fresh is given the one validator header only: it would also call a request with
  // `Cache-Control: no-cache` stale, which is a cache's concern, not a precondition's.
  const ifNoneMatch = headers['if-none-match'];
  const ifModifiedSince = headers['if-modified-since'];
  if (ifNoneMatch !== undefined) {
    // Weak comparison (fresh's): `W/"x"` matches `"x"`.
    const matches = fresh({ 'if-none-match': ifNoneMatch }, { etag: validators.etag });
    if (matches) return safe ? 'not-modified' : 'failed';
  } else if (safe && ifModifiedSince !== undefined) {
    const lastModified = validators.lastModified.toUTCString();
    if (fresh({ 'if-modified-since': ifModifiedSince }, { 'last-modified': lastModified })) {
      return 'not-modified';
    }
  }
  return 'proceed';
}

export type RangeAnswer =
  | { kind: 'whole' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'multiple'; ranges: { start: number; end: number }[] }
  | { kind: 'unsatisfiable' };

// RFC 9110 §14.1.1: `bytes=` then range-specs (`first-last`, `first-`, `-suffix`) separated by
// commas with optional whitespace. The unit is case-insensitive.
const RANGE_SPEC = /^\s*(?:(\d+)-(\d*)|-(\d+))\s*$/;
const RANGE_UNIT = /^bytes=/i;

/** The range-specs of a syntactically valid `bytes` Range header, else undefined. */
function rangeSpecs(header: string): string[] | undefined {
  if (!RANGE_UNIT.test(header)) return undefined; // another unit, or not a range at all
  const specs = header.slice(6).split(',');
  for (const spec of specs) {
    const match = RANGE_SPEC.exec(spec);
    if (!match) return undefined;
    // "first > last" is invalid, not unsatisfiable: the whole header is then ignored.
    if (match[2] !== '' && match[2] !== undefined && Number(match[2]) < Number(match[1])) {
      return undefined;
    }
  }
  return specs;
}

/**
 * If-Range (§13.1.5): the range applies only while the representation is unchanged. An
 * entity tag must match strongly (a weak one never does); a date must equal Last-Modified.
 */
function ifRangeHolds(value: string, validators: Validators): boolean {
  const tag = value.trim();
  if (tag.startsWith('"') || tag.startsWith('W/')) return tag === validators.etag;
  const date = parseDate(tag);
  return date !== undefined && date === wholeSeconds(validators.lastModified);
}

/**
 * What a GET answers for its Range header (§14.2): the whole file for no header, a malformed
 * one or an If-Range that no longer holds; `unsatisfiable` (416) when no range starts inside
 * the file; else the ranges, each end clamped to the size. A suffix longer than the file is the
 * whole file (range-parser alone would call it unsatisfiable).
 */
export function evaluateRange(
  headers: IncomingHttpHeaders,
  size: number,
  validators: Validators,
): RangeAnswer {
  const header = headers.range;
  if (header === undefined) return { kind: 'whole' };
  const ifRange = headers['if-range'];
  if (typeof ifRange === 'string' && !ifRangeHolds(ifRange, validators)) return { kind: 'whole' };
  const specs = rangeSpecs(header);
  if (!specs) return { kind: 'whole' };
  const normalized = specs
    .map((spec) => {
      const suffix = /^\s*-(\d+)\s*$/.exec(spec);
      return suffix && size > 0 && Number(suffix[1]) > size ? '0-' : spec.trim();
    })
    .join(',');
  const ranges = rangeParser(size, `bytes=${normalized}`);
  if (ranges === -1 || ranges === -2) return { kind: 'unsatisfiable' };
  if (ranges.length === 1) return { kind: 'partial', ...ranges[0] };
  return { kind: 'multiple', ranges: ranges.map(({ start, end }) => ({ start, end })) };
}

/**
 * The SHA-256 of a `Content-Digest` request header (RFC 9530), as bytes: undefined when the
 * header is absent or names only other algorithms, `malformed` when its sha-256 member is.
 */
export function contentDigestSha256(header: string | undefined): Buffer | undefined | 'malformed' {
  if (header === undefined) return undefined;
  for (const member of header.split(',')) {
    const match = /^\s*([a-z0-9_-]+)\s*=\s*(.*?)\s*$/i.exec(member);
    if (!match || match[1].toLowerCase() !== 'sha-256') continue;
    const value = /^:([A-Za-z0-9+/]+={0,2}):$/.exec(match[2]);
    const bytes = value ? Buffer.from(value[1], 'base64') : undefined;
    return bytes?.length === 32 ? bytes : 'malformed';
  }
  return undefined;
}

/** A `Repr-Digest` / `Content-Digest` value for a hex SHA-256. */
export function sha256Digest(hex: string): string {
  return `sha-256=:${Buffer.from(hex, 'hex').toString('base64')}:`;
}
