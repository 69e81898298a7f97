/**
 * The counts the server's threads share: the table against a plain Map under random keys (a
 * small table, so that probes collide and removals shift), then threads racing on one table.
 */
import t from 'tap';
import { Worker } from 'node:worker_threads';
import {
  LocalReservations,
  LocalTally,
  SharedReservations,
  SharedTally,
} from '../../lib/shared-counts.js';
import { ConnectionLimiter } from '../../lib/limits.js';

t.test('the shared table counts as a Map does, through collisions and removals', async (t) => {
  const shared = SharedTally.create(64);
  const local = new LocalTally();
  let seed = 0x9e3779b9; // xorshift32: every bit of it varies, unlike a small LCG's low bits
  const random = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  let mismatches = 0;
  for (let step = 0; step < 20_000; step++) {
    const key = `k${random(40)}`;
    const max = 1 + random(3);
    if (random(2) === 0) {
      if (shared.add(key, max) !== local.add(key, max)) mismatches++;
    } else {
      shared.remove(key);
      local.remove(key);
    }
    if (step % 97 === 0) {
      for (let k = 0; k < 40; k++) {
        if (shared.count(`k${k}`) !== local.count(`k${k}`)) mismatches++;
      }
    }
  }
  t.equal(mismatches, 0, 'every answer and every count agrees');
  for (let k = 0; k < 40; k++) while (shared.count(`k${k}`) > 0) shared.remove(`k${k}`);
  t.equal(shared.entries, 0, 'emptied, it holds nothing');
});

t.test('a cap of 1 is a lock; a full table refuses loudly', async (t) => {
  const tally = SharedTally.create(16);
  t.ok(tally.add('upload:a.mp3', 1));
  t.notOk(tally.add('upload:a.mp3', 1), 'held');
  tally.remove('upload:a.mp3');
  t.ok(tally.add('upload:a.mp3', 1), 'free again');
  t.notOk(tally.add('x', 0), 'a cap of 0 admits nobody');
  for (let i = 0; tally.entries < 15; i++) tally.add(`fill-${i}`, 1);
  t.throws(() => tally.add('one-more', 1), /the shared table is full/);
  t.equal(tally.count('one-more'), 0);
  tally.remove('never-added');
  t.equal(tally.entries, 15, 'removing a key that is not there changes nothing');
});

t.test('reservations never promise more than is free', async (t) => {
  for (const reservations of [new LocalReservations(), new SharedReservations()]) {
    t.ok(reservations.reserve(600, 1000));
    t.notOk(reservations.reserve(500, 1000), 'only 400 left');
    t.ok(reservations.reserve(400, 1000));
    reservations.release(600);
    t.equal(reservations.reserved, 400);
    reservations.release(400);
    t.equal(reservations.reserved, 0);
  }
});

