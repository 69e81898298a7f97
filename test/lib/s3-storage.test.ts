/**
 * The S3 store's logic on an in-process fake S3 (s3-fake.ts): the layout, uploads in one PUT
 * and in parts, the conditional publish (no clobber without leases, a lost answer settled by
 * reading back), leases (LOCKED, stale by the store's clock, a left-over of this replica),
 * ranged reads and their resumption, the HASH receipt, overwrite, faults, the gc, the
 * start-up check. test/s3/ proves the guarantees again on a real Ceph RGW, across replicas.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { ProtocolError } from '../../lib/errors.js';
import { HashCache } from '../../lib/hash-cache.js';
import { isStoreUnavailable } from '../../lib/s3-client.js';
import { md5Hex, parseS3Url, S3Layout } from '../../lib/s3-layout.js';
import { PartBudget } from '../../lib/s3-part-budget.js';
import { S3Storage, s3OptionsFromEnv, type S3StorageOptions } from '../../lib/s3-storage.js';
import { partSizeFor } from '../../lib/s3-upload.js';
import type { StoredFile } from '../../lib/storage.js';
import { FakeS3, FakeS3Error } from './s3-fake.js';

const MiB = 1024 * 1024;
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

async function open(t: Test, fake: FakeS3, options: S3StorageOptions = {}): Promise<S3Storage> {
  const storage = await S3Storage.open('s3://bucket/lib', {
    client: fake,
    gcIntervalSeconds: 0,
    partBytes: 5 * MiB,
    ...options,
  });
  t.teardown(() => storage.close());
  return storage;
}

/** Uploads `bytes` as `name` in pieces of `piece` bytes; resolves with the publish. */
async function put(storage: S3Storage, name: string, bytes: Buffer, piece = 100_000) {
  const upload = await storage.beginUpload(name, bytes.length);
  try {
    for (let at = 0; at < bytes.length; at += piece) {
      await upload.write([bytes.subarray(at, at + piece)]);
    }
    return await upload.publish({ sha256: sha256(bytes) });
  } catch (error) {
    await upload.abort();
    throw error;
  }
}

async function read(file: StoredFile, offset = 0, length = file.size, chunk?: () => number) {
  const parts: Buffer[] = [];
  const stream = file.stream(offset, length, chunk ? { chunkBytes: chunk } : {});
  for await (const part of stream as AsyncIterable<Buffer>) parts.push(Buffer.from(part));
  return { bytes: Buffer.concat(parts), sizes: parts.map((part) => part.length) };
}

function code(error: unknown): string | undefined {
  return error instanceof ProtocolError ? error.code : undefined;
}

t.test('layout: the URL, record keys of short and long names, data ids', async (t) => {
  t.same(parseS3Url('s3://media'), { bucket: 'media', prefix: '' });
  t.same(parseS3Url('s3://media/a/b/'), { bucket: 'media', prefix: 'a/b/' });
  t.throws(() => parseS3Url('http://media'), /s3:\/\/bucket/);
  t.throws(() => parseS3Url('s3://Bad_Bucket'), /not a valid S3 bucket/);
  t.throws(() => parseS3Url('s3://media/a//b'), /empty segment/);
  t.throws(() => parseS3Url(`s3://media/${'p'.repeat(101)}`), /over 100 bytes/);
  const layout = new S3Layout(parseS3Url(`s3://media/${'p'.repeat(100)}`));
  const short = 'a/b.mp3';
  t.equal(layout.recordKey(short), `${'p'.repeat(100)}/n/a/b.mp3`);
  t.equal(layout.nameOfRecordKey(layout.recordKey(short)), short);
  // The longest name the protocol allows does not fit in a key after a 100-byte prefix.
  const long = `${'é'.repeat(127)}/`.repeat(3) + `${'x'.repeat(240)}.mp3`;
  t.ok(Buffer.byteLength(long) <= 1024 && Buffer.byteLength(long) > 1000);
  t.notOk(layout.fitsInKey(long));
  t.match(layout.recordKey(long), /\/h\/[0-9a-f]{64}$/);
  t.ok(Buffer.byteLength(layout.recordKey(long)) <= 1024);
  const id = '0123456789abcdef0123456789abcdef';
  t.equal(layout.idOfDataKey(layout.dataKey(id)), id);
  t.equal(layout.idOfDataKey(`${layout.data}not-ours`), undefined);
});

