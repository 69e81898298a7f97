// The client library against a real in-process MediaServer on a free port.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { setImmediate as nextTurn, setTimeout as delay } from 'node:timers/promises';
import { connect, IoeClient, ProtocolError, type ReadOptions } from '../../pipelines/client.js';
import type { ErrorCode } from '../../lib/errors.js';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';

interface Running {
  server: MediaServer;
  root: string;
  port: number;
}

async function startServer(tt: Test, options: Partial<ServerOptions> = {}): Promise<Running> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-client-test-'));
  const server = await MediaServer.create({ root, port: 0, ...options });
  const { port } = await server.listen();
  tt.teardown(async () => {
    await server.forceQuit();
    await rm(root, { recursive: true, force: true });
  });
  return { server, root, port };
}

async function client(tt: Test, port: number): Promise<IoeClient> {
  const c = await connect({ port });
  tt.teardown(() => c.destroy());
  return c;
}

async function put(root: string, name: string, content: Buffer | string): Promise<void> {
  await mkdir(dirname(join(root, name)), { recursive: true });
  await writeFile(join(root, name), content);
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A READ's announced size; the stream's own 'error' (which would be uncaught) is silenced. */
function readSize(c: IoeClient, name: string, options: ReadOptions = {}): Promise<number> {
  const reply = c.read(name, options);
  reply.on('error', () => undefined);
  return reply.size;
}

/** Every byte value, many times over, including the bytes that frame replies (\n, \r, "OK"). */
function everyByte(repeats: number): Buffer {
  const one = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  return Buffer.concat([...Array.from({ length: repeats }, () => one), Buffer.from('OK 3\nERR')]);
}

/** Awaits a rejection and checks it is a ProtocolError with the given code. */
async function rejectsWith(
  tt: Test,
  promise: Promise<unknown>,
  code: ErrorCode,
  what: string,
): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  tt.ok(error instanceof ProtocolError, `${what}: rejects with a ProtocolError`);
  tt.equal((error as ProtocolError | undefined)?.code, code, `${what}: code ${code}`);
}

/** Polls `condition` until it holds or 10 s pass (a bound against hanging, not a timing check). */
async function eventually(condition: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await delay(5);
  }
  return condition();
}

