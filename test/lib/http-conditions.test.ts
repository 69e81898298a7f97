/**
 * Validators, conditional requests and ranges alone (RFC 9110 §8.8, §13, §14; RFC 9530 digests):
 * headers in, the door's decision out.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import {
  contentDigestSha256,
  evaluatePreconditions,
  evaluateRange,
  sha256Digest,
  strongEtag,
  validatorHeaders,
  type Validators,
} from '../../lib/http-conditions.js';

const VERSION = '2049:1234567:10:1795512600700000000:1795512600700000000';
const ETAG = strongEtag(VERSION);
/** Not on a whole second: Last-Modified and the dates compared with it have whole seconds. */
const MODIFIED = new Date('2026-11-24T09:30:00.700Z');
const V: Validators = { etag: ETAG, lastModified: MODIFIED };
const HTTP_DATE = MODIFIED.toUTCString(); // "Tue, 24 Nov 2026 09:30:00 GMT"
const earlier = (seconds: number): string =>
  new Date(MODIFIED.getTime() - seconds * 1000).toUTCString();
const later = (seconds: number): string =>
  new Date(MODIFIED.getTime() + seconds * 1000).toUTCString();
/** The same tag, weak. */
const WEAK = `W/${ETAG}`;
const OLD = strongEtag('2049:1234567:10:1795512500000000000:1795512500000000000');

const pre = (method: string, headers: IncomingHttpHeaders) =>
  evaluatePreconditions(method, headers, V);
const range = (headers: IncomingHttpHeaders, size = 10) => evaluateRange(headers, size, V);

t.test('strongEtag: a quoted, strong tag per version', async (t) => {
  t.match(ETAG, /^"[\x21\x23-\x7e]+"$/, 'a quoted opaque tag of etagc characters');
  t.notOk(ETAG.startsWith('W/'), 'strong');
  t.equal(strongEtag(VERSION), ETAG, 'stable for a version');
  t.not(strongEtag(VERSION.replace(':10:', ':11:')), ETAG, 'another size');
  t.not(OLD, ETAG, 'another mtime');
  t.not(strongEtag(VERSION + '1'), ETAG, 'another ctime');
  t.not(strongEtag(''), strongEtag(' '));
  t.notMatch(ETAG, /1234567|2049/, 'the inode and device are not shown');
  const tags = new Set(Array.from({ length: 1000 }, (_, i) => strongEtag(`1:${i}:0:0:0`)));
  t.equal(tags.size, 1000, 'no collisions among 1000 versions');
});

t.test('validatorHeaders', async (t) => {
  t.same(validatorHeaders(V), { ETag: ETAG, 'Last-Modified': 'Tue, 24 Nov 2026 09:30:00 GMT' });
});

t.test('no conditional header: proceed', async (t) => {
  t.equal(pre('GET', {}), 'proceed');
  t.equal(pre('PUT', {}), 'proceed');
  t.equal(pre('GET', { range: 'bytes=0-1' }), 'proceed');
});

t.test('If-Match: strong comparison only', async (t) => {
  t.equal(pre('GET', { 'if-match': ETAG }), 'proceed', 'the current tag');
  t.equal(pre('PUT', { 'if-match': ETAG }), 'proceed');
  t.equal(pre('GET', { 'if-match': OLD }), 'failed', 'an old tag');
  t.equal(pre('PUT', { 'if-match': OLD }), 'failed');
  t.equal(pre('GET', { 'if-match': WEAK }), 'failed', 'a weak tag never matches');
  t.equal(pre('GET', { 'if-match': ETAG.slice(1, -1) }), 'failed', 'an unquoted tag is not one');
  t.equal(pre('GET', { 'if-match': '*' }), 'proceed', '* matches an existing file');
  t.equal(pre('GET', { 'if-match': `${OLD}, ${ETAG}` }), 'proceed', 'a list holding it');
  t.equal(pre('GET', { 'if-match': `${OLD},${ETAG}` }), 'proceed', 'no space');
  t.equal(pre('GET', { 'if-match': `${OLD}, ${WEAK}` }), 'failed', 'a list without it');
  t.equal(pre('GET', { 'if-match': '' }), 'failed', 'an empty list matches nothing');
});