t.test('store faults that may pass (HTTP 503) and those that will not', async (t) => {
  const withStatus = (status: number) =>
    Object.assign(new Error('x'), { $metadata: { httpStatusCode: status } });
  const withCode = (code: string) => Object.assign(new Error(code), { code });
  for (const fault of [
    withStatus(500),
    withStatus(503),
    withStatus(429),
    withCode('ECONNREFUSED'),
    withCode('ECONNRESET'),
    withCode('ETIMEDOUT'),
    Object.assign(new Error('slow'), { name: 'TimeoutError' }),
    new Error('wrapped', { cause: withCode('ECONNREFUSED') }),
  ]) {
    t.ok(isStoreUnavailable(fault), `${fault.message}: unavailable`);
  }
  for (const other of [
    withStatus(403),
    withStatus(404),
    withStatus(412),
    withStatus(501),
    withCode('ENOENT'),
    new Error('a bug'),
    undefined,
  ]) {
    t.notOk(isStoreUnavailable(other), `${String(other)}: not the store's being down`);
  }
});

t.test('part sizes: 8 MiB, and more when 10,000 parts would not hold the file', async (t) => {
  t.equal(partSizeFor(1), 8 * MiB);
  t.equal(partSizeFor(10_000 * 8 * MiB), 8 * MiB);
  t.equal(partSizeFor(10_000 * 8 * MiB + 1), 9 * MiB);
  t.ok(partSizeFor(5 * 1024 ** 4) * 10_000 >= 5 * 1024 ** 4);
});

t.test('the part budget: waits in turn, tryTake never waits, a lone large part goes', async (t) => {
  const budget = new PartBudget(10);
  t.ok(budget.tryTake(6));
  t.notOk(budget.tryTake(6));
  let got = false;
  const waiting = budget.take(6).then(() => (got = true));
  await new Promise((resolve) => setImmediate(resolve));
  t.notOk(got, 'waits while the budget is spent');
  t.notOk(budget.tryTake(1), 'tryTake does not jump the queue');
  budget.give(6);
  await waiting;
  t.ok(got);
  budget.give(6);
  t.ok(budget.tryTake(50), 'a part larger than the budget goes when nothing else is held');
  const controller = new AbortController();
  const abandoned = budget.take(1, controller.signal);
  controller.abort();
  await t.rejects(abandoned);
  t.equal(budget.queued, 0);
});

t.test('environment tuning is checked', async (t) => {
  t.same(s3OptionsFromEnv({ IOE_S3_LEASE_SECONDS: '5' }).leaseSeconds, 5);
  t.throws(() => s3OptionsFromEnv({ IOE_S3_LEASE_SECONDS: '61' }), /IOE_S3_LEASE_SECONDS/);
  t.equal(s3OptionsFromEnv({ IOE_S3_PART_MIB: '16' }).partBytes, 16 * MiB);
});

