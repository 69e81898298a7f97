/**
 * The HTTP door's contract (spec/http.md), the parts shared with the TCP door and the hostile
 * or broken clients, black box on real sockets: WRITE and PUT lock each other out, what one
 * door publishes the other lists at once, a GET overlapping an overwrite, bodies cut short,
 * stalls and slow headers, huge headers and garbage, QUIT and FORCEQUIT, and connection limits
 * counted over both doors.
 */
import t from 'tap';
import { readdir, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { RawClient } from '../helpers/raw-client.js';
import {
  buildRequest,
  content,
  errorBody,
  eventually,
  HttpConn,
  sha256,
  sleep,
  startServer,
  within,
  type HttpResponse,
  type RequestSpec,
  type Started,
} from '../helpers/http-client.js';

const BIG = 16 * 1024 * 1024;

async function onDisk(s: Started, name: string): Promise<Buffer | undefined> {
  try {
    return await readFile(join(s.root, name));
  } catch {
    return undefined;
  }
}

/** The server still answers normally. */
async function stillServes(s: Started): Promise<boolean> {
  const res = await s.req({ target: '/api/list' });
  return res.status === 200 && Array.isArray(JSON.parse(res.body.toString()).entries);
}

/** One connection, and `requests` sent on it in one write: Node parses them all at once. */
async function pipelined(s: Started, requests: RequestSpec[]): Promise<HttpConn> {
  const conn = await HttpConn.connect(s.httpPort);
  await conn.send(Buffer.concat(requests.map((request) => buildRequest(s.httpPort, request))));
  return conn;
}

/** Opens a PUT, sends its head and `sent` bytes of a `size`-byte body, and holds. */
async function openPut(s: Started, name: string, size: number, sent: Buffer | string) {
  const conn = await HttpConn.connect(s.httpPort);
  await conn.send(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: `/media/${name}`,
      headers: { 'Content-Length': String(size) },
    }),
  );
  await conn.send(sent);
  await eventually(async () => (await s.temps()).length > 0, 'the upload to start');
  return conn;
}

t.test('a PUT in progress makes a TCP WRITE of the same name ERR LOCKED', async (t) => {
  const s = await startServer(t);
  const put = await openPut(s, 'x.mp4', 10, 'hello');
  t.teardown(() => put.destroy());
  const tcp = await RawClient.connect(s.tcpPort);
  t.teardown(() => tcp.destroy());
  await tcp.send('WRITE,x.mp4,5\nOTHER');
  t.match(await tcp.readLine(), /^ERR LOCKED\b/, 'ERR LOCKED');
  await put.send('world');
  t.equal((await put.readResponse()).status, 201, 'the PUT completes');
  t.equal((await onDisk(s, 'x.mp4'))?.toString(), 'helloworld', 'exactly the PUT');
  await tcp.send('WRITE,x.mp4,5\nOTHER');
  t.match(await tcp.readLine(), /^ERR EXISTS\b/, 'then ERR EXISTS');
});

t.test('a TCP WRITE in progress makes a PUT of the same name 423 LOCKED', async (t) => {
  const s = await startServer(t);
  const tcp = await RawClient.connect(s.tcpPort);
  t.teardown(() => tcp.destroy());
  await tcp.send('WRITE,y.mp4,10\nhello');
  await eventually(async () => (await s.temps()).length > 0, 'the WRITE to start');
  const res = await s.req({ method: 'PUT', target: '/media/y.mp4', body: 'other data' });
  t.equal(res.status, 423, '423');
  t.equal(errorBody(res)?.code, 'LOCKED');
  t.equal((await s.req({ target: '/media/y.mp4' })).status, 404, 'nothing visible yet');
  await tcp.send('world');
  t.equal(
    await tcp.readLine(),
    `OK 10 ${sha256('helloworld').toString('hex')}`,
    'the WRITE completes',
  );
  const get = await s.req({ target: '/media/y.mp4' });
  t.equal(get.body.toString(), 'helloworld', 'and is served over HTTP');
});