t.test('If-Unmodified-Since (only without If-Match), whole seconds', async (t) => {
  t.equal(pre('GET', { 'if-unmodified-since': HTTP_DATE }), 'proceed', 'the same second');
  t.equal(pre('PUT', { 'if-unmodified-since': later(60) }), 'proceed', 'unmodified since later');
  t.equal(pre('GET', { 'if-unmodified-since': earlier(1) }), 'failed', 'modified since');
  t.equal(pre('PUT', { 'if-unmodified-since': earlier(3600) }), 'failed');
  t.equal(
    pre('GET', { 'if-unmodified-since': 'not a date' }),
    'proceed',
    'an invalid date is ignored',
  );
  t.equal(
    pre('GET', { 'if-match': ETAG, 'if-unmodified-since': earlier(60) }),
    'proceed',
    'ignored when If-Match is present (§13.2.2 step 2)',
  );
  t.equal(
    pre('GET', { 'if-match': OLD, 'if-unmodified-since': later(60) }),
    'failed',
    'If-Match decides',
  );
});

t.test('If-None-Match: weak comparison', async (t) => {
  t.equal(pre('GET', { 'if-none-match': ETAG }), 'not-modified');
  t.equal(pre('HEAD', { 'if-none-match': ETAG }), 'not-modified');
  t.equal(pre('GET', { 'if-none-match': WEAK }), 'not-modified', 'W/ matches weakly');
  t.equal(pre('GET', { 'if-none-match': `${OLD}, ${ETAG}` }), 'not-modified', 'a list');
  t.equal(pre('GET', { 'if-none-match': `W/${OLD}, ${WEAK}` }), 'not-modified');
  t.equal(pre('GET', { 'if-none-match': '*' }), 'not-modified', '* matches an existing file');
  t.equal(pre('GET', { 'if-none-match': OLD }), 'proceed', 'another tag');
  t.equal(pre('GET', { 'if-none-match': `W/${OLD}` }), 'proceed');
  t.equal(pre('PUT', { 'if-none-match': ETAG }), 'failed', 'a match fails a PUT');
  t.equal(pre('PUT', { 'if-none-match': WEAK }), 'failed');
  t.equal(pre('PUT', { 'if-none-match': '*' }), 'failed', '* fails a PUT onto an existing file');
  t.equal(pre('DELETE', { 'if-none-match': ETAG }), 'failed');
  t.equal(pre('PUT', { 'if-none-match': OLD }), 'proceed');
});

t.test('If-None-Match on a PUT is not a cache question: Cache-Control is irrelevant', async (t) => {
  // RFC 9110 §13.1.2: an origin server that finds a match MUST NOT perform the method.
  // Cache-Control concerns caches, not the evaluation of preconditions (§13.2.2).
  t.equal(
    pre('PUT', { 'if-none-match': '*', 'cache-control': 'no-cache' }),
    'failed',
    'If-None-Match: * with Cache-Control: no-cache',
  );
  t.equal(pre('PUT', { 'if-none-match': ETAG, 'cache-control': 'no-cache' }), 'failed');
});

t.test('If-Match is evaluated before If-None-Match', async (t) => {
  t.equal(pre('GET', { 'if-match': OLD, 'if-none-match': ETAG }), 'failed', '412, not 304');
  t.equal(pre('GET', { 'if-match': ETAG, 'if-none-match': ETAG }), 'not-modified');
  t.equal(pre('GET', { 'if-unmodified-since': earlier(5), 'if-none-match': ETAG }), 'failed');
});

