/**
 * The HTTP door's contract (spec/http.md), PUT /media/<name> and the cross-site rules, black
 * box on real sockets: the receipt (201, Location, ETag, Repr-Digest, JSON), no clobber, If-None-
 * Match: *, --overwrite, Content-Digest, 411 / 413 / 403 / 507, the protocol's WRITE check
 * order, Expect: 100-continue, LOCKED, Origin, Host (DNS rebinding) and no CORS.
 */
import t from 'tap';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildRequest,
  checkHead,
  content,
  errorBody,
  eventually,
  HttpConn,
  mediaPath,
  sha256,
  sleep,
  startServer,
  type Started,
} from '../helpers/http-client.js';

const STRONG_ETAG = /^"[\x21\x23-\x7e\x80-\xff]*"$/;

/** `sha-256=:<base64>:` (RFC 9530). */
function digestField(data: Buffer | string): string {
  return `sha-256=:${sha256(data).toString('base64')}:`;
}

async function onDisk(s: Started, name: string): Promise<string | undefined> {
  try {
    return await readFile(join(s.root, name), 'utf8');
  } catch {
    return undefined;
  }
}

t.test('PUT: 201 with Location, ETag, Repr-Digest and {name, size, sha256}', async (t) => {
  const s = await startServer(t);
  const cases: [string, Buffer][] = [
    ['new.mp4', content(1000)],
    ['deep/er/sub folder/x.mp3', content(10, 1)],
    ['Café/東京 #1 [x], 50%?.flac', content(77, 2)],
    ['empty.jpg', Buffer.alloc(0)],
  ];
  for (const [name, data] of cases) {
    const what = `${JSON.stringify(name)}: `;
    const res = await s.req({ method: 'PUT', target: mediaPath(name), body: data });
    checkHead(t, res, what);
    t.equal(res.status, 201, `${what}201 Created`);
    const location = res.headers.location ?? '';
    t.match(location, /^[\x21-\x7e]+$/, `${what}Location is ASCII (percent-encoded)`);
    const path = new URL(location, `http://127.0.0.1:${s.httpPort}`).pathname;
    t.equal(path, mediaPath(name), `${what}Location is /media/<name>, encoded per segment`);
    t.match(res.headers.etag, STRONG_ETAG, `${what}a strong ETag`);
    t.equal(res.headers['repr-digest'], digestField(data), `${what}Repr-Digest sha-256=:b64:`);
    t.match(res.headers['content-type'], /^application\/json\b/, `${what}JSON`);
    t.same(
      JSON.parse(res.body.toString('utf8')),
      { name, size: data.length, sha256: sha256(data).toString('hex') },
      `${what}the receipt`,
    );
    t.ok((await readFile(join(s.root, name))).equals(data), `${what}stored`);
    const get = await s.req({ target: path });
    t.equal(get.status, 200, `${what}GET the Location: 200`);
    t.ok(get.body.equals(data), `${what}the bytes`);
    t.equal(get.headers.etag, res.headers.etag, `${what}the next GET carries the PUT's ETag`);
    const head = await s.req({ method: 'HEAD', target: path });
    t.equal(head.headers.etag, res.headers.etag, `${what}and HEAD too`);
  }
  t.same(await s.temps(), [], 'no temporary left');
});

t.test('no clobber: 409 on an existing name, 412 with If-None-Match: *', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'original');
  const plain = await s.req({ method: 'PUT', target: '/media/a.mp4', body: 'replacement' });
  t.equal(plain.status, 409, '409');
  t.equal(errorBody(plain)?.code, 'EXISTS', 'EXISTS');
  const inm = await s.req({
    method: 'PUT',
    target: '/media/a.mp4',
    headers: { 'If-None-Match': '*' },
    body: 'replacement',
  });
  t.equal(inm.status, 412, 'If-None-Match: * on an existing name: 412');
  t.equal(errorBody(inm)?.code, 'EXISTS', 'with the code EXISTS');
  t.equal(await onDisk(s, 'a.mp4'), 'original', 'untouched');

  const fresh = await s.req({
    method: 'PUT',
    target: '/media/b.mp4',
    headers: { 'If-None-Match': '*' },
    body: 'new',
  });
  t.equal(fresh.status, 201, 'If-None-Match: * on a new name: 201');

  // EXISTS also when the target is a folder or a parent is a file.
  await s.put('folder.mp4/in.mp4', 'x');
  const folder = await s.req({ method: 'PUT', target: '/media/folder.mp4', body: 'x' });
  t.equal(folder.status, 409, 'the target is a folder: 409');
  t.equal(errorBody(folder)?.code, 'EXISTS');
  const parent = await s.req({ method: 'PUT', target: '/media/a.mp4/b.mp4', body: 'x' });
  t.equal(parent.status, 409, 'a parent is a file: 409');
  t.equal(errorBody(parent)?.code, 'EXISTS');
  t.equal(await onDisk(s, 'a.mp4'), 'original', 'still untouched');
  t.same(await s.temps(), [], 'no temporary left');
});