t.test(
  'a small file: one PUT, the record names it, LIST joins by ETag without a GET',
  async (t) => {
    const fake = new FakeS3();
    const storage = await open(t, fake);
    const bytes = randomBytes(300_000);
    const published = await put(storage, 'music/a b+c%ü.mp3', bytes);
    t.match(published.version, /^[0-9a-f]{32}$/);
    t.equal(fake.calls.get('CreateMultipartUpload'), undefined, 'no multipart for a small file');
    const record = fake.objects.get(`bucket\nlib/n/music/a b+c%ü.mp3`)!;
    t.equal(record.body.toString(), published.version);
    t.equal(record.metadata.sha256, sha256(bytes));
    t.equal(record.etag, `"${md5Hex(published.version)}"`);
    t.same(fake.keys('lib/l/'), [], 'the lease is released');
    const before = fake.calls.get('GetObject') ?? 0;
    const list = await storage.list();
    t.same(
      list.map(({ type, name, size }) => ({ type, name, size })),
      [{ type: 'music', name: 'music/a b+c%ü.mp3', size: bytes.length }],
    );
    t.equal(fake.calls.get('GetObject') ?? 0, before, 'LIST read no record');
    t.same(list[0].mtime, published.mtime, "LIST's mtime is the publish's");
    const file = await storage.open('music/a b+c%ü.mp3');
    t.equal(file.size, bytes.length);
    t.equal(file.version, published.version);
    t.same(file.mtime, published.mtime);
    t.ok((await read(file)).bytes.equals(bytes));
  },
);

t.test(
  'LIST on another replica: a scan of the data for many new records, a GET for a few',
  async (t) => {
    const fake = new FakeS3();
    const writer = await open(t, fake);
    const reader = await open(t, fake);
    for (let i = 0; i < 100; i++) await put(writer, `many/${i}.mp3`, randomBytes(10 + i));
    const gets = fake.calls.get('GetObject') ?? 0;
    const lists = fake.calls.get('ListObjectsV2') ?? 0;
    const first = await reader.list();
    t.equal(first.length, 100);
    t.ok(
      first.every(
        (entry, i, all) =>
          i === 0 || Buffer.compare(Buffer.from(all[i - 1].name), Buffer.from(entry.name)) < 0,
      ),
    );
    t.same(
      new Set(first.map((entry) => entry.size)),
      new Set(Array.from({ length: 100 }, (_, i) => 10 + i)),
    );
    t.equal(fake.calls.get('GetObject') ?? 0, gets, '100 unknown records: no GET');
    t.equal((fake.calls.get('ListObjectsV2') ?? 0) - lists, 3, 'records, long names, then data');
    await put(writer, 'many/new.mp3', randomBytes(5));
    const second = await reader.list();
    t.equal(second.find((entry) => entry.name === 'many/new.mp3')?.size, 5);
    t.equal((fake.calls.get('GetObject') ?? 0) - gets, 1, 'one new record: one GET');
    await reader.list();
    t.equal((fake.calls.get('GetObject') ?? 0) - gets, 1, 'and none once it is known');
  },
);

t.test('a large file goes in parts; ranged reads follow chunkBytes and resume', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  const bytes = randomBytes(12 * MiB + 12345);
  await put(storage, 'big.mp4', bytes, 1_000_000);
  t.equal(fake.calls.get('UploadPart'), 3, 'three parts of 5 MiB (the last smaller)');
  t.equal(fake.uploads.size, 0);
  t.equal(storage.budget.inUse, 0, 'the part buffers went back to the budget');
  const file = await storage.open('big.mp4');
  const sizes = [70_000, 1 << 20, 5, 300_000];
  let asked = 0;
  const offset = 6 * MiB - 17;
  const { bytes: got, sizes: chunks } = await read(file, offset, 1_500_000, () => {
    return sizes[asked++ % sizes.length];
  });
  t.ok(got.equals(bytes.subarray(offset, offset + 1_500_000)));
  t.same(chunks.slice(0, 4), sizes, 'each chunk is the size asked before it');
  t.equal(fake.gets.get(`lib/d/${file.version}`), 1, 'one GET for the range');
  // A body that breaks mid-way is resumed from the first byte not received.
  const again = await storage.open('big.mp4');
  fake.breakNextGet = { key: `lib/d/${again.version}`, after: 3 * MiB + 7 };
  t.ok((await read(again)).bytes.equals(bytes), 'whole after a broken body');
  t.equal(fake.gets.get(`lib/d/${again.version}`), 3, 'one more GET, from where it broke');
});

