/**
 * `--threads`: the TCP door on two threads sharing one port. Every guarantee of the contract
 * must hold whichever thread a connection lands on: each test spreads its connections until
 * both threads hold some (the kernel picks, by a hash of the client's port), then checks the
 * guarantee over all of them.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reusePortSupported } from '../../pipelines/listeners.js';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';
import { Access } from '../../lib/access.js';
import { RawClient, eventually, refused, sleep } from '../helpers/raw-client.js';
import {
  startServer as startOneServer,
  type Harness,
  type Teardown,
} from '../helpers/server-harness.js';

interface ThreadsHarness extends Harness {
  /** `count` connections that the two threads both hold some of. */
  spread(count: number): Promise<RawClient[]>;
}

async function startServer(
  t: Teardown,
  options: Partial<ServerOptions> = {},
): Promise<ThreadsHarness> {
  const harness = await startOneServer(t, { threads: 2, ...options });
  const { server, connect } = harness;
  const accepted = (): number[] => server.threadStats!.map((thread) => thread.accepted);
  return {
    ...harness,
    async spread(count) {
      const before = accepted();
      for (let round = 0; round < 8; round++) {
        const batch = await Promise.all(Array.from({ length: count }, () => connect()));
        // Every connection counted: the other thread counts its own as it accepts them.
        const total = (): number => accepted().reduce((a, b) => a + b, 0);
        const wanted = before.reduce((a, b) => a + b, 0) + (round + 1) * count;
        await eventually(() => total() >= wanted, 'both threads to count their connections');
        const now = accepted();
        if (now.every((n, i) => n > before[i]!)) return batch;
        for (const client of batch) client.destroy();
      }
      throw new Error('the kernel kept every connection on one thread');
    },
  };
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

const code = (line: string): string => (line.startsWith('OK') ? 'OK' : line.split(' ')[1]!);

async function list(client: RawClient): Promise<string[]> {
  await client.send('LIST\n');
  const head = await client.readLine();
  const match = /^OK (\d+)$/.exec(head);
  if (!match) throw new Error(`unexpected LIST reply: ${head}`);
  return (await client.readLines(Number(match[1]))).map((line) => line.split('\t')[1]!);
}

function tempFiles(root: string): string[] {
  return readdirSync(root).filter((name) => name.startsWith('.ioe-upload-'));
}

t.test('what --threads refuses, in words', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ioe-threads-test-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await t.rejects(
    MediaServer.create({ root, threads: 0 }),
    /--threads: a whole number/,
    'zero threads',
  );
  const accountsFile = join(root, 'users.json');
  await writeFile(accountsFile, 'anonymous::r=/\n', { mode: 0o600 });
  const access = await Access.create({ bindHost: '127.0.0.1', usersFile: accountsFile });
  t.ok(access.accounts.configured, 'an accounts file is configured');
  await t.rejects(
    MediaServer.create({ root, threads: 2, access }),
    /--threads does not serve accounts yet/,
  );
  if (!reusePortSupported()) {
    await t.rejects(
      MediaServer.create({ root, threads: 2 }),
      /--threads needs Node 22\.12 or later/,
      `refused on ${process.version}, which cannot share a port between threads`,
    );
  }
});

