/**
 * Password checks: right and wrong answers, the same bytes and time for an unknown name and a
 * wrong password, at most 2 checks at once and off the event loop, the per-address rate limit
 * on a clock the test moves, the success cache, and reload all or nothing.
 */
import t from 'tap';
import { createHmac } from 'node:crypto';
import {
  Accounts,
  DEFAULT_SCRYPT,
  deriveKey,
  formatCredential,
  hashPassword,
  type ScryptParams,
} from '../../lib/accounts.js';
import {
  AccessError,
  AUTH_FAILED_MESSAGE,
  Authenticator,
  type DeriveKey,
  FailureLimiter,
  isAccessError,
  TaskQueue,
} from '../../lib/authenticator.js';

const MINUTE = 60_000;
const PARAMS: ScryptParams = { ln: 15, r: 1, p: 1 };

/** A stand-in for scrypt where time does not matter: HMAC, instant. */
const fakeDerive: DeriveKey = async (password, salt, keyLength) =>
  createHmac('sha256', salt).update(password).digest().subarray(0, keyLength);

function fakeCredential(password: string, seed: number): string {
  const salt = Buffer.alloc(16, seed);
  return formatCredential(PARAMS, salt, createHmac('sha256', salt).update(password).digest());
}

/** alice/right and bob/secret, with the instant derivation and a clock the test moves. */
function fakeSetup(options: { successCacheMs?: number } = {}): {
  auth: Authenticator;
  clock: { now: number };
  calls: () => number;
} {
  const clock = { now: 1_000_000 };
  let calls = 0;
  const accounts = Accounts.parse(
    `alice:${fakeCredential('right', 1)}:r=/\nbob:${fakeCredential('secret', 2)}:rw=/\n`,
  );
  const auth = new Authenticator({
    accounts,
    now: () => clock.now,
    derive: (...args) => {
      calls++;
      return fakeDerive(...args);
    },
    successCacheMs: options.successCacheMs ?? 0,
  });
  return { auth, clock, calls: () => calls };
}

/** The code a verification ends with: 'OK' or the access code. */
async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (error) {
    if (isAccessError(error)) return error.accessCode;
    throw error;
  }
}

async function caught(promise: Promise<unknown>): Promise<AccessError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof AccessError) return error;
    throw error;
  }
  throw new Error('resolved, but should have been refused');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

t.test('right password, wrong password, unknown name, anonymous, a malformed name', async (t) => {
  const { auth } = fakeSetup();
  const ok = await auth.verify('alice', 'right', '10.0.0.1');
  t.same(ok.principal, { name: 'alice', credential: auth.accounts.get('alice')!.credential!.text });
  t.equal(ok.cached, false);
  const wrong = await caught(auth.verify('alice', 'wrong', '10.0.0.1'));
  const unknown = await caught(auth.verify('mallory', 'right', '10.0.0.1'));
  const anonymous = await caught(auth.verify('anonymous', '', '10.0.0.1'));
  const malformed = await caught(auth.verify('a:b,c', 'right', '10.0.0.1'));
  const crossed = await caught(auth.verify('alice', 'secret', '10.0.0.1'));
  for (const error of [wrong, unknown, anonymous, malformed, crossed]) {
    t.equal(error.accessCode, 'AUTH_FAILED');
    t.equal(error.message, AUTH_FAILED_MESSAGE);
    t.equal(error.closes, false, 'the door closes on the third, not here');
    t.equal(error.toReply(), wrong.toReply(), 'the same bytes');
  }
  t.equal(wrong.toReply(), 'ERR AUTH_FAILED wrong name or password\n');
  t.equal((await auth.verify('bob', 'secret', '10.0.0.1')).principal.name, 'bob');
});