t.test('HASH answers the receipt kept in the record, reading no data', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  const bytes = randomBytes(2 * MiB);
  await put(storage, 'h.mp4', bytes);
  const other = await open(t, fake); // another replica: it never saw the upload
  const hashes = new HashCache();
  const file = await other.open('h.mp4');
  t.same(await hashes.hash(file), { sha256: sha256(bytes), size: bytes.length });
  t.equal(fake.gets.get(`lib/d/${file.version}`), undefined, 'the data was not read');
});

t.test('no clobber comes from the conditional publish alone (leases off)', async (t) => {
  const fake = new FakeS3();
  // One upload per replica (a replica's own uploads of a name lock each other out locally).
  const payloads = Array.from({ length: 12 }, () => randomBytes(64 * 1024));
  const replicas = await Promise.all(payloads.map(() => open(t, fake, { leases: false })));
  // Every upload passes the EXISTS check before any publishes: only the store can decide.
  const uploads = await Promise.all(
    payloads.map((bytes, i) => replicas[i].beginUpload('race.mp3', bytes.length)),
  );
  await Promise.all(uploads.map((upload, i) => upload.write([payloads[i]])));
  const results = await Promise.allSettled(
    uploads.map((upload, i) => upload.publish({ sha256: sha256(payloads[i]) })),
  );
  const won = results.flatMap((result, i) => (result.status === 'fulfilled' ? [i] : []));
  t.equal(won.length, 1, 'exactly one publish succeeds');
  for (const result of results) {
    if (result.status === 'rejected') t.equal(code(result.reason), 'EXISTS');
  }
  await Promise.all(uploads.map((upload) => upload.abort()));
  const file = await replicas[1].open('race.mp3');
  t.ok((await read(file)).bytes.equals(payloads[won[0]]), "the stored bytes are the winner's");
  t.equal(fake.keys('lib/d/').length, 1, "the losers' data was deleted");
});

t.test('a publish whose answer was lost is settled by reading the record back', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  // The record PUT lands, then its answer is lost; the SDK's retry would get 412.
  let once = true;
  fake.fault = ({ command, input }) => {
    if (command === 'PutObject' && String(input.Key).startsWith('lib/n/') && once) {
      once = false;
      return { after: new FakeS3Error('PreconditionFailed', 412) };
    }
    return undefined;
  };
  const bytes = randomBytes(1000);
  const published = await put(storage, 'lost.jpg', bytes);
  t.equal((await storage.open('lost.jpg')).version, published.version);
  // A fault with nothing landed: INTERNAL (a plain error), nothing published, nothing left.
  fake.fault = ({ command, input }) =>
    command === 'PutObject' && String(input.Key).startsWith('lib/n/')
      ? { before: new FakeS3Error('InternalError', 500) }
      : undefined;
  const error = await put(storage, 'fault.jpg', bytes).catch((e: unknown) => e);
  t.ok(error instanceof Error && !(error instanceof ProtocolError), 'a fault, not a code');
  fake.fault = undefined;
  await t.rejects(storage.open('fault.jpg'), { code: 'NOT_FOUND' });
  t.same(fake.keys('lib/l/'), [], 'the lease is released');
  // The data stays for the gc: the record's fate was unknown when the upload gave up.
  const report = await storage.collectGarbage();
  t.equal(report.deleted, 1, 'the gc deletes the unreferenced data');
  t.equal(fake.keys('lib/d/').length, 1);
});

t.test('a full store is NO_SPACE', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  fake.fault = ({ command }) =>
    command === 'UploadPart' ? { before: new FakeS3Error('QuotaExceeded', 403) } : undefined;
  await t.rejects(put(storage, 'full.mp4', randomBytes(11 * MiB), 1 << 20), {
    code: 'NO_SPACE',
  });
  fake.fault = undefined;
  t.equal(fake.uploads.size, 0, 'the multipart upload was aborted');
  t.same(fake.keys('lib/'), [], 'nothing left');
});