t.test('what one door publishes the other lists at once', async (t) => {
  const s = await startServer(t);
  const tcp = await RawClient.connect(s.tcpPort);
  t.teardown(() => tcp.destroy());
  await tcp.send('LIST\n');
  t.equal(await tcp.readLine(), 'OK 0', 'empty at first');
  const put = await s.req({ method: 'PUT', target: '/media/p.mp4', body: 'viaHTTP' });
  t.equal(put.status, 201);
  await tcp.send('LIST\n');
  t.equal(await tcp.readLine(), 'OK 1', 'TCP LIST right after the PUT');
  t.match(await tcp.readLine(), /^video\tp\.mp4\t7\t\d{4}-\d\d-\d\dT[\d:.]+Z/);

  await tcp.send('WRITE,music/w.mp3,6\nviaTCP');
  t.match(await tcp.readLine(), /^OK 6 /);
  const list = JSON.parse((await s.req({ target: '/api/list' })).body.toString());
  t.same(
    list.entries.map((e: { name: string }) => e.name),
    ['music/w.mp3', 'p.mp4'],
    'GET /api/list right after the WRITE',
  );
  const get = await s.req({ target: '/media/music/w.mp3' });
  t.equal(get.body.toString(), 'viaTCP', 'GET the WRITE');
  await tcp.send('HASH,p.mp4\n');
  t.equal(await tcp.readLine(), `OK ${sha256('viaHTTP').toString('hex')} 7`, 'HASH the PUT');
});

t.test('pipelined requests run in order: a GET right behind a PUT sees its file', async (t) => {
  const s = await startServer(t);
  // One write: Node parses all three before the PUT is answered.
  const conn = await pipelined(s, [
    { method: 'PUT', target: '/media/p.mp4', body: 'abc' },
    { target: '/media/p.mp4' },
    { method: 'PUT', target: '/media/p.mp4', body: 'xyz' },
  ]);
  t.teardown(() => conn.destroy());
  const put = await conn.readResponse();
  t.equal(put.status, 201, 'the PUT: 201');
  const get = await conn.readResponse();
  t.equal(get.status, 200, 'the GET behind it: 200');
  t.equal(get.body.toString(), 'abc', 'with the bytes the PUT stored');
  const again = await conn.readResponse();
  t.equal(again.status, 409, 'the second PUT: 409 EXISTS, not 423 LOCKED');
  t.equal(errorBody(again)?.code, 'EXISTS');
});

t.test('a client that half-closes after its requests gets every answer', async (t) => {
  const s = await startServer(t);
  const conn = await pipelined(s, [
    { method: 'PUT', target: '/media/h.mp4', body: 'half' },
    { target: '/media/h.mp4' },
  ]);
  t.teardown(() => conn.destroy());
  conn.end(); // no more requests: the sending side is shut
  const put = await conn.readResponse();
  t.equal(put.status, 201, 'the PUT is answered, and stored');
  const get = await conn.readResponse();
  t.equal(get.status, 200, 'the GET behind it too');
  t.equal(get.body.toString(), 'half');
  await conn.waitClose(5000);
  t.pass('then the server closes the connection');
  t.equal((await s.req({ target: '/media/h.mp4' })).body.toString(), 'half');
});

t.test('after a Connection: close answer, pipelined requests are never run', async (t) => {
  const s = await startServer(t);
  await s.put('taken.mp4', 'abc');
  await s.put('big.mp4', content(4 * 1024 * 1024));
  const openFiles = async () => (await readdir('/proc/self/fd')).length;
  const before = await openFiles();
  for (let i = 0; i < 10; i++) {
    // Refused before 100 Continue: answered with Connection: close (then a GET behind it).
    const conn = await pipelined(s, [
      {
        method: 'PUT',
        target: '/media/taken.mp4',
        headers: { Expect: '100-continue', 'If-None-Match': '*', 'Content-Length': '3' },
        body: 'xyz',
      },
      { target: '/media/big.mp4' },
      { method: 'PUT', target: '/media/behind.mp4', body: 'x' },
    ]);
    const refused = await conn.readResponse();
    t.equal(refused.status, 412, `round ${i}: the PUT is refused`);
    t.equal(refused.headers.connection, 'close');
    await conn.waitClose(5000);
    conn.destroy();
  }
  await sleep(200);
  t.ok((await openFiles()) <= before + 2, 'no file left open by a GET that was never answered');
  t.same(await s.temps(), [], 'no upload begun behind it');
  t.notOk((await s.req({ target: '/media/behind.mp4' })).status === 200, 'nothing stored');
  t.ok(await stillServes(s), 'the server goes on');
});