t.test('If-Modified-Since: GET and HEAD only, whole seconds', async (t) => {
  t.equal(pre('GET', { 'if-modified-since': HTTP_DATE }), 'not-modified', 'the same second');
  t.equal(pre('HEAD', { 'if-modified-since': later(60) }), 'not-modified');
  t.equal(pre('GET', { 'if-modified-since': earlier(1) }), 'proceed', 'modified since');
  t.equal(pre('GET', { 'if-modified-since': 'yesterday' }), 'proceed', 'an invalid date: ignored');
  t.equal(pre('PUT', { 'if-modified-since': later(60) }), 'proceed', 'ignored on a PUT');
  t.equal(pre('POST', { 'if-modified-since': later(60) }), 'proceed');
});

t.test('If-Modified-Since is ignored when If-None-Match is present', async (t) => {
  t.equal(
    pre('GET', { 'if-none-match': OLD, 'if-modified-since': later(60) }),
    'proceed',
    'a tag that does not match wins over a fresh date',
  );
  t.equal(
    pre('GET', { 'if-none-match': ETAG, 'if-modified-since': earlier(3600) }),
    'not-modified',
    'a tag that matches wins over a stale date',
  );
});

t.test('Range: single ranges (RFC 9110 §14.1.2)', async (t) => {
  t.same(range({}), { kind: 'whole' }, 'no Range header');
  t.same(range({ range: 'bytes=0-0' }), { kind: 'partial', start: 0, end: 0 }, 'the first byte');
  t.same(range({ range: 'bytes=0-1' }), { kind: 'partial', start: 0, end: 1 });
  t.same(range({ range: 'bytes=0-9' }), { kind: 'partial', start: 0, end: 9 }, 'all of it');
  t.same(range({ range: 'bytes=9-9' }), { kind: 'partial', start: 9, end: 9 }, 'the last byte');
  t.same(range({ range: 'bytes=4-' }), { kind: 'partial', start: 4, end: 9 }, 'a-');
  t.same(range({ range: 'bytes=0-' }), { kind: 'partial', start: 0, end: 9 }, '0-');
  t.same(range({ range: 'bytes=-3' }), { kind: 'partial', start: 7, end: 9 }, 'a suffix');
  t.same(range({ range: 'bytes=-10' }), { kind: 'partial', start: 0, end: 9 }, 'suffix = size');
  t.same(
    range({ range: 'bytes=-11' }),
    { kind: 'partial', start: 0, end: 9 },
    'a suffix longer than the file: all of it, as a range',
  );
  t.same(range({ range: 'bytes=-99999999999' }), { kind: 'partial', start: 0, end: 9 });
  t.same(range({ range: 'bytes=3-100' }), { kind: 'partial', start: 3, end: 9 }, 'end clamped');
  t.same(range({ range: 'bytes=0-99999999999999999999' }), { kind: 'partial', start: 0, end: 9 });
  t.same(range({ range: 'Bytes=2-3' }), { kind: 'partial', start: 2, end: 3 }, 'unit in any case');
  t.same(range({ range: 'bytes= 2-3 ' }), { kind: 'partial', start: 2, end: 3 }, 'spaces');
  const big = 5 * 1024 ** 3;
  t.same(
    evaluateRange({ range: `bytes=${big - 100}-` }, big, V),
    { kind: 'partial', start: big - 100, end: big - 1 },
    'offsets past 4 GiB',
  );
});

t.test('Range: unsatisfiable (416) when no range starts inside the file', async (t) => {
  t.same(range({ range: 'bytes=10-' }), { kind: 'unsatisfiable' }, 'start = size');
  t.same(range({ range: 'bytes=10-20' }), { kind: 'unsatisfiable' });
  t.same(range({ range: 'bytes=11-11' }), { kind: 'unsatisfiable' }, 'start past the size');
  t.same(range({ range: 'bytes=-0' }), { kind: 'unsatisfiable' }, 'an empty suffix');
  t.same(range({ range: 'bytes=10-12,20-' }), { kind: 'unsatisfiable' }, 'every range outside');
});