t.test('LOCKED across replicas; a stale lease is taken over, by the store clock', async (t) => {
  const fake = new FakeS3();
  const a = await open(t, fake, { leaseSeconds: 10 });
  const b = await open(t, fake, { leaseSeconds: 10 });
  const upload = await a.beginUpload('busy.mp4', 10);
  await t.rejects(b.beginUpload('busy.mp4', 10), { code: 'LOCKED' });
  await t.rejects(a.beginUpload('busy.mp4', 10), { code: 'LOCKED' });
  // A crash: the lease stays, unrefreshed. Stale after its TTL by the store's clock only.
  (upload as unknown as { o: { lease: { release(): void } } }).o.lease.release = () => undefined;
  fake.advance(9_000);
  await t.rejects(b.beginUpload('busy.mp4', 10), { code: 'LOCKED' }, 'not stale yet');
  fake.advance(3_000);
  const taken = await b.beginUpload('busy.mp4', 10);
  await taken.write([Buffer.alloc(10, 1)]);
  await taken.publish({ sha256: sha256(Buffer.alloc(10, 1)) });
  t.equal((await a.open('busy.mp4')).size, 10);
});

t.test('an upload whose lease was taken over fails and publishes nothing', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake, { leaseSeconds: 2 });
  const upload = await storage.beginUpload('stolen.mp4', 2000);
  await upload.write([randomBytes(1000)]);
  const [leaseKey] = fake.keys('lib/l/');
  fake.objects.set(`bucket\n${leaseKey}`, {
    body: Buffer.from('{"replica":"other","upload":"x","ttl":2,"n":0}'),
    etag: '"someone-else"',
    metadata: {},
    lastModified: fake.now(),
  });
  await new Promise((resolve) => setTimeout(resolve, 700)); // a refresh (every 0.5 s) finds it
  await t.rejects(upload.write([randomBytes(1000)]), /lost its lease/);
  await upload.abort();
  await t.rejects(storage.open('stolen.mp4'), { code: 'NOT_FOUND' });
  t.same(fake.keys('lib/l/'), [leaseKey], "the other replica's lease is left alone");
});

t.test("this replica's own left-over lease is taken over at once", async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  fake.fault = ({ command, input }) =>
    command === 'DeleteObject' && String(input.Key).startsWith('lib/l/')
      ? { before: new FakeS3Error('ServiceUnavailable', 503) }
      : undefined;
  const upload = await storage.beginUpload('left.mp3', 5);
  await upload.abort(); // its lease could not be deleted
  t.equal(fake.keys('lib/l/').length, 1);
  fake.fault = undefined;
  const again = await storage.beginUpload('left.mp3', 5);
  await again.abort();
});

t.test('close() while an upload takes its lease: refused, and the lease given back', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  let closing: Promise<void> | undefined;
  fake.fault = ({ command, input }) => {
    // The lease's create-only PUT is on its way: the server quits now.
    if (command === 'PutObject' && String(input.Key).startsWith('lib/l/')) {
      closing ??= storage.close();
    }
    return undefined;
  };
  await t.rejects(storage.beginUpload('late.mp4', 10), { code: 'SHUTTING_DOWN' });
  t.ok(closing, 'close() came while the lease was being taken');
  await closing;
  t.same(fake.keys('lib/l/'), [], 'no lease left to wait out');
  fake.fault = undefined;
  const other = await open(t, fake); // another replica: not LOCKED by a store that has gone
  const upload = await other.beginUpload('late.mp4', 10);
  await upload.abort();
  await t.rejects(storage.beginUpload('later.mp4', 10), { code: 'SHUTTING_DOWN' });
});

