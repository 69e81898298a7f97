/**
 * The HTTP door's contract (spec/http.md), paths and listings, black box on real sockets:
 * names percent-encoded per segment and compared byte for byte, every traversal form refused
 * with BAD_NAME and nothing outside the root touched, /api/list as JSON and M3U, the page,
 * unknown paths, wrong methods and the JSON error body.
 */
import t from 'tap';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadWebAssets } from '../../lib/web-assets.js';
import {
  checkHead,
  content,
  errorBody,
  mediaPath,
  request,
  startServer,
  type HttpResponse,
} from '../helpers/http-client.js';
import { ROOT } from '../helpers/paths.js';

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

interface Listing {
  count: number;
  entries: { type: string; name: string; size: number; mtime: string }[];
}

function listing(res: HttpResponse): Listing {
  return JSON.parse(res.body.toString('utf8')) as Listing;
}

t.test('names with # ? , % [ ] and spaces, non-ASCII: encoded per segment, served', async (t) => {
  const s = await startServer(t);
  const names = [
    'a #1.mp4',
    'what?.mp3',
    'Crosby, Stills & Nash.mp3',
    '100% pure.flac',
    '%3a.jpg', // a literal percent sign followed by 3a: the URL carries %253a
    '[live] [2001].mkv',
    'with space/and [brackets]/t#?,%.ogg',
    'Café/東京 🎵.m4a',
    "semi;colon=eq&amp+plus'quote.webm",
  ];
  let seed = 0;
  const data = new Map(names.map((name) => [name, content(100 + seed, seed++)]));
  for (const [name, bytes] of data) await s.put(name, bytes);
  for (const [name, bytes] of data) {
    const res = await s.req({ target: mediaPath(name) });
    checkHead(t, res, `${name}: `);
    t.equal(res.status, 200, `${JSON.stringify(name)}: 200`);
    t.ok(res.body.equals(bytes), `${JSON.stringify(name)}: its own bytes`);
  }
  // Upper- and lower-case hex in escapes decode the same.
  const lower = await s.req({ target: '/media/Caf%c3%a9/%e6%9d%b1%e4%ba%ac%20%f0%9f%8e%b5.m4a' });
  t.equal(lower.status, 200, 'lower-case hex escapes');
  // The query is not part of the name; an encoded ? is.
  await s.put('q.mp4', 'question');
  const query = await s.req({ target: '/media/q.mp4?x=1' });
  t.equal(query.status, 200, 'a query string after the name');
  t.equal(query.body.toString(), 'question');
  await s.put('q?x=1.mp4', 'in the name');
  const encoded = await s.req({ target: '/media/q%3Fx=1.mp4' });
  t.equal(encoded.status, 200, 'an encoded ? is part of the name');
  t.equal(encoded.body.toString(), 'in the name');
  const typed = await s.req({ target: '/media/q.mp4%3Fx=1' });
  t.equal(typed.status, 415, 'q.mp4?x=1 as a name has no media extension: 415');
});

t.test('NFC and NFD are two distinct files, compared byte for byte', async (t) => {
  const s = await startServer(t);
  const nfc = 'caf\u00e9.mp3';
  const nfd = 'cafe\u0301.mp3';
  await s.put(nfc, 'composed');
  const missing = await s.req({ target: mediaPath(nfd) });
  t.equal(missing.status, 404, 'the NFD name is not found while only NFC exists');
  const put = await s.req({ method: 'PUT', target: mediaPath(nfd), body: 'decomposed' });
  t.equal(put.status, 201, 'PUT of the NFD name creates a second file (not 409)');
  t.equal((await s.req({ target: mediaPath(nfc) })).body.toString(), 'composed');
  t.equal((await s.req({ target: mediaPath(nfd) })).body.toString(), 'decomposed');
  const names = listing(await s.req({ target: '/api/list' })).entries.map((e) => e.name);
  t.same(names.sort(byteOrder), [nfd, nfc].sort(byteOrder), 'both listed, as their own bytes');
  t.same(
    (await readdir(s.root)).sort(byteOrder),
    [nfc, nfd].sort(byteOrder),
    'on disk as two names',
  );
  // Case is not folded either.
  await s.put('Case.mp3', 'upper');
  t.equal((await s.req({ target: '/media/case.mp3' })).status, 404, 'no case folding');
});