t.test('Range: a malformed header is ignored (the whole file)', async (t) => {
  for (const header of [
    'bytes=5-2', // last < first
    'bytes=abc',
    'bytes=1-a',
    'bytes=a-1',
    'items=0-1', // another unit
    'bytes 0-1', // no =
    'bytes0-1',
    '0-1',
    'bytes=',
    'bytes=-',
    'bytes=--1',
    'bytes=1-2-3',
    'bytes=1e3-',
    'bytes=0x10-',
    'bytes=+1-2',
    'bytes=0-1,5-2', // one bad range spoils the header
    'bytes=0-1;4-5',
    '',
  ]) {
    t.same(range({ range: header }), { kind: 'whole' }, JSON.stringify(header));
  }
});

t.test('Range: several ranges', async (t) => {
  t.same(range({ range: 'bytes=0-1,4-5' }), {
    kind: 'multiple',
    ranges: [
      { start: 0, end: 1 },
      { start: 4, end: 5 },
    ],
  });
  t.same(range({ range: 'bytes=0-0, -1' }), {
    kind: 'multiple',
    ranges: [
      { start: 0, end: 0 },
      { start: 9, end: 9 },
    ],
  });
  t.same(
    range({ range: 'bytes=0-1,20-30' }),
    { kind: 'partial', start: 0, end: 1 },
    'an unsatisfiable range among others is dropped',
  );
  t.same(range({ range: 'bytes=8-,-20' }), {
    kind: 'multiple',
    ranges: [
      { start: 8, end: 9 },
      { start: 0, end: 9 },
    ],
  });
  const many = Array.from({ length: 20 }, (_, i) => `${i % 10}-${i % 10}`).join(',');
  const answer = range({ range: `bytes=${many}` });
  t.ok(
    answer.kind === 'multiple' || answer.kind === 'whole',
    `20 ranges: several or the whole (${answer.kind})`,
  );
});

t.test('Range: a zero-size file', async (t) => {
  t.same(range({}, 0), { kind: 'whole' });
  t.same(range({ range: 'bytes=0-0' }, 0), { kind: 'unsatisfiable' }, 'nothing starts inside');
  t.same(range({ range: 'bytes=0-' }, 0), { kind: 'unsatisfiable' });
  t.same(range({ range: 'bytes=5-2' }, 0), { kind: 'whole' }, 'malformed: ignored');
  const suffix = range({ range: 'bytes=-5' }, 0);
  t.ok(
    suffix.kind === 'whole' || suffix.kind === 'unsatisfiable',
    `a suffix of an empty file has no byte range to send (${suffix.kind})`,
  );
});

t.test('If-Range: the range only while the file is unchanged', async (t) => {
  const partial = { kind: 'partial', start: 0, end: 1 };
  const whole = { kind: 'whole' };
  t.same(range({ range: 'bytes=0-1', 'if-range': ETAG }), partial, 'the current strong tag');
  t.same(range({ range: 'bytes=0-1', 'if-range': ` ${ETAG} ` }), partial, 'spaces around');
  t.same(range({ range: 'bytes=0-1', 'if-range': WEAK }), whole, 'a weak tag never');
  t.same(range({ range: 'bytes=0-1', 'if-range': OLD }), whole, 'an old tag');
  t.same(range({ range: 'bytes=0-1', 'if-range': HTTP_DATE }), partial, 'Last-Modified exactly');
  t.same(range({ range: 'bytes=0-1', 'if-range': earlier(1) }), whole, 'an earlier date');
  t.same(range({ range: 'bytes=0-1', 'if-range': later(1) }), whole, 'a later date');
  t.same(range({ range: 'bytes=0-1', 'if-range': 'garbage' }), whole, 'neither tag nor date');
  t.same(range({ range: 'bytes=0-1', 'if-range': '' }), whole);
  t.same(range({ 'if-range': ETAG }), whole, 'If-Range without Range');
  t.same(range({ range: 'bytes=5-2', 'if-range': ETAG }), whole, 'with a malformed Range');
  t.same(
    range({ range: 'bytes=20-', 'if-range': OLD }),
    whole,
    'a changed file: the whole new file, not a 416 for the old range',
  );
  t.same(range({ range: 'bytes=20-', 'if-range': ETAG }), { kind: 'unsatisfiable' });
});

