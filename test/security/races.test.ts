/**
 * Races (SECURITY.md, "Hostile clients"): concurrent uploads of one name, an outside process
 * creating the name mid-upload, and a READ overlapping a replacing WRITE.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';
import { connect, ProtocolError, type IoeClient } from '../../pipelines/client.js';
import { RawClient } from '../helpers/raw-client.js';

const WAIT_MS = 10_000;

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw error;
  }
}

function tempRoot(t: Test): string {
  const base = mkdtempSync(join(tmpdir(), 'ioe-races-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'media');
  mkdirSync(root);
  return root;
}

async function startServer(t: Test, options: Partial<ServerOptions>): Promise<number> {
  const server = await MediaServer.create({ port: 0, idleTimeoutSeconds: 0, ...options });
  const { port } = await server.listen();
  t.teardown(() => server.forceQuit());
  return port;
}

async function clients(t: Test, port: number, count: number): Promise<IoeClient[]> {
  const all = await Promise.all(Array.from({ length: count }, () => connect({ port })));
  t.teardown(() => all.forEach((client) => client.destroy()));
  return all;
}

const temporaries = (root: string): string[] =>
  readdirSync(root).filter((name) => name.startsWith('.ioe-upload-'));

async function waitForTemporary(root: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (temporaries(root).length === 0) {
    if (Date.now() > deadline) throw new Error('the upload never started');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

t.test('50 concurrent WRITEs of one name: one whole upload wins', async (t) => {
  const root = tempRoot(t);
  const port = await startServer(t, { root });
  const all = await clients(t, port, 50);
  const payloads = all.map(() => randomBytes(256 * 1024)); // each one distinct
  const results = await Promise.all(
    all.map((client, i) =>
      client.write('race.mp4', payloads[i], payloads[i].length).then(
        (receipt) => ({ code: 'OK', sha256: receipt.sha256 }),
        (error: unknown) => ({ code: error instanceof ProtocolError ? error.code : String(error) }),
      ),
    ),
  );
  const codes = results.map((result) => result.code);
  t.equal(codes.filter((code) => code === 'OK').length, 1, 'exactly one WRITE succeeds');
  t.same(
    codes.filter((code) => !['OK', 'LOCKED', 'EXISTS'].includes(code)),
    [],
    'every other WRITE is LOCKED or EXISTS',
  );
  t.comment(
    `LOCKED ${codes.filter((c) => c === 'LOCKED').length}, EXISTS ${codes.filter((c) => c === 'EXISTS').length}`,
  );
  const stored = readFileSync(join(root, 'race.mp4'));
  const winner = results.findIndex((result) => result.code === 'OK');
  t.ok(stored.equals(payloads[winner]), 'the stored bytes are exactly the winning payload');
  t.equal(sha256(stored), (results[winner] as { sha256: string }).sha256, 'and match its receipt');
  t.same(temporaries(root), [], 'no temporary file is left');
});

t.test('a second WRITE while an upload of that name is in progress is LOCKED', async (t) => {
  const root = tempRoot(t);
  const port = await startServer(t, { root });
  const first = await RawClient.connect(port);
  t.teardown(() => first.socket.destroy());
  const payload = randomBytes(1000);
  await first.send(Buffer.concat([Buffer.from('WRITE,held.mp3,1000\n'), payload.subarray(0, 500)]));
  await waitForTemporary(root);

  const [second] = await clients(t, port, 1);
  t.equal(await outcome(second.write('held.mp3', randomBytes(10), 10)), 'LOCKED');
  t.same(await second.list(), [], 'nothing is visible while the upload is in progress');

  await first.send(payload.subarray(500));
  t.equal(await first.readLine(WAIT_MS), `OK 1000 ${sha256(payload)}`);
  t.equal(await outcome(second.write('held.mp3', randomBytes(10), 10)), 'EXISTS');
  t.ok(readFileSync(join(root, 'held.mp3')).equals(payload), 'the first upload is stored whole');
});

t.test('without overwrite, a file created mid-upload is never replaced', async (t) => {
  const root = tempRoot(t);
  const port = await startServer(t, { root });
  const raw = await RawClient.connect(port);
  t.teardown(() => raw.socket.destroy());
  const payload = randomBytes(1000);
  await raw.send(Buffer.concat([Buffer.from('WRITE,late.mp3,1000\n'), payload.subarray(0, 500)]));
  await waitForTemporary(root); // the name was free when the WRITE was accepted

  writeFileSync(join(root, 'late.mp3'), 'created by another process meanwhile');
  await raw.send(payload.subarray(500));
  t.match(await raw.readLine(WAIT_MS), /^ERR EXISTS /, 'the upload cannot publish over it');
  t.equal(
    readFileSync(join(root, 'late.mp3'), 'utf8'),
    'created by another process meanwhile',
    'the existing file is untouched',
  );
  t.same(temporaries(root), [], 'the temporary file is deleted');
  await raw.send('LIST\n');
  t.equal(await raw.readLine(WAIT_MS), 'OK 1', 'the connection stays usable');
});

t.test('with overwrite, a READ started before a replacing WRITE gets the old bytes', async (t) => {
  const root = tempRoot(t);
  const size = 32 * 1024 * 1024; // far more than the socket buffers hold
  const old = randomBytes(size);
  writeFileSync(join(root, 'movie.mp4'), old);
  const port = await startServer(t, { root, overwrite: true });

  const reader = await RawClient.connect(port);
  t.teardown(() => reader.socket.destroy());
  await reader.send('READ,movie.mp4\n');
  t.equal(await reader.readLine(WAIT_MS), `OK ${size}`);
  const head = await reader.readBytes(1024 * 1024);
  reader.socket.pause(); // the rest waits in the server while the file is replaced

  const [writer] = await clients(t, port, 1);
  const replacement = randomBytes(size);
  const receipt = await writer.write('movie.mp4', replacement, size);
  t.equal(receipt.sha256, sha256(replacement), 'the replacing WRITE succeeds');
  t.ok(readFileSync(join(root, 'movie.mp4')).equals(replacement), 'the name has the new bytes');

  reader.socket.resume();
  const rest = await reader.readBytes(size - head.length);
  t.ok(Buffer.concat([head, rest]).equals(old), 'the READ in flight delivered the old bytes whole');
  await reader.send('HASH,movie.mp4\n');
  t.equal(
    await reader.readLine(WAIT_MS),
    `OK ${sha256(replacement)} ${size}`,
    'a new request sees the new file',
  );
  t.same(temporaries(root), [], 'no temporary file is left');
});