t.test('abort deletes what was stored; nothing is visible meanwhile', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  const upload = await storage.beginUpload('gone.mp4', 12 * MiB);
  await upload.write([randomBytes(11 * MiB)]);
  t.same(await storage.list(), [], 'not listed');
  await t.rejects(storage.open('gone.mp4'), { code: 'NOT_FOUND' });
  await upload.abort();
  t.equal(fake.uploads.size, 0);
  t.same(fake.keys('lib/'), []);
  t.equal(storage.budget.inUse, 0);
});

t.test('EXISTS: the name, a parent that is a file, a folder of that name', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  await put(storage, 'x.mp4', Buffer.from('x'));
  await put(storage, 'dir.mp4/y.mp3', Buffer.from('y'));
  await t.rejects(storage.beginUpload('x.mp4', 1), { code: 'EXISTS' });
  await t.rejects(storage.beginUpload('x.mp4/z.mp3', 1), { code: 'EXISTS' });
  await t.rejects(storage.beginUpload('dir.mp4', 1), { code: 'EXISTS' });
  t.same(fake.keys('lib/l/'), [], 'the refused uploads released their leases');
});

/** Begins an upload of `name` and sends all its bytes, without publishing. */
async function staged(storage: S3Storage, name: string, bytes: Buffer) {
  const upload = await storage.beginUpload(name, bytes.length);
  await upload.write([bytes]);
  return {
    publish: () =>
      upload.publish({ sha256: sha256(bytes) }).then(
        () => 'OK',
        async (error: unknown) => {
          await upload.abort();
          return code(error) ?? String(error);
        },
      ),
  };
}

t.test('a file and a file inside it, uploaded at once: exactly one publishes', async (t) => {
  for (const overwrite of [false, true]) {
    for (const first of ['file', 'inside'] as const) {
      const what = `${first} publishes first${overwrite ? ', --overwrite' : ''}`;
      const fake = new FakeS3();
      const storage = await open(t, fake, { overwrite });
      // Both pass the checks at the start: neither exists yet.
      const file = await staged(storage, 'a.mp4', Buffer.from('file'));
      const inside = await staged(storage, 'a.mp4/b.jpg', Buffer.from('inside'));
      const results =
        first === 'file'
          ? [await file.publish(), await inside.publish()]
          : [await inside.publish(), await file.publish()].reverse();
      const expected = first === 'file' ? ['OK', 'EXISTS'] : ['EXISTS', 'OK'];
      t.same(results, expected, `${what}: the second is EXISTS`);
      const listed = (await storage.list()).map((entry) => entry.name);
      t.same(listed, [first === 'file' ? 'a.mp4' : 'a.mp4/b.jpg'], `${what}: LIST shows one`);
      t.same(fake.keys('lib/l/'), [], `${what}: no lease left`);
    }
  }
});

t.test('a folder marker: siblings publish, the folder is no file, LIST skips it', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake, { overwrite: true });
  await put(storage, 'a.mp4/b.jpg', Buffer.from('b'));
  t.ok(fake.objects.has('bucket\nlib/n/a.mp4'), 'a marker at the parent record key');
  await put(storage, 'a.mp4/c.jpg', Buffer.from('c'));
  await put(storage, 'a.mp4/d.mp4/e.jpg', Buffer.from('e'));
  t.same(
    (await storage.list()).map((entry) => entry.name),
    ['a.mp4/b.jpg', 'a.mp4/c.jpg', 'a.mp4/d.mp4/e.jpg'],
    'the files under it, not the markers',
  );
  await t.rejects(storage.open('a.mp4'), { code: 'NOT_FOUND' }, 'a folder is not readable');
  await t.rejects(
    storage.beginUpload('a.mp4', 1),
    { code: 'EXISTS', message: /folder/ },
    'nor replaced by a file, even with --overwrite',
  );
  // An upload that passed the start before the marker came is refused at its publish.
  const fresh = new FakeS3();
  const other = await open(t, fresh, { overwrite: true });
  const early = await staged(other, 'x.mp4', Buffer.from('x'));
  await put(other, 'x.mp4/y.jpg', Buffer.from('y'));
  t.equal(await early.publish(), 'EXISTS', 'an overwrite never replaces a folder marker');
  t.same(fresh.keys('lib/d/').length, 1, 'its data is deleted');
});

