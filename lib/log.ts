/**
 * The server's structured log: pino, one JSON line per event, on stderr (stdout is for the
 * `listening on` line and the console's answers).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(level: string = 'info'): Logger {
  return pino(
    { level, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything: for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