t.test('traversal and bad names: 400 BAD_NAME, nothing outside the root', async (t) => {
  const s = await startServer(t);
  // <base>/outside.mp4 is next to the root, <base>/media.
  await writeFile(join(s.base, 'outside.mp4'), 'OUTSIDE');
  await s.put('dir/a.mp4', 'inside');
  await s.put('.hidden.mp4', 'hidden');
  await s.put('dir/.hid/a.mp4', 'hidden too');
  const before = (await readdir(s.base)).sort();
  const bad = [
    '/media/../outside.mp4',
    '/media/dir/../../outside.mp4',
    '/media/%2e%2e/outside.mp4',
    '/media/%2E%2E/outside.mp4',
    '/media/.%2e/outside.mp4',
    '/media/%2e./outside.mp4',
    '/media/..%2Foutside.mp4',
    '/media/..%2foutside.mp4',
    '/media/dir%2Fa.mp4', // %2F inside a segment is never a separator
    '/media/dir%2fa.mp4',
    '/media/..%5Coutside.mp4', // encoded backslash
    '/media/dir%5Ca.mp4',
    '/media/%5C..%5Coutside.mp4',
    '/media/.hidden.mp4',
    '/media/%2Ehidden.mp4',
    '/media/dir/.hid/a.mp4',
    '/media/./dir/a.mp4',
    '/media/dir/./a.mp4',
    '/media//dir/a.mp4', // an empty segment
    '/media/dir//a.mp4',
    '/media/%2Fdir/a.mp4', // a leading slash in the name
    '/media/a%00b.mp4',
    '/media/a%00.mp4%00.txt',
    '/media/a%0Ab.mp4',
    '/media/a%0D%0AX-Injected:%201.mp4',
    '/media/a%1Fb.mp4',
    '/media/a%7Fb.mp4',
    '/media/%FF.mp4', // not UTF-8
    '/media/caf%E9.mp4', // latin-1, not UTF-8
    '/media/%C3%28.mp4',
    '/media/%C0%AE%C0%AE/outside.mp4', // overlong dots
    '/media/%ED%A0%80.mp4', // a lone surrogate
    `/media/${'x'.repeat(256)}.mp4`, // a segment over 255 bytes
    `/media/${Array.from({ length: 6 }, () => 'y'.repeat(200)).join('/')}.mp4`, // over 1024
  ];
  for (const target of bad) {
    for (const method of ['GET', 'HEAD', 'PUT']) {
      const res = await s.req({
        method,
        target,
        body: method === 'PUT' ? 'EVIL' : undefined,
      });
      const what = `${method} ${target.slice(0, 60)}: `;
      t.equal(res.status, 400, `${what}400`);
      if (method !== 'HEAD') t.equal(errorBody(res)?.code, 'BAD_NAME', `${what}BAD_NAME`);
      t.notMatch(res.body.toString('latin1'), /OUTSIDE|inside|hidden/, `${what}no file bytes`);
      t.notOk(
        res.rawHeaders.some(([name]) => /injected/i.test(name)),
        `${what}no injection`,
      );
    }
  }
  t.same((await readdir(s.base)).sort(), before, 'nothing created or changed next to the root');
  t.equal(await readFile(join(s.base, 'outside.mp4'), 'utf8'), 'OUTSIDE', 'outside untouched');
  t.equal(await readFile(join(s.root, 'dir/a.mp4'), 'utf8'), 'inside', 'dir/a.mp4 untouched');
  t.same(await s.temps(), [], 'no temporary left');
  const names = listing(await s.req({ target: '/api/list' })).entries.map((e) => e.name);
  t.same(names, ['dir/a.mp4'], 'the catalog is what it was');
  // Broken percent-escapes are refused too (the code may be BAD_NAME or BAD_REQUEST).
  for (const target of ['/media/a%zz.mp4', '/media/a%.mp4', '/media/a%4.mp4']) {
    const res = await s.req({ target });
    t.equal(res.status, 400, `${target}: 400`);
    t.match(errorBody(res)?.code ?? '', /^(BAD_NAME|BAD_REQUEST)$/, `${target}: code`);
  }
});

