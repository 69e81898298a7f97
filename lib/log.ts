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
 * Lines are buffered and written 4 KiB (or 100 ms) at a time: one line per request written
 * synchronously cost a syscall per READ. What is still buffered is written when the process
 * exits, FORCEQUIT included. The 100 ms flush is our own timer, armed by a line: sonic-boom's
 * `periodicFlush` writes an empty string to stderr through the thread pool ten times a second
 * on an idle server, waking it for nothing.
 */
export function createLogger(level: string = 'info', fd = 2): Logger {
  const destination = pino.destination({ dest: fd, sync: false, minLength: 4096 });
  // Armed by a line, and again while bytes wait (a flush during a write leaves the rest for
  // later), so an idle server has no timer to wake it. The destination reports what it wrote.
  let waiting = 0;
  let flushTimer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    flushTimer ??= setTimeout(flush, LOG_FLUSH_MS).unref();
  };
  const flush = (): void => {
    flushTimer = undefined;
    if (waiting === 0) return;
    destination.flush();
    arm();
  };
  destination.on('write', (bytes: number) => {
    waiting -= bytes;
  });
  process.once('exit', () => {
    clearTimeout(flushTimer);
    try {
      destination.flushSync();
    } catch {
      // stderr is gone: nothing left to tell
    }
  });
  return pino(
    {
      level,
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        streamWrite(line) {
          waiting += Buffer.byteLength(line);
          arm();
          return line;
        },
      },
    },
    destination,
  );
}

/** A logger that drops everything: for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
