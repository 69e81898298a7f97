/**
 * The server's structured log: pino, one JSON line per event, on stderr (stdout is for the
 * `listening on` line and the console's answers).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** How long a buffered line may wait before it is written, ms. */
export const LOG_FLUSH_MS = 100;

/** Lines are handed to the file this many bytes (UTF-16 units) at a time, or after LOG_FLUSH_MS. */
export const LOG_BATCH = 4096;

/**
 * Lines are gathered and written 4 KiB (or 100 ms) at a time: one line per request written
 * synchronously cost a syscall per READ. What is still gathered is written when the process
 * exits, FORCEQUIT included.
 *
 * The gathering is ours (LineBatch), and sonic-boom (pino's destination) gets one string per
 * batch: given lines one by one, sonic-boom measures the UTF-8 length of everything it holds
 * on every line, which cost a busy server 15 µs of its 100 per 64 KiB READ. The 100 ms flush
 * is our own timer, armed by a line: sonic-boom's `periodicFlush` writes an empty string to
 * stderr through the thread pool ten times a second on an idle server, waking it for nothing.
 */
export function createLogger(level: string = 'info', fd = 2): Logger {
  const destination = pino.destination({ dest: fd, sync: false, minLength: 0 });
  const batch = new LineBatch((text) => destination.write(text));
  process.once('exit', () => {
    batch.flush();
    try {
      destination.flushSync();
    } catch {
      // stderr is gone: nothing left to tell
    }
  });
  return pino({ level, timestamp: pino.stdTimeFunctions.isoTime }, batch);
}

/** Lines joined into batches of about LOG_BATCH, handed on whole, or after LOG_FLUSH_MS. */
class LineBatch {
  private lines: string[] = [];
  private size = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly handOn: (text: string) => void) {}

  /** pino's stream interface: one line at a time. */
  write(line: string): boolean {
    this.lines.push(line);
    this.size += line.length;
    if (this.size >= LOG_BATCH) this.flush();
    // Armed by a line only: an idle server has no timer to wake it.
    else this.timer ??= setTimeout(() => this.flush(), LOG_FLUSH_MS).unref();
    return true;
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.lines.length === 0) return;
    const text = this.lines.join('');
    this.lines = [];
    this.size = 0;
    this.handOn(text);
  }
}

/** A logger that drops everything: for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
