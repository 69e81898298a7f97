/** ChunkPool and BufferShelf alone: memory reused only once sent, and only the pool's own. */
import t from 'tap';
import { BufferShelf, ChunkPool } from '../../lib/chunk-pool.js';

t.test('freed memory is reused for the next chunk of that size, on any pool', async (t) => {
  const shelf = new BufferShelf();
  const a = new ChunkPool(shelf);
  const b = new ChunkPool(shelf);
  const first = a.take(65536);
  t.equal(first.length, 65536);
  a.free(first);
  t.equal(shelf.size, 0, 'kept by its own download while it runs');
  a.release();
  t.equal(shelf.size, 65536, 'on the shelf once the download is over');
  const again = b.take(65536);
  t.equal(again.buffer, first.buffer, "another connection's next chunk takes that memory");
  t.equal(shelf.size, 0);
});

t.test('memory is never handed out twice while in use', async (t) => {
  const pool = new ChunkPool();
  const one = pool.take(4096);
  const two = pool.take(4096);
  t.not(one.buffer, two.buffer, 'two chunks in flight: two memories');
  pool.free(one);
  pool.free(one); // a second callback for the same chunk must not shelve it twice
  const three = pool.take(4096);
  const four = pool.take(4096);
  t.equal(three.buffer, one.buffer, 'the freed one comes back');
  t.not(four.buffer, one.buffer, 'once');
});

t.test('memory the pool did not lend never comes back', async (t) => {
  const shelf = new BufferShelf();
  const pool = new ChunkPool(shelf);
  pool.free(Buffer.from('a reply line from Node shared pool'));
  pool.free(Buffer.allocUnsafeSlow(65536)); // a store's own buffer
  pool.free(new ChunkPool().take(65536)); // another shelf's
  t.equal(shelf.size, 0, 'nothing shelved');
});

t.test(
  'a view of lent memory (a header written in front of a chunk) frees that memory',
  async (t) => {
    const shelf = new BufferShelf();
    const pool = new ChunkPool(shelf);
    const memory = pool.take(65536 + 16);
    const chunk = memory.subarray(16);
    const whole = Buffer.from(chunk.buffer, chunk.byteOffset - 16, chunk.length + 16);
    pool.release();
    pool.free(whole); // sent after its download ended: straight to the shelf
    t.equal(shelf.size, memory.buffer.byteLength);
  },
);

t.test('sizes share a shelf by whole pages; the shelf has a cap', async (t) => {
  const shelf = new BufferShelf(3 * 8192);
  const pool = new ChunkPool(shelf);
  const odd = pool.take(5000);
  t.equal(odd.length, 5000, 'exactly the size asked');
  t.equal(odd.buffer.byteLength, 8192, 'on memory of whole pages');
  pool.free(odd);
  t.equal(pool.take(8000).buffer, odd.buffer, 'a size in the same pages takes it');
  const chunks = [pool.take(8192), pool.take(8192), pool.take(8192), pool.take(8192)];
  pool.release();
  for (const chunk of chunks) pool.free(chunk);
  t.equal(shelf.size, 3 * 8192, 'past the cap, memory is let go');
  // Let go at once where the runtime can (Node 21+): the fourth chunk's memory is detached,
  // the three on the shelf are whole.
  const canTransfer =
    typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function';
  t.equal(chunks[3].buffer.byteLength, canTransfer ? 0 : 8192, 'the dropped memory is freed');
  t.equal(chunks[3].length, canTransfer ? 0 : 8192, 'and a view of it is empty');
  for (const chunk of chunks.slice(0, 3)) t.equal(chunk.buffer.byteLength, 8192, 'kept whole');
  t.equal(shelf.take(8192)?.byteLength, 8192, 'and lent again whole');
});

t.test('a download in progress reuses its own few buffers; past them, the shelf', async (t) => {
  const shelf = new BufferShelf();
  const pool = new ChunkPool(shelf, 2);
  const chunks = [pool.take(4096), pool.take(4096), pool.take(4096)];
  for (const chunk of chunks) pool.free(chunk);
  t.equal(shelf.size, 4096, 'two kept, the third shelved');
  t.equal(pool.take(4096).buffer, chunks[0].buffer, 'its own first');
  t.equal(pool.take(4096).buffer, chunks[1].buffer);
  t.equal(pool.take(4096).buffer, chunks[2].buffer, 'then the shelf');
  t.equal(shelf.size, 0);
  pool.release();
  t.equal(shelf.size, 0, 'nothing spare to give back: all three are in use');
});

t.test('a download whose chunks shrink lets its big spare memory go', async (t) => {
  const MiB = 1024 * 1024;
  const shelf = new BufferShelf(8 * MiB);
  const pool = new ChunkPool(shelf, 4);
  const big = [pool.take(2 * MiB), pool.take(2 * MiB)];
  for (const chunk of big) pool.free(chunk);
  t.equal(shelf.size, 0, 'kept while the chunks are that size');
  const small = pool.take(65536);
  t.equal(small.buffer.byteLength, 65536, 'a small chunk on memory of its own size');
  t.not(small.buffer, big[0].buffer, 'not a view of a big spare');
  t.not(small.buffer, big[1].buffer);
  t.equal(shelf.size, 4 * MiB, 'the big spares went to the shelf for a reader that wants them');
  pool.free(small);
  t.equal(pool.take(65536).buffer, small.buffer, 'its own small spare comes back');
});

t.test('a pace that flips between two sizes keeps reusing the same memory', async (t) => {
  const shelf = new BufferShelf();
  const pool = new ChunkPool(shelf, 2);
  const first = pool.take(65536);
  pool.free(first);
  const half = pool.take(32768);
  t.equal(half.buffer, first.buffer, 'a 32 KiB chunk on the 64 KiB spare');
  t.equal(half.length, 32768);
  pool.free(half);
  t.equal(pool.take(65536).buffer, first.buffer, 'and back');
  t.equal(shelf.size, 0, 'nothing shelved, nothing new');
});