t.test('a symbolic link leading outside the root is invisible', async (t) => {
  const s = await startServer(t);
  await writeFile(join(s.base, 'outside.mp4'), 'OUTSIDE');
  await symlink(join(s.base, 'outside.mp4'), join(s.root, 'link.mp4'));
  const res = await s.req({ target: '/media/link.mp4' });
  t.equal(res.status, 404, 'GET: 404');
  t.equal(errorBody(res)?.code, 'NOT_FOUND');
  t.same(listing(await s.req({ target: '/api/list' })).entries, [], 'not listed');
});

t.test('a folder link leading outside the root: no PUT or GET through it', async (t) => {
  const s = await startServer(t);
  const outside = join(s.base, 'outside-dir');
  await mkdir(outside);
  await writeFile(join(outside, 'there.mp4'), 'OUTSIDE');
  await symlink(outside, join(s.root, 'link'));
  const get = await s.req({ target: '/media/link/there.mp4' });
  t.equal(get.status, 404, 'GET through the link: 404');
  t.notMatch(get.body.toString(), /OUTSIDE/);
  const put = await s.req({ method: 'PUT', target: '/media/link/new.mp4', body: 'escaped' });
  t.ok(put.status >= 400 && put.status < 500, `PUT through the link is refused (${put.status})`);
  t.ok(errorBody(put), 'with a JSON {code, message} body');
  t.same(await readdir(outside), ['there.mp4'], 'nothing written outside the root');
  const deep = await s.req({ method: 'PUT', target: '/media/link/sub/new.mp4', body: 'escaped' });
  t.ok(deep.status >= 400 && deep.status < 500, `PUT below the link is refused (${deep.status})`);
  t.same(await readdir(outside), ['there.mp4'], 'no folder created outside the root');
});

t.test('/api/list: JSON shape, UTF-8 byte order, mtime, ?type', async (t) => {
  const s = await startServer(t);
  const empty = await s.req({ target: '/api/list' });
  t.equal(empty.status, 200);
  t.same(listing(empty), { count: 0, entries: [] }, 'an empty catalog');

  const files: Record<string, [string, number]> = {
    'b.mp4': ['video', 10],
    'a.mp3': ['music', 3],
    'Z.jpg': ['picture', 5],
    'é.png': ['picture', 1],
    'dir/c.mkv': ['video', 7],
    'dir sub/d.flac': ['music', 2],
    '\uff41.mp3': ['music', 4], // fullwidth a: EF BD 81 in UTF-8, U+FF41 in UTF-16
    '😀.mp3': ['music', 6], // F0 9F 98 80 in UTF-8, but D83D DE00 in UTF-16: sorts first there
    'x.JPEG': ['picture', 8],
  };
  let i = 0;
  for (const [name, [, size]] of Object.entries(files)) {
    await s.put(name, content(size), 1_700_000_000 + i++ + 0.123);
  }
  await s.put('notes.txt', 'not media');
  await s.put('.hidden.mp4', 'hidden');
  await s.put('.ioe-upload-leftover.tmp', 'temp');

  const res = await s.req({ target: '/api/list' });
  checkHead(t, res);
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^application\/json\b/, 'application/json');
  const list = listing(res);
  t.equal(list.count, Object.keys(files).length, 'count');
  t.equal(list.entries.length, list.count, 'count matches the entries');
  const expected = Object.keys(files).sort(byteOrder);
  t.same(
    list.entries.map((e) => e.name),
    expected,
    'sorted by the UTF-8 bytes of the name (not UTF-16)',
  );
  i = 0;
  const mtimes = new Map(
    Object.keys(files).map((name) => [name, new Date((1_700_000_000 + i++ + 0.123) * 1000)]),
  );
  for (const entry of list.entries) {
    t.same(Object.keys(entry).sort(), ['mtime', 'name', 'size', 'type'], `${entry.name}: fields`);
    t.equal(entry.type, files[entry.name][0], `${entry.name}: type`);
    t.equal(entry.size, files[entry.name][1], `${entry.name}: size`);
    t.match(entry.mtime, ISO_MS, `${entry.name}: ISO 8601 UTC with milliseconds`);
    t.equal(entry.mtime, mtimes.get(entry.name)!.toISOString(), `${entry.name}: the file's mtime`);
  }
  for (const type of ['video', 'music', 'picture']) {
    const typed = listing(await s.req({ target: `/api/list?type=${type}` }));
    const names = expected.filter((name) => files[name][0] === type);
    t.same(
      typed.entries.map((e) => e.name),
      names,
      `?type=${type}: only ${type}, in order`,
    );
    t.equal(typed.count, names.length, `?type=${type}: count`);
  }
  for (const target of ['/api/list?type=movies', '/api/list?type=', '/api/list?type=txt']) {
    const bad = await s.req({ target });
    t.equal(bad.status, 400, `${target}: 400`);
    t.equal(errorBody(bad)?.code, 'BAD_REQUEST', `${target}: BAD_REQUEST`);
  }
  const head = await s.req({ method: 'HEAD', target: '/api/list' });
  t.equal(head.status, 200, 'HEAD /api/list');
  t.equal(head.body.length, 0);
});

