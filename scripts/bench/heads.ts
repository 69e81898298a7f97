/**
 * Reply heads for the load generator (loadgen.ts), parsed in place from the receive buffer:
 * byte scans, no strings, no regular expressions, since they run once per request at tens of
 * thousands of requests per second. Pure, so the tests can pin them.
 */

/** What a reply head says about the body that follows it. */
export interface Head {
  /** 200 for HTTP 200 and for IOE `OK`; the HTTP status otherwise; 0 for an IOE `ERR`. */
  status: number;
  /** Body bytes that follow the head (Content-Length, or the size of `OK <size>`); -1 if none given. */
  length: number;
  /** The server closes the connection after this reply (HTTP `Connection: close`, IOE ERR). */
  close: boolean;
}

const CR = 13;
const LF = 10;

/** Index just past the first `\r\n\r\n` in buf[from, to), or -1. */
export function httpHeadEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = from + 3; i < to; i++) {
    if (buf[i] === LF && buf[i - 1] === CR && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
  }
  return -1;
}

/** Index just past the first `\n` in buf[from, to), or -1. */
export function lineEnd(buf: Uint8Array, from: number, to: number): number {
  const at = buf.indexOf(LF, from);
  return at >= 0 && at < to ? at + 1 : -1;
}

/** Does buf[at, to) start with `name` (lowercase ASCII), case-insensitively? */
function startsWithLower(buf: Uint8Array, at: number, to: number, name: string): boolean {
  if (to - at < name.length) return false;
  for (let i = 0; i < name.length; i++) {
    const c = buf[at + i];
    const lower = c >= 65 && c <= 90 ? c + 32 : c;
    if (lower !== name.charCodeAt(i)) return false;
  }
  return true;
}

function skipSpaces(buf: Uint8Array, at: number, to: number): number {
  while (at < to && (buf[at] === 32 || buf[at] === 9)) at++;
  return at;
}

/** Decimal digits at `at`: [value, index after them]; value -1 if there are none. */
function digits(buf: Uint8Array, at: number, to: number): [number, number] {
  let value = 0;
  let i = at;
  while (i < to && buf[i] >= 48 && buf[i] <= 57) value = value * 10 + (buf[i++] - 48);
  return [i === at ? -1 : value, i];
}

/**
 * An HTTP/1.x response head in buf[from, to) (to is just past its blank line). Returns
 * undefined if the status line is not `HTTP/1.x NNN`.
 */
export function parseHttpHead(buf: Uint8Array, from: number, to: number): Head | undefined {
  if (!startsWithLower(buf, from, to, 'http/1.') || to - from < 12 || buf[from + 8] !== 32) {
    return undefined;
  }
  const [status, after] = digits(buf, from + 9, from + 12);
  if (status < 0 || after !== from + 12) return undefined;
  const head: Head = { status, length: -1, close: false };
  let at = lineEnd(buf, from, to);
  while (at > 0 && at < to) {
    if (startsWithLower(buf, at, to, 'content-length:')) {
      head.length = digits(buf, skipSpaces(buf, at + 15, to), to)[0];
    } else if (startsWithLower(buf, at, to, 'connection:')) {
      head.close = startsWithLower(buf, skipSpaces(buf, at + 11, to), to, 'close');
    }
    at = lineEnd(buf, at, to);
  }
  return head;
}

/** An IOE reply line in buf[from, to) (to is just past its `\n`): `OK <size>[ <sha256>]` or `ERR …`. */
export function parseIoeHead(buf: Uint8Array, from: number, to: number): Head | undefined {
  if (to - from >= 4 && buf[from] === 79 && buf[from + 1] === 75 && buf[from + 2] === 32) {
    const [size] = digits(buf, from + 3, to);
    return size < 0 ? undefined : { status: 200, length: size, close: false };
  }
  if (to - from >= 4 && buf[from] === 69 && buf[from + 1] === 82 && buf[from + 2] === 82) {
    return { status: 0, length: 0, close: true };
  }
  return undefined;
}