t.test(
  'bytes after a Connection: close request are ignored; its answer goes out whole',
  async (t) => {
    const s = await startServer(t);
    const body = content(2 * 1024 * 1024);
    await s.put('big.mp4', body);
    const conn = await HttpConn.connect(s.httpPort);
    t.teardown(() => conn.destroy());
    await conn.send(
      Buffer.concat([
        buildRequest(s.httpPort, { target: '/media/big.mp4', headers: { Connection: 'close' } }),
        Buffer.from('GET /media/big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n'),
      ]),
    );
    const res = await conn.readResponse();
    t.equal(res.status, 200, 'the GET is answered');
    t.ok(res.body.equals(body), 'whole, with nothing written into it');
  },
);

t.test('a GET that started before an overwrite gets the old bytes whole', async (t) => {
  const s = await startServer(t, { overwrite: true });
  const old = content(BIG, 1);
  const replacement = content(BIG, 2);
  await s.put('big.mkv', old);
  const get = await HttpConn.connect(s.httpPort);
  t.teardown(() => get.destroy());
  await get.send(buildRequest(s.httpPort, { target: '/media/big.mkv' }));
  const head = await get.readHead();
  t.equal(head.status, 200);
  get.pause(); // a slow player: the server is now mid-response, held by backpressure
  await sleep(100);

  const put = await s.req({ method: 'PUT', target: '/media/big.mkv', body: replacement }, 10_000);
  t.equal(put.status, 200, 'the overwrite completes meanwhile');
  get.resume();
  const body = await get.readBytes(Number(head.headers['content-length']), 10_000);
  t.ok(sha256(body).equals(sha256(old)), 'the GET delivers the old content whole');
  const again = await s.req({ target: '/media/big.mkv' }, 10_000);
  t.ok(sha256(again.body).equals(sha256(replacement)), 'a new GET gets the new content');
  t.not(again.headers.etag, head.headers.etag, 'with another ETag');
});

t.test('a file that shrinks mid-response ends the connection, never a short body', async (t) => {
  const s = await startServer(t);
  const old = content(BIG, 3);
  await s.put('shrink.mkv', old);
  const get = await HttpConn.connect(s.httpPort);
  t.teardown(() => get.destroy());
  await get.send(buildRequest(s.httpPort, { target: '/media/shrink.mkv' }));
  const head = await get.readHead();
  const length = Number(head.headers['content-length']);
  t.equal(length, BIG);
  get.pause();
  await sleep(100);
  await truncate(join(s.root, 'shrink.mkv'), 1000);
  get.resume();
  const rest = await get.waitClose(5000).catch(() => undefined);
  if (rest === undefined) {
    t.fail('the connection neither completed nor closed within 5 s');
    return;
  }
  t.ok(rest.length <= length, 'never more than announced');
  t.ok(rest.equals(old.subarray(0, rest.length)), 'what came is a prefix of the file');
  t.ok(rest.length < length, 'the connection ended before Content-Length: the client can tell');
  t.ok(await stillServes(s));
});

t.test('a body cut short or a client gone mid-PUT: nothing stored, no temp', async (t) => {
  const s = await startServer(t, { overwrite: true });
  await s.put('keep.mp4', 'the original');
  const ways: [string, (conn: HttpConn) => void][] = [
    ['half-close (FIN)', (conn) => conn.end()],
    ['close', (conn) => conn.destroy()],
    ['reset (RST)', (conn) => conn.reset()],
  ];
  for (const [how, cut] of ways) {
    for (const name of ['cut.mp4', 'keep.mp4']) {
      const conn = await openPut(s, name, 100, 'x'.repeat(50));
      cut(conn);
      await eventually(async () => (await s.temps()).length === 0, `${how}: temp deleted`);
      t.pass(`${how} ${name}: the temporary is deleted`);
      t.equal((await s.req({ target: `/media/${name}` })).status, name === 'cut.mp4' ? 404 : 200);
      if (name === 'keep.mp4') {
        t.equal((await onDisk(s, name))?.toString(), 'the original', `${how}: existing untouched`);
      } else {
        t.equal(await onDisk(s, name), undefined, `${how}: nothing published`);
      }
    }
  }
  const retry = await s.req({ method: 'PUT', target: '/media/cut.mp4', body: 'whole' });
  t.equal(retry.status, 201, 'the name is not left locked');
  t.ok(await stillServes(s));
});