t.test('--overwrite: 200 with the same receipt, replaced, a new ETag', async (t) => {
  const s = await startServer(t, { overwrite: true });
  const first = await s.req({ method: 'PUT', target: '/media/a.mp4', body: 'first version' });
  t.equal(first.status, 201, 'a new name: 201');
  const again = await s.req({ method: 'PUT', target: '/media/a.mp4', body: 'second version' });
  t.equal(again.status, 200, 'an existing name: 200');
  t.same(JSON.parse(again.body.toString()), {
    name: 'a.mp4',
    size: 14,
    sha256: sha256('second version').toString('hex'),
  });
  t.equal(again.headers['repr-digest'], digestField('second version'));
  t.not(again.headers.etag, first.headers.etag, 'another ETag');
  const get = await s.req({ target: '/media/a.mp4' });
  t.equal(get.body.toString(), 'second version', 'replaced');
  t.equal(get.headers.etag, again.headers.etag, "GET carries the overwrite's ETag");
  const inm = await s.req({
    method: 'PUT',
    target: '/media/a.mp4',
    headers: { 'If-None-Match': '*' },
    body: 'third',
  });
  t.equal(inm.status, 412, 'If-None-Match: * still refuses an existing name');
  t.equal(await onDisk(s, 'a.mp4'), 'second version', 'and the file is not replaced');
});

t.test(
  'Content-Digest: right is stored, wrong is 400 DIGEST_MISMATCH, nothing stored',
  async (t) => {
    const s = await startServer(t, { overwrite: true });
    const data = content(5000);
    const right = await s.req({
      method: 'PUT',
      target: '/media/ok.mp4',
      headers: { 'Content-Digest': digestField(data) },
      body: data,
    });
    t.equal(right.status, 201, 'the right digest: 201');
    t.ok((await readFile(join(s.root, 'ok.mp4'))).equals(data));

    const wrong = await s.req({
      method: 'PUT',
      target: '/media/bad.mp4',
      headers: { 'Content-Digest': digestField('something else') },
      body: data,
    });
    t.equal(wrong.status, 400, 'a wrong digest: 400');
    t.equal(errorBody(wrong)?.code, 'DIGEST_MISMATCH');
    t.equal(await onDisk(s, 'bad.mp4'), undefined, 'nothing stored');

    await s.put('keep.mp4', 'the original');
    const over = await s.req({
      method: 'PUT',
      target: '/media/keep.mp4',
      headers: { 'Content-Digest': digestField('not this') },
      body: 'a replacement',
    });
    t.equal(over.status, 400, 'a wrong digest over an existing file (--overwrite): 400');
    t.equal(await onDisk(s, 'keep.mp4'), 'the original', 'the existing file is untouched');
    const listed = await s.req({ target: '/api/list' });
    t.notMatch(listed.body.toString(), /bad\.mp4/, 'not listed');
    t.same(await s.temps(), [], 'no temporary left');
  },
);

t.test('Content-Length is required: 411 without it, and for a chunked body', async (t) => {
  const s = await startServer(t);
  const none = await s.req({ method: 'PUT', target: '/media/a.mp4' });
  t.equal(none.status, 411, 'no Content-Length, no body: 411');
  t.ok(errorBody(none), 'a JSON {code, message} body');

  const chunked = await s.req({
    method: 'PUT',
    target: '/media/b.mp4',
    headers: { 'Transfer-Encoding': 'chunked' },
    body: '5\r\nhello\r\n0\r\n\r\n',
  });
  t.equal(chunked.status, 411, 'Transfer-Encoding: chunked: 411');
  t.ok(errorBody(chunked), 'a JSON {code, message} body');
  t.equal(await onDisk(s, 'a.mp4'), undefined);
  t.equal(await onDisk(s, 'b.mp4'), undefined);
  t.same(await s.temps(), [], 'no temporary left');
});