/** Files under `dir`, hidden ones included, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => entry.name);
}

t.test(
  'list: empty, parsed entries with Date mtime, byte-order sorting, type filter',
  async (t) => {
    const { root, port } = await startServer(t);
    const c = await client(t, port);
    t.same(await c.list(), [], 'an empty root lists nothing');
    t.same(await c.list('music'), [], 'an empty root lists no music either');

    const files: [string, string][] = [
      ['b.mp3', 'bee'],
      ['a.jpg', 'a picture'],
      ['Z.png', 'zed'],
      ['sub/c.mov', 'a video in a folder'],
      ['é.flac', 'accent'],
      ['notes.txt', 'not media'],
      ['.hidden.mp3', 'hidden'],
    ];
    const mtime = new Date('2024-03-04T05:06:07.089Z');
    for (const [name, content] of files) {
      await put(root, name, content);
      await utimes(join(root, name), mtime, mtime);
    }

    const entries = await c.list();
    const expectedNames = ['Z.png', 'a.jpg', 'b.mp3', 'sub/c.mov', 'é.flac'];
    t.same(
      entries.map((e) => e.name),
      expectedNames,
      'media files only, sorted by UTF-8 byte order (uppercase first, é last)',
    );
    const sorted = [...expectedNames].sort((x, y) =>
      Buffer.compare(Buffer.from(x), Buffer.from(y)),
    );
    t.same(expectedNames, sorted, 'the expected order is byte order');
    t.same(
      entries.map((e) => e.type),
      ['picture', 'picture', 'music', 'video', 'music'],
      'types come from the extensions',
    );
    for (const entry of entries) {
      const content = files.find(([name]) => name === entry.name)?.[1] ?? '';
      t.equal(entry.size, Buffer.byteLength(content), `${entry.name}: size`);
      t.ok(entry.mtime instanceof Date, `${entry.name}: mtime is a Date`);
      t.equal(entry.mtime.getTime(), mtime.getTime(), `${entry.name}: mtime parsed exactly`);
    }

    t.same(
      (await c.list('music')).map((e) => e.name),
      ['b.mp3', 'é.flac'],
      'music only',
    );
    t.same(
      (await c.list('picture')).map((e) => e.name),
      ['Z.png', 'a.jpg'],
      'pictures only',
    );
    t.same(
      (await c.list('video')).map((e) => e.name),
      ['sub/c.mov'],
      'videos only',
    );
  },
);

t.test('write: Buffer and Readable sources, receipt sha256 equals crypto', async (t) => {
  const { root, port } = await startServer(t);
  const c = await client(t, port);

  const small = Buffer.from('a small song');
  const receipt = await c.write('song.mp3', small, small.length);
  t.same(receipt, { size: small.length, sha256: sha256(small) }, 'Buffer source receipt');
  t.same(await readFile(join(root, 'song.mp3')), small, 'the stored bytes are the Buffer');

  // Large enough to need backpressure on the socket, in uneven chunks.
  const big = randomBytes(3 * 1024 * 1024 + 17);
  const chunks = [big.subarray(0, 1), big.subarray(1, 70_001), big.subarray(70_001)];
  const streamed = await c.write('movie.mp4', Readable.from(chunks), big.length);
  t.same(streamed, { size: big.length, sha256: sha256(big) }, 'Readable source receipt');
  t.ok((await readFile(join(root, 'movie.mp4'))).equals(big), 'the stored bytes are the stream');

  const empty = await c.write('empty.jpg', Buffer.alloc(0), 0);
  t.same(empty, { size: 0, sha256: sha256('') }, 'a zero-byte upload');

  const nested = await c.write('deep/er/folder/pic.png', Buffer.from('png'), 3);
  t.equal(nested.sha256, sha256('png'), 'parent folders are created');
  t.same(
    (await c.list()).map((e) => e.name),
    ['deep/er/folder/pic.png', 'empty.jpg', 'movie.mp4', 'song.mp3'],
    'every upload is listed',
  );
});

t.test('binary payloads with every byte value round-trip through write and read', async (t) => {
  const { port } = await startServer(t);
  const c = await client(t, port);
  const payload = everyByte(4099);
  const receipt = await c.write('bytes.wav', payload, payload.length);
  t.equal(receipt.sha256, sha256(payload), 'receipt matches');

  const reply = c.read('bytes.wav');
  const back = await collect(reply);
  t.equal(await reply.size, payload.length, 'announced size');
  t.equal(back.length, payload.length, 'same length back');
  t.ok(back.equals(payload), 'identical bytes back');

  // A tiny one whose bytes look like reply lines, followed at once by another request.
  const tricky = Buffer.from('\nOK 1\n\r\nERR NOT_FOUND x\n');
  await c.write('tricky.ogg', tricky, tricky.length);
  const [first, info] = await Promise.all([collect(c.read('tricky.ogg')), c.hash('tricky.ogg')]);
  t.ok(first.equals(tricky), 'reply-like payload read back intact');
  t.same(info, { sha256: sha256(tricky), size: tricky.length }, 'the next reply is in step');
});

t.test('read: offset, length, resume, offset == size, past the end', async (t) => {
  const { root, port } = await startServer(t);
  const c = await client(t, port);
  const content = randomBytes(1000);
  await put(root, 'clip.mkv', content);

  const middle = c.read('clip.mkv', { offset: 100, length: 50 });
  t.ok((await collect(middle)).equals(content.subarray(100, 150)), 'offset and length');
  t.equal(await middle.size, 50, 'size is the length');

  const clamped = c.read('clip.mkv', { offset: 900, length: 500 });
  t.ok((await collect(clamped)).equals(content.subarray(900)), 'length clamped to the end');
  t.equal(await clamped.size, 100, 'size is what is left');

  const head = c.read('clip.mkv', { length: 10 });
  t.ok((await collect(head)).equals(content.subarray(0, 10)), 'length alone reads from 0');

  // Resume: we hold the first 600 bytes, ask for the rest.
  const have = content.subarray(0, 600);
  const rest = c.read('clip.mkv', { offset: have.length });
  const resumed = Buffer.concat([have, await collect(rest)]);
  t.equal(await rest.size, 400, 'the rest is announced');
  t.ok(resumed.equals(content), 'resumed download is the whole file');

  const atEnd = c.read('clip.mkv', { offset: 1000 });
  t.equal((await collect(atEnd)).length, 0, 'offset == size: empty stream');
  t.equal(await atEnd.size, 0, 'offset == size: size 0');

  const zero = c.read('clip.mkv', { offset: 10, length: 0 });
  t.equal((await collect(zero)).length, 0, 'length 0: empty stream');

  await rejectsWith(t, collect(c.read('clip.mkv', { offset: 1001 })), 'BAD_RANGE', 'offset > size');
  t.ok((await collect(c.read('clip.mkv'))).equals(content), 'usable after BAD_RANGE');
});

t.test('hash: sha256 and size of the file as it is now', async (t) => {
  const { root, port } = await startServer(t);
  const c = await client(t, port);
  const content = randomBytes(200_000);
  await put(root, 'folder/pic.jpeg', content);
  t.same(
    await c.hash('folder/pic.jpeg'),
    { sha256: sha256(content), size: content.length },
    'hash of an existing file',
  );
  await rejectsWith(t, c.hash('nope.jpeg'), 'NOT_FOUND', 'hash of a missing file');
});

t.test('many requests in flight on one connection are matched to their replies', async (t) => {
  const { root, port } = await startServer(t);
  const c = await client(t, port);
  const stored = Array.from({ length: 5 }, (_, i) => randomBytes(10_000 + i * 70_001));
  for (const [i, content] of stored.entries()) await put(root, `stored-${i}.mp3`, content);

  const checks = Array.from({ length: 20 }, async (_, i) => {
    switch (i % 5) {
      case 0: {
        const entries = await c.list('music');
        return { i, ok: entries.some((e) => e.name === 'stored-0.mp3') };
      }
      case 1: {
        const k = i % stored.length;
        const data = await collect(c.read(`stored-${k}.mp3`));
        return { i, ok: data.equals(stored[k]!) };
      }
      case 2: {
        const data = randomBytes(1000 + i * 1000);
        const receipt = await c.write(`new-${i}.jpg`, data, data.length);
        return { i, ok: receipt.sha256 === sha256(data) && receipt.size === data.length };
      }
      case 3: {
        const k = i % stored.length;
        const info = await c.hash(`stored-${k}.mp3`);
        return { i, ok: info.sha256 === sha256(stored[k]!) && info.size === stored[k]!.length };
      }
      default: {
        // An error in the middle of the pipeline is matched to its own request.
        const error = await c.hash(`missing-${i}.mp3`).then(
          () => undefined,
          (reason: unknown) => reason,
        );
        return { i, ok: error instanceof ProtocolError && error.code === 'NOT_FOUND' };
      }
    }
  });
  const results = await Promise.all(checks);
  t.same(
    results.filter((r) => !r.ok).map((r) => r.i),
    [],
    'all 20 replies match their requests',
  );
  const names = (await c.list('picture')).map((e) => e.name).sort();
  t.same(names, ['new-12.jpg', 'new-17.jpg', 'new-2.jpg', 'new-7.jpg'], 'every write stored');
});

t.test('protocol errors reject with their code and the connection stays usable', async (t) => {
  const { root, port } = await startServer(t);
  const c = await client(t, port);
  const original = Buffer.from('original content');
  await put(root, 'have.mp3', original);
  await put(root, 'notes.txt', 'text');

  await rejectsWith(t, readSize(c, 'missing.mp3'), 'NOT_FOUND', 'read of a missing file');
  t.equal((await c.list()).length, 1, 'usable after NOT_FOUND');

  await rejectsWith(t, c.write('have.mp3', Buffer.from('new'), 3), 'EXISTS', 'write over a file');
  t.same(await readFile(join(root, 'have.mp3')), original, 'the existing file is untouched');
  t.equal((await c.hash('have.mp3')).sha256, sha256(original), 'usable after EXISTS');

  const big = randomBytes(2 * 1024 * 1024);
  await rejectsWith(t, c.write('have.mp3', big, big.length), 'EXISTS', 'large write over a file');
  t.same(await readFile(join(root, 'have.mp3')), original, 'still untouched after a large one');
  t.ok((await collect(c.read('have.mp3'))).equals(original), 'in step after a drained payload');

  await rejectsWith(t, c.hash('../escape.mp3'), 'BAD_NAME', 'hash with ..');
  await rejectsWith(t, c.write('a//b.mp3', Buffer.from('x'), 1), 'BAD_NAME', 'write empty segment');
  await rejectsWith(t, readSize(c, 'a/./b.mp3'), 'BAD_NAME', 'read with a . segment');
  await rejectsWith(t, readSize(c, 'notes.txt'), 'UNSUPPORTED_TYPE', 'read of a .txt');
  await rejectsWith(t, c.write('x.doc', Buffer.from('x'), 1), 'UNSUPPORTED_TYPE', 'write .doc');
  await rejectsWith(t, readSize(c, 'have.mp3', { offset: 999 }), 'BAD_RANGE', 'read past end');
  await rejectsWith(t, c.hash('line\nbreak.mp3'), 'BAD_REQUEST', 'a name with a line break');

  const written = await c.write('after.mp3', Buffer.from('after'), 5);
  t.equal(written.sha256, sha256('after'), 'a write succeeds after all those errors');
  t.same(
    (await c.list()).map((e) => e.name),
    ['after.mp3', 'have.mp3'],
    'list after errors',
  );
});

t.test('a refused READ errors its stream and rejects its size', async (t) => {
  const { port } = await startServer(t);
  const c = await client(t, port);
  const reply = c.read('missing.mkv');
  const [streamError] = (await once(reply, 'error')) as [unknown];
  t.ok(streamError instanceof ProtocolError, 'the stream errors with a ProtocolError');
  t.equal((streamError as ProtocolError).code, 'NOT_FOUND', 'with the code');
  await rejectsWith(t, reply.size, 'NOT_FOUND', 'size');
  await rejectsWith(t, collect(c.read('missing.mkv')), 'NOT_FOUND', 'iterating the stream');
  t.same(await c.list(), [], 'connection still usable');
});

t.test('a source shorter than announced rejects the write; no file is kept', async (t) => {
  const { server, root, port } = await startServer(t);
  const c = await client(t, port);
  const write = c.write('short.mp3', Readable.from([Buffer.alloc(10, 1)]), 100);
  const error = await write.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  t.ok(error instanceof Error, 'the write rejects');
  t.match((error as Error).message, /10 of 100/, 'saying how short the source was');
  // The stream could not stay in step, so the client dropped the connection.
  await t.rejects(c.list(), 'the connection is closed after a broken payload');

  // The server deletes the temporary upload once it sees the disconnect.
  const clean = await eventually(
    async () => server.connectionCount === 0 && (await filesUnder(root)).length === 0,
  );
  t.ok(clean, 'the server saw the disconnect and cleaned up');
  t.same(await filesUnder(root), [], 'nothing left in the root, temporary files included');
  const other = await client(t, port);
  t.same(await other.list(), [], 'not listed');
  await rejectsWith(t, other.hash('short.mp3'), 'NOT_FOUND', 'not hashable');

  const longer = await client(t, port);
  const tooLong = longer.write('long.mp3', Readable.from([Buffer.alloc(10), Buffer.alloc(10)]), 15);
  await t.rejects(tooLong, /more than the 15 bytes/, 'a longer source rejects too');
});

t.test('BUSY: the second client of a one-connection server is refused', async (t) => {
  const { port } = await startServer(t, { maxConnections: 1 });
  const first = await client(t, port);
  t.same(await first.list(), [], 'the first client is served');
  const second = await client(t, port);
  await rejectsWith(t, second.list(), 'BUSY', "the second client's first request");
  await rejectsWith(t, second.hash('x.mp3'), 'BUSY', 'and its later requests');
  t.same(await first.list(), [], 'the first client is still served');
});

t.test('close() says BYE after requests in flight, resolves, and the socket closes', async (t) => {
  const { root, port } = await startServer(t);
  await put(root, 'a.mp3', 'aaa');
  const c = await client(t, port);
  const listed = c.list();
  const hashed = c.hash('a.mp3');
  const closed = c.close();
  t.equal((await listed).length, 1, 'a list sent before close is answered');
  t.equal((await hashed).sha256, sha256('aaa'), 'a hash sent before close is answered');
  await t.resolves(closed, 'close resolves');
  const error = await c.list().then(
    () => undefined,
    (reason: unknown) => reason,
  );
  t.ok(error instanceof Error, 'a request after close rejects');
  await t.resolves(c.close(), 'closing again is harmless');
});

t.test(
  'destroying a READ stream mid-way does not stall later requests',
  { timeout: 10_000 },
  async (t) => {
    const { root, port } = await startServer(t);
    const big = randomBytes(8 * 1024 * 1024);
    await put(root, 'big.mp4', big);
    await put(root, 'small.mp3', 'small');
    const c = await client(t, port);

    // Let the stream fill its buffer without reading, so the receiver waits on it, then give up.
    const abandoned = c.read('big.mp4');
    t.equal(await abandoned.size, big.length, 'the big READ is announced');
    while (abandoned.readableLength < abandoned.readableHighWaterMark) await nextTurn();
    abandoned.destroy();

    t.same(
      await c.hash('small.mp3'),
      { sha256: sha256('small'), size: 5 },
      'the next request is answered',
    );
    t.ok((await collect(c.read('big.mp4'))).equals(big), 'a later READ of the same file is whole');

    // Same again, abandoning with a for-await break after the first chunk.
    const partial = c.read('big.mp4');
    for await (const chunk of partial as AsyncIterable<Buffer>) {
      t.ok(chunk.equals(big.subarray(0, chunk.length)), 'the first chunk is the start of the file');
      break;
    }
    t.ok(partial.destroyed, 'breaking out destroys the stream');
    t.ok((await collect(c.read('small.mp3'))).equals(Buffer.from('small')), 'still in step');
  },
);

t.test('a reply that cannot be decoded fails its request with the first bad line', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['another service', 'HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n', /HTTP\/1\.1 400/],
    ['a bad count, then a good-looking reply', 'OK x\nOK 0\n', /malformed count.*x/],
    ['a bad entry, then a good-looking reply', 'OK 1\nnot an entry\nOK 0\n', /not an entry/],
  ];
  for (const [what, reply, pattern] of cases) {
    const fake = createServer((socket) => socket.once('data', () => socket.end(reply)));
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    t.teardown(() => fake.close());
    const c = await client(t, (fake.address() as AddressInfo).port);
    const error = await c.list().then(
      () => undefined,
      (reason: unknown) => reason,
    );
    t.ok(error instanceof Error, `${what}: list rejects`);
    t.match((error as Error | undefined)?.message, pattern, `${what}: reports the first bad line`);
  }
});