t.test('an unknown name and a wrong password take the same time (real scrypt)', async (t) => {
  // Real scrypt at a test cost (N = 2^15, r = 2: about 8 MiB and tens of ms).
  const params = { ln: 15, r: 2, p: 1 };
  const accounts = Accounts.parse(`alice:${await hashPassword('right', params)}:r=/\n`);
  const auth = new Authenticator({
    accounts,
    successCacheMs: 0,
    limiter: { maxFailures: 1_000_000 },
  });
  const time = async (name: string): Promise<number> => {
    const started = performance.now();
    const error = await caught(auth.verify(name, 'wrong', '10.0.0.2'));
    t.equal(error.accessCode, 'AUTH_FAILED');
    return performance.now() - started;
  };
  await time('alice'); // warm up
  await time('mallory');
  /** Medians of 25 alternating pairs: the wrong password's and the unknown name's. */
  const measure = async (): Promise<[number, number]> => {
    const wrong: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 25; i++) {
      // Alternate the order, so a drift in the machine's load touches both alike.
      if (i % 2) {
        wrong.push(await time('alice'));
        unknown.push(await time('mallory'));
      } else {
        unknown.push(await time('mallory'));
        wrong.push(await time('alice'));
      }
    }
    return [median(wrong), median(unknown)];
  };
  const close = ([w, u]: [number, number]): boolean =>
    Math.abs(w - u) <= Math.max(0.2 * Math.max(w, u), 3);
  // A busy machine (the rest of the suite runs beside this) can skew one measurement; a real
  // difference (an unknown name that skips scrypt) shows in every one. Up to three.
  let medians = await measure();
  for (let attempt = 1; attempt < 3 && !close(medians); attempt++) {
    t.comment(`skewed (${medians.map((m) => m.toFixed(1)).join(' vs ')} ms): measuring again`);
    medians = await measure();
  }
  const [w, u] = medians;
  t.comment(`median wrong password ${w.toFixed(1)} ms, unknown name ${u.toFixed(1)} ms`);
  t.ok(w > 3, 'a check costs a real scrypt');
  t.ok(close(medians), `within 20% or 3 ms (${w.toFixed(1)} vs ${u.toFixed(1)})`);
});

t.test('the dummy for an unknown name has the cost most credentials have', async (t) => {
  const seen: ScryptParams[] = [];
  const mixed = Accounts.parse(
    [
      `a:$scrypt$ln=16,r=8,p=1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(32).toString('base64')}:`,
      `b:$scrypt$ln=15,r=4,p=1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(24).toString('base64')}:`,
      `c:$scrypt$ln=15,r=4,p=1$${Buffer.alloc(16).toString('base64')}$${Buffer.alloc(24).toString('base64')}:`,
    ].join('\n'),
  );
  let keyLength = 0;
  const auth = new Authenticator({
    accounts: mixed,
    derive: async (_password, _salt, length, params) => {
      seen.push({ ln: params.ln, r: params.r, p: params.p });
      keyLength = length;
      return Buffer.alloc(length);
    },
  });
  await caught(auth.verify('nobody', 'x', '10.0.0.3'));
  t.same(seen.pop(), { ln: 15, r: 4, p: 1 }, 'the most common parameters');
  t.equal(keyLength, 24, 'and hash length');
  auth.replaceAccounts(Accounts.parse(''));
  await caught(auth.verify('nobody', 'x', '10.0.0.3'));
  t.same(seen.pop(), DEFAULT_SCRYPT, 'no credentials at all: the production cost');
  t.equal(keyLength, 32);
});

t.test('at most 2 checks at once; the rest wait their turn', async (t) => {
  const accounts = Accounts.parse(`alice:${await hashPassword('right', PARAMS)}:r=/\n`);
  let active = 0;
  let peak = 0;
  let queuedPeak = 0;
  const auth = new Authenticator({
    accounts,
    successCacheMs: 0,
    derive: async (...args) => {
      active++;
      peak = Math.max(peak, active);
      queuedPeak = Math.max(queuedPeak, auth.queue.queued);
      try {
        return await deriveKey(...args);
      } finally {
        active--;
      }
    },
  });
  const attempts = Array.from({ length: 8 }, (_, i) =>
    outcome(
      auth.verify(i % 3 === 0 ? 'mallory' : 'alice', i % 2 ? 'right' : 'wrong', `10.1.0.${i}`),
    ),
  );
  t.equal(auth.queue.active, 2, 'two start at once');
  t.equal(auth.queue.queued, 6, 'six wait');
  const results = await Promise.all(attempts);
  t.same(
    results,
    Array.from({ length: 8 }, (_, i) => (i % 3 !== 0 && i % 2 ? 'OK' : 'AUTH_FAILED')),
  );
  t.equal(peak, 2, 'never more than two scrypt calls at once');
  t.ok(queuedPeak >= 4, `others waited meanwhile (up to ${queuedPeak})`);
  t.equal(auth.queue.active, 0);
  t.equal(auth.queue.queued, 0);
});

