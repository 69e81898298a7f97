/**
 * The scale-out guarantees on a real Ceph RGW, with server replicas as child processes spread
 * over two gateways of one cluster (test/s3/rig.ts): no clobber among 50 writers, never stale,
 * invisible and LOCKED while uploading, a kill -9 mid-upload (lease, gc), atomic overwrite, and
 * a 200 MiB file through multipart with ranged reads (and each replica's memory meanwhile).
 */
import t, { type Test } from 'tap';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import { IoeClient, ProtocolError } from '../../pipelines/client.js';
import {
  eventually,
  rig as getRig,
  runGc,
  s3Client,
  startReplica,
  TEST_LEASE_SECONDS,
  type Replica,
  type Rig,
} from './rig.js';

const MiB = 1024 * 1024;
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** Deterministic bytes (AES-CTR of zeros): fast, and different for every seed. */
function content(size: number, seed: number): Buffer {
  const key = createHash('sha256').update(`seed ${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

async function client(t: Test, replica: Replica): Promise<IoeClient> {
  const connection = await IoeClient.connect({ port: replica.port });
  t.teardown(() => connection.destroy());
  return connection;
}

async function readAll(connection: IoeClient, name: string, offset?: number, length?: number) {
  const parts: Buffer[] = [];
  for await (const part of connection.read(name, { offset, length }) as AsyncIterable<Buffer>) {
    parts.push(part);
  }
  return Buffer.concat(parts);
}

function code(error: unknown): string {
  return error instanceof ProtocolError ? error.code : String(error);
}

function rssMiB(replica: Replica): number {
  const status = readFileSync(`/proc/${replica.child.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** Samples a replica's RSS every 50 ms while `work` runs; resolves with the peak (MiB). */
async function peakRss<T>(replica: Replica, work: () => Promise<T>) {
  let peak = rssMiB(replica);
  const timer = setInterval(() => (peak = Math.max(peak, rssMiB(replica))), 50);
  try {
    const started = performance.now();
    const result = await work();
    return { result, peak: Math.max(peak, rssMiB(replica)), ms: performance.now() - started };
  } finally {
    clearInterval(timer);
  }
}

let rig: Rig;
let prefix: string;
let replicas: Replica[];

t.before(async () => {
  rig = await getRig(t);
  prefix = rig.prefix('replicas');
  const [a, b] = rig.endpoints;
  // Two replicas on each gateway: a1, b1, a2, b2.
  replicas = await Promise.all(
    [a, b, a, b].map((endpoint, i) =>
      startReplica(t, rig, { endpoint, prefix, label: `${i % 2 ? 'b' : 'a'}${(i >> 1) + 1}` }),
    ),
  );
});

t.test('50 writers of one new name across replicas: exactly one OK, its bytes', async (t) => {
  for (let round = 0; round < 2; round++) {
    const name = `race/${round}.mp4`;
    const connections = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client(t, replicas[i % replicas.length])),
    );
    const payloads = connections.map((_, i) => content(256 * 1024, round * 100 + i));
    const results = await Promise.allSettled(
      connections.map((connection, i) => connection.write(name, payloads[i], payloads[i].length)),
    );
    const winners = results.flatMap((result, i) => (result.status === 'fulfilled' ? [i] : []));
    t.equal(winners.length, 1, `round ${round}: exactly one OK`);
    const codes = new Set(
      results.flatMap((result) => (result.status === 'rejected' ? [code(result.reason)] : [])),
    );
    t.ok(
      [...codes].every((c) => c === 'LOCKED' || c === 'EXISTS'),
      `others: ${[...codes]}`,
    );
    const expected = sha256(payloads[winners[0]]);
    t.equal(
      (results[winners[0]] as PromiseFulfilledResult<{ sha256: string }>).value.sha256,
      expected,
    );
    for (const replica of replicas) {
      const reader = await client(t, replica);
      t.equal(sha256(await readAll(reader, name)), expected, `${replica.label} reads the winner`);
      t.equal((await reader.hash(name)).sha256, expected);
    }
    await Promise.all(connections.map((connection) => connection.close()));
  }
});

t.test(
  'WRITE on one replica, then LIST, READ and HASH on another at once, 200 times',
  async (t) => {
    // Four chains at once, each writing on one replica and looking on the next (always on the
    // other gateway), with LIST, READ and HASH on three connections of their own.
    const chains = await Promise.all(
      replicas.map(async (replica, i) => ({
        writer: await client(t, replica),
        observers: await Promise.all([0, 1, 2].map(() => client(t, replicas[(i + 1) % 4]))),
      })),
    );
    let misses = 0;
    let checked = 0;
    await Promise.all(
      chains.map(async ({ writer, observers: [lister, reader, hasher] }, chain) => {
        for (let i = 0; i < 50; i++) {
          const name = `fresh/${chain}/${i}.mp3`;
          const bytes = randomBytes(1000 + ((i * 7919) % 20_000));
          const receipt = await writer.write(name, bytes, bytes.length);
          const [list, read, hash] = await Promise.all([
            lister.list(),
            readAll(reader, name),
            hasher.hash(name),
          ]);
          const entry = list.find((item) => item.name === name);
          if (!entry || entry.size !== bytes.length || !read.equals(bytes)) misses++;
          if (hash.sha256 !== receipt.sha256 || receipt.sha256 !== sha256(bytes)) misses++;
          checked++;
        }
      }),
    );
    t.equal(checked, 200);
    t.equal(misses, 0, 'every file was listed, read and hashed right after its OK');
  },
);

/** A WRITE whose payload the test feeds: `send(bytes)`, then `end()` for the reply. */
function feed(connection: IoeClient, name: string, size: number) {
  const source = new PassThrough();
  const reply = connection.write(name, source, size);
  reply.catch(() => undefined);
  return { send: (bytes: Buffer) => source.write(bytes), source, reply };
}

t.test('an upload in progress is invisible and LOCKED on every other replica', async (t) => {
  const [a1, b1, , b2] = replicas;
  const bytes = content(20 * MiB, 7);
  const name = 'busy/big.mp4';
  const upload = feed(await client(t, a1), name, bytes.length);
  upload.send(bytes.subarray(0, 10 * MiB));
  const other = await client(t, b1);
  // a1 has begun the upload once the name's lease is in the store (a probe on b1 sooner than
  // that would race the WRITE's command line to a1, and rightly win).
  const s3 = s3Client(rig);
  const leaseKey = `${prefix}/l/${createHash('sha256').update(name).digest('hex')}`;
  await eventually(
    "a1's lease",
    () =>
      s3.send(new HeadObjectCommand({ Bucket: rig.bucket, Key: leaseKey })).then(
        () => true,
        () => false,
      ),
    5000,
    50,
  );
  for (const replica of [b1, b2]) {
    const connection = await client(t, replica);
    t.notOk(
      (await connection.list()).some((entry) => entry.name === name),
      'not listed',
    );
    await t.rejects(readAll(connection, name), { code: 'NOT_FOUND' }, 'not readable');
    await t.rejects(connection.hash(name), { code: 'NOT_FOUND' }, 'not hashable');
    await t.rejects(connection.write(name, Buffer.from('y'), 1), { code: 'LOCKED' });
    const put = await fetch(`http://127.0.0.1:${replica.httpPort}/media/busy/big.mp4`, {
      method: 'PUT',
      body: 'z',
    });
    t.equal(put.status, 423, 'a PUT is LOCKED (423)');
    const get = await fetch(`http://127.0.0.1:${replica.httpPort}/media/busy/big.mp4`);
    t.equal(get.status, 404);
    await get.arrayBuffer();
  }
  upload.send(bytes.subarray(10 * MiB));
  upload.source.end();
  t.equal((await upload.reply).sha256, sha256(bytes));
  t.equal(sha256(await readAll(other, name)), sha256(bytes), 'then b1 reads it whole');
});

t.test(
  'a file and a file inside it, uploaded at once on two gateways: one publishes',
  async (t) => {
    const [a1, b1, a2] = replicas;
    const lease = (name: string) =>
      `${prefix}/l/${createHash('sha256').update(name).digest('hex')}`;
    const s3 = s3Client(rig);
    const leaseTaken = (name: string) =>
      eventually(
        `the lease of ${name}`,
        () =>
          s3.send(new HeadObjectCommand({ Bucket: rig.bucket, Key: lease(name) })).then(
            () => true,
            () => false,
          ),
        5000,
        20,
      );
    const outcomes = new Map<string, number>();
    for (let round = 0; round < 6; round++) {
      const file = `nest/${round}/a.mp4`;
      const inside = `${file}/b.jpg`;
      const bytes = [content(MiB, 100 + round), content(MiB, 200 + round)];
      // Both begin (and pass the checks at the start) before either has all its bytes.
      const [first, second] =
        round % 2 === 0
          ? [
              [a1, file, 0],
              [b1, inside, 1],
            ]
          : [
              [b1, inside, 1],
              [a1, file, 0],
            ];
      const uploads = [];
      for (const [replica, name, i] of [first, second] as [Replica, string, number][]) {
        const upload = feed(await client(t, replica), name, MiB);
        upload.send(bytes[i].subarray(0, MiB / 2));
        await leaseTaken(name);
        uploads.push({ name, upload, i });
      }
      for (const { upload, i } of uploads) {
        upload.send(bytes[i].subarray(MiB / 2));
        upload.source.end();
      }
      const results = await Promise.all(
        uploads.map(({ upload }) => upload.reply.then(() => 'OK', code)),
      );
      const key = [...results].sort().join(' ');
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      t.same([...results].sort(), ['EXISTS', 'OK'], `round ${round}: one OK, one EXISTS`);
      const winner = uploads[results.indexOf('OK')];
      for (const replica of [a2, b1]) {
        const names = (await (await client(t, replica)).list())
          .map((entry) => entry.name)
          .filter((name) => name.startsWith(`nest/${round}/`));
        t.same(names, [winner.name], `round ${round}: LIST shows the winner only`);
      }
      t.equal(
        sha256(await readAll(await client(t, a2), winner.name)),
        sha256(bytes[winner.i]),
        `round ${round}: the winner's bytes`,
      );
    }
    t.comment(`outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  },
);

t.test('kill -9 mid-upload: nothing visible, the lease expires, gc leaves no orphan', async (t) => {
  const [, b1] = replicas;
  const doomed = await startReplica(t, rig, {
    endpoint: rig.endpoints[0],
    prefix,
    label: 'doomed',
  });
  const name = 'crash/doomed.mp4';
  const upload = feed(await client(t, doomed), name, 30 * MiB);
  upload.send(content(20 * MiB, 9));
  const s3 = s3Client(rig);
  // Two 8 MiB parts are in the store once the multipart upload exists and has parts.
  await eventually(
    'a multipart upload in progress',
    async () => {
      const listed = await s3.send(
        new ListMultipartUploadsCommand({ Bucket: rig.bucket, Prefix: `${prefix}/d/` }),
      );
      return (listed.Uploads ?? []).length > 0;
    },
    10_000,
  );
  await delay(300);
  doomed.child.kill('SIGKILL');
  t.equal(await doomed.exited, 'signal SIGKILL');
  const killedAt = performance.now();
  const other = await client(t, b1);
  t.notOk(
    (await other.list()).some((entry) => entry.name === name),
    'not listed',
  );
  await t.rejects(readAll(other, name), { code: 'NOT_FOUND' });
  await t.rejects(other.write(name, Buffer.from('a'), 1), { code: 'LOCKED' }, 'still leased');
  const replacement = Buffer.from('after the crash');
  await eventually(
    'the lease expires',
    () =>
      other.write(name, replacement, replacement.length).then(
        () => true,
        (error: unknown) => {
          if (code(error) !== 'LOCKED') throw error;
          return false;
        },
      ),
    (TEST_LEASE_SECONDS + 5) * 1000,
    250,
  );
  const freedAfter = performance.now() - killedAt;
  // Stale after the TTL by the store's clock, which counts whole seconds (up to 3 s more).
  t.ok(
    freedAfter <= (TEST_LEASE_SECONDS + 3.5) * 1000,
    `lock free after ${Math.round(freedAfter)} ms`,
  );
  t.comment(`the crashed replica's lock was free ${Math.round(freedAfter)} ms after kill -9`);

  const gc = await runGc(rig, prefix, rig.endpoints[1]);
  t.match(gc, /aborted [1-9]\d* multipart upload/, 'gc aborted the dead multipart upload');
  t.comment(gc.trim());
  const uploads = await s3.send(
    new ListMultipartUploadsCommand({ Bucket: rig.bucket, Prefix: `${prefix}/` }),
  );
  t.same(uploads.Uploads ?? [], [], 'no multipart upload left');
  // Every data object is named by a record: no orphan bytes.
  const list = async (folder: string) =>
    (await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: `${prefix}/${folder}` })))
      .Contents ?? [];
  const records = await list('n/');
  const named = new Set(
    await Promise.all(
      records.map(async ({ Key }) =>
        (
          await s3.send(new GetObjectCommand({ Bucket: rig.bucket, Key }))
        ).Body!.transformToString(),
      ),
    ),
  );
  const data = (await list('d/')).map(({ Key }) => Key!.slice(`${prefix}/d/`.length));
  t.same(
    data.filter((id) => !named.has(id)),
    [],
    'no data object without a record',
  );
  t.same(await list('l/'), [], 'no lease left');
  t.equal((await readAll(other, name)).toString(), 'after the crash');
});

