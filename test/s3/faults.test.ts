/**
 * The S3 store against a real Ceph RGW when things go wrong, and what the guarantees rest on:
 * a gateway stopped mid-upload (INTERNAL, nothing published, service back when it is), the
 * conditional publish alone deciding a race across two gateways (leases off), the gc with
 * an orphan and a stranger's object, and the start-up check refusing with one line.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import {
  DeleteObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { IoeClient, ProtocolError } from '../../pipelines/client.js';
import { createS3Client } from '../../lib/s3-client.js';
import { S3Storage } from '../../lib/s3-storage.js';
import { eventually, rig as getRig, run, runGc, s3Client, startReplica, type Rig } from './rig.js';

const MiB = 1024 * 1024;
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

async function client(t: Test, port: number): Promise<IoeClient> {
  const connection = await IoeClient.connect({ port });
  t.teardown(() => connection.destroy());
  return connection;
}

function code(error: unknown): string {
  return error instanceof ProtocolError ? error.code : String(error);
}

let rig: Rig;

t.before(async () => {
  rig = await getRig(t);
});

t.test('a gateway stopped mid-upload: INTERNAL, nothing published, back when it is', async (t) => {
  const prefix = rig.prefix('gateway');
  await rig.script('start-gw', 'c');
  let gatewayUp = true;
  t.teardown(async () => {
    if (gatewayUp) await rig.script('stop-gw', 'c');
  });
  const [onC, onA] = await Promise.all([
    startReplica(t, rig, { endpoint: rig.spare, prefix, label: 'c' }),
    startReplica(t, rig, { endpoint: rig.endpoints[0], prefix, label: 'a' }),
  ]);
  const writer = await client(t, onC.port);
  const name = 'down/mid.mp4';
  const size = 40 * MiB;
  const source = new PassThrough();
  const reply = writer.write(name, source, size);
  reply.catch(() => undefined);
  source.write(randomBytes(12 * MiB));
  await eventually(
    'a part in the store',
    async () => {
      const listed = await s3Client(rig).send(
        new ListMultipartUploadsCommand({ Bucket: rig.bucket, Prefix: `${prefix}/d/` }),
      );
      return (listed.Uploads ?? []).length > 0;
    },
    10_000,
  );
  await rig.script('stop-gw', 'c');
  gatewayUp = false;
  const stoppedAt = performance.now();
  // The client keeps sending; the server answers at once and drains the rest.
  for (let sent = 12 * MiB; sent < size; sent += 4 * MiB) source.write(randomBytes(4 * MiB));
  source.end();
  const error = await reply.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.equal(code(error), 'INTERNAL', 'the WRITE is answered INTERNAL');
  t.comment(`INTERNAL ${Math.round(performance.now() - stoppedAt)} ms after the gateway stopped`);
  await t.rejects(writer.list(), { code: 'INTERNAL' }, 'a LIST meanwhile is INTERNAL too');
  const put = await fetch(`http://127.0.0.1:${onC.httpPort}/media/down/put.mp4`, {
    method: 'PUT',
    body: 'x',
  });
  // scale-out.md: INTERNAL, "or 503 on HTTP": the same request may work once the store is back.
  t.equal(put.status, 503, 'a PUT meanwhile is 503');
  t.equal(((await put.json()) as { code: string }).code, 'INTERNAL', 'with the code INTERNAL');
  t.ok(put.headers.get('retry-after'), 'and a Retry-After');
  for (const path of ['/api/list', '/media/down/none.mp4']) {
    const get = await fetch(`http://127.0.0.1:${onC.httpPort}${path}`);
    t.equal(get.status, 503, `GET ${path} meanwhile is 503`);
    t.equal(((await get.json()) as { code: string }).code, 'INTERNAL');
  }
  const elsewhere = await client(t, onA.port);
  t.notOk(
    (await elsewhere.list()).some((entry) => entry.name === name),
    'nothing published',
  );
  await t.rejects(elsewhere.hash(name), { code: 'NOT_FOUND' });
  t.equal(onC.child.exitCode, null, 'the replica keeps running');

  await rig.script('start-gw', 'c');
  gatewayUp = true;
  const bytes = randomBytes(3 * MiB);
  // The same connection, the same name: the store is back, and the name's lock with it.
  const recovered = await eventually(
    'a WRITE through the gateway that came back',
    () =>
      writer.write(name, bytes, bytes.length).then(
        (receipt) => receipt.sha256 === sha256(bytes),
        (e: unknown) => {
          if (code(e) !== 'INTERNAL' && code(e) !== 'LOCKED') throw e;
          return false;
        },
      ),
    20_000,
    250,
  );
  t.comment(`service back ${recovered} ms after the gateway`);
  t.equal((await elsewhere.hash(name)).sha256, sha256(bytes), 'published, seen on the other');

  // What the failed upload left (its parts, if the abort could not reach the store) goes too.
  const gc = await runGc(rig, prefix, rig.endpoints[0]);
  t.comment(gc.trim());
  const s3 = s3Client(rig);
  const uploads = await s3.send(
    new ListMultipartUploadsCommand({ Bucket: rig.bucket, Prefix: `${prefix}/` }),
  );
  t.same(uploads.Uploads ?? [], [], 'no multipart upload left');
  const data = await s3.send(
    new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: `${prefix}/d/` }),
  );
  t.equal(data.KeyCount, 1, 'one data object: the published one');
});

t.test('the conditional publish alone decides a race across two gateways', async (t) => {
  const prefix = rig.prefix('conditional');
  process.env.AWS_ACCESS_KEY_ID ??= rig.credentials.AWS_ACCESS_KEY_ID;
  process.env.AWS_SECRET_ACCESS_KEY ??= rig.credentials.AWS_SECRET_ACCESS_KEY;
  // Twenty stores (twenty replicas, as far as the store can tell), ten on each gateway,
  // without leases: every upload passes the EXISTS check before any of them publishes.
  const stores = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      S3Storage.open(`s3://${rig.bucket}/${prefix}`, {
        client: createS3Client({ endpoint: rig.endpoints[i % 2], pathStyle: true }),
        leases: false,
        gcIntervalSeconds: 0,
        check: i < 2,
      }),
    ),
  );
  t.teardown(() => Promise.all(stores.map((store) => store.close())));
  for (let round = 0; round < 3; round++) {
    const name = `race/${round}.mp3`;
    const payloads = stores.map(() => randomBytes(100_000));
    const uploads = await Promise.all(
      stores.map((store, i) => store.beginUpload(name, payloads[i].length)),
    );
    await Promise.all(uploads.map((upload, i) => upload.write([payloads[i]])));
    const results = await Promise.allSettled(
      uploads.map((upload, i) => upload.publish({ sha256: sha256(payloads[i]) })),
    );
    await Promise.all(uploads.map((upload) => upload.abort()));
    const won = results.flatMap((result, i) => (result.status === 'fulfilled' ? [i] : []));
    t.equal(won.length, 1, `round ${round}: one publish of twenty`);
    t.ok(
      results.every((r) => r.status === 'fulfilled' || code(r.reason) === 'EXISTS'),
      'the others EXISTS',
    );
    const file = await stores[(won[0] + 1) % 20].open(name);
    t.equal(file.sha256, sha256(payloads[won[0]]), "the record holds the winner's receipt");
    const parts: Buffer[] = [];
    for await (const part of file.stream(0, file.size)) parts.push(part as Buffer);
    t.ok(Buffer.concat(parts).equals(payloads[won[0]]), "the bytes are the winner's");
  }
  const data = await s3Client(rig).send(
    new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: `${prefix}/d/` }),
  );
  t.equal(data.KeyCount, 3, "the losers' data was deleted");
});

t.test('odd names, and names too long for a key under a 100-byte prefix', async (t) => {
  const base = rig.prefix('names');
  const prefix = `${base}/${'p'.repeat(99 - base.length)}`;
  t.equal(Buffer.byteLength(prefix), 100);
  process.env.AWS_ACCESS_KEY_ID ??= rig.credentials.AWS_ACCESS_KEY_ID;
  process.env.AWS_SECRET_ACCESS_KEY ??= rig.credentials.AWS_SECRET_ACCESS_KEY;
  const [a, b] = await Promise.all(
    rig.endpoints.map((endpoint) =>
      S3Storage.open(`s3://${rig.bucket}/${prefix}`, {
        client: createS3Client({ endpoint, pathStyle: true }),
        gcIntervalSeconds: 0,
      }),
    ),
  );
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const long = `${'é'.repeat(127)}/`.repeat(3) + `${'x'.repeat(240)}.mp3`;
  const names = [
    "odd/ä ö+%20&=?#[]@!$'(),;~.mp3",
    'odd/日本語/ファイル.jpg',
    'odd/a%2Fb.mp4',
    'odd/ space .flac',
    'odd/"quote" <lt>{}|^`*.png',
    long,
  ];
  for (const [i, name] of names.entries()) {
    const bytes = Buffer.from(`file ${i}`);
    const upload = await a.beginUpload(name, bytes.length);
    await upload.write([bytes]);
    await upload.publish({ sha256: sha256(bytes) });
  }
  const listed = (await b.list()).map((entry) => entry.name);
  t.same(
    listed,
    [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))),
    'listed on the other gateway, in UTF-8 byte order',
  );
  for (const [i, name] of names.entries()) {
    const file = await b.open(name);
    const parts: Buffer[] = [];
    for await (const part of file.stream(0, file.size)) parts.push(part as Buffer);
    t.equal(Buffer.concat(parts).toString(), `file ${i}`, `read: ${name.slice(0, 40)}`);
  }
  await t.rejects(b.beginUpload(long, 1), { code: 'EXISTS' }, 'the long name is taken');
});

t.test('gc deletes an orphan now, leaves a stranger alone, exits 0', async (t) => {
  const prefix = rig.prefix('gc');
  const s3 = s3Client(rig);
  const orphan = `${prefix}/d/${randomBytes(16).toString('hex')}`;
  const stranger = `${prefix}/d/notes.txt`;
  const outside = `${prefix}/holiday.mp4`;
  for (const key of [orphan, stranger, outside]) {
    await s3.send(new PutObjectCommand({ Bucket: rig.bucket, Key: key, Body: 'bytes' }));
  }
  t.teardown(async () => {
    for (const key of [stranger, outside]) {
      await s3.send(new DeleteObjectCommand({ Bucket: rig.bucket, Key: key }));
    }
  });
  const output = await runGc(rig, prefix, rig.endpoints[1]);
  t.match(output, /^gc: deleted 1 data object\(s\) \(5 bytes\)/);
  await t.rejects(s3.send(new HeadObjectCommand({ Bucket: rig.bucket, Key: orphan })));
  await s3.send(new HeadObjectCommand({ Bucket: rig.bucket, Key: stranger }));
  await s3.send(new HeadObjectCommand({ Bucket: rig.bucket, Key: outside }));
  t.pass('objects that are not the server’s are left alone');
});

t.test('the start-up check refuses with one line when the store will not do', async (t) => {
  const start = (env: NodeJS.ProcessEnv, url = `s3://${rig.bucket}/check`) =>
    run(
      process.execPath,
      ['dist/scripts/server.js', '--storage', url, '--s3-path-style', '--port', '0', '--no-http'],
      { ...process.env, ...rig.credentials, AWS_ENDPOINT_URL: rig.endpoints[0], ...env },
      30_000,
    ).then(
      (output) => ({ ok: true, output }),
      (error: Error) => ({ ok: false, output: error.message }),
    );
  const cases: [string, NodeJS.ProcessEnv, string | undefined, RegExp][] = [
    ['wrong secret', { AWS_SECRET_ACCESS_KEY: 'wrong' }, undefined, /access denied \(HTTP 403\)/],
    ['no such bucket', {}, 's3://no-such-bucket-ioe/x', /no such bucket \(HTTP 404\)/],
    ['nothing listening', { AWS_ENDPOINT_URL: 'http://127.0.0.1:9' }, undefined, /ECONNREFUSED/],
  ];
  const results = await Promise.all(cases.map(([, env, url]) => start(env, url)));
  cases.forEach(([what, , , reason], i) => {
    const { ok, output } = results[i];
    t.notOk(ok, `${what}: it does not start`);
    const line = output.split('\n').find((text) => text.startsWith('ioe-server: '));
    t.match(line ?? output, reason, `${what}: ${line}`);
  });
});
