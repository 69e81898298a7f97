/**
 * The idle timeout (SECURITY.md, "Hostile clients"): a client cannot hold a connection open by
 * trickling bytes that never make a command, and a reader that stops reading a big READ is
 * dropped, while other clients keep being served. A slow disk is not an idle client: what the
 * server itself takes (listing, opening, publishing) never counts against the client.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaServer } from '../../pipelines/server.js';
import { connect } from '../../pipelines/client.js';
import { LocalStorage } from '../../lib/local-storage.js';
import type { Storage } from '../../lib/storage.js';
import { RawClient } from '../helpers/raw-client.js';
import { HttpConn, buildRequest } from '../helpers/http-client.js';

const IDLE_SECONDS = 1;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** A sleep that does not keep the process alive: an upper bound to race against. */
const bound = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms).unref());

function connectRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port, host: '127.0.0.1' });
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

async function startServer(t: Test, files: Record<string, Buffer>) {
  const base = mkdtempSync(join(tmpdir(), 'ioe-idle-'));
  const root = join(base, 'media');
  mkdirSync(root);
  for (const [name, data] of Object.entries(files)) writeFileSync(join(root, name), data);
  const server = await MediaServer.create({ root, port: 0, idleTimeoutSeconds: IDLE_SECONDS });
  const { port } = await server.listen();
  t.teardown(async () => {
    await server.forceQuit();
    rmSync(base, { recursive: true, force: true });
  });
  return { server, port };
}

t.test('a client trickling an unfinished line is closed after the idle timeout', async (t) => {
  const { port } = await startServer(t, { 'a.mp3': Buffer.from('tune') });
  const socket = await connectRaw(port);
  t.teardown(() => socket.destroy());
  const opened = Date.now();
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));

  // One byte every 200 ms of a line that never ends: bytes, but never a whole command.
  const line = 'LIST,music'.padEnd(100, 'x');
  let sent = 0;
  const trickle = setInterval(() => {
    if (!socket.destroyed && sent < line.length) socket.write(line[sent++]);
  }, 200);
  t.teardown(() => clearInterval(trickle));

  const limit = (IDLE_SECONDS + 1) * 1000;
  const at = await Promise.race([closed, bound(limit + 3000).then(() => undefined)]);
  clearInterval(trickle);
  t.ok(at !== undefined, 'the server closed the connection');
  const elapsed = (at ?? Infinity) - opened;
  t.comment(`closed after ${elapsed} ms, ${sent} bytes trickled`);
  t.ok(elapsed <= limit, `within the idle timeout + 1 s (${elapsed} ms)`);
  t.ok(elapsed >= IDLE_SECONDS * 1000 - 100, 'and not before the idle timeout');
  t.match(received, /^ERR TIMEOUT /, 'with ERR TIMEOUT');
});

t.test('a reader that stops reading is dropped; others are still served', async (t) => {
  const size = 32 * 1024 * 1024; // far more than the socket buffers hold
  const { server, port } = await startServer(t, {
    'big.mp4': randomBytes(size),
    'small.mp3': Buffer.from('a small tune'),
  });
  const reader = await connectRaw(port);
  t.teardown(() => reader.destroy());
  let received = 0;
  let header = '';
  reader.on('data', (chunk: Buffer) => {
    if (!header.includes('\n')) header += chunk.subarray(0, 32).toString('latin1');
    received += chunk.length;
  });
  const readerClosed = new Promise<void>((resolve) => reader.once('close', () => resolve()));
  reader.write('READ,big.mp4\n');
  while (received < 1024 * 1024) await sleep(10);
  t.match(header, new RegExp(`^OK ${size}\n`), 'the READ started');
  reader.pause(); // stops reading: the server's writes back up
  const paused = Date.now();

  // Another client keeps working meanwhile, with commands closer together than the timeout.
  const other = await connect({ port });
  t.teardown(() => other.destroy());
  let served = 0;
  let droppedAt: number | undefined;
  while (Date.now() - paused < (IDLE_SECONDS + 3) * 1000) {
    const entries = await other.list();
    if (entries.length === 2) served++;
    if (droppedAt === undefined && server.connectionCount === 1) droppedAt = Date.now();
    if (droppedAt !== undefined && Date.now() - droppedAt > 500) break;
    await sleep(200);
  }
  t.ok(droppedAt !== undefined, 'the stalled reader was dropped');
  const after = (droppedAt ?? Infinity) - paused;
  t.comment(`dropped ${after} ms after it stopped reading; the other client was served ${served}x`);
  t.ok(after <= (IDLE_SECONDS + 2) * 1000, 'soon after the idle timeout');
  t.ok(served >= 3, 'the other client was served all along');
  t.equal(server.connectionCount, 1, 'the other client is still connected');

  reader.resume(); // what was already in flight arrives, then the connection ends short
  await Promise.race([readerClosed, bound(5000)]);
  t.ok(reader.destroyed || reader.readableEnded, 'the reader sees the connection closed');
  t.ok(received < size + header.indexOf('\n') + 1, `it got only part of the file (${received})`);
  t.equal((await other.list()).length, 2, 'and the other client is still served');
});

