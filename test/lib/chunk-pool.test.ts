/** The chunk pool alone: buffers come back only once the socket has sent them. */
import t from 'tap';
import { ChunkPool } from '../../lib/chunk-pool.js';

t.test('a buffer is reused only after the output has been sent past its end', async (t) => {
  let sent = 0;
  const pool = new ChunkPool(() => sent);
  const first = pool.take(1000);
  t.equal(first.length, 1000);
  pool.track(first, 1000);
  const second = pool.take(1000);
  t.not(second.buffer, first.buffer, 'not while the socket still holds it');
  pool.track(second, 2000);
  sent = 999;
  t.not(pool.take(1000).buffer, first.buffer, 'not one byte early');
  sent = 1000;
  const third = pool.take(800);
  t.equal(third.buffer, first.buffer, 'reused once sent');
  t.equal(third.length, 800, 'as exactly the size asked');
  t.not(pool.take(4000).buffer, second.buffer, 'a buffer too small for the size is not used');
});

t.test('free buffers kept are bounded', async (t) => {
  let sent = 0;
  const pool = new ChunkPool(() => sent, 2);
  const chunks = Array.from({ length: 5 }, (_, i) => {
    const chunk = pool.take(100);
    pool.track(chunk, (i + 1) * 100);
    return chunk;
  });
  sent = 500;
  const reused = new Set(
    Array.from({ length: 5 }, () => pool.take(100).buffer).filter((memory) =>
      chunks.some((chunk) => chunk.buffer === memory),
    ),
  );
  t.equal(reused.size, 2, 'only `keep` buffers come back');
});

t.test('a socket that sent more than the output holds: reuse stops for good', async (t) => {
  let sent = 0;
  const pool = new ChunkPool(() => sent);
  const first = pool.take(100);
  sent = 150; // someone else wrote to the socket
  pool.track(first, 100);
  sent = 10_000;
  const next = pool.take(100);
  t.not(next.buffer, first.buffer, 'the count cannot be trusted: nothing is reused');
  pool.track(next, 200);
  t.not(pool.take(100).buffer, next.buffer);
});

t.test('release(): no buffer is kept for the next download', async (t) => {
  let sent = 0;
  const pool = new ChunkPool(() => sent);
  const first = pool.take(100);
  pool.track(first, 100);
  sent = 100;
  pool.release();
  t.not(pool.take(100).buffer, first.buffer, 'a sent buffer is not reused after release');
  const second = pool.take(100);
  pool.track(second, 200);
  pool.release();
  sent = 200;
  t.not(pool.take(100).buffer, second.buffer, 'nor one that was still in the socket');
});

t.test('free(): the buffer is reused by the next take', async (t) => {
  const pool = new ChunkPool(); // the HTTP door's: no output count
  const first = pool.take(1000);
  const second = pool.take(1000);
  t.not(second.buffer, first.buffer, 'not reused before it is freed');
  pool.free(first);
  const third = pool.take(1000);
  t.equal(third.buffer, first.buffer, 'reused once freed');
  t.equal(third.length, 1000);
  t.not(pool.take(1000).buffer, first.buffer, 'and handed out once, not twice');
  pool.free(second);
  const smaller = pool.take(10);
  t.equal(smaller.buffer, second.buffer, 'a freed buffer serves a smaller size');
  t.equal(smaller.length, 10, 'as exactly the size asked');
  t.equal(smaller.byteOffset, 0);
  pool.free(smaller);
  const larger = pool.take(2000);
  t.not(larger.buffer, second.buffer, 'a buffer too small for the size is not used');
  t.equal(larger.length, 2000);
  t.equal(pool.take(500).buffer, second.buffer, 'it stays spare for a size it fits');
});

t.test('free(): a buffer the pool did not lend is never taken back', async (t) => {
  const pool = new ChunkPool();
  // Buffers from Node's shared pool: their memory holds other, live buffers.
  const small = Buffer.from('x');
  const unsafe = Buffer.allocUnsafe(100);
  const neighbour = Buffer.allocUnsafe(100);
  t.ok(unsafe.buffer.byteLength > unsafe.length, 'allocUnsafe memory is a slice of a larger pool');
  const slice = neighbour.subarray(10, 20);
  pool.free(small);
  pool.free(unsafe);
  pool.free(slice);
  // Buffers with memory of their own, but not this pool's.
  const own = Buffer.allocUnsafeSlow(100);
  const alloc = Buffer.alloc(100);
  const other = new ChunkPool().take(100);
  pool.free(own);
  pool.free(alloc);
  pool.free(other);
  const foreign = new Set<ArrayBufferLike>(
    [small, unsafe, neighbour, slice, own, alloc, other].map((b) => b.buffer),
  );
  for (let i = 0; i < 8; i++) {
    const taken = pool.take(1 + i * 10);
    if (foreign.has(taken.buffer)) t.fail(`take ${i} handed out memory it never lent`);
  }
  t.pass('none of them came back');
});

t.test('free(): at most `keep` spares are kept', async (t) => {
  const pool = new ChunkPool(undefined, 2);
  const lent = Array.from({ length: 5 }, () => pool.take(100));
  for (const chunk of lent) pool.free(chunk);
  const memories = lent.map((chunk) => chunk.buffer);
  const again = Array.from({ length: 5 }, () => pool.take(100));
  const reused = again.filter((chunk) => memories.includes(chunk.buffer));
  t.equal(reused.length, 2, 'only `keep` buffers come back');
  t.equal(new Set(reused.map((chunk) => chunk.buffer)).size, 2, 'each once');

  const none = new ChunkPool(undefined, 0);
  const chunk = none.take(100);
  none.free(chunk);
  t.not(none.take(100).buffer, chunk.buffer, 'keep 0: nothing is kept');
});

t.test('free() and release(): nothing is kept after release', async (t) => {
  const pool = new ChunkPool();
  const chunk = pool.take(100);
  pool.free(chunk);
  pool.release();
  t.not(pool.take(100).buffer, chunk.buffer);
});
