/**
 * How the HTTP door answers the contract's error codes (http.md, "Errors"): a status for each
 * code, and a JSON body `{"code", "message"}`. Statuses HTTP needs and the TCP protocol has no
 * code for (a method a path does not take, a PUT without Content-Length, a foreign Origin or
 * Host) get codes of their own here; PROTOCOL.md lists them.
 */
import type { ErrorCode } from './errors.js';

/** The HTTP door's codes beyond the protocol's. */
export type HttpOnlyCode =
  'METHOD_NOT_ALLOWED' | 'LENGTH_REQUIRED' | 'FORBIDDEN' | 'PRECONDITION_FAILED';

export type HttpErrorCode = ErrorCode | HttpOnlyCode;

const STATUS: Readonly<Record<HttpErrorCode, number>> = {
  BAD_REQUEST: 400,
  UNKNOWN_COMMAND: 400,
  LINE_TOO_LONG: 431,
  BAD_NAME: 400,
  UNSUPPORTED_TYPE: 415,
  NOT_FOUND: 404,
  BAD_RANGE: 416,
  EXISTS: 409,
  LOCKED: 423,
  READ_ONLY: 403,
  NO_SPACE: 507,
  TOO_LARGE: 413,
  BUSY: 503,
  TIMEOUT: 408,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
  DIGEST_MISMATCH: 400,
  AUTH_REQUIRED: 401,
  AUTH_FAILED: 401,
  DENIED: 403,
  RATE_LIMITED: 429,
  TLS_REQUIRED: 403,
  PROTECTED: 403,
  METHOD_NOT_ALLOWED: 405,
  LENGTH_REQUIRED: 411,
  FORBIDDEN: 403,
  PRECONDITION_FAILED: 412,
};

export function httpStatus(code: HttpErrorCode): number {
  return STATUS[code];
}

/** An error reply's body. */
export function errorBody(code: HttpErrorCode, message: string): string {
  return `${JSON.stringify({ code, message })}\n`;
}
