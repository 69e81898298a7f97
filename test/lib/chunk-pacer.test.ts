/** The chunk pacer alone: sizes from a reader's pace. */
import t from 'tap';
import {
  ChunkBudget,
  ChunkPacer,
  MAX_CHUNK_BYTES,
  MIN_CHUNK_BYTES,
  START_CHUNK_BYTES,
} from '../../lib/chunk-pacer.js';

const KiB = 1024;
const MiB = 1024 * KiB;

t.test('starts small, before the reader has shown its pace', async (t) => {
  t.equal(new ChunkPacer().size, START_CHUNK_BYTES);
  t.ok(START_CHUNK_BYTES >= MIN_CHUNK_BYTES && START_CHUNK_BYTES < MAX_CHUNK_BYTES);
  t.equal(new ChunkPacer({ min: 16 * KiB, start: 8 * KiB }).size, 16 * KiB, 'never below min');
});

t.test('a chunk lasts the reader about windowMs, as a power of two in [min, max]', async (t) => {
  const pace = (bytesPerMs: number): ChunkPacer => {
    const pacer = new ChunkPacer({ min: 64 * KiB, max: MiB, start: 64 * KiB, windowMs: 10 });
    for (let i = 0; i < 4; i++) pacer.paced(bytesPerMs * 2, 2);
    return pacer;
  };
  t.equal(pace(MiB).size, MiB, 'a fast reader: the maximum');
  t.equal(pace((256 * KiB) / 10).size, 256 * KiB, 'exactly a power of two');
  t.equal(pace((300 * KiB) / 10).size, 256 * KiB, 'rounded down to a power of two');
  t.equal(pace((6 * KiB) / 10).size, 64 * KiB, 'a slow reader: the minimum');
  const instant = new ChunkPacer();
  instant.paced(64 * KiB, 0);
  t.equal(instant.size, MAX_CHUNK_BYTES, 'no measurable time at all counts as fast');
});

t.test('the pace is taken over the last few chunks, waits included', async (t) => {
  const pacer = new ChunkPacer({ min: 32 * KiB, max: MiB, start: MiB, windowMs: 5 });
  // A slow reader: each long wait is followed by a chunk that goes at once.
  for (let i = 0; i < 8; i++) {
    pacer.paced(64 * KiB, 10); // 6.4 MB/s
    pacer.paced(64 * KiB, 0.05);
  }
  t.ok(pacer.size <= 64 * KiB, `the instant chunks do not make it look fast (${pacer.size} B)`);
  for (let i = 0; i < 4; i++) pacer.paced(64 * KiB, 0.05); // it speeds up
  t.equal(pacer.size, MiB, 'a reader that speeds up gets large chunks within a few chunks');
  for (let i = 0; i < 4; i++) pacer.paced(MiB, 200); // and slows down again
  t.equal(pacer.size, 32 * KiB, 'and small ones again when it slows down');
});

t.test('the maximum is never below the minimum', async (t) => {
  const pacer = new ChunkPacer({ min: 128 * KiB, max: 64 * KiB });
  pacer.paced(100 * MiB, 1);
  t.equal(pacer.size, 128 * KiB);
  t.ok(MAX_CHUNK_BYTES >= MiB, 'the default maximum is at least the 1 MiB Node streams best with');
});

t.test('downloads share the budget: no chunk beyond its share, whatever its pace', async (t) => {
  const budget = new ChunkBudget(16 * MiB);
  const pacer = new ChunkPacer({ min: 32 * KiB, max: 2 * MiB, budget });
  for (let i = 0; i < 4; i++) pacer.paced(MiB, 0.1); // a very fast reader
  const leave = budget.enter();
  t.equal(pacer.size, 2 * MiB, 'alone: its pace decides (16 MiB ÷ 4 stages ÷ 1 is above the max)');
  const others = Array.from({ length: 15 }, () => budget.enter());
  t.equal(budget.downloads, 16);
  t.equal(pacer.size, 256 * KiB, '16 downloads: 16 MiB ÷ (4 × 16) = 256 KiB');
  const crowd = Array.from({ length: 1000 }, () => budget.enter());
  t.equal(pacer.size, 32 * KiB, 'never below the minimum');
  for (const done of [...others, ...crowd]) done();
  leave();
  leave(); // twice: counted once
  t.equal(budget.downloads, 0);
  t.equal(pacer.size, 2 * MiB, 'the share comes back when the others end');
});