t.test('the TaskQueue alone: order, limit, errors release the slot', async (t) => {
  const queue = new TaskQueue(2);
  const order: number[] = [];
  const gates: (() => void)[] = [];
  const tasks = [0, 1, 2, 3].map((i) =>
    queue.run(async () => {
      order.push(i);
      await new Promise<void>((resolve) => gates.push(resolve));
      if (i === 1) throw new Error('task 1 fails');
      return i;
    }),
  );
  await new Promise((resolve) => setImmediate(resolve));
  t.same(order, [0, 1]);
  gates[1](); // the failing one ends first
  await t.rejects(tasks[1], { message: 'task 1 fails' });
  await new Promise((resolve) => setImmediate(resolve));
  t.same(order, [0, 1, 2], 'a failure frees its slot for the next in line');
  gates[0]();
  gates[2]();
  await new Promise((resolve) => setImmediate(resolve));
  gates[3]();
  t.same(await Promise.all([tasks[0], tasks[2], tasks[3]]), [0, 2, 3]);
  t.same(order, [0, 1, 2, 3]);
});

t.test('checks run off the event loop, with the production parameters', async (t) => {
  const credential = await hashPassword('correct horse', DEFAULT_SCRYPT);
  const auth = new Authenticator({ accounts: Accounts.parse(`alice:${credential}:r=/\n`) });
  let last = performance.now();
  let longestGap = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
  }, 5);
  const started = performance.now();
  const result = await auth.verify('alice', 'correct horse', '10.0.0.4');
  const took = performance.now() - started;
  clearInterval(ticker);
  t.equal(result.principal.name, 'alice');
  t.comment(
    `one production check: ${took.toFixed(0)} ms; longest event loop gap ${longestGap.toFixed(1)} ms`,
  );
  t.ok(took > 50, 'the check costs real time');
  // On the event loop, the check would be one gap as long as itself; off it, the gaps are the
  // machine's own (hundreds of ms on a loaded CI machine, so no fixed bound).
  t.ok(longestGap < took / 2, 'the event loop kept turning meanwhile');
  t.equal((await auth.verify('alice', 'correct horse', '10.0.0.4')).cached, true);
});

t.test('the rate limit: 10 failures in 10 minutes, then RATE_LIMITED until 10 quiet', async (t) => {
  const { auth, clock, calls } = fakeSetup();
  for (let i = 1; i <= 10; i++) {
    t.equal(
      await outcome(auth.verify('alice', 'wrong', '10.0.0.5')),
      'AUTH_FAILED',
      `failure ${i}`,
    );
    clock.now += 30_000; // 10 failures in 5 minutes
  }
  const before = calls();
  const limited = await caught(auth.verify('alice', 'right', '10.0.0.5'));
  t.equal(limited.accessCode, 'RATE_LIMITED', 'the 11th is refused, right password and all');
  t.equal(limited.closes, true, 'RATE_LIMITED closes the TCP connection');
  t.equal(limited.retryAfterSeconds, 570, 'Retry-After: 10 minutes after the last failure');
  t.equal(calls(), before, 'no password is checked while limited');
  t.equal(await outcome(auth.verify('mallory', 'x', '10.0.0.5')), 'RATE_LIMITED');
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.6')), 'OK', 'another address: no');
  t.equal(await outcome(auth.verify('alice', 'right', '::ffff:10.0.0.6')), 'OK');
  t.equal(
    await outcome(auth.verify('alice', 'right', '::ffff:10.0.0.5')),
    'RATE_LIMITED',
    'the same client over IPv4-mapped IPv6 (the other door) is the same address',
  );
  // RATE_LIMITED answers are not failures: asking every minute does not extend the limit.
  const lastFailure = clock.now - 30_000;
  while (clock.now < lastFailure + 10 * MINUTE - 1000) {
    t.equal(await outcome(auth.verify('alice', 'wrong', '10.0.0.5')), 'RATE_LIMITED');
    clock.now += 20_000;
  }
  clock.now = lastFailure + 10 * MINUTE - 1;
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.5')), 'RATE_LIMITED', 'at 9:59.999');
  clock.now = lastFailure + 10 * MINUTE;
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.5')), 'OK', 'after 10 quiet minutes');
  t.equal(await outcome(auth.verify('alice', 'wrong', '10.0.0.5')), 'AUTH_FAILED');
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.5')), 'OK', 'the count started over');
});