t.test('overwrite: a reader opened before the replace finishes on the old bytes', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake, { overwrite: true, readGraceSeconds: 60 });
  const old = Buffer.alloc(3 * MiB, 1);
  const next = Buffer.alloc(3 * MiB, 2);
  const first = await put(storage, 'o.mp4', old);
  t.notOk(first.replaced);
  const reader = await storage.open('o.mp4');
  const replaced = await put(storage, 'o.mp4', next);
  t.ok(replaced.replaced);
  t.not(replaced.version, first.version);
  t.ok((await read(reader)).bytes.equals(old), 'the early reader gets the old bytes whole');
  t.ok((await read(await storage.open('o.mp4'))).bytes.equals(next));
  t.same(fake.keys('lib/g/'), [`lib/g/${first.version}`], 'the old data is marked');
  let report = await storage.collectGarbage();
  t.equal(report.inGrace, 1, 'kept for the readers during the grace');
  fake.advance(61_000);
  report = await storage.collectGarbage();
  t.equal(report.deleted, 1);
  t.same(fake.keys('lib/d/'), [`lib/d/${replaced.version}`]);
  t.same(fake.keys('lib/g/'), [], 'and its marker');
  // HTTP's If-None-Match: * still refuses.
  await t.rejects(storage.beginUpload('o.mp4', 1, { createOnly: true }), { code: 'EXISTS' });
});

t.test('gc: orphans go, uploads in progress stay, stale leases and their parts go', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake, { leaseSeconds: 5 });
  await put(storage, 'kept.mp3', Buffer.from('kept'));
  // An orphan: data no record names (a crash between the data and the record).
  fake.objects.set('bucket\nlib/d/0123456789abcdef0123456789abcdef', {
    body: Buffer.from('orphan'),
    etag: `"${md5Hex('orphan')}"`,
    metadata: {},
    lastModified: fake.now(),
  });
  // Something that is not ours, under the prefix and under d/: never touched.
  fake.objects.set('bucket\nlib/d/README', {
    body: Buffer.from('x'),
    etag: '"x"',
    metadata: {},
    lastModified: fake.now(),
  });
  const live = await storage.beginUpload('live.mp4', 11 * MiB);
  await live.write([randomBytes(6 * MiB)]);
  while (fake.uploads.size === 0) await new Promise((resolve) => setImmediate(resolve));
  let report = await storage.collectGarbage();
  t.equal(report.deleted, 1, 'the orphan');
  t.equal(report.aborted, 0, 'the live upload is left alone');
  t.ok(report.inProgress >= 1);
  t.ok(fake.objects.has('bucket\nlib/d/README'));
  // The replica dies: its lease is no longer refreshed, the gc aborts its parts once stale.
  const crashed = live as unknown as {
    o: { lease: { release(): void; held(): boolean } };
  };
  crashed.o.lease.release = () => undefined;
  fake.advance(6_500);
  report = await storage.collectGarbage();
  t.equal(report.aborted, 1, 'the dead upload is aborted');
  t.equal(fake.uploads.size, 0);
  fake.advance(10_000);
  report = await storage.collectGarbage();
  t.equal(report.leases, 1, 'its lease is deleted after two TTLs');
  t.same(
    fake.keys('lib/').filter((key) => !key.startsWith('lib/d/README')),
    [`lib/d/${(await storage.open('kept.mp3')).version}`, 'lib/n/kept.mp3'],
  );
  await live.abort();
});

