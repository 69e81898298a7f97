/** The read policy alone, and the range stream under it: the same bytes in place or pooled. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRangeStream } from '../../lib/file-range-stream.js';
import { ReadPolicy } from '../../lib/read-policy.js';

t.test('small reads run in place until one is slow, then go to the pool for a while', async (t) => {
  let now = 1000;
  const policy = new ReadPolicy({
    maxInPlaceBytes: 1024,
    slowMs: 1,
    coolDownMs: 500,
    now: () => now,
  });
  t.ok(policy.inPlace(1024), 'a small read, in place');
  t.notOk(policy.inPlace(1025), 'a large one never');
  policy.took(0.2);
  t.ok(policy.inPlace(100), 'a fast read keeps reads in place');
  policy.took(5); // the disk
  t.notOk(policy.inPlace(100), 'after a slow read: the pool');
  now += 499;
  t.notOk(policy.inPlace(100), 'for the whole cool-down');
  now += 1;
  t.ok(policy.inPlace(100), 'then in place again');
});

t.test('time() measures the read it runs, errors included', async (t) => {
  let now = 0;
  const policy = new ReadPolicy({ slowMs: 1, coolDownMs: 100, now: () => now });
  t.equal(
    policy.time(() => {
      now += 2;
      return 7;
    }),
    7,
  );
  t.notOk(policy.inPlace(10), 'a read of 2 ms counted as slow');
  now += 100;
  t.throws(() =>
    policy.time(() => {
      now += 3;
      throw new Error('EIO');
    }),
  );
  t.notOk(policy.inPlace(10), 'a slow failing read counts too');
});

t.test('the range stream yields the same bytes in place, pooled, and switching', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const content = randomBytes(200_000);
  const path = join(dir, 'a.mp4');
  await writeFile(path, content);
  const policies: Record<string, ReadPolicy | undefined> = {
    'no policy (all pooled)': undefined,
    'all in place': new ReadPolicy({ maxInPlaceBytes: 1 << 20, slowMs: 1e9 }),
    'in place, then pooled': new ReadPolicy({ maxInPlaceBytes: 1 << 20, slowMs: -1 }),
  };
  for (const [label, policy] of Object.entries(policies)) {
    const chunks: Buffer[] = [];
    const stream = new FileRangeStream(openSync(path, 'r'), {
      offset: 1234,
      length: 150_000,
      chunkBytes: () => 16_384,
      policy,
    });
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    t.ok(Buffer.concat(chunks).equals(content.subarray(1234, 151_234)), label);
  }
});