t.test('a big upload cut short (dufs keeps those of 20 MB or more): no temp left', async (t) => {
  const s = await startServer(t);
  const conn = await openPut(s, 'large.mkv', 32 * 1024 * 1024, content(24 * 1024 * 1024, 5));
  await eventually(
    async () => {
      const temps = await s.temps();
      return temps.length === 1 && (await stat(temps[0])).size > 20 * 1024 * 1024;
    },
    'more than 20 MB received',
    10_000,
  );
  conn.reset();
  await eventually(async () => (await s.temps()).length === 0, 'the temporary deleted');
  t.pass('the temporary is deleted');
  t.equal(await onDisk(s, 'large.mkv'), undefined, 'nothing published');
});

t.test('racing PUTs of one name: exactly one wins, the file is exactly its upload', async (t) => {
  const s = await startServer(t);
  const bodies = Array.from({ length: 8 }, (_, i) => content(256 * 1024, 10 + i));
  const results = await Promise.all(
    bodies.map((body) => s.req({ method: 'PUT', target: '/media/race.mp4', body }, 10_000)),
  );
  const statuses = results.map((res) => res.status);
  t.equal(statuses.filter((status) => status === 201).length, 1, `one 201 (${statuses})`);
  t.ok(
    statuses.every((status) => [201, 409, 423].includes(status)),
    'the others 409 or 423',
  );
  const winner = results.findIndex((res) => res.status === 201);
  const stored = await onDisk(s, 'race.mp4');
  t.ok(stored && stored.equals(bodies[winner]), "the stored file is exactly the winner's");
  t.same(await s.temps(), []);

  // And across the doors at once.
  const tcp = await RawClient.connect(s.tcpPort);
  t.teardown(() => tcp.destroy());
  const [put, line] = await Promise.all([
    s.req({ method: 'PUT', target: '/media/both.mp4', body: bodies[0] }, 10_000),
    tcp
      .send(Buffer.concat([Buffer.from(`WRITE,both.mp4,${bodies[1].length}\n`), bodies[1]]))
      .then(() => tcp.readLine()),
  ]);
  const tcpWon = line.startsWith('OK ');
  t.ok((put.status === 201) !== tcpWon, `exactly one door wins (${put.status}, ${line})`);
  const both = await onDisk(s, 'both.mp4');
  t.ok(both && both.equals(bodies[tcpWon ? 1 : 0]), "the stored file is exactly the winner's");
});

t.test('no clobber: a file that appears during a PUT is never replaced', async (t) => {
  const s = await startServer(t);
  const conn = await openPut(s, 'appear.mp4', 10, 'hello');
  t.teardown(() => conn.destroy());
  await s.put('appear.mp4', 'put there by someone else');
  await conn.send('world');
  const res = await conn.readResponse();
  t.equal(res.status, 409, 'the PUT ends 409 EXISTS');
  t.equal(errorBody(res)?.code, 'EXISTS');
  t.equal((await onDisk(s, 'appear.mp4'))?.toString(), 'put there by someone else', 'untouched');
  t.same(await s.temps(), [], 'no temporary left');
});