t.test('a name too long for a key: a hashed record, listed and opened', async (t) => {
  const fake = new FakeS3();
  const storage = await S3Storage.open(`s3://bucket/${'p'.repeat(100)}`, {
    client: fake,
    gcIntervalSeconds: 0,
  });
  t.teardown(() => storage.close());
  const long = `${'é'.repeat(127)}/`.repeat(3) + `${'x'.repeat(240)}.mp3`;
  await put(storage, long, Buffer.from('long'));
  await put(storage, 'a.mp3', Buffer.from('short'));
  await put(storage, 'zz.mp3', Buffer.from('short'));
  t.same(
    (await storage.list()).map((entry) => entry.name),
    ['a.mp3', 'zz.mp3', long],
    'listed in UTF-8 byte order',
  );
  t.equal((await read(await storage.open(long))).bytes.toString(), 'long');
  await t.rejects(storage.beginUpload(long, 1), { code: 'EXISTS' });
});

t.test("objects that are not the server's are ignored, never served", async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  for (const [key, body] of [
    ['lib/n/fake.mp3', 'not an id'],
    ['lib/n/empty.mp3', ''],
    ['lib/n/.hidden/x.mp3', '0123456789abcdef0123456789abcdef'],
    ['lib/n/notes.txt', '0123456789abcdef0123456789abcdef'],
    ['lib/other.mp3', 'x'],
  ] as const) {
    fake.objects.set(`bucket\n${key}`, {
      body: Buffer.from(body),
      etag: `"${md5Hex(body)}"`,
      metadata: { size: '1' },
      lastModified: fake.now(),
    });
  }
  t.same(await storage.list(), []);
  await t.rejects(storage.open('fake.mp3'), { code: 'NOT_FOUND' });
  await t.rejects(storage.open('empty.mp3'), { code: 'NOT_FOUND' });
});

t.test('LISTs that arrive during one share the next', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  await put(storage, 'a.mp3', Buffer.from('a'));
  const before = fake.calls.get('ListObjectsV2') ?? 0;
  const lists = await Promise.all([1, 2, 3, 4, 5].map(() => storage.list()));
  t.equal(lists.length, 5);
  t.equal((fake.calls.get('ListObjectsV2') ?? 0) - before, 4, 'two scans (records, long names)');
});

t.test('the start-up check refuses a store without the conditional write', async (t) => {
  const fake = new FakeS3();
  fake.conditional = false;
  await t.rejects(
    S3Storage.open('s3://bucket/x', { client: fake, gcIntervalSeconds: 0 }),
    /does not honour a create-only PUT/,
  );
  t.same(fake.keys(), [], 'the probe is deleted');
  await t.rejects(
    S3Storage.open('s3://missing/x', { client: new FakeS3(), gcIntervalSeconds: 0 }),
    /the bucket s3:\/\/missing\/x\/ is not reachable: no such bucket/,
  );
});

t.test('a stream destroyed early frees its GET', async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  await put(storage, 'd.mp4', randomBytes(2 * MiB));
  const file = await storage.open('d.mp4');
  const stream = file.stream(0, file.size, { chunkBytes: () => 64 * 1024 }) as Readable;
  const iterator = stream[Symbol.asyncIterator]();
  await iterator.next();
  stream.destroy();
  await new Promise((resolve) => stream.once('close', resolve));
  t.ok(stream.destroyed);
});

t.test("a READ gives each body piece's memory back once all of it is copied", async (t) => {
  const fake = new FakeS3();
  const storage = await open(t, fake);
  const bytes = randomBytes(MiB + 12345);
  await put(storage, 'p.mp4', bytes);
  fake.sentPieces = [];
  // Chunks of 100,000 bytes over pieces of 64 KiB: most pieces go into two chunks.
  const got = await read(await storage.open('p.mp4'), 0, bytes.length, () => 100_000);
  t.ok(got.bytes.equals(bytes), 'every byte, in order');
  t.ok(fake.sentPieces.length >= 17, `${fake.sentPieces.length} pieces sent`);
  const canLetGo = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';
  t.same(
    fake.sentPieces.map((piece) => piece.length === 0),
    fake.sentPieces.map(() => canLetGo),
    canLetGo ? 'each piece emptied' : `each piece left to the collector (${process.version})`,
  );
});