t.test('--overwrite: readers finish on the old bytes, never see a mix', async (t) => {
  const overwritePrefix = rig.prefix('overwrite');
  const [a, b] = await Promise.all(
    rig.endpoints.map((endpoint, i) =>
      startReplica(t, rig, {
        endpoint,
        prefix: overwritePrefix,
        args: ['--overwrite'],
        label: `ow-${i}`,
      }),
    ),
  );
  const name = 'over/write.mp4';
  const size = 4 * MiB;
  const versions = Array.from({ length: 6 }, (_, v) => content(size, 1000 + v));
  const known = new Map(versions.map((bytes, v) => [sha256(bytes), v]));
  const writer = await client(t, a);
  await writer.write(name, versions[0], size);

  // A reader that began before a replace finishes on the old bytes; one after its OK gets the new.
  const early = await client(t, b);
  const stream = early.read(name) as Readable;
  const first: Buffer[] = [];
  let got = 0;
  for await (const part of stream as AsyncIterable<Buffer>) {
    first.push(part);
    got += part.length;
    if (got >= MiB) break;
  }
  // `break` destroyed the stream: read the old version through a second early reader instead.
  const early2 = await client(t, b);
  const slow = early2.read(name) as Readable;
  slow.pause();
  await new Promise((resolve) => slow.once('readable', resolve));
  const replaced = await fetch(`http://127.0.0.1:${a.httpPort}/media/over/write.mp4`, {
    method: 'PUT',
    body: versions[1],
  });
  t.equal(replaced.status, 200, 'a PUT over a file is 200 with --overwrite');
  await replaced.arrayBuffer();
  const parts: Buffer[] = [];
  for await (const part of slow as AsyncIterable<Buffer>) parts.push(part);
  t.equal(known.get(sha256(Buffer.concat(parts))), 0, 'the early reader got the old version whole');
  t.equal(known.get(sha256(await readAll(await client(t, b), name))), 1, 'a later one the new');

  // Replaces and reads at once, through both doors and both gateways.
  let mixed = 0;
  let reads = 0;
  let stop = false;
  const readers = [a, b, a, b].map(async (replica, i) => {
    const connection = await client(t, replica);
    while (!stop) {
      if (i % 2 === 0) {
        const bytes = await readAll(connection, name);
        if (!known.has(sha256(bytes))) mixed++;
      } else {
        const start = 1_000_000 + i * 1000;
        const response = await fetch(`http://127.0.0.1:${replica.httpPort}/media/over/write.mp4`, {
          headers: { Range: `bytes=${start}-${start + 3 * MiB - 1}` },
        });
        const bytes = Buffer.from(await response.arrayBuffer());
        const whole = versions.find((version) =>
          version.subarray(start, start + 3 * MiB).equals(bytes),
        );
        if (response.status !== 206 || !whole) mixed++;
      }
      reads++;
    }
  });
  for (let v = 2; v < versions.length; v++) {
    await writer.write(name, versions[v], size);
    await delay(50);
  }
  stop = true;
  await Promise.all(readers);
  t.ok(reads >= 8, `${reads} reads overlapped ${versions.length - 2} replaces`);
  t.equal(mixed, 0, 'no read saw a mix of versions');
  t.equal((await writer.hash(name)).sha256, sha256(versions[versions.length - 1]));
});

