/** The read policy alone, and the range stream under it: the same bytes in place or pooled. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { openSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRangeStream } from '../../lib/file-range-stream.js';
import { ReadPolicy, unexplainedLimitFor } from '../../lib/read-policy.js';

t.test(
  'small reads run in place until the disk makes one slow, then go to the pool for a while',
  async (t) => {
    let now = 1000;
    let input = 0; // the process's block input
    const policy = new ReadPolicy({
      maxInPlaceBytes: 1024,
      slowMs: 1,
      coolDownMs: 500,
      now: () => now,
      blockInput: () => input,
    });
    t.ok(policy.inPlace(1024), 'a small read, in place');
    t.notOk(policy.inPlace(1025), 'a large one never');
    policy.took(0.2);
    t.ok(policy.inPlace(100), 'a fast read keeps reads in place');
    input += 128; // the read went to the disk
    policy.took(5);
    t.notOk(policy.inPlace(100), 'after a slow read from the disk: the pool');
    now += 499;
    t.notOk(policy.inPlace(100), 'for the whole cool-down');
    now += 1;
    t.ok(policy.inPlace(100), 'then in place again');
  },
);

t.test(
  'a slow read with no block input (the thread lost its core) keeps reads in place',
  async (t) => {
    let now = 1000;
    let input = 0;
    const policy = new ReadPolicy({
      slowMs: 1,
      coolDownMs: 500,
      unexplainedLimit: 3,
      now: () => now,
      blockInput: () => input,
    });
    policy.took(6);
    t.ok(policy.inPlace(100), 'one: still in place');
    now += 100;
    policy.took(6);
    t.ok(policy.inPlace(100), 'two within a cool-down: still in place');
    now += 450; // the first is now older than a cool-down
    policy.took(6);
    t.ok(policy.inPlace(100), 'two within any cool-down: still in place');
    now += 10;
    policy.took(6);
    t.notOk(policy.inPlace(100), 'three within one cool-down (a network filesystem): the pool');
    now += 500;
    t.ok(policy.inPlace(100), 'in place again after the cool-down');
    policy.took(6);
    policy.took(6);
    t.ok(policy.inPlace(100), 'the count started again after the pool');
    input += 8;
    policy.took(6);
    t.notOk(policy.inPlace(100), 'a slow read with block input behind it: the pool at once');
  },
);

t.test(
  'a root whose reads are not counted as block input: every slow read sends reads to the pool',
  async (t) => {
    const nfs = 0x6969n;
    t.equal(unexplainedLimitFor(nfs), 1, 'NFS');
    t.equal(unexplainedLimitFor(0x65735546n), 1, 'FUSE (sshfs, rclone)');
    t.equal(unexplainedLimitFor(0x2fc12fc1n), 1, 'ZFS');
    t.equal(unexplainedLimitFor(0xff534d42n), 1, 'CIFS');
    t.equal(unexplainedLimitFor(BigInt(0xff534d42 | 0)), 1, 'CIFS from a 32-bit build (negative)');
    t.ok(unexplainedLimitFor(0xef53n) > 1, 'ext4: the kernel counts its block input');
    const policy = new ReadPolicy({
      slowMs: 1,
      unexplainedLimit: unexplainedLimitFor(nfs),
      now: () => 0,
      blockInput: () => 0,
    });
    policy.took(6);
    t.notOk(policy.inPlace(100), 'the first slow read, with no block input: the pool');
  },
);

t.test('block input is blamed on a slow read only if it was seen growing recently', async (t) => {
  let now = 1000;
  let input = 0;
  let looks = 0;
  const policy = new ReadPolicy({
    slowMs: 1,
    coolDownMs: 500,
    now: () => now,
    blockInput: () => {
      looks++;
      return input;
    },
  });
  input += 64; // another thread read from the disk, long ago
  now += 150;
  policy.took(0.1); // over 100 ms since the last look: looks, and sees it
  policy.took(0.1); // right after: does not look
  t.equal(looks, 2, 'looked at construction and once more, not on every fast read');
  now += 150;
  policy.took(0.1); // looks again: nothing new
  policy.took(6);
  t.ok(policy.inPlace(100), 'growth seen over 100 ms before a slow read is not blamed on it');

  input += 64;
  now += 50;
  policy.took(0.1); // under 100 ms since the last look: does not look
  policy.took(6);
  t.notOk(policy.inPlace(100), 'growth since the last look is: the pool');

  now += 500;
  input += 64; // a fast read's readahead, say
  now += 100;
  policy.took(0.1); // looks, and sees it
  now += 20;
  policy.took(6); // waits on those pages: no new growth at this look
  t.notOk(policy.inPlace(100), 'growth seen just before a slow read is blamed on it');
});

t.test('a block input that falls, or cannot be counted, counts as the disk', async (t) => {
  let now = 1000;
  let input: number | Error = 100;
  const policy = new ReadPolicy({
    slowMs: 1,
    coolDownMs: 500,
    now: () => now,
    blockInput: () => {
      if (input instanceof Error) throw input;
      return input;
    },
  });
  now += 200;
  input = 50;
  policy.took(6);
  t.notOk(policy.inPlace(100), 'a count that fell');
  now += 1000;
  input = new Error('no rusage');
  policy.took(6);
  t.notOk(policy.inPlace(100), 'a count that failed');
});

t.test('time() measures the read it runs, errors included', async (t) => {
  let now = 0;
  let input = 0;
  const policy = new ReadPolicy({
    slowMs: 1,
    coolDownMs: 100,
    now: () => now,
    blockInput: () => input,
  });
  t.equal(
    policy.time(() => {
      now += 2;
      input += 8;
      return 7;
    }),
    7,
  );
  t.notOk(policy.inPlace(10), 'a read of 2 ms from the disk counted as slow');
  now += 100;
  t.throws(() =>
    policy.time(() => {
      now += 3;
      input += 8;
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
    'in place, then pooled': new ReadPolicy({
      maxInPlaceBytes: 1 << 20,
      slowMs: -1,
      unexplainedLimit: 2,
    }),
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
