/**
 * The HTTP door's contract (spec/http.md), GET and HEAD of /media/<name>, black box on real
 * sockets: the headers of a whole reply, the media table, Content-Disposition, every form of
 * Range (and the pitfalls real players hit with them), no compression, conditional requests
 * and the ETag's strength and freshness.
 */
import t, { type Test } from 'tap';
import { utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildRequest,
  checkHead,
  content,
  errorBody,
  HttpConn,
  mediaPath,
  sleep,
  startServer,
  type HttpResponse,
} from '../helpers/http-client.js';

/** An entity-tag that is strong: a quoted string, no `W/`. */
const STRONG_ETAG = /^"[\x21\x23-\x7e\x80-\xff]*"$/;
const MTIME = 1_600_000_000; // 2020-09-13, so a date validator is certainly strong
const SIZE = 1000;

interface Disposition {
  type: string;
  /** The `filename*` value as sent, and decoded. */
  starRaw?: string;
  star?: string;
  /** The `filename` fallback, unquoted. */
  fallback?: string;
}

function parseDisposition(value: string | undefined): Disposition {
  if (value === undefined) return { type: '' };
  const type = value.split(';')[0].trim().toLowerCase();
  const star = /;\s*filename\*\s*=\s*UTF-8''([^;\s]*)/i.exec(value);
  const quoted = /;\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(value);
  const token = /;\s*filename\s*=\s*([^";\s]+)/i.exec(value);
  let decoded: string | undefined;
  try {
    decoded = star ? decodeURIComponent(star[1]) : undefined;
  } catch {
    decoded = undefined;
  }
  return {
    type,
    starRaw: star?.[1],
    star: decoded,
    fallback: quoted ? quoted[1].replace(/\\(.)/g, '$1') : token?.[1],
  };
}

/** RFC 8187 value-chars: attr-char or pct-encoded. */
const EXT_VALUE = /^(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-Fa-f]{2})*$/;

async function withFile(t: Test, name = 'a.mp4', data = content(SIZE)) {
  const s = await startServer(t);
  await s.put(name, data, MTIME);
  const get = async (headers: Record<string, string> = {}, method = 'GET') => {
    const res = await s.req({ method, target: mediaPath(name), headers });
    checkHead(t, res);
    return res;
  };
  return { ...s, data, get };
}

t.test('GET a whole file: status, body and every header of the contract', async (t) => {
  const { get, data } = await withFile(t);
  const res = await get();
  t.equal(res.status, 200);
  t.ok(res.body.equals(data), 'the whole file');
  t.equal(res.framing, 'length', 'delimited by Content-Length');
  t.equal(res.headers['content-length'], String(SIZE));
  t.equal(res.headers['accept-ranges'], 'bytes');
  t.equal(res.headers['content-type'], 'video/mp4');
  t.equal(res.headers['last-modified'], new Date(MTIME * 1000).toUTCString());
  t.match(res.headers.etag, STRONG_ETAG, 'a strong ETag');
  t.equal(res.headers['x-content-type-options'], 'nosniff');
  t.notOk(res.headers['content-encoding'], 'no Content-Encoding');
  const cd = parseDisposition(res.headers['content-disposition']);
  t.equal(cd.type, 'inline');
  t.equal(cd.fallback, 'a.mp4', 'filename="a.mp4" fallback');
  t.match(
    res.headers['content-disposition'],
    /; filename="a\.mp4";/,
    'quoted, as http.md writes it, though a token would do',
  );
  t.equal(cd.star, 'a.mp4', "filename*=UTF-8''a.mp4 (the contract asks for it on every name)");
});

t.test('HEAD: the same status and headers as GET, and no body', async (t) => {
  const { get, data, httpPort } = await withFile(t);
  const whole = await get();
  const head = await get({}, 'HEAD');
  t.equal(head.status, whole.status);
  const strip = (res: HttpResponse) => {
    const copy = { ...res.headers };
    for (const name of ['date', 'connection', 'keep-alive']) delete copy[name];
    return copy;
  };
  t.same(strip(head), strip(whole), 'same headers (Date aside)');
  t.equal(head.headers['content-length'], String(SIZE), 'Content-Length of the file on HEAD');

  // No body bytes: a GET pipelined behind the HEAD on one connection parses cleanly.
  const conn = await HttpConn.connect(httpPort);
  t.teardown(() => conn.destroy());
  await conn.send(
    Buffer.concat([
      buildRequest(httpPort, { method: 'HEAD', target: '/media/a.mp4' }),
      buildRequest(httpPort, { target: '/media/a.mp4' }),
    ]),
  );
  const first = await conn.readResponse({ head: true });
  t.equal(first.status, 200);
  const second = await conn.readResponse();
  t.equal(second.status, 200, 'the pipelined GET follows the HEAD directly');
  t.ok(second.body.equals(data), 'and carries the file');
  await sleep(50);
  t.equal(conn.pending.length, 0, 'nothing after it');
});

t.test('Content-Type follows the media table for every extension', async (t) => {
  const table: Record<string, string> = {
    mov: 'video/quicktime',
    mp4: 'video/mp4',
    m4v: 'video/x-m4v',
    mkv: 'video/x-matroska',
    avi: 'video/x-msvideo',
    webm: 'video/webm',
    mp3: 'audio/mpeg',
    m4a: 'audio/mp4',
    aac: 'audio/aac',
    flac: 'audio/flac',
    wav: 'audio/wav',
    ogg: 'audio/ogg',
    opus: 'audio/ogg',
    jpg: 'image/jpeg',
    jpeg: 'image/jpeg',
    png: 'image/png',
    gif: 'image/gif',
    webp: 'image/webp',
    heic: 'image/heic',
    bmp: 'image/bmp',
    tif: 'image/tiff',
    tiff: 'image/tiff',
  };
  const s = await startServer(t);
  for (const ext of Object.keys(table)) await s.put(`f.${ext}`, 'x');
  await s.put('UPPER.JPG', 'x');
  for (const [ext, type] of Object.entries(table)) {
    for (const method of ['HEAD', 'GET']) {
      const res = await s.req({ method, target: `/media/f.${ext}` });
      t.equal(res.status, 200, `${method} .${ext} 200`);
      t.equal(res.headers['content-type'], type, `${method} .${ext} is ${type}`);
    }
    // In a 206 too (Chrome's ORB blocks a FLAC range as application/octet-stream).
    const ranged = await s.req({ target: `/media/f.${ext}`, headers: { Range: 'bytes=0-0' } });
    t.equal(ranged.status, 206, `.${ext} range 206`);
    t.equal(ranged.headers['content-type'], type, `.${ext} range is ${type}`);
  }
  const upper = await s.req({ target: '/media/UPPER.JPG' });
  t.equal(upper.headers['content-type'], 'image/jpeg', 'an upper-case extension maps the same');
});

t.test('Content-Disposition: filename* in UTF-8, an ASCII-only fallback, ?download', async (t) => {
  const s = await startServer(t);
  const names = [
    'Café Élan – 東京.mp3',
    'albums/Track 01.flac',
    'ünïcödé façade.jpg',
    'say "hi" 100% [live], #1?.mp3',
    'emoji 🎵.m4a',
  ];
  for (const name of names) await s.put(name, 'data');
  for (const name of names) {
    const last = name.split('/').pop()!;
    for (const [query, type] of [
      ['', 'inline'],
      ['?download', 'attachment'],
    ]) {
      for (const method of ['GET', 'HEAD']) {
        const what = `${method} ${JSON.stringify(name)}${query}: `;
        const res = await s.req({ method, target: mediaPath(name) + query });
        t.equal(res.status, 200, `${what}200`);
        checkHead(t, res, what);
        const raw = res.headers['content-disposition'];
        const cd = parseDisposition(raw);
        t.equal(cd.type, type, `${what}${type}`);
        t.equal(cd.star, last, `${what}filename* decodes to the last segment`);
        t.match(cd.starRaw ?? '', EXT_VALUE, `${what}filename* is RFC 8187 ext-value chars`);
        // Quoted always, as http.md writes it, even where a token would do (`a.mp4`).
        t.match(
          raw,
          /; filename="[^"\\]*"(;|$)/,
          `${what}a quoted filename="…" fallback (got ${raw})`,
        );
        t.match(cd.fallback ?? '', /^[\x20-\x7e]*$/, `${what}the fallback is printable ASCII`);
      }
    }
  }
  const plain = await s.req({ target: mediaPath('albums/Track 01.flac') });
  t.equal(
    parseDisposition(plain.headers['content-disposition']).fallback,
    'Track 01.flac',
    'an ASCII name is its own fallback (not Track%2001.flac)',
  );
});