t.test('--max-upload: 413 TOO_LARGE at once, the limit itself is fine', async (t) => {
  const s = await startServer(t, { maxUpload: 10 });
  const at = await s.req({ method: 'PUT', target: '/media/ten.mp4', body: '0123456789' });
  t.equal(at.status, 201, '10 bytes of 10: 201');
  // Announce 11 bytes and send none: the refusal must come before any byte.
  const conn = await HttpConn.connect(s.httpPort);
  t.teardown(() => conn.destroy());
  await conn.send(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/eleven.mp4',
      headers: { 'Content-Length': '11' },
    }),
  );
  const res = await conn.readResponse({ ms: 2000 });
  t.equal(res.status, 413, 'over the limit: 413, before the body');
  t.equal(errorBody(res)?.code, 'TOO_LARGE');
  t.equal(await onDisk(s, 'eleven.mp4'), undefined, 'nothing stored');
});

t.test('no space: 507 NO_SPACE before a byte is stored', async (t) => {
  const s = await startServer(t);
  const conn = await HttpConn.connect(s.httpPort);
  t.teardown(() => conn.destroy());
  await conn.send(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/huge.mkv',
      headers: { 'Content-Length': String(2 ** 53 - 1) }, // far more than any test disk
    }),
  );
  const res = await conn.readResponse({ ms: 2000 });
  t.equal(res.status, 507, '507 at once');
  t.equal(errorBody(res)?.code, 'NO_SPACE');
  t.same(await s.temps(), [], 'no temporary left');
});

t.test('--read-only: 403 READ_ONLY, and reads still work', async (t) => {
  const s = await startServer(t, { readOnly: true });
  await s.put('a.mp4', 'x');
  for (const target of ['/media/new.mp4', '/media/a.mp4']) {
    const res = await s.req({ method: 'PUT', target, body: 'data' });
    t.equal(res.status, 403, `${target}: 403`);
    t.equal(errorBody(res)?.code, 'READ_ONLY', `${target}: READ_ONLY`);
  }
  t.equal(await onDisk(s, 'new.mp4'), undefined);
  t.equal((await s.req({ target: '/media/a.mp4' })).status, 200);
});

t.test("the protocol's WRITE check order decides which refusal wins", async (t) => {
  const put = (s: Started, target: string, body = 'data', headers: Record<string, string> = {}) =>
    s.req({ method: 'PUT', target, body, headers });
  const ro = await startServer(t, { readOnly: true, maxUpload: 10 });
  await ro.put('a.mp4', 'x');
  const cases: [Started, string, string, number, string][] = [
    [ro, 'too large before read-only', '/media/new.mp4', 413, 'TOO_LARGE'],
    [ro, 'too large before a bad name', '/media/%2e%2e/x.mp4', 413, 'TOO_LARGE'],
    [ro, 'read-only before a bad name', '/media/%2e%2e/x.mp4', 403, 'READ_ONLY'],
    [ro, 'read-only before a hidden name', '/media/.x.mp4', 403, 'READ_ONLY'],
    [ro, 'read-only before an unsupported type', '/media/x.txt', 403, 'READ_ONLY'],
    [ro, 'read-only before exists', '/media/a.mp4', 403, 'READ_ONLY'],
  ];
  const rw = await startServer(t, { maxUpload: 10 });
  await rw.put('a.mp4', 'x');
  await rw.put('notes.txt', 'x');
  cases.push(
    [rw, 'too large before exists', '/media/a.mp4', 413, 'TOO_LARGE'],
    [rw, 'too large before an unsupported type', '/media/x.txt', 413, 'TOO_LARGE'],
    [rw, 'unsupported type before exists', '/media/notes.txt', 415, 'UNSUPPORTED_TYPE'],
    [rw, 'bad name (control char)', '/media/a%01.mp4', 400, 'BAD_NAME'],
  );
  for (const [s, what, target, status, code] of cases) {
    const body = what.startsWith('too large') ? 'x'.repeat(11) : 'data';
    const res = await put(s, target, body);
    t.equal(res.status, status, `${what}: ${status}`);
    t.equal(errorBody(res)?.code, code, `${what}: ${code}`);
  }
  t.same(await ro.temps(), []);
  t.same(await rw.temps(), []);
});