t.test('never stale: files changed on disk show at once in /api/list and GET', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'one');
  const names = async () =>
    listing(await s.req({ target: '/api/list' })).entries.map((e) => [e.name, e.size]);
  t.same(await names(), [['a.mp4', 3]]);
  const etag = (await s.req({ target: '/media/a.mp4' })).headers.etag;
  await s.put('b.mp3', 'two!');
  t.same(
    await names(),
    [
      ['a.mp4', 3],
      ['b.mp3', 4],
    ],
    'a file added on disk is listed at once',
  );
  await s.put('a.mp4', 'longer now');
  t.same(
    await names(),
    [
      ['a.mp4', 10],
      ['b.mp3', 4],
    ],
    'a changed size is listed at once',
  );
  const changed = await s.req({ target: '/media/a.mp4', headers: { 'If-None-Match': etag } });
  t.equal(changed.status, 200, 'the old ETag no longer matches');
  t.equal(changed.body.toString(), 'longer now');
  await rm(join(s.root, 'b.mp3'));
  t.same(await names(), [['a.mp4', 10]], 'a file removed on disk is gone at once');
  t.equal((await s.req({ target: '/media/b.mp3' })).status, 404, 'and GET is 404');
});

t.test('/api/list?format=m3u: an extended M3U of absolute /media URLs that play', async (t) => {
  const s = await startServer(t);
  const names = ['b.mp4', 'a #1?.mp3', 'dir/[x], 100%.flac', 'Café/東京.ogg', 'p.jpg'];
  for (const name of names) await s.put(name, `bytes of ${name}`);
  for (const query of ['format=m3u', 'format=m3u&type=music', 'type=music&format=m3u']) {
    const res = await s.req({ target: `/api/list?${query}` });
    checkHead(t, res, `${query}: `);
    t.equal(res.status, 200, `${query}: 200`);
    const text = res.body.toString('utf8');
    const lines = text.split(/\r?\n/).filter((line) => line !== '');
    t.equal(lines[0], '#EXTM3U', `${query}: starts with #EXTM3U`);
    const urls = lines.filter((line) => !line.startsWith('#'));
    const wanted = names
      .filter((name) => !query.includes('type=music') || /\.(mp3|flac|ogg)$/.test(name))
      .sort(byteOrder);
    t.equal(urls.length, wanted.length, `${query}: one URL per entry`);
    t.equal(
      lines.filter((line) => line.startsWith('#EXTINF')).length,
      wanted.length,
      `${query}: one #EXTINF per entry`,
    );
    const got: string[] = [];
    for (const url of urls) {
      t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/media\//, `${url}: an absolute /media URL`);
      t.match(url, /^[\x21-\x7e]+$/, `${url}: ASCII, escaped`);
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        t.fail(`${url} is not a URL`);
        continue;
      }
      t.equal(parsed.port, String(s.httpPort), `${url}: the HTTP door's port`);
      t.equal(parsed.hash, '', `${url}: no fragment (# escaped)`);
      t.equal(parsed.search, '', `${url}: no query (? escaped)`);
      const name = parsed.pathname.slice('/media/'.length).split('/').map(decodeURIComponent);
      got.push(name.join('/'));
      // What VLC does with it: GET the URL as it is.
      const played = await request(s.httpPort, { target: parsed.pathname });
      t.equal(played.status, 200, `${url}: plays`);
      t.equal(played.body.toString(), `bytes of ${name.join('/')}`, `${url}: its bytes`);
    }
    t.same(got, wanted, `${query}: the catalog's names, in order`);
  }
  const bad = await s.req({ target: '/api/list?format=m3u&type=nope' });
  t.equal(bad.status, 400, 'M3U with an unknown type: 400');
});