t.test('Range: one range is a 206 with Content-Range and Content-Length', async (t) => {
  const { get, data } = await withFile(t);
  const cases: [string, number, number][] = [
    ['bytes=0-0', 0, 0], // answered 416 by some servers
    ['bytes=0-1', 0, 1], // Safari and iOS start with it
    ['bytes=0-', 0, SIZE - 1], // mpv
    ['bytes=100-', 100, SIZE - 1],
    ['bytes=100-199', 100, 199],
    ['bytes=999-999', 999, 999],
    ['bytes=999-', 999, 999],
    ['bytes=-100', SIZE - 100, SIZE - 1], // QuickTime reads the moov atom at the end
    ['bytes=-1', SIZE - 1, SIZE - 1],
    ['bytes=-1000', 0, SIZE - 1],
    ['bytes=-5000', 0, SIZE - 1], // suffix longer than the file: the whole file
    ['bytes=990-5000', 990, SIZE - 1], // end past the size: clamped
    ['bytes=0-999999999999', 0, SIZE - 1],
  ];
  for (const [range, start, end] of cases) {
    for (const acceptEncoding of [undefined, 'gzip, deflate, br']) {
      const headers: Record<string, string> = { Range: range };
      if (acceptEncoding) headers['Accept-Encoding'] = acceptEncoding;
      const res = await get(headers);
      const what = `${range}${acceptEncoding ? ' (Accept-Encoding: gzip)' : ''}: `;
      t.equal(res.status, 206, `${what}206`);
      t.equal(
        res.headers['content-range'],
        `bytes ${start}-${end}/${SIZE}`,
        `${what}Content-Range`,
      );
      t.equal(res.headers['content-length'], String(end - start + 1), `${what}Content-Length`);
      t.equal(res.framing, 'length', `${what}not chunked`);
      t.ok(res.body.equals(data.subarray(start, end + 1)), `${what}the right bytes`);
      t.notOk(res.headers['content-encoding'], `${what}no Content-Encoding`);
      t.equal(res.headers['accept-ranges'], 'bytes', `${what}Accept-Ranges`);
      t.match(res.headers.etag, STRONG_ETAG, `${what}ETag`);
    }
  }
});