t.test('Expect: 100-continue gets 100 at once, or the refusal at once without 100', async (t) => {
  const s = await startServer(t, { maxUpload: 1000 });
  await s.put('exists.mp4', 'x');
  const head = (target: string, length: number) =>
    buildRequest(s.httpPort, {
      method: 'PUT',
      target,
      headers: { 'Content-Length': String(length), Expect: '100-continue' },
    });

  const conn = await HttpConn.connect(s.httpPort);
  t.teardown(() => conn.destroy());
  await conn.send(head('/media/ok.mp4', 5));
  const interim = await conn.readHead(1500);
  t.equal(interim.status, 100, 'a good upload: 100 Continue before the body');
  await conn.send('hello');
  const done = await conn.readResponse();
  t.equal(done.status, 201, 'then 201');
  t.equal(await onDisk(s, 'ok.mp4'), 'hello');

  const refusals: [string, number, number, string][] = [
    ['/media/exists.mp4', 5, 409, 'EXISTS'],
    ['/media/big.mp4', 5000, 413, 'TOO_LARGE'],
    ['/media/%2e%2e/x.mp4', 5, 400, 'BAD_NAME'],
    ['/media/x.txt', 5, 415, 'UNSUPPORTED_TYPE'],
  ];
  for (const [target, length, status, code] of refusals) {
    const c = await HttpConn.connect(s.httpPort);
    t.teardown(() => c.destroy());
    await c.send(head(target, length));
    const first = await c.readResponse({ ms: 1500 });
    t.equal(first.status, status, `${target}: the refusal ${status} at once, with no 100 first`);
    t.equal(errorBody(first)?.code, code, `${target}: ${code}`);
  }
  const ro = await startServer(t, { readOnly: true });
  const c = await HttpConn.connect(ro.httpPort);
  t.teardown(() => c.destroy());
  await c.send(
    buildRequest(ro.httpPort, {
      method: 'PUT',
      target: '/media/x.mp4',
      headers: { 'Content-Length': '5', Expect: '100-continue' },
    }),
  );
  const refused = await c.readResponse({ ms: 1500 });
  t.equal(refused.status, 403, 'read-only: 403 at once, with no 100 first');
});

t.test('a refused PUT never lets its body be read as a request', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'the file');
  const conn = await HttpConn.connect(s.httpPort);
  t.teardown(() => conn.destroy());
  const smuggled = buildRequest(s.httpPort, { target: '/api/list' });
  await conn.send(
    buildRequest(s.httpPort, { method: 'PUT', target: '/media/a.mp4', body: smuggled }),
  );
  const refused = await conn.readResponse();
  t.equal(refused.status, 409, '409');
  await sleep(100);
  if (conn.ended) {
    t.pass('the server closed the connection after the refusal');
    t.equal(conn.pending.length, 0, 'and answered nothing else');
    return;
  }
  await conn.send(buildRequest(s.httpPort, { target: '/media/a.mp4' }));
  const next = await conn.readResponse();
  t.equal(next.headers['content-type'], 'video/mp4', 'the next answer is to the next request');
  t.equal(next.body.toString(), 'the file');
});

t.test('LOCKED: a PUT while another PUT of the same name is in progress is 423', async (t) => {
  const s = await startServer(t);
  const first = await HttpConn.connect(s.httpPort);
  t.teardown(() => first.destroy());
  await first.send(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/busy.mp4',
      headers: { 'Content-Length': '10' },
    }),
  );
  await first.send('hello');
  await eventually(async () => (await s.temps()).length === 1, 'the upload to start');

  const second = await s.req({ method: 'PUT', target: '/media/busy.mp4', body: 'other data' });
  t.equal(second.status, 423, 'the second PUT: 423');
  t.equal(errorBody(second)?.code, 'LOCKED');
  const inm = await s.req({
    method: 'PUT',
    target: '/media/busy.mp4',
    headers: { 'If-None-Match': '*' },
    body: 'other data',
  });
  t.equal(inm.status, 423, 'LOCKED comes before EXISTS/412');
  t.equal((await s.req({ target: '/media/busy.mp4' })).status, 404, 'nothing visible yet');

  await first.send('world');
  const done = await first.readResponse();
  t.equal(done.status, 201, 'the first PUT completes');
  t.equal(await onDisk(s, 'busy.mp4'), 'helloworld', 'exactly the first upload');
  const after = await s.req({ method: 'PUT', target: '/media/busy.mp4', body: 'late' });
  t.equal(after.status, 409, 'then the name exists: 409');
  const other = await s.req({ method: 'PUT', target: '/media/other.mp4', body: 'x' });
  t.equal(other.status, 201, 'another name was never locked');
});

