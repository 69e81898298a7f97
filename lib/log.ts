/**
 * The server's structured log: pino, one JSON line per event, on stderr (stdout is for the
 * `listening on` line and the console's answers).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Lines are buffered and written 4 KiB (or 100 ms) at a time: one line per request written
 * synchronously cost a syscall per READ. What is still buffered is written when the process
 * exits, FORCEQUIT included.
 */
export function createLogger(level: string = 'info'): Logger {
  const destination = pino.destination({
    dest: 2,
    sync: false,
    minLength: 4096,
    periodicFlush: 100,
  });
  process.once('exit', () => {
    try {
      destination.flushSync();
    } catch {
      // stderr is gone: nothing left to tell
    }
  });
  return pino({ level, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** A logger that drops everything: for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