t.test('Range on HEAD: the same status and headers as the GET, no body', async (t) => {
  const { get } = await withFile(t);
  const viaGet = await get({ Range: 'bytes=0-1' });
  const viaHead = await get({ Range: 'bytes=0-1' }, 'HEAD');
  t.equal(viaHead.status, viaGet.status, 'HEAD answers what GET answers (contract: same status)');
  t.equal(viaHead.headers['content-length'], viaGet.headers['content-length']);
  t.equal(viaHead.headers['content-range'], viaGet.headers['content-range']);
});

t.test('Range: a start at or past the size is 416 with Content-Range: bytes */size', async (t) => {
  const { get } = await withFile(t);
  for (const range of ['bytes=1000-', 'bytes=1000-1000', 'bytes=5000-6000']) {
    for (const method of ['GET', 'HEAD']) {
      const res = await get({ Range: range }, method);
      t.equal(res.status, 416, `${method} ${range}: 416`);
      t.equal(res.headers['content-range'], `bytes */${SIZE}`, `${method} ${range}: bytes */size`);
      if (method === 'GET') t.equal(errorBody(res)?.code, 'BAD_RANGE', `${range}: BAD_RANGE`);
    }
  }
  const s = await startServer(t);
  await s.put('empty.mp3', '');
  const empty = await s.req({ target: '/media/empty.mp3', headers: { Range: 'bytes=0-' } });
  t.equal(empty.status, 416, 'bytes=0- of an empty file: 416 (starts at the size)');
  t.equal(empty.headers['content-range'], 'bytes */0');
  const whole = await s.req({ target: '/media/empty.mp3' });
  t.equal(whole.status, 200, 'an empty file without Range: 200');
  t.equal(whole.headers['content-length'], '0');
});