const EMPTY_SHA256 = createHash('sha256').update('').digest();
const ABC_SHA256 = createHash('sha256').update('abc').digest();
const member = (digest: Buffer): string => `sha-256=:${digest.toString('base64')}:`;

t.test('contentDigestSha256 (RFC 9530)', async (t) => {
  t.equal(contentDigestSha256(undefined), undefined, 'no header');
  t.equal(
    contentDigestSha256('sha-512=:' + 'A'.repeat(86) + '==:'),
    undefined,
    'another algorithm',
  );
  t.equal(contentDigestSha256('md5=:AAAA:, unixsum=:AAAA:'), undefined, 'other algorithms only');
  t.equal(contentDigestSha256(''), undefined, 'an empty header names nothing');

  const value = contentDigestSha256(member(ABC_SHA256));
  t.ok(Buffer.isBuffer(value), 'a Buffer');
  t.equal((value as Buffer).length, 32);
  t.ok((value as Buffer).equals(ABC_SHA256), 'the digest bytes');
  t.ok(
    (
      contentDigestSha256('sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:') as Buffer
    ).equals(EMPTY_SHA256),
    'the known digest of nothing',
  );

  const several = contentDigestSha256(
    `sha-512=:${Buffer.alloc(64).toString('base64')}:, ${member(ABC_SHA256)}`,
  );
  t.ok(Buffer.isBuffer(several) && several.equals(ABC_SHA256), 'several members: sha-256 found');
  const first = contentDigestSha256(`${member(ABC_SHA256)},md5=:AAAA:`);
  t.ok(Buffer.isBuffer(first) && first.equals(ABC_SHA256), 'sha-256 first');
  const spaced = contentDigestSha256(` sha-256 = :${ABC_SHA256.toString('base64')}: `);
  t.ok(Buffer.isBuffer(spaced) && spaced.equals(ABC_SHA256), 'spaces around');
});

t.test('contentDigestSha256: a malformed sha-256 member', async (t) => {
  const b64 = ABC_SHA256.toString('base64');
  for (const header of [
    `sha-256=${b64}`, // not a byte sequence
    `sha-256=:${b64}`,
    `sha-256="${b64}"`,
    `sha-256=:${ABC_SHA256.toString('hex')}:`, // hex, not base64
    `sha-256=:${ABC_SHA256.subarray(0, 31).toString('base64')}:`, // 31 bytes
    `sha-256=:${Buffer.concat([ABC_SHA256, Buffer.from('x')]).toString('base64')}:`, // 33
    'sha-256=::',
    'sha-256=',
    `sha-256=:${b64.replace(/=+$/, '')}!:`,
    `md5=:AAAA:, sha-256=:AAAA:`,
  ]) {
    t.equal(contentDigestSha256(header), 'malformed', header);
  }
});

t.test('sha256Digest: the Repr-Digest of a hex SHA-256', async (t) => {
  const hex = ABC_SHA256.toString('hex');
  t.equal(sha256Digest(hex), 'sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:');
  t.equal(
    sha256Digest(EMPTY_SHA256.toString('hex')),
    'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:',
  );
  const back = contentDigestSha256(sha256Digest(hex));
  t.ok(Buffer.isBuffer(back) && back.toString('hex') === hex, 'contentDigestSha256 reads it back');
});