t.test('idle timeout 1 s: stalls, slow headers and idle keep-alive are cut', async (t) => {
  const s = await startServer(t, { idleTimeoutSeconds: 1 });
  await s.put('a.mp4', 'x');

  /** Waits for the server to cut `conn`; checks how, and when. */
  const cutWithin = async (conn: HttpConn, what: string, since: number): Promise<void> => {
    const rest = await within(conn.waitClose(4000), 4500, `${what}: cut`).catch(() => undefined);
    const elapsed = Date.now() - since;
    t.ok(rest !== undefined, `${what}: cut within 4 s (408 or close)`);
    t.ok(elapsed >= 500, `${what}: not before the idle timeout (${elapsed} ms)`);
    if (rest && rest.length > 0) {
      const text = rest.toString('latin1');
      t.match(text, /^HTTP\/1\.1 408 /, `${what}: if answered, 408`);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      t.match(body, /"code"\s*:\s*"TIMEOUT"/, `${what}: if answered, code TIMEOUT`);
    }
  };
  const open = async (): Promise<HttpConn> => {
    const conn = await HttpConn.connect(s.httpPort);
    t.teardown(() => conn.destroy());
    return conn;
  };
  // All at once, on one server: each scenario is timed from its own last byte.

  // A stalled body: half sent, then nothing.
  const stalled = await openPut(s, 'stall.mp4', 100, 'x'.repeat(50));
  t.teardown(() => stalled.destroy());
  const stalledCut = cutWithin(stalled, 'a stalled body', Date.now());

  // Headers that never end.
  const slow = await open();
  await slow.send(`GET /media/a.mp4 HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\n`);
  const slowCut = cutWithin(slow, 'unfinished headers', Date.now());

  // Headers trickled a byte at a time: progress, but never complete (slowloris).
  const trickle = await open();
  const line = `GET /media/a.mp4 HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\nX-Slow: ${'z'.repeat(200)}`;
  let sent = 0;
  const timer = setInterval(() => {
    if (sent < line.length) void trickle.send(line[sent++]);
  }, 100);
  t.teardown(() => clearInterval(timer));
  const trickleCut = cutWithin(trickle, 'headers trickled a byte every 100 ms', Date.now());

  // An idle keep-alive connection.
  const idle = await open();
  await idle.send(buildRequest(s.httpPort, { target: '/media/a.mp4' }));
  t.equal((await idle.readResponse()).status, 200);
  const idleCut = cutWithin(idle, 'an idle keep-alive connection', Date.now());

  // Meanwhile a slow body that keeps moving is not cut.
  const moving = await open();
  await moving.send(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/slow.mp4',
      headers: { 'Content-Length': '8' },
    }),
  );
  for (const byte of 'slowbody') {
    await sleep(250); // 2 s in all, each gap well under the timeout
    await moving.send(byte);
  }
  const stored = await moving.readResponse();
  t.equal(stored.status, 201, 'a slow body that keeps moving is not cut');
  t.equal((await onDisk(s, 'slow.mp4'))?.toString(), 'slowbody');

  await Promise.all([stalledCut, slowCut, trickleCut, idleCut]);
  clearInterval(timer);

  const aborted = await eventually(async () => (await s.temps()).length === 0, 'abort', 2000).then(
    () => true,
    () => false,
  );
  t.ok(aborted, `a stalled body: the upload aborted, temp deleted (left: ${await s.temps()})`);
  t.equal(await onDisk(s, 'stall.mp4'), undefined, 'a stalled body: nothing published');
  const retry = await s.req({ method: 'PUT', target: '/media/stall.mp4', body: 'again' });
  t.equal(retry.status, 201, `a stalled body: the name is not left locked (${retry.status})`);
  t.ok(await stillServes(s), 'the server still answers');
});

t.test('bad input: huge headers, garbage, ambiguous framing; the server goes on', async (t) => {
  const s = await startServer(t);
  await s.put('a.mp4', 'x');

  const raw = async (bytes: Buffer | string): Promise<HttpResponse | undefined> => {
    const conn = await HttpConn.connect(s.httpPort);
    try {
      await conn.send(bytes);
      return await conn.readResponse({ ms: 3000 }).catch(() => undefined);
    } finally {
      conn.destroy();
    }
  };

  const huge = await raw(
    `GET /media/a.mp4 HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\nX-Big: ${'b'.repeat(100 * 1024)}\r\n\r\n`,
  );
  t.ok(huge && [431, 400].includes(huge.status), `a 100 KB header: 431 or 400 (${huge?.status})`);
  t.ok(huge && errorBody(huge), 'with a JSON {code, message} body');
  t.ok(await stillServes(s), 'still serving after a huge header');

  const many = Array.from({ length: 8000 }, (_, i) => `X-H${i}: v\r\n`).join('');
  const lots = await raw(
    `GET /media/a.mp4 HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\n${many}\r\n`,
  );
  t.ok(
    lots && [431, 400].includes(lots.status),
    `100 KB of small fields: 431 or 400 (${lots?.status})`,
  );

  const garbage = await raw(Buffer.from([0x00, 0x01, 0xff, 0xfe, 0x47, 0x0d, 0x0a, 0x0d, 0x0a]));
  t.equal(garbage?.status, 400, 'garbage bytes: 400');
  t.ok(garbage && errorBody(garbage), 'with a JSON {code, message} body');

  const badLine = await raw('HELLO THERE\r\n\r\n');
  t.equal(badLine?.status, 400, 'a request line that is not HTTP: 400');

  const both = await raw(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/both.mp4',
      headers: { 'Content-Length': '5', 'Transfer-Encoding': 'chunked' },
      body: '5\r\nhello\r\n0\r\n\r\n',
    }),
  );
  t.ok(both && [400, 411].includes(both.status), `Content-Length and chunked: 400/411`);
  const twice = await raw(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/twice.mp4',
      headers: { 'Content-Length': '5', 'content-length': '6' },
      body: 'hello!',
    }),
  );
  t.equal(twice?.status, 400, 'two different Content-Lengths: 400');
  const negative = await raw(
    buildRequest(s.httpPort, {
      method: 'PUT',
      target: '/media/neg.mp4',
      headers: { 'Content-Length': '-5' },
    }),
  );
  t.equal(negative?.status, 400, 'a negative Content-Length: 400');
  const highBytes = await raw(
    Buffer.concat([
      Buffer.from(`GET /media/a.mp4 HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\nX-Name: `),
      Buffer.from([0xff, 0xfe, 0xc3, 0xa9]),
      Buffer.from('\r\n\r\n'),
    ]),
  );
  t.ok(!highBytes || highBytes.status < 500, `bytes >= 0x80 in a header value: no 5xx`);
  const rawTarget = await raw(
    Buffer.concat([
      Buffer.from('GET /media/caf'),
      Buffer.from('é.mp3', 'utf8'),
      Buffer.from(` HTTP/1.1\r\nHost: 127.0.0.1:${s.httpPort}\r\n\r\n`),
    ]),
  );
  t.ok(!rawTarget || rawTarget.status < 500, `raw UTF-8 in the request-target: no 5xx`);
  t.equal(await onDisk(s, 'both.mp4'), undefined);
  t.equal(await onDisk(s, 'twice.mp4'), undefined);
  t.equal(await onDisk(s, 'neg.mp4'), undefined);
  t.same(await s.temps(), [], 'no temporary left');
  t.ok(await stillServes(s), 'still serving');
});