t.test('Range: a malformed header is ignored, 200 with the whole file', async (t) => {
  const { get, data } = await withFile(t);
  const malformed = [
    'bytes=abc',
    'bytes=',
    'bytes',
    '0-5',
    'items=0-5', // a unit the server does not know: must be ignored
    'bytes=x-5',
    'bytes=--5',
    'bytes=0-5x',
  ];
  for (const range of malformed) {
    const res = await get({ Range: range });
    t.equal(res.status, 200, `${JSON.stringify(range)}: 200`);
    t.ok(res.body.equals(data), `${JSON.stringify(range)}: the whole file`);
    t.notOk(res.headers['content-range'], `${JSON.stringify(range)}: no Content-Range`);
  }
});

/** Checks a reply to several ranges: multipart/byteranges with the right parts, or 200 whole. */
function checkMulti(t: Test, res: HttpResponse, data: Buffer, ranges: [number, number][]) {
  if (res.status === 200) {
    t.ok(res.body.equals(data), '200 with the whole file');
    return;
  }
  t.equal(res.status, 206, '206 (or 200 whole)');
  const type = res.headers['content-type'] ?? '';
  const boundary = /^multipart\/byteranges;\s*boundary="?([^";]+)"?/i.exec(type)?.[1];
  t.ok(boundary, `multipart/byteranges with a boundary (got ${type})`);
  if (!boundary) return;
  t.equal(res.framing, 'length', 'with a Content-Length');
  const text = res.body.toString('latin1');
  const parts = text.split(`--${boundary}`).slice(1);
  t.match(parts.at(-1) ?? '', /^--/, 'closing delimiter');
  const found: [number, number][] = [];
  for (const part of parts.slice(0, -1)) {
    const at = part.indexOf('\r\n\r\n');
    const headers = part.slice(0, at);
    const body = Buffer.from(part.slice(at + 4, part.length - 2), 'latin1');
    const match = /content-range:\s*bytes (\d+)-(\d+)\/(\d+)/i.exec(headers);
    t.ok(match, 'each part has a Content-Range');
    if (!match) continue;
    const [start, end] = [Number(match[1]), Number(match[2])];
    t.equal(match[3], String(data.length));
    t.ok(body.equals(data.subarray(start, end + 1)), `part ${start}-${end} has its bytes`);
    found.push([start, end]);
  }
  t.same(found, ranges, 'the parts asked for');
}

