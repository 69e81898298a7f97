/**
 * The contract's error codes, and the error that carries one.
 * Every `ERR` the server sends and every typed rejection the client raises is a ProtocolError.
 */

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'UNKNOWN_COMMAND'
  | 'LINE_TOO_LONG'
  | 'BAD_NAME'
  | 'UNSUPPORTED_TYPE'
  | 'NOT_FOUND'
  | 'BAD_RANGE'
  | 'EXISTS'
  | 'LOCKED'
  | 'READ_ONLY'
  | 'NO_SPACE'
  | 'TOO_LARGE'
  | 'BUSY'
  | 'TIMEOUT'
  | 'SHUTTING_DOWN'
  | 'INTERNAL'
  // The HTTP door's own (http.md): a PUT whose body does not match its Content-Digest.
  | 'DIGEST_MISMATCH'
  // Accounts and TLS (access.md), on both doors.
  | 'AUTH_REQUIRED'
  | 'AUTH_FAILED'
  | 'DENIED'
  | 'RATE_LIMITED'
  | 'TLS_REQUIRED'
  | 'PROTECTED';

export const ERROR_CODES: readonly ErrorCode[] = [
  'BAD_REQUEST',
  'UNKNOWN_COMMAND',
  'LINE_TOO_LONG',
  'BAD_NAME',
  'UNSUPPORTED_TYPE',
  'NOT_FOUND',
  'BAD_RANGE',
  'EXISTS',
  'LOCKED',
  'READ_ONLY',
  'NO_SPACE',
  'TOO_LARGE',
  'BUSY',
  'TIMEOUT',
  'SHUTTING_DOWN',
  'INTERNAL',
  'DIGEST_MISMATCH',
  'AUTH_REQUIRED',
  'AUTH_FAILED',
  'DENIED',
  'RATE_LIMITED',
  'TLS_REQUIRED',
  'PROTECTED',
];

/** Codes after which the server closes the connection (BAD_REQUEST closes only for a WRITE). */
const CLOSING_CODES: ReadonlySet<ErrorCode> = new Set([
  'LINE_TOO_LONG',
  'TOO_LARGE',
  'BUSY',
  'TIMEOUT',
  'SHUTTING_DOWN',
  'RATE_LIMITED',
  'PROTECTED',
]);

export class ProtocolError extends Error {
  readonly code: ErrorCode;
  /** The server closes the connection after sending this error. */
  readonly closes: boolean;

  constructor(code: ErrorCode, message: string, options: { closes?: boolean } = {}) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.closes = options.closes ?? CLOSING_CODES.has(code);
  }

  /** The reply line, `ERR <CODE> <message>\n`, with the message kept on one line. */
  toReply(): string {
    return `ERR ${this.code} ${this.message.replace(/[\r\n]+/g, ' ')}\n`;
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(value);
}

/** QUIT's answer: to a command after it, and to an upload begun as a store closes. */
export function shuttingDown(): ProtocolError {
  return new ProtocolError('SHUTTING_DOWN', 'the server is shutting down');
}