t.test(
  'QUIT: a GET in flight completes whole, idle keep-alive closes, new requests 503',
  async (t) => {
    const s = await startServer(t);
    const big = content(BIG, 4);
    await s.put('big.mkv', big);
    await s.put('a.mp4', 'small');

    // A GET in flight, held by a slow reader.
    const busy = await HttpConn.connect(s.httpPort);
    t.teardown(() => busy.destroy());
    await busy.send(buildRequest(s.httpPort, { target: '/media/big.mkv' }));
    const head = await busy.readHead();
    t.equal(head.status, 200);
    busy.pause();

    // An idle kept-alive connection.
    const idle = await HttpConn.connect(s.httpPort);
    t.teardown(() => idle.destroy());
    await idle.send(buildRequest(s.httpPort, { target: '/media/a.mp4' }));
    t.equal((await idle.readResponse()).status, 200);

    let quitDone = false;
    const quitting = s.server.quit().then(() => (quitDone = true));
    await within(idle.waitClose(), 2000, 'the idle keep-alive connection to close').then(
      (rest) => t.equal(rest.length, 0, 'the idle connection is closed at once, silently'),
      (error: Error) => t.fail(error.message),
    );

    // A new connection is refused, or answered 503.
    const late = await HttpConn.connect(s.httpPort).catch(() => undefined);
    if (late) {
      t.teardown(() => late.destroy());
      await late.send(buildRequest(s.httpPort, { target: '/media/a.mp4' }));
      const res = await late.readResponse({ ms: 2000 }).catch(() => undefined);
      if (res) {
        t.equal(res.status, 503, 'a new connection during QUIT: 503');
        t.match(res.headers.connection ?? '', /close/i, 'with Connection: close');
      } else {
        t.ok(late.ended, 'a new connection during QUIT is closed');
      }
    } else {
      t.pass('a new connection during QUIT is refused');
    }

    // A new request on the kept-alive connection whose GET is still in flight.
    await busy.send(buildRequest(s.httpPort, { target: '/media/a.mp4' }));
    await sleep(100);
    t.notOk(quitDone, 'QUIT waits for the GET in flight');
    busy.resume();
    const body = await busy.readBytes(Number(head.headers['content-length']), 10_000);
    t.ok(sha256(body).equals(sha256(big)), 'the GET in flight completes whole');
    const next = await busy.readResponse({ ms: 3000 }).catch(() => undefined);
    if (next) {
      t.equal(next.status, 503, 'a request sent after QUIT on a kept-alive connection: 503');
      t.match(next.headers.connection ?? '', /close/i, 'with Connection: close');
      t.equal(errorBody(next)?.code, 'SHUTTING_DOWN', 'SHUTTING_DOWN');
      await within(busy.waitClose(), 2000, 'the connection to close after the 503').catch(
        (error: Error) => t.fail(error.message),
      );
    } else {
      t.ok(busy.ended, 'a request sent after QUIT on a kept-alive connection: closed');
    }
    await within(quitting, 5000, 'QUIT to finish').catch((error: Error) => t.fail(error.message));
    t.ok(quitDone, 'QUIT finishes once the last request is done');
  },
);