t.test('cross-site: no CORS ever, a foreign Origin cannot PUT, our own can', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'x');
  const own = `http://127.0.0.1:${s.httpPort}`;
  for (const origin of ['http://evil.example', 'null', 'http://127.0.0.1:1', 'https://127.0.0.1']) {
    const res = await s.req({
      method: 'PUT',
      target: '/media/evil.mp4',
      headers: { Origin: origin },
      body: 'evil',
    });
    checkHead(t, res, `Origin ${origin}: `);
    t.equal(res.status, 403, `PUT with Origin ${origin}: 403`);
    t.ok(errorBody(res), `Origin ${origin}: a JSON {code, message} body`);
  }
  t.equal(await onDisk(s, 'evil.mp4'), undefined, 'nothing stored');
  const ok = await s.req({
    method: 'PUT',
    target: '/media/mine.mp4',
    headers: { Origin: own },
    body: 'mine',
  });
  t.equal(ok.status, 201, 'our own origin: 201');
  const local = await s.req({
    method: 'PUT',
    target: '/media/local.mp4',
    headers: { Host: `localhost:${s.httpPort}`, Origin: `http://localhost:${s.httpPort}` },
    body: 'local',
  });
  t.equal(local.status, 201, 'our own origin by the name localhost: 201');

  for (const [method, target] of [
    ['OPTIONS', '/media/a.mp4'],
    ['OPTIONS', '/media/new.mp4'],
    ['OPTIONS', '/api/list'],
    ['OPTIONS', '*'],
    ['GET', '/media/a.mp4'],
    ['HEAD', '/media/a.mp4'],
    ['GET', '/api/list'],
  ]) {
    const res = await s.req({
      method,
      target,
      headers: {
        Origin: 'http://evil.example',
        'Access-Control-Request-Method': 'PUT',
        'Access-Control-Request-Headers': 'content-type, content-digest',
      },
    });
    checkHead(t, res, `${method} ${target} from a foreign origin: `);
    t.not(res.status, 0, `${method} ${target}: answered ${res.status}`);
  }
  const read = await s.req({ target: '/media/a.mp4', headers: { Origin: 'http://evil.example' } });
  t.equal(read.status, 200, 'a GET with a foreign Origin is served (the browser hides it)');
});

t.test('DNS rebinding: a Host that is not ours is 403', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'x');
  const p = s.httpPort;
  for (const host of [
    'evil.example',
    `evil.example:${p}`,
    `127.0.0.1.evil.example:${p}`,
    `localhost.evil.example:${p}`,
    `192.168.1.10:${p}`,
    `127.0.0.1:${p + 1 === 65536 ? p - 1 : p + 1}`,
    `localhost:1`,
    'localhost', // no port is port 80, not the bound one
  ]) {
    for (const [method, target] of [
      ['GET', '/media/a.mp4'],
      ['GET', '/api/list'],
      ['PUT', '/media/rebound.mp4'],
    ]) {
      const res = await s.req({
        method,
        target,
        headers: { Host: host },
        body: method === 'PUT' ? 'x' : undefined,
      });
      t.equal(res.status, 403, `${method} ${target} with Host ${host}: 403`);
      t.ok(errorBody(res), `Host ${host}: a JSON {code, message} body`);
    }
  }
  t.equal(await onDisk(s, 'rebound.mp4'), undefined, 'nothing stored');
  for (const host of [`localhost:${p}`, `127.0.0.1:${p}`, `[::1]:${p}`]) {
    const res = await s.req({ target: '/media/a.mp4', headers: { Host: host } });
    t.equal(res.status, 200, `Host ${host}: 200`);
  }
  const noHost = await s.req({ target: '/media/a.mp4', headers: { host: null } });
  t.equal(noHost.status, 400, 'no Host at all (HTTP/1.1): 400');
  t.equal(errorBody(noHost)?.code, 'BAD_REQUEST', 'with a JSON body, like every error');
  const twoHosts = await s.req({
    target: '/media/a.mp4',
    headers: { Host: `127.0.0.1:${p}`, host: 'evil.example' },
  });
  t.equal(twoHosts.status, 400, 'two Host headers: 400 (RFC 9112 §3.2)');
  t.equal(errorBody(twoHosts)?.code, 'BAD_REQUEST');
  // An absolute-form target names the host in place of the Host header (RFC 9112 §3.2.2).
  for (const method of ['GET', 'PUT']) {
    const foreign = await s.req({
      method,
      target: 'http://evil.example/media/absolute.mp4',
      body: method === 'PUT' ? 'x' : undefined,
    });
    t.equal(foreign.status, 403, `${method} http://evil.example/…, our own Host: 403`);
  }
  const own = await s.req({
    target: `http://127.0.0.1:${p}/media/a.mp4`,
    headers: { Host: 'evil.example' },
  });
  t.equal(own.status, 200, 'an absolute-form target of our own: 200, whatever Host says');
  const absoluteNoHost = await s.req({
    target: `http://127.0.0.1:${p}/media/a.mp4`,
    headers: { host: null },
  });
  t.equal(absoluteNoHost.status, 400, 'absolute form does not excuse HTTP/1.1 from a Host');
  const emptyHost = await s.req({ target: '/media/a.mp4', headers: { Host: '' } });
  t.equal(emptyHost.status, 400, 'an empty Host: 400');
  t.equal(own.body.toString(), 'x');
  t.equal(await onDisk(s, 'absolute.mp4'), undefined, 'nothing stored');
});