t.test('unknown paths are 404, with a JSON error body', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'x');
  for (const target of [
    '/nope',
    '/api',
    '/api/',
    '/api/list/extra',
    '/api/lists',
    '/media',
    '/mediax/a.mp4',
    '/MEDIA/a.mp4',
    '/assets/nope.js',
    '/a.mp4',
    '/index.html/../media/a.mp4',
  ]) {
    const res = await s.req({ target });
    checkHead(t, res, `${target}: `);
    t.equal(res.status, 404, `${target}: 404`);
    const body = errorBody(res);
    t.equal(body?.code, 'NOT_FOUND', `${target}: {"code": "NOT_FOUND", "message"}`);
    t.match(res.headers['content-type'], /^application\/json\b/, `${target}: JSON`);
  }
});

t.test('a method a path does not support: 405 with Allow', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'x');
  const cases: [string, string, string[]][] = [
    ['DELETE', '/media/a.mp4', ['GET', 'HEAD', 'PUT']],
    ['POST', '/media/a.mp4', ['GET', 'HEAD', 'PUT']],
    ['PATCH', '/media/a.mp4', ['GET', 'HEAD', 'PUT']],
    ['POST', '/api/list', ['GET', 'HEAD']],
    ['PUT', '/api/list', ['GET', 'HEAD']],
    ['DELETE', '/api/list', ['GET', 'HEAD']],
  ];
  for (const [method, target, allowed] of cases) {
    const res = await s.req({ method, target, body: method === 'GET' ? undefined : 'x' });
    checkHead(t, res, `${method} ${target}: `);
    t.equal(res.status, 405, `${method} ${target}: 405`);
    const allow = (res.headers.allow ?? '').split(/\s*,\s*/).filter(Boolean);
    for (const verb of allowed)
      t.ok(allow.includes(verb), `${method} ${target}: Allow has ${verb}`);
    t.notOk(allow.includes(method), `${method} ${target}: Allow lacks ${method}`);
    t.ok(errorBody(res), `${method} ${target}: a JSON {code, message} body`);
  }
  t.equal((await s.req({ target: '/media/a.mp4' })).status, 200, 'the file is still there');
});

t.test('the page at / (served by the server, no external resources)', async (t) => {
  const assets = await loadWebAssets({ page: join(ROOT, 'scripts/web') });
  const s = await startServer(t, { webAssets: assets });
  const res = await s.req({ target: '/' });
  checkHead(t, res);
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^text\/html/);
  const html = res.body.toString('utf8');
  t.match(html, /<html/i);
  // The browser itself refuses anything from elsewhere, whatever a page or a file name holds.
  const policy = String(res.headers['content-security-policy'] ?? '');
  t.match(policy, /default-src 'self'/, 'a Content-Security-Policy limits the page to itself');
  t.notMatch(policy, /https?:|\*|'unsafe-inline'|'unsafe-eval'/, 'and allows nothing wider');
  t.match(policy, /frame-ancestors 'none'/, 'and cannot be framed');
  t.notMatch(
    html,
    /(?:src|href)\s*=\s*["']?(?:https?:)?\/\/|@import\s+url\(\s*["']?(?:https?:)?\/\//i,
    'no external resource (CDN, font)',
  );
  // Every file the page loads is served by the server itself.
  const refs = [...html.matchAll(/(?:src|href)\s*=\s*"(\/[^"]*)"/gi)].map((m) => m[1]);
  for (const ref of new Set(refs)) {
    const asset = await s.req({ target: ref });
    t.equal(asset.status, 200, `${ref}: 200`);
  }
  const put = await s.req({ method: 'PUT', target: '/', body: 'x' });
  t.equal(put.status, 405, 'PUT /: 405');
});