t.test('FORCEQUIT during a PUT: temp deleted, nothing published, the old file kept', async (t) => {
  const s = await startServer(t, { overwrite: true });
  await s.put('keep.mp4', 'the original');
  const fresh = await openPut(s, 'new.mp4', 1000, 'x'.repeat(500));
  t.teardown(() => fresh.destroy());
  const over = await openPut(s, 'keep.mp4', 1000, 'y'.repeat(500));
  t.teardown(() => over.destroy());
  await eventually(async () => (await s.temps()).length === 2, 'both uploads to start');
  await within(s.server.forceQuit(), 2000, 'FORCEQUIT to finish');
  await within(fresh.waitClose(), 2000, 'the PUT connection to close');
  await eventually(async () => (await s.temps()).length === 0, 'the temporaries deleted', 2000);
  t.same(await s.temps(), [], 'no temporary left');
  t.equal(await onDisk(s, 'new.mp4'), undefined, 'nothing published');
  t.equal((await onDisk(s, 'keep.mp4'))?.toString(), 'the original', 'the existing file is kept');
});

/** Sends a request on a connection that may be refused; the status, or 0 when closed. */
async function statusOf(port: number, localAddress?: string): Promise<HttpResponse | 0> {
  const conn = await HttpConn.connect(port, '127.0.0.1', localAddress).catch(() => undefined);
  if (!conn) return 0;
  try {
    await conn.send(buildRequest(port, { target: '/api/list' }));
    return await conn.readResponse({ ms: 2000 }).catch(() => 0 as const);
  } finally {
    conn.destroy();
  }
}

t.test('--max-connections counts both doors together', async (t) => {
  const s = await startServer(t, { maxConnections: 2 });
  const tcp = await RawClient.connect(s.tcpPort);
  t.teardown(() => tcp.destroy());
  await tcp.send('LIST\n');
  t.equal(await tcp.readLine(), 'OK 0', 'one TCP connection');
  const http = await HttpConn.connect(s.httpPort);
  t.teardown(() => http.destroy());
  await http.send(buildRequest(s.httpPort, { target: '/api/list' }));
  t.equal((await http.readResponse()).status, 200, 'one HTTP connection (kept alive)');

  const third = await RawClient.connect(s.tcpPort);
  t.teardown(() => third.destroy());
  t.match(await third.readLine(), /^ERR BUSY\b/, 'a third on the TCP door: ERR BUSY');
  await third.waitClose();

  const res = await statusOf(s.httpPort);
  t.ok(res !== 0, 'a third on the HTTP door is answered');
  if (res !== 0) {
    t.equal(res.status, 503, 'a third on the HTTP door: 503');
    t.equal(errorBody(res)?.code, 'BUSY', 'BUSY');
  }

  tcp.destroy();
  await eventually(async () => {
    const again = await statusOf(s.httpPort);
    return again !== 0 && again.status === 200;
  }, 'a slot to free up');
  t.pass('a closed connection frees its slot for the other door');
});

t.test('--max-connections-per-ip counts both doors together', async (t) => {
  const s = await startServer(t, { maxConnectionsPerIp: 1 });
  const http = await HttpConn.connect(s.httpPort, '127.0.0.1', '127.0.0.2');
  t.teardown(() => http.destroy());
  await http.send(buildRequest(s.httpPort, { target: '/api/list' }));
  t.equal((await http.readResponse()).status, 200, 'one HTTP connection from 127.0.0.2');

  const tcp = await RawClient.connect(s.tcpPort, '127.0.0.1', '127.0.0.2');
  t.teardown(() => tcp.destroy());
  t.match(await tcp.readLine(), /^ERR BUSY\b/, 'TCP from the same address: ERR BUSY');
  const res = await statusOf(s.httpPort, '127.0.0.2');
  t.equal(res === 0 ? 0 : res.status, 503, 'HTTP from the same address: 503');
  const other = await statusOf(s.httpPort, '127.0.0.3');
  t.equal(other === 0 ? 0 : other.status, 200, 'another address: 200');
});