t.test(
  'PUT with If-Match / If-Unmodified-Since: 412 unless the file is the one named',
  async (t) => {
    const s = await startServer(t, { overwrite: true });
    const first = await s.req({ method: 'PUT', target: '/media/a.mp4', body: 'first' });
    const etag = first.headers.etag as string;
    const put = (headers: Record<string, string>, body: string, name = 'a.mp4') =>
      s.req({ method: 'PUT', target: `/media/${name}`, headers, body });

    const stale = await put({ 'If-Match': '"not-the-etag"' }, 'second');
    t.equal(stale.status, 412, 'If-Match with another ETag: 412');
    t.equal(errorBody(stale)?.code, 'PRECONDITION_FAILED');
    t.equal(await onDisk(s, 'a.mp4'), 'first', 'the file is untouched');
    t.same(await s.temps(), [], 'no temporary file left');
    const weak = await put({ 'If-Match': `W/${etag}` }, 'second');
    t.equal(weak.status, 412, 'a weak tag never matches (strong comparison)');
    const old = await put({ 'If-Unmodified-Since': 'Mon, 01 Jan 2001 00:00:00 GMT' }, 'second');
    t.equal(old.status, 412, 'If-Unmodified-Since before the file: 412');
    t.equal(await onDisk(s, 'a.mp4'), 'first', 'still untouched');

    const matched = await put({ 'If-Match': etag }, 'second');
    t.equal(matched.status, 200, 'If-Match with the current ETag: replaced (200)');
    t.equal(await onDisk(s, 'a.mp4'), 'second');
    const again = await put({ 'If-Match': etag }, 'third');
    t.equal(again.status, 412, 'the same If-Match after the replace: 412 (lost update)');
    t.equal(await onDisk(s, 'a.mp4'), 'second');
    const any = await put({ 'If-Match': '*' }, 'third');
    t.equal(any.status, 200, 'If-Match: * with a file there: replaced');
    const future = await put({ 'If-Unmodified-Since': 'Fri, 01 Jan 2100 00:00:00 GMT' }, 'fourth');
    t.equal(future.status, 200, 'If-Unmodified-Since after the file: replaced');
    t.equal(await onDisk(s, 'a.mp4'), 'fourth');

    const none = await put({ 'If-Match': '*' }, 'new', 'b.mp4');
    t.equal(none.status, 412, 'If-Match: * with no file of that name: 412');
    t.equal(await onDisk(s, 'b.mp4'), undefined, 'nothing stored');
    const noneSince = await put(
      { 'If-Unmodified-Since': 'Mon, 01 Jan 2001 00:00:00 GMT' },
      'new',
      'b.mp4',
    );
    t.equal(noneSince.status, 201, 'If-Unmodified-Since with no file: created (RFC 9110 §13.1.4)');
    t.same(await s.temps(), [], 'no temporary file left');
  },
);

t.test('a PUT stores exactly the bytes: a big binary body, durable before the reply', async (t) => {
  const s = await startServer(t);
  const data = content(3 * 1024 * 1024 + 17, 9);
  const res = await s.req({ method: 'PUT', target: '/media/big.mkv', body: data }, 10_000);
  t.equal(res.status, 201);
  t.equal(JSON.parse(res.body.toString()).sha256, sha256(data).toString('hex'));
  t.equal((await stat(join(s.root, 'big.mkv'))).size, data.length, 'whole on disk at the reply');
  t.same(
    (await readdir(s.root)).filter((n) => n.startsWith('.')),
    [],
    'no hidden left-over',
  );
});