t.test('200 MiB through multipart; ranged reads from the middle; memory stays flat', async (t) => {
  const [a1, b1, , b2] = replicas;
  const size = 200 * MiB;
  const bytes = content(size, 4242);
  const expected = sha256(bytes);
  const name = 'large/200.mp4';
  const before = { a1: rssMiB(a1), b1: rssMiB(b1) };
  const put = await peakRss(a1, async () => {
    const writer = await client(t, a1);
    const pieces = Readable.from(
      (function* () {
        for (let at = 0; at < size; at += MiB) yield bytes.subarray(at, at + MiB);
      })(),
    );
    return writer.write(name, pieces, size);
  });
  t.equal(put.result.sha256, expected, 'the receipt is the SHA-256 of the bytes');
  const s3 = s3Client(rig);
  const listed = await s3.send(
    new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: `${prefix}/d/` }),
  );
  const object = (listed.Contents ?? []).find((item) => item.Size === size);
  t.match(object?.ETag ?? '', /-25"$/, 'stored as a multipart object of 25 parts of 8 MiB');

  const reader = await client(t, b1);
  const offset = 100 * MiB + 12345;
  const middle = await readAll(reader, name, offset, 5 * MiB);
  t.ok(middle.equals(bytes.subarray(offset, offset + 5 * MiB)), 'READ from the middle');
  const tail = await readAll(reader, name, size - 1000);
  t.ok(tail.equals(bytes.subarray(size - 1000)), 'READ of the last bytes');
  const range = await fetch(`http://127.0.0.1:${b2.httpPort}/media/large/200.mp4`, {
    headers: { Range: 'bytes=150000000-150999999' },
  });
  t.equal(range.status, 206);
  t.equal(range.headers.get('content-range'), `bytes 150000000-150999999/${size}`);
  t.ok(Buffer.from(await range.arrayBuffer()).equals(bytes.subarray(150_000_000, 151_000_000)));

  const get = await peakRss(b1, async () => sha256(await readAll(reader, name)));
  t.equal(get.result, expected, 'the whole file READ on another replica hashes to the receipt');
  const hashStart = performance.now();
  t.equal((await (await client(t, b2)).hash(name)).sha256, expected);
  const hashMs = performance.now() - hashStart;
  t.ok(hashMs < get.ms / 5, `HASH took ${Math.round(hashMs)} ms: the receipt, not a read`);

  const putGrowth = put.peak - before.a1;
  const getGrowth = get.peak - before.b1;
  t.comment(
    `200 MiB WRITE on ${a1.label}: ${Math.round(put.ms)} ms ` +
      `(${Math.round(size / MiB / (put.ms / 1000))} MiB/s), RSS ${Math.round(before.a1)} -> ` +
      `peak ${Math.round(put.peak)} MiB`,
  );
  t.comment(
    `200 MiB READ on ${b1.label}: ${Math.round(get.ms)} ms ` +
      `(${Math.round(size / MiB / (get.ms / 1000))} MiB/s), RSS ${Math.round(before.b1)} -> ` +
      `peak ${Math.round(get.peak)} MiB`,
  );
  t.ok(putGrowth < 100, `the uploading replica grew ${Math.round(putGrowth)} MiB (< 100)`);
  t.ok(getGrowth < 100, `the reading replica grew ${Math.round(getGrowth)} MiB (< 100)`);
});
