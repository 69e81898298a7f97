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