/** Runs `body` (a function's source, given the module and the buffers) on `count` threads. */
async function onThreads<T>(count: number, body: string, data: unknown): Promise<T[]> {
  const module = new URL('../../lib/shared-counts.js', import.meta.url).href;
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(${JSON.stringify(module)}).then(async (m) => {
      const result = await (${body})(m, workerData);
      parentPort.postMessage(result);
    });`;
  return Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<T>((resolve, reject) => {
          const worker = new Worker(source, { eval: true, workerData: { ...(data as object), i } });
          worker.once('message', (result: T) => {
            resolve(result);
            void worker.terminate();
          });
          worker.once('error', reject);
        }),
    ),
  );
}

t.test('threads racing for one name: exactly one holds it each time', async (t) => {
  const tally = SharedTally.create(4096);
  const wins = await onThreads<number[]>(
    4,
    `async (m, { buffer, i }) => {
      const tally = new m.SharedTally(buffer);
      const won = [];
      for (let round = 0; round < 2000; round++) {
        if (tally.add('upload:round-' + round, 1)) won.push(round);
        tally.add('busy:' + (round % 7), 1000); // other keys churn the table meanwhile
        tally.remove('busy:' + (round % 7));
      }
      return won;
    }`,
    { buffer: tally.buffer },
  );
  const all = wins.flat().sort((a, b) => a - b);
  t.equal(all.length, 2000, 'each round has one winner in all');
  t.same(
    all,
    Array.from({ length: 2000 }, (_, i) => i),
    'and no round has two',
  );
  t.equal(tally.entries, 2000, 'the busy keys are gone, the locks held');
});

t.test('threads counting connections: the total is exact and never passes the cap', async (t) => {
  const tally = SharedTally.create(64);
  const results = await onThreads<{ admitted: number; over: boolean }>(
    4,
    `async (m, { buffer }) => {
      const tally = new m.SharedTally(buffer);
      let admitted = 0, over = false;
      for (let n = 0; n < 5000; n++) {
        if (tally.add('connections', 50)) {
          admitted++;
          if (tally.count('connections') > 50) over = true;
          tally.remove('connections');
        }
      }
      return { admitted, over };
    }`,
    { buffer: tally.buffer },
  );
  t.notOk(
    results.some((result) => result.over),
    'never more than the cap at once',
  );
  t.ok(results.every((result) => result.admitted > 0));
  t.equal(tally.count('connections'), 0, 'every admission was released');
  t.equal(tally.entries, 0);
});

t.test('threads reserving bytes: never more than free in all', async (t) => {
  const reservations = new SharedReservations();
  const granted = await onThreads<number>(
    4,
    `async (m, { buffer }) => {
      const r = new m.SharedReservations(buffer);
      let granted = 0;
      for (let n = 0; n < 1000; n++) if (r.reserve(7, 10_000)) granted += 7;
      return granted;
    }`,
    { buffer: reservations.buffer },
  );
  const total = granted.reduce((a, b) => a + b, 0);
  t.equal(total, reservations.reserved, 'what was granted is what is reserved');
  t.ok(total <= 10_000 && total > 10_000 - 7, `filled to the brim, not past it (${total})`);
});

t.test('addAll takes every key or none', async (t) => {
  for (const tally of [new LocalTally(), SharedTally.create(64)]) {
    t.ok(tally.add('address:x', 2));
    t.ok(tally.add('address:x', 2));
    t.notOk(
      tally.addAll([
        ['connections', 10],
        ['address:x', 2],
      ]),
      'the second key is full',
    );
    t.equal(tally.count('connections'), 0, 'so the first was not taken either');
    t.ok(
      tally.addAll([
        ['connections', 10],
        ['address:y', 2],
      ]),
    );
    t.equal(tally.count('connections'), 1);
    t.equal(tally.count('address:y'), 1);
  }
});

t.test('threads at the per-address cap never make another address BUSY', async (t) => {
  // Total cap 3 with 2 held: one slot left. A thread whose address is at its cap knocks
  // again and again; another address must get the free slot every time it asks.
  const tally = SharedTally.create(64);
  const limiter = new ConnectionLimiter(3, 2, tally);
  const held = [limiter.acquire('x'), limiter.acquire('x')];
  t.ok(held.every(Boolean), 'x holds two of the three');
  const limits = new URL('../../lib/limits.js', import.meta.url).href;
  const results = await onThreads<number>(
    2,
    `async (m, { buffer, i }) => {
      const { ConnectionLimiter } = await import(${JSON.stringify(limits)});
      const limiter = new ConnectionLimiter(3, 2, new m.SharedTally(buffer));
      let refused = 0;
      for (let n = 0; n < 20000; n++) {
        if (i === 0) {
          if (limiter.acquire('x')) return -1; // x is at its cap: never admitted
        } else {
          const release = limiter.acquire('y');
          if (release) release();
          else refused++;
        }
      }
      return refused;
    }`,
    { buffer: tally.buffer },
  );
  t.equal(results[0], 0, 'x was never admitted past its cap');
  t.equal(results[1], 0, 'y was never refused while a slot was free');
});

t.test('a lock its thread never gave back fails loudly instead of hanging', async (t) => {
  const tally = SharedTally.create(16);
  const stuck = new SharedTally(tally.buffer, 50);
  new Int32Array(tally.buffer)[0] = 1; // as a thread terminated inside the lock would leave it
  const started = Date.now();
  t.throws(() => stuck.add('a', 1), /the shared table stayed locked/);
  t.ok(Date.now() - started < 2000, 'after its timeout, not never');
});
