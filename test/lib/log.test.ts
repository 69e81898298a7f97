/** The server's log: lines are buffered, flushed within LOG_FLUSH_MS, and an idle log is still. */
import t from 'tap';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, LOG_FLUSH_MS } from '../../lib/log.js';

t.test(
  'a buffered line is written within the flush period, and nothing is written idle',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ioe-log-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'server.log');
    const fd = fs.openSync(path, 'w');
    t.teardown(() => fs.closeSync(fd));
    // sonic-boom writes with fs.write, looked up at each call: count the writes to our file.
    const write = fs.write;
    let writes = 0;
    /** While above 0, a write to our file reports back this much later (a slow disk). */
    let slowMs = 0;
    fs.write = ((...args: unknown[]) => {
      if (args[0] === fd) {
        writes++;
        const done = args.at(-1) as (...r: unknown[]) => void;
        if (slowMs > 0) {
          const ms = slowMs;
          args[args.length - 1] = (...r: unknown[]) => setTimeout(() => done(...r), ms);
        }
      }
      return (write as (...a: unknown[]) => void)(...args);
    }) as typeof fs.write;
    t.teardown(() => {
      fs.write = write;
    });

    const log = createLogger('info', fd);
    await sleep(LOG_FLUSH_MS * 3.5);
    t.equal(writes, 0, 'an idle log makes no write (no empty flushes)');

    log.info({ name: 'a.mp4' }, 'read');
    t.equal(await readFile(path, 'utf8'), '', 'the line waits in the buffer');
    await sleep(LOG_FLUSH_MS * 3.5);
    const text = await readFile(path, 'utf8');
    t.match(text, /"name":"a\.mp4".*"msg":"read"/, 'and is written within the flush period');
    t.equal(text.split('\n').length, 2, 'once');
    const afterLine = writes;
    t.ok(afterLine >= 1, 'by a write');
    await sleep(LOG_FLUSH_MS * 3.5);
    t.equal(writes, afterLine, 'then the log is idle again');

    // A burst: writes of 4 KiB start while lines keep coming; the tail after the last whole
    // 4 KiB must still come out, and the timer must stop once everything is written.
    for (let i = 0; i < 200; i++) log.info({ i, pad: 'x'.repeat(i % 97) }, 'burst');
    await sleep(LOG_FLUSH_MS * 5);
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
    t.equal(lines.length, 201, 'every line of a burst is written');
    t.match(lines.at(-1), /"i":199,/, 'the last one too');
    const afterBurst = writes;
    await sleep(LOG_FLUSH_MS * 3.5);
    t.equal(writes, afterBurst, 'and then nothing more');

    // A line that comes while the previous flush is still being written waits for that write,
    // and is then written by a later flush, not left in the buffer until the next line.
    slowMs = LOG_FLUSH_MS * 1.5;
    log.info('first');
    await sleep(LOG_FLUSH_MS * 1.2); // its flush has begun a slow write
    log.info('second');
    slowMs = 0;
    await sleep(LOG_FLUSH_MS * 5);
    t.match(await readFile(path, 'utf8'), /"msg":"second"/, 'a line behind a slow write comes out');
  },
);