t.test('a failure during the limit extends it; successes do not reset the count', async (t) => {
  const { auth, clock } = fakeSetup();
  for (let i = 0; i < 9; i++) {
    t.equal(await outcome(auth.verify('alice', 'wrong', '10.0.0.7')), 'AUTH_FAILED');
    t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.7')), 'OK', 'a success between');
  }
  t.equal(await outcome(auth.verify('bob', 'wrong', '10.0.0.7')), 'AUTH_FAILED', 'the 10th');
  t.equal(await outcome(auth.verify('bob', 'secret', '10.0.0.7')), 'RATE_LIMITED');
  t.equal(auth.limiter.isLimited('10.0.0.7'), true);
  // A failure recorded while limited (one that was hashing when the limit came) extends it.
  clock.now += 5 * MINUTE;
  auth.limiter.recordFailure('10.0.0.7');
  clock.now += 9 * MINUTE;
  t.equal(await outcome(auth.verify('bob', 'secret', '10.0.0.7')), 'RATE_LIMITED');
  clock.now += MINUTE;
  t.equal(await outcome(auth.verify('bob', 'secret', '10.0.0.7')), 'OK');
});

t.test('failures older than 10 minutes do not count', async (t) => {
  const { auth, clock } = fakeSetup();
  for (let i = 0; i < 9; i++) await outcome(auth.verify('alice', 'wrong', '10.0.0.8'));
  clock.now += 10 * MINUTE;
  for (let i = 0; i < 9; i++) {
    t.equal(await outcome(auth.verify('alice', 'wrong', '10.0.0.8')), 'AUTH_FAILED');
  }
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.8')), 'OK', '9 in the window');
  t.equal(await outcome(auth.verify('alice', 'wrong', '10.0.0.8')), 'AUTH_FAILED', 'the 10th');
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.8')), 'RATE_LIMITED');
});

t.test('checks in flight when the limit is reached: exactly 10 AUTH_FAILED', async (t) => {
  const { auth } = fakeSetup();
  const results = await Promise.all(
    Array.from({ length: 16 }, () => outcome(auth.verify('alice', 'wrong', '10.0.0.9'))),
  );
  t.equal(results.filter((r) => r === 'AUTH_FAILED').length, 10);
  t.equal(results.filter((r) => r === 'RATE_LIMITED').length, 6);
  t.same(results.slice(0, 10), Array(10).fill('AUTH_FAILED'), 'in order');
  const right = await Promise.all([
    outcome(auth.verify('alice', 'right', '10.0.0.10')),
    outcome(auth.verify('alice', 'right', '10.0.0.9')),
  ]);
  t.same(right, ['OK', 'RATE_LIMITED']);
});

t.test('the FailureLimiter forgets quiet addresses and keeps at most maxAddresses', async (t) => {
  let now = 0;
  const limiter = new FailureLimiter({ now: () => now, maxAddresses: 3 });
  for (let i = 0; i < 5; i++) limiter.recordFailure(`10.2.0.${i}`);
  t.equal(limiter.size, 3, 'the longest quiet are forgotten first');
  t.equal(limiter.retryAfterMs('10.2.0.4'), 0);
  now += 11 * MINUTE;
  limiter.recordFailure('10.2.0.9');
  t.equal(limiter.size, 1, 'records past their window are swept');
  const small = new FailureLimiter({ now: () => now, maxFailures: 2, quietMs: 1000 });
  small.recordFailure('a');
  t.notOk(small.isLimited('a'));
  small.recordFailure('a');
  t.equal(small.retryAfterMs('a'), 1000);
  now += 1000;
  t.notOk(small.isLimited('a'));
  t.equal(small.size, 0);
});

