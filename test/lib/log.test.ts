/** The server's log: lines are buffered, flushed within LOG_FLUSH_MS, and an idle log is still. */
import t, { type Test } from 'tap';
import { pbkdf2 } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { createLogger, infoLine, isoTime, LOG_BATCH, LOG_FLUSH_MS } from '../../lib/log.js';

/** A log file in a new temporary folder, open for writing; both go at the test's end. */
async function logFile(t: Test): Promise<{ path: string; fd: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-log-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'server.log');
  const fd = fs.openSync(path, 'w');
  t.teardown(() => fs.closeSync(fd));
  return { path, fd };
}

t.test(
  'a buffered line is written within the flush period, and nothing is written idle',
  async (t) => {
    const { path, fd } = await logFile(t);
    // sonic-boom writes with fs.write, looked up at each call: count the writes to our file.
    const write = fs.write;
    let writes = 0;
    /** Each write's text: whole lines, at most PIPE_BUF bytes (threads share the pipe). */
    const written: string[] = [];
    /** While above 0, a write to our file reports back this much later (a slow disk). */
    let slowMs = 0;
    fs.write = ((...args: unknown[]) => {
      if (args[0] === fd) {
        writes++;
        written.push(Buffer.isBuffer(args[1]) ? args[1].toString() : String(args[1]));
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

    // Bursts of long lines, while a slow write makes the rest queue behind it.
    slowMs = LOG_FLUSH_MS;
    for (let i = 0; i < 300; i++) log.info({ i, pad: 'é'.repeat((i % 150) * 7) }, 'long');
    slowMs = 0;
    await sleep(LOG_FLUSH_MS * 8);
    const sizes = written.map((text) => Buffer.byteLength(text));
    t.ok(
      Math.max(...sizes) <= LOG_BATCH,
      `no write above ${LOG_BATCH} bytes (${Math.max(...sizes)})`,
    );
    t.ok(Math.max(...sizes) > LOG_BATCH / 2, 'and they are batches, not lines');
    t.ok(
      written.every((text) => text.endsWith('\n')),
      'every write ends on a whole line',
    );
    const longs = (await readFile(path, 'utf8'))
      .split('\n')
      .filter((line) => line.includes('"long"'));
    t.equal(longs.length, 300, 'every long line is written');
    t.ok(
      longs.every((line, i) => JSON.parse(line).i === i),
      'whole, and in order',
    );
  },
);

t.test('logger.flush(done) writes what is gathered before done is called', async (t) => {
  const { path, fd } = await logFile(t);
  const log = createLogger('info', fd).child({ thread: 1 });
  // Keep libuv's thread pool busy, so that the logger's file write waits in its queue: done
  // must still come only once the lines are in the file.
  const busy = Array.from(
    { length: Number(process.env.UV_THREADPOOL_SIZE) || 4 },
    () => new Promise((resolve) => pbkdf2('x', 'salt', 200_000, 32, 'sha256', () => resolve(true))),
  );
  for (let i = 0; i < 5; i++) log.info({ i }, 'closing');
  await new Promise<void>((resolve, reject) =>
    log.flush((error) => (error ? reject(error) : resolve())),
  );
  const lines = fs.readFileSync(path, 'utf8').trimEnd().split('\n');
  t.equal(lines.length, 5, 'all five are in the file at once');
  t.match(lines[4], /"thread":1,"i":4,/);
  await Promise.all(busy);
});

const RECORDS = [
  { verb: 'READ', name: 'music/a "b" \\ c\u00e9.mp3', bytes: 65536, ms: 0.123456789, result: 'OK' },
  { verb: 'LIST', name: undefined, account: 'ana', bytes: 0, ms: 3, result: 'OK' },
  { verb: 'HASH', name: 'x\n\u0001y', bytes: Number.NaN, ms: Infinity, result: 'NOT_FOUND' },
];

t.test('infoLine writes the very line pino writes for a flat record', async (t) => {
  const { path, fd } = await logFile(t);
  const root = createLogger('info', fd);
  const log = root.child({ door: 'tcp', peer: '127.0.0.1:4242' });
  for (const record of RECORDS) {
    log.info(record, 'command');
    infoLine(log, record, 'command');
  }
  log.level = 'warn';
  infoLine(log, RECORDS[0]!, 'command');
  await new Promise<void>((resolve, reject) =>
    root.flush((error) => (error ? reject(error) : resolve())),
  );
  const lines = (await readFile(path, 'utf8')).split('\n').filter(Boolean);
  t.equal(lines.length, RECORDS.length * 2, 'two lines a record; none below the level');
  // The same line but for the time, which may have moved on by a millisecond.
  const timeless = (line: string): string => line.replace(/"time":"[^"]*"/, '"time":…');
  for (const [i, record] of RECORDS.entries()) {
    const [byPino, byUs] = [lines[2 * i] ?? '', lines[2 * i + 1] ?? ''];
    t.equal(timeless(byUs), timeless(byPino), `${record.verb}: the same line`);
    t.ok(JSON.parse(byUs), 'valid JSON');
  }
});

t.test('infoLine leaves any other logger to pino, whose options shape the line', async (t) => {
  const lines: string[] = [];
  const sink = { write: (line: string) => lines.push(line) };
  const loggers = [
    pino({ level: 'info', messageKey: 'message' }, sink),
    pino({ level: 'info', mixin: () => ({ extra: 1 }) }, sink),
    pino({ level: 'info', redact: ['name'] }, sink).child({ door: 'http' }),
  ];
  for (const log of loggers) {
    for (const record of RECORDS) {
      // Retried while the millisecond turns between the two lines.
      for (let tries = 0; ; tries++) {
        lines.length = 0;
        log.info(record, 'command');
        infoLine(log, record, 'command');
        if (lines[0] === lines[1] || tries === 5) break;
      }
      t.equal(lines[1], lines[0], `${record.verb}: pino's own line`);
    }
  }
});

t.test('isoTime is the current time, in pino field form', async (t) => {
  const before = Date.now();
  const field = isoTime();
  const after = Date.now();
  const match = /^,"time":"(.+)"$/.exec(field);
  t.ok(match, field);
  const ms = Date.parse(match?.[1] ?? '');
  t.ok(ms >= before && ms <= after, `${ms} within [${before}, ${after}]`);
  await sleep(5);
  t.not(isoTime(), field, 'a later millisecond: a new time');
});
