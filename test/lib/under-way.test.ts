/**
 * UnderWay alone: settled() waits for every call tracked when it is asked, however each ends,
 * and forgets calls once they are over.
 */
import t from 'tap';
import { UnderWay } from '../../lib/under-way.js';
import { deferred } from '../helpers/deferred.js';

t.test('add() hands back the same promise', async (t) => {
  const underWay = new UnderWay<number>();
  const call = Promise.resolve(7);
  t.equal(underWay.add(call), call);
  t.equal(await call, 7);
});

t.test('settled() waits for calls that succeed and calls that fail', async (t) => {
  const underWay = new UnderWay<string>();
  const ok = deferred<string>();
  const failing = deferred<string>();
  underWay.add(ok.promise);
  underWay.add(failing.promise).catch(() => undefined); // the caller's to handle, as in a store
  let done = false;
  const waiting = underWay.settled().then(() => (done = true));
  ok.resolve('upload');
  await new Promise((resolve) => setImmediate(resolve));
  t.notOk(done, 'one call is still under way');
  failing.reject(new Error('LOCKED'));
  await waiting;
  t.ok(done, 'both are over, whichever way');
});

t.test(
  'nothing under way: settled() resolves at once; calls are forgotten when over',
  async (t) => {
    const underWay = new UnderWay<number>();
    await underWay.settled();
    const call = deferred<number>();
    underWay.add(call.promise);
    call.resolve(1);
    await call.promise;
    await new Promise((resolve) => setImmediate(resolve));
    t.equal((underWay as unknown as { pending: Set<unknown> }).pending.size, 0, 'none kept');
  },
);