/**
 * The local store with every step the server awaits (list, open, begin, publish, an upload's
 * first write) `ms` slower.
 */
async function slowStore(root: string, ms: number): Promise<Storage> {
  const local = await LocalStorage.open(root);
  const slow = async <T>(step: () => Promise<T>): Promise<T> => {
    await sleep(ms);
    return step();
  };
  return {
    list: () => slow(() => local.list()),
    open: (name) => slow(() => local.open(name)),
    beginUpload: async (name, size, options) => {
      const upload = await slow(() => local.beginUpload(name, size, options));
      let written = false;
      return {
        write: (chunks) => {
          if (written) return upload.write(chunks);
          written = true;
          return slow(() => upload.write(chunks));
        },
        publish: (digest) => slow(() => upload.publish(digest)),
        abort: () => upload.abort(),
      };
    },
    close: () => local.close(),
  };
}

t.test('a store slower than the idle timeout is not an idle client, on either door', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ioe-idle-'));
  const root = join(base, 'media');
  mkdirSync(root);
  writeFileSync(join(root, 'a.mp3'), 'a tune');
  const stepMs = IDLE_SECONDS * 1000 + 1000; // each step outlasts the timeout and its tick
  const server = await MediaServer.create({
    root,
    host: '127.0.0.1',
    port: 0,
    httpPort: 0,
    idleTimeoutSeconds: IDLE_SECONDS,
    storage: await slowStore(root, stepMs),
  });
  const { port } = await server.listen();
  const httpPort = server.httpAddress!.port;
  t.teardown(async () => {
    await server.forceQuit();
    rmSync(base, { recursive: true, force: true });
  });

  const tcp = await RawClient.connect(port);
  t.teardown(() => tcp.destroy());
  await tcp.send('LIST\n');
  t.match(await tcp.readLine(), /^OK 1$/, 'LIST: answered, not TIMEOUT');
  await tcp.readLine();
  await tcp.send('HASH,a.mp3\n');
  t.match(await tcp.readLine(), /^OK [0-9a-f]{64} 6$/, 'HASH');
  await tcp.send('READ,a.mp3\n');
  t.equal(await tcp.readLine(), 'OK 6', 'READ');
  t.equal((await tcp.readBytes(6)).toString(), 'a tune');
  await tcp.send('WRITE,b.mp3,4\nbeat'); // begin, first write and publish: three timeouts
  t.match(await tcp.readLine(), /^OK 4 [0-9a-f]{64}$/, 'WRITE');
  // More than the upload's buffer (1 MiB) while the store's first write lags: the payload
  // waits for the store to drain, which is the server's time, not the client's.
  const big = randomBytes(3 * 1024 * 1024);
  await tcp.send(Buffer.concat([Buffer.from(`WRITE,big.mp4,${big.length}\n`), big]));
  t.match(await tcp.readLine(), new RegExp(`^OK ${big.length} [0-9a-f]{64}$`), 'a big WRITE');

  const http = await HttpConn.connect(httpPort);
  t.teardown(() => http.destroy());
  await http.send(
    buildRequest(httpPort, { method: 'PUT', target: '/media/c.mp3', body: Buffer.from('drum') }),
  );
  t.equal((await http.readResponse()).status, 201, 'an HTTP PUT: 201, not 408');
  await http.send(buildRequest(httpPort, { target: '/media/c.mp3' }));
  const got = await http.readResponse();
  t.equal(got.status, 200, 'an HTTP GET');
  t.equal(got.body.toString(), 'drum');
});