t.test(
  'the success cache: no scrypt for a repeated right password, never for a wrong one',
  async (t) => {
    const { auth, clock, calls } = fakeSetup({ successCacheMs: 5 * MINUTE });
    await auth.verify('alice', 'right', '10.0.0.11');
    t.equal(calls(), 1);
    const again = await auth.verify('alice', 'right', '10.0.0.12');
    t.equal(again.cached, true);
    t.equal(calls(), 1, 'answered from the cache');
    await outcome(auth.verify('alice', 'wrong', '10.0.0.11'));
    await outcome(auth.verify('alice', 'wrong', '10.0.0.11'));
    t.equal(calls(), 3, 'wrong passwords are checked each time');
    await outcome(auth.verify('alice', 'righ', '10.0.0.11'));
    t.equal(calls(), 4);
    clock.now += 5 * MINUTE;
    t.equal((await auth.verify('alice', 'right', '10.0.0.11')).cached, false, 'expired');
    t.equal((await auth.verify('alice', 'right', '10.0.0.11')).cached, true);
    // A new credential for alice (a new password or token) empties the cache.
    auth.replaceAccounts(
      Accounts.parse(
        `alice:${fakeCredential('new', 3)}:r=/\nbob:${fakeCredential('secret', 2)}:r=/\n`,
      ),
    );
    t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.11')), 'AUTH_FAILED');
    t.equal(await outcome(auth.verify('alice', 'new', '10.0.0.11')), 'OK');
    // The limit comes before the cache: RATE_LIMITED, right or wrong.
    for (let i = 0; i < 10; i++) await outcome(auth.verify('x', 'y', '10.0.0.13'));
    t.equal(await outcome(auth.verify('alice', 'new', '10.0.0.13')), 'RATE_LIMITED');
  },
);

t.test(
  'sessions: a removed account or a replaced credential is anonymous from then on',
  async (t) => {
    const { auth } = fakeSetup();
    const alice = (await auth.verify('alice', 'right', '10.0.0.14')).principal;
    const bob = (await auth.verify('bob', 'secret', '10.0.0.14')).principal;
    t.equal(auth.resolve(alice), 'alice');
    t.equal(auth.resolve(undefined), undefined);
    const before = auth.accounts;
    auth.replaceAccounts(before.without('bob'));
    t.equal(auth.resolve(bob), undefined, 'removed');
    t.equal(auth.resolve(alice), 'alice', 'untouched');
    auth.replaceAccounts(Accounts.parse(`alice:${fakeCredential('right', 9)}:r=/\n`));
    t.equal(auth.resolve(alice), undefined, 'a new credential (a new token) ends old sessions');
    auth.replaceAccounts(before);
    t.equal(auth.resolve(bob), 'bob', 'the same credential again: the session holds');
  },
);

t.test('reload: all or nothing', async (t) => {
  const { auth } = fakeSetup();
  const before = auth.accounts;
  await t.rejects(
    auth.reload(async () => Accounts.parse('alice:broken:r=/')),
    { name: 'AccountsFileError', line: 1 },
  );
  t.equal(auth.accounts, before, 'a file that does not parse changes nothing');
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.15')), 'OK');
  const next = await auth.reload(async () => Accounts.parse(`carol:${fakeCredential('c', 4)}:r=/`));
  t.equal(auth.accounts, next, 'swapped in one step');
  t.equal(await outcome(auth.verify('alice', 'right', '10.0.0.15')), 'AUTH_FAILED');
  t.equal(await outcome(auth.verify('carol', 'c', '10.0.0.15')), 'OK');
});

t.test('a check in flight keeps the accounts it started with', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const accounts = Accounts.parse(`alice:${fakeCredential('right', 1)}:r=/\n`);
  const auth = new Authenticator({
    accounts,
    successCacheMs: 0,
    derive: async (...args) => {
      await gate;
      return fakeDerive(...args);
    },
  });
  const pending = outcome(auth.verify('alice', 'right', '10.0.0.16'));
  await new Promise((resolve) => setImmediate(resolve));
  auth.replaceAccounts(accounts.without('alice'));
  release();
  t.equal(await pending, 'OK', 'it answers for the credential it checked');
  t.equal(auth.resolve({ name: 'alice', credential: fakeCredential('right', 1) }), undefined);
});