if (!reusePortSupported()) {
  t.comment(`${process.version} cannot share a port between threads: only the refusal is tested`);
} else {
  t.test('connections are spread over both threads, and counted once', async (t) => {
    const { server, spread } = await startServer(t);
    const clients = await spread(12);
    const stats = server.threadStats!;
    t.equal(stats.length, 2);
    t.ok(
      stats.every((thread) => thread.open > 0),
      'each thread holds some',
    );
    await eventually(() => server.connectionCount === clients.length, 'the count to settle');
    t.equal(server.connectionCount, clients.length, 'connectionCount covers both threads');
    for (const client of clients) {
      await client.send('LIST\n');
      t.equal(await client.readLine(), 'OK 0');
    }
  });

  t.test('LOCKED on every thread while one thread receives the upload', async (t) => {
    const { root, connect, spread } = await startServer(t);
    const uploader = await connect();
    const data = randomBytes(100_000);
    await uploader.send(
      Buffer.concat([Buffer.from(`WRITE,clip.mp4,${data.length}\n`), data.subarray(0, 1000)]),
    );
    await eventually(() => tempFiles(root).length === 1, 'the upload to start');
    const others = await spread(16);
    for (const client of others) {
      await client.send('WRITE,clip.mp4,3\nabc');
      t.equal(code(await client.readLine()), 'LOCKED');
      t.notOk((await list(client)).includes('clip.mp4'), 'an upload in progress is invisible');
    }
    await uploader.send(data.subarray(1000));
    t.equal(await uploader.readLine(), `OK ${data.length} ${sha256(data)}`);
    for (const client of others) {
      await client.send('WRITE,clip.mp4,3\nabc');
      t.equal(code(await client.readLine()), 'EXISTS');
    }
    t.ok((await readFile(join(root, 'clip.mp4'))).equals(data), 'the bytes are the upload');
    t.same(tempFiles(root), []);
  });

  t.test('writers of one name on both threads: exactly one wins, whole', async (t) => {
    const { root, spread } = await startServer(t);
    for (let round = 0; round < 5; round++) {
      const name = `race-${round}.mp3`;
      const clients = await spread(12);
      const payloads = clients.map(() => randomBytes(64 * 1024));
      await Promise.all(
        clients.map((client, i) =>
          client.send(Buffer.concat([Buffer.from(`WRITE,${name},${65536}\n`), payloads[i]!])),
        ),
      );
      const replies = await Promise.all(clients.map((client) => client.readLine()));
      const winners = replies.flatMap((reply, i) => (reply.startsWith('OK ') ? [i] : []));
      t.equal(winners.length, 1, `round ${round}: one OK (${replies.map(code).join(' ')})`);
      t.ok(
        replies.every((reply) => reply.startsWith('OK ') || /^ERR (LOCKED|EXISTS) /.test(reply)),
        'the others are LOCKED or EXISTS',
      );
      const stored = await readFile(join(root, name));
      t.ok(stored.equals(payloads[winners[0]!]!), "the file is the winner's bytes");
      t.equal(replies[winners[0]!], `OK 65536 ${sha256(stored)}`);
      for (const client of clients) client.destroy();
    }
    await eventually(() => tempFiles(root).length === 0, 'no temporary file');
  });

  t.test('a LIST on either thread sees a WRITE as soon as it is OK', async (t) => {
    const { spread } = await startServer(t);
    const clients = await spread(8);
    for (let i = 0; i < 40; i++) {
      const writer = clients[i % clients.length]!;
      const name = `new-${String(i).padStart(2, '0')}.jpg`;
      await writer.send(`WRITE,${name},2\nhi`);
      t.match(await writer.readLine(), /^OK 2 /);
      for (const reader of clients) {
        if (!(await list(reader)).includes(name)) t.fail(`${name} missing from a LIST after OK`);
      }
    }
    t.equal((await list(clients[0]!)).length, 40, 'every file listed');
  });

  t.test('HASH on either thread follows a file replaced on either thread', async (t) => {
    const { spread } = await startServer(t, { overwrite: true });
    const clients = await spread(8);
    for (let round = 0; round < 6; round++) {
      const data = randomBytes(10_000 + round);
      const writer = clients[(round * 3) % clients.length]!;
      await writer.send(Buffer.concat([Buffer.from(`WRITE,song.mp3,${data.length}\n`), data]));
      t.equal(await writer.readLine(), `OK ${data.length} ${sha256(data)}`);
      for (const reader of clients) {
        await reader.send('HASH,song.mp3\n');
        const reply = await reader.readLine();
        if (reply !== `OK ${sha256(data)} ${data.length}`) t.fail(`round ${round}: ${reply}`);
        await reader.send('READ,song.mp3\n');
        t.equal(await reader.readLine(), `OK ${data.length}`);
        if (!(await reader.readBytes(data.length)).equals(data)) t.fail('stale bytes');
      }
    }
  });

  t.test('BUSY counts the connections of both threads', async (t) => {
    const { server, port } = await startServer(t, { maxConnections: 6 });
    // Six that both threads hold some of (refused ones hold no slot, and spread retries).
    let held: RawClient[] = [];
    for (let attempt = 0; attempt < 8 && held.length === 0; attempt++) {
      const batch = await Promise.all(Array.from({ length: 6 }, () => RawClient.connect(port)));
      await eventually(() => server.connectionCount === 6, 'six open');
      if (server.threadStats!.every((thread) => thread.open > 0)) held = batch;
      else {
        for (const client of batch) client.destroy();
        await eventually(() => server.connectionCount === 0, 'all closed');
      }
    }
    t.equal(held.length, 6, 'six connections over both threads');
    t.teardown(() => held.forEach((client) => client.destroy()));
    const extra = await Promise.all(Array.from({ length: 10 }, () => RawClient.connect(port)));
    for (const client of extra) {
      t.match((await client.waitClose()).toString(), /^ERR BUSY /);
      client.destroy();
    }
    held[0]!.destroy();
    await eventually(() => server.connectionCount === 5, 'a slot to free');
    const next = await RawClient.connect(port);
    t.teardown(() => next.destroy());
    await next.send('LIST\n');
    t.equal(await next.readLine(), 'OK 0', 'the freed slot is taken, whichever thread');
  });

  t.test('BUSY per address counts both threads', async (t) => {
    const { server, connect } = await startServer(t, { maxConnectionsPerIp: 2 });
    const mine = [await connect('127.0.0.2'), await connect('127.0.0.2')];
    for (const client of mine) {
      await client.send('LIST\n');
      t.equal(await client.readLine(), 'OK 0');
    }
    const before = server.threadStats!.map((thread) => thread.accepted);
    const refusedOnes = await Promise.all(Array.from({ length: 16 }, () => connect('127.0.0.2')));
    for (const client of refusedOnes) t.match((await client.waitClose()).toString(), /^ERR BUSY /);
    t.ok(
      server.threadStats!.every((thread, i) => thread.accepted > before[i]!),
      'refusals came from both threads',
    );
    const other = await connect('127.0.0.3');
    await other.send('LIST\n');
    t.equal(await other.readLine(), 'OK 0', 'another address is not held back');
  });

  t.test('quit(): transfers on both threads finish, then every thread closes', async (t) => {
    const { server, root, port, spread } = await startServer(t);
    const clients = await spread(6);
    const data = randomBytes(5000);
    for (const [i, client] of clients.entries()) {
      await client.send(
        Buffer.concat([Buffer.from(`WRITE,q-${i}.mp3,${data.length}\n`), data.subarray(0, 100)]),
      );
    }
    await eventually(() => tempFiles(root).length === clients.length, 'every upload to start');
    let quitDone = false;
    const quitting = server.quit().then(() => (quitDone = true));
    t.ok(await refused(port), 'a new connection is refused, whichever thread takes it');
    await sleep(50);
    t.notOk(quitDone, 'quit waits for the transfers');
    for (const client of clients) {
      await client.send(Buffer.concat([data.subarray(100), Buffer.from('LIST\n')]));
      t.equal(await client.readLine(), `OK ${data.length} ${sha256(data)}`);
      t.match((await client.waitClose()).toString(), /^ERR SHUTTING_DOWN /);
      client.destroy();
    }
    await quitting;
    t.equal((await readdir(root)).length, clients.length, 'every upload was published');
  });

  t.test('forceQuit(): partial uploads on both threads are deleted', async (t) => {
    const { server, root, spread } = await startServer(t);
    const clients = await spread(6);
    for (const [i, client] of clients.entries()) await client.send(`WRITE,f-${i}.mp3,100\nabc`);
    await eventually(() => tempFiles(root).length === clients.length, 'every upload to start');
    await server.forceQuit();
    t.same(tempFiles(root), [], 'no temporary file is left when forceQuit() resolves');
    for (const client of clients) await client.waitClose();
    t.same(await readdir(root), []);
  });
}