t.test('Range: several ranges are multipart/byteranges or 200 whole', async (t) => {
  const { get, data } = await withFile(t);
  checkMulti(t, await get({ Range: 'bytes=0-9,20-29' }), data, [
    [0, 9],
    [20, 29],
  ]);
  checkMulti(t, await get({ Range: 'bytes=0-0,-1' }), data, [
    [0, 0],
    [SIZE - 1, SIZE - 1],
  ]);
  const overlapping = await get({ Range: 'bytes=0-9,5-14' });
  t.ok([200, 206].includes(overlapping.status), 'overlapping: 200 or 206');
  if (overlapping.status === 200) t.ok(overlapping.body.equals(data));
  const many = Array.from({ length: 20 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',');
  const manyRes = await get({ Range: `bytes=${many}` });
  checkMulti(
    t,
    manyRes,
    data,
    Array.from({ length: 20 }, (_, i) => [i * 10, i * 10 + 1]),
  );
});

t.test('never compressed, whatever Accept-Encoding says', async (t) => {
  const s = await startServer(t);
  // Very compressible bytes: a server that compresses would.
  const data = Buffer.alloc(64 * 1024, 'a');
  await s.put('c.mkv', data);
  for (const encoding of [
    'gzip',
    'gzip, deflate, br',
    'br;q=1.0, *;q=0.5',
    'identity;q=0, *;q=0',
  ]) {
    for (const range of [undefined, 'bytes=0-', 'bytes=100-2000']) {
      const headers: Record<string, string> = { 'Accept-Encoding': encoding };
      if (range) headers.Range = range;
      const res = await s.req({ target: '/media/c.mkv', headers });
      t.notOk(res.headers['content-encoding'], `${encoding} ${range ?? ''}: no Content-Encoding`);
      t.notOk(res.headers['transfer-encoding'], `${encoding} ${range ?? ''}: not chunked`);
      if (res.status === 200) t.ok(res.body.equals(data), 'raw bytes');
    }
  }
});

t.test('If-None-Match and If-Modified-Since: 304 when fresh', async (t) => {
  const { get, httpPort } = await withFile(t);
  const { headers } = await get();
  const etag = headers.etag;
  const lastModified = headers['last-modified'];

  for (const inm of [etag, `"nope", ${etag}`, `W/${etag}`, '*']) {
    const res = await get({ 'If-None-Match': inm });
    t.equal(res.status, 304, `If-None-Match: ${inm}: 304`);
    t.equal(res.headers.etag, etag, `If-None-Match: ${inm}: the 304 carries the ETag`);
  }
  t.equal((await get({ 'If-None-Match': '"nope"' })).status, 200, 'another ETag: 200');

  t.equal((await get({ 'If-Modified-Since': lastModified })).status, 304, 'IMS = Last-Modified');
  t.equal(
    (await get({ 'If-Modified-Since': new Date((MTIME + 3600) * 1000).toUTCString() })).status,
    304,
    'IMS later',
  );
  t.equal(
    (await get({ 'If-Modified-Since': new Date((MTIME - 3600) * 1000).toUTCString() })).status,
    200,
    'IMS earlier: 200',
  );
  t.equal(
    (await get({ 'If-None-Match': '"nope"', 'If-Modified-Since': lastModified })).status,
    200,
    'If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)',
  );
  t.equal((await get({ 'If-None-Match': etag }, 'HEAD')).status, 304, 'HEAD: 304 too');

  // A 304 has no body: nothing follows its head on a kept-alive connection.
  const conn = await HttpConn.connect(httpPort);
  t.teardown(() => conn.destroy());
  await conn.send(
    Buffer.concat([
      buildRequest(httpPort, { target: '/media/a.mp4', headers: { 'If-None-Match': etag } }),
      buildRequest(httpPort, { target: '/media/a.mp4', headers: { Range: 'bytes=0-1' } }),
    ]),
  );
  t.equal((await conn.readResponse()).status, 304);
  const next = await conn.readResponse();
  t.equal(next.status, 206, 'the next response follows the 304 directly');
});

t.test(
  'If-Range: the current strong ETag or date gives the range, anything else 200',
  async (t) => {
    const { get, data } = await withFile(t);
    const { headers } = await get();
    const etag = headers.etag;
    const range = 'bytes=10-19';
    const ranged = await get({ Range: range, 'If-Range': etag });
    t.equal(ranged.status, 206, 'current ETag: 206');
    t.ok(ranged.body.equals(data.subarray(10, 20)));

    const weak = await get({ Range: range, 'If-Range': `W/${etag}` });
    t.equal(weak.status, 200, 'a weak validator never satisfies If-Range: 200');
    t.ok(weak.body.equals(data), 'whole');

    const old = await get({ Range: range, 'If-Range': '"an-old-etag"' });
    t.equal(old.status, 200, 'an old ETag: 200');
    t.ok(old.body.equals(data), 'whole');

    const dated = await get({ Range: range, 'If-Range': headers['last-modified'] });
    t.equal(dated.status, 206, 'the current Last-Modified: 206');
    const earlier = await get({
      Range: range,
      'If-Range': new Date((MTIME - 86400) * 1000).toUTCString(),
    });
    t.equal(earlier.status, 200, 'an earlier date: 200 whole');
    t.ok(earlier.body.equals(data));
  },
);

t.test('If-Match: 412 when it fails', async (t) => {
  const { get, data } = await withFile(t);
  const etag = (await get()).headers.etag;
  for (const ifMatch of ['"nope"', `W/${etag}`]) {
    const res = await get({ 'If-Match': ifMatch });
    t.equal(res.status, 412, `If-Match: ${ifMatch}: 412`);
    const body = errorBody(res);
    t.ok(body, `If-Match: ${ifMatch}: a JSON {code, message} body`);
  }
  for (const ifMatch of [etag, '*', `"nope", ${etag}`]) {
    const res = await get({ 'If-Match': ifMatch });
    t.equal(res.status, 200, `If-Match: ${ifMatch}: 200`);
    t.ok(res.body.equals(data));
  }
});

t.test('the ETag changes when the file is replaced with same size and mtime', async (t) => {
  const s = await startServer(t);
  const path = join(s.root, 'e.mp4');
  const first = content(500, 1);
  const second = content(500, 2);
  await s.put('e.mp4', first, MTIME);
  const get = (headers: Record<string, string> = {}) => s.req({ target: '/media/e.mp4', headers });
  const before = await get();
  t.equal((await get()).headers.etag, before.headers.etag, 'stable while nothing changes');

  await writeFile(path, second); // what cp -p and rsync -t do: new bytes, old mtime
  await utimes(path, MTIME, MTIME);
  const after = await get();
  t.ok(after.body.equals(second), 'the new bytes');
  t.equal(after.headers['last-modified'], before.headers['last-modified'], 'same Last-Modified');
  t.equal(after.headers['content-length'], before.headers['content-length'], 'same size');
  t.not(after.headers.etag, before.headers.etag, 'but another ETag');

  const inm = await get({ 'If-None-Match': before.headers.etag });
  t.equal(inm.status, 200, 'the old ETag is not fresh');
  t.ok(inm.body.equals(second));
  const ifRange = await get({ Range: 'bytes=0-9', 'If-Range': before.headers.etag });
  t.equal(ifRange.status, 200, 'If-Range with the old ETag: 200 whole');
  t.ok(ifRange.body.equals(second));
});

t.test('unknown file, folders, invisible files: 404 NOT_FOUND', async (t) => {
  const s = await startServer(t);
  await s.put('dir.mp4/inner.mp4', 'x'); // a folder whose name looks like media
  await s.put('notes.txt', 'secret text');
  for (const target of ['/media/nope.mp4', '/media/dir.mp4', '/media/dir.mp4/nope.mp4']) {
    for (const method of ['GET', 'HEAD']) {
      const res = await s.req({ method, target });
      t.equal(res.status, 404, `${method} ${target}: 404`);
      if (method === 'GET') t.equal(errorBody(res)?.code, 'NOT_FOUND', `${target}: NOT_FOUND`);
      t.notOk(res.headers.etag, `${method} ${target}: no ETag on an error`);
    }
  }
  const txt = await s.req({ target: '/media/notes.txt' });
  t.equal(txt.status, 415, 'a non-media extension: 415');
  t.equal(errorBody(txt)?.code, 'UNSUPPORTED_TYPE');
  t.notMatch(txt.body.toString(), /secret/, 'its bytes are not served');
});
