/**
 * The server's structured log: pino, one JSON line per event, on stderr (stdout is for the
 * `listening on` line and the console's answers).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** How long a buffered line may wait before it is written, ms. */
export const LOG_FLUSH_MS = 100;

/**
 * Lines are written at most this many bytes at a time, whole: PIPE_BUF, so that a write to a
 * pipe is never split or interleaved with another thread's (`--threads`: each has a logger).
 */
export const LOG_BATCH = 4096;

/**
 * Lines are gathered and written 4 KiB (or 100 ms) at a time: one line per request written
 * synchronously cost a syscall per READ. What is still gathered is written when the process
 * exits, FORCEQUIT included.
 *
 * The gathering is ours (LineBatch), and sonic-boom (pino's destination) gets one string per
 * batch: given lines one by one, sonic-boom measured the UTF-8 length of everything it held
 * on every line (`String::Utf8Length`, 1.3 % of a busy server's profile). The 100 ms flush
 * is our own timer, armed by a line: sonic-boom's `periodicFlush` writes an empty string to
 * stderr through the thread pool ten times a second on an idle server, waking it for nothing.
 */
export function createLogger(level: string = 'info', fd = 2): Logger {
  // maxWrite: sonic-boom joins batches queued behind a write only up to one write's size.
  const destination = pino.destination({
    dest: fd,
    sync: false,
    minLength: 0,
    maxWrite: LOG_BATCH,
  });
  // sonic-boom's flushSync leaves a write already in flight to finish on its own, so a
  // flush(done) first waits for its 'drain' (emitted each time its queue empties); done came
  // before the lines were written otherwise (the log test caught it on Node 24).
  let idle = true;
  destination.on('drain', () => (idle = true));
  const batch = new LineBatch(
    (text) => {
      idle = false;
      destination.write(text);
    },
    (done) => {
      const writeRest = (): void => {
        try {
          destination.flushSync();
          done();
        } catch (error) {
          done(error as Error);
        }
      };
      if (idle) writeRest();
      else destination.once('drain', writeRest);
    },
  );
  // Everything gathered, written before the process ends, as far as a process that is ending
  // can: what is queued, synchronously (an error: stderr is gone).
  process.once('exit', () => {
    batch.flush();
    try {
      destination.flushSync();
    } catch {
      // nothing left to write to
    }
  });
  return pino({ level, timestamp: isoTime }, batch);
}

let timeMs = Number.NaN;
let timeField = '';

/**
 * pino's `isoTime`, made once per millisecond: a busy server writes many lines in each, and
 * `new Date().toISOString()` measured 1.8 µs a line inside a server under load.
 */
export function isoTime(): string {
  const now = Date.now();
  if (now !== timeMs) {
    timeMs = now;
    timeField = `,"time":"${new Date(now).toISOString()}"`;
  }
  return timeField;
}

/**
 * `log.info(record, msg)` for a flat record, in exactly the line pino writes (its bindings:
 * pid, hostname, a child's fields; undefined fields left out; non-finite numbers as null),
 * without pino's general serializer. Both doors write one per command or request: timed
 * inside a server under load, pino's call took 4–5 µs and this one under 2. Keys are
 * written as they are: they must be plain names.
 */
export function infoLine<Flat extends { [Key in keyof Flat]: string | number | undefined }>(
  log: Logger,
  record: Flat,
  msg: string,
): void {
  if (!log.isLevelEnabled('info')) return;
  const own = log as unknown as Internals;
  // Only a logger of createLogger's (or its child): no option of pino's (messageKey, mixin,
  // redact, serializers, a multistream's choice by level) changes its lines. Others: pino.
  if (!(own[pino.symbols.streamSym] instanceof LineBatch)) {
    log.info(record as object, msg);
    return;
  }
  // The logger's own level field, time function and bindings, as pino's write uses them.
  let line = `${own[pino.symbols.lsCacheSym][INFO]}${own[pino.symbols.timeSym]()}${own[pino.symbols.chindingsSym]}`;
  for (const key in record) {
    const value: string | number | undefined = record[key];
    if (value === undefined) continue;
    line += `,"${key}":${typeof value === 'number' ? (Number.isFinite(value) ? value : null) : JSON.stringify(value)}`;
  }
  own[pino.symbols.streamSym].write(`${line},"msg":${JSON.stringify(msg)}}\n`);
}

const INFO = 30;

/** What pino keeps under its exported symbols (`pino.symbols`, for integrations). */
interface Internals {
  [key: symbol]: unknown;
  [pino.symbols.lsCacheSym]: Record<number, string>;
  [pino.symbols.timeSym]: () => string;
  [pino.symbols.chindingsSym]: string;
  [pino.symbols.streamSym]: { write(line: string): unknown };
}

/** Whole lines joined into batches of at most LOG_BATCH bytes, or what came in LOG_FLUSH_MS. */
class LineBatch {
  private lines: string[] = [];
  private bytes = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly handOn: (text: string) => void,
    /** Writes all that was handed on, then calls `done`. */
    private readonly writeAll: (done: (error?: Error) => void) => void,
  ) {}

  /** pino's stream interface: one line at a time. */
  write(line: string): boolean {
    const bytes = Buffer.byteLength(line);
    if (this.bytes + bytes > LOG_BATCH) this.flush();
    this.lines.push(line);
    this.bytes += bytes;
    if (this.bytes >= LOG_BATCH) this.flush();
    // Armed by a line only: an idle server has no timer to wake it.
    else this.timer ??= setTimeout(() => this.flush(), LOG_FLUSH_MS).unref();
    return true;
  }

  /** Hands on what is gathered; with `done` (pino's `logger.flush(done)`), writes it all first. */
  flush(done?: (error?: Error) => void): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length > 0) {
      const text = this.lines.join('');
      this.lines = [];
      this.bytes = 0;
      this.handOn(text);
    }
    if (done) this.writeAll(done);
  }
}

/** A logger that drops everything: for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
