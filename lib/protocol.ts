/**
 * Request parsing for protocol v1: one command line (without its `\n`) in, one request out.
 * The parser works on raw bytes first so that a WRITE's size is judged before its name is
 * decoded: the contract orders WRITE's checks size → limit → name.
 */
import { ProtocolError } from './errors.js';
import { mediaTypeOf, parseMediaType, type MediaType } from './media-names.js';

/** Longest command line in raw bytes, counting its `\n` (and `\r`). */
export const MAX_LINE_BYTES = 4096;
export const MAX_NUMBER = Number.MAX_SAFE_INTEGER; // 9007199254740991

export type Request =
  | { verb: 'LIST'; type?: MediaType }
  | { verb: 'READ'; name: string; offset: number; length?: number }
  | { verb: 'WRITE'; name: string; size: number }
  | { verb: 'HASH'; name: string }
  | { verb: 'BYE' }
  // access.md: the password is everything after the second comma (it may hold commas).
  | { verb: 'AUTH'; account: string; password: string }
  | { verb: 'WHOAMI' };

export type Verb = Request['verb'];

export interface ParseOptions {
  /** Largest WRITE size accepted; above it `TOO_LARGE`. */
  maxUpload?: number;
}

const COMMA = 0x2c;
const CR = 0x0d;
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A plain decimal field (`0` or `[1-9][0-9]*`, at most 2^53-1), or undefined. */
export function parseDecimal(field: string): number | undefined {
  if (!DECIMAL.test(field)) return undefined;
  const value = Number(field);
  return value <= MAX_NUMBER ? value : undefined;
}

/** Drops one trailing `\r`. */
export function stripCR(line: Buffer): Buffer {
  return line.length > 0 && line[line.length - 1] === CR ? line.subarray(0, -1) : line;
}

/** The verb in upper case (ASCII only), as the bytes before the first comma. */
function verbOf(line: Buffer, comma: number): string {
  const raw = line.subarray(0, comma < 0 ? line.length : comma).toString('latin1');
  return raw.replace(/[a-z]+/g, (s) => s.toUpperCase());
}

function decode(bytes: Buffer): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new ProtocolError('BAD_REQUEST', 'the command line is not valid UTF-8');
  }
}

/**
 * How many raw payload bytes follow this command line: the size of a WRITE whose size field
 * is valid, else 0. The connection's splitter asks this for every line, so that framing never
 * depends on anything but the bytes (a rejected WRITE's payload is still consumed).
 */
export function payloadLength(line: Buffer): number {
  const stripped = stripCR(line);
  const comma = stripped.indexOf(COMMA);
  if (comma < 0 || verbOf(stripped, comma) !== 'WRITE') return 0;
  const last = stripped.lastIndexOf(COMMA);
  return parseDecimal(stripped.subarray(last + 1).toString('latin1')) ?? 0;
}

function parseWrite(line: Buffer, comma: number, options: ParseOptions): Request {
  if (comma < 0) {
    throw new ProtocolError('BAD_REQUEST', 'WRITE needs a name and a size', { closes: true });
  }
  const last = line.lastIndexOf(COMMA);
  const size = parseDecimal(line.subarray(last + 1).toString('latin1'));
  if (size === undefined) {
    throw new ProtocolError('BAD_REQUEST', 'WRITE size is missing or malformed', { closes: true });
  }
  if (options.maxUpload !== undefined && size > options.maxUpload) {
    throw new ProtocolError('TOO_LARGE', `the upload limit is ${options.maxUpload} bytes`);
  }
  if (last === comma) throw new ProtocolError('BAD_REQUEST', 'WRITE needs a name');
  return { verb: 'WRITE', name: decode(line.subarray(comma + 1, last)), size };
}

/**
 * Splits READ's arguments into name, offset and length (contract: "Names"): the name ends at
 * the last field with a media extension; up to two numbers may follow it.
 */
function parseRead(args: string): Request {
  const fields = args.split(',');
  let nameEnd = -1;
  for (let i = fields.length - 1; i >= 0; i--) {
    if (mediaTypeOf(fields[i]) !== undefined) {
      nameEnd = i;
      break;
    }
  }
  if (nameEnd < 0) {
    // No media name: take up to two trailing decimals as numbers; the name then fails on its own.
    nameEnd = fields.length - 1;
    while (
      nameEnd >= 0 &&
      fields.length - 1 - nameEnd < 2 &&
      parseDecimal(fields[nameEnd]) !== undefined
    ) {
      nameEnd--;
    }
  }
  const numbers = fields.slice(nameEnd + 1);
  if (numbers.length > 2)
    throw new ProtocolError('BAD_REQUEST', 'READ takes at most offset and length');
  const parsed = numbers.map(parseDecimal);
  if (parsed.some((n) => n === undefined)) {
    throw new ProtocolError('BAD_REQUEST', 'READ offset and length must be plain decimal numbers');
  }
  const [offset = 0, length] = parsed as number[];
  const name = fields.slice(0, nameEnd + 1).join(',');
  return length === undefined
    ? { verb: 'READ', name, offset }
    : { verb: 'READ', name, offset, length };
}

/**
 * Parses one command line (without `\n`). Returns undefined for an empty line, which the
 * contract ignores; throws a ProtocolError with the contract's code for anything malformed.
 * Names are returned as sent: checking them is the caller's next step.
 */
export function parseRequest(raw: Buffer, options: ParseOptions = {}): Request | undefined {
  const line = stripCR(raw);
  if (line.length === 0) return undefined;
  const comma = line.indexOf(COMMA);
  const verb = verbOf(line, comma);
  if (verb === 'WRITE') return parseWrite(line, comma, options);

  const text = decode(line);
  const args = comma < 0 ? undefined : text.slice(text.indexOf(',') + 1);
  switch (verb) {
    case 'LIST': {
      if (args === undefined) return { verb: 'LIST' };
      const type = parseMediaType(args);
      if (type === undefined) {
        throw new ProtocolError('BAD_REQUEST', 'LIST type must be video, music or picture');
      }
      return { verb: 'LIST', type };
    }
    case 'READ':
      if (args === undefined) throw new ProtocolError('BAD_REQUEST', 'READ needs a name');
      return parseRead(args);
    case 'HASH':
      if (args === undefined) throw new ProtocolError('BAD_REQUEST', 'HASH needs a name');
      return { verb: 'HASH', name: args };
    case 'BYE':
      if (args !== undefined) throw new ProtocolError('BAD_REQUEST', 'BYE takes no arguments');
      return { verb: 'BYE' };
    case 'AUTH': {
      const comma = args?.indexOf(',') ?? -1;
      if (args === undefined || comma < 0) {
        throw new ProtocolError('BAD_REQUEST', 'AUTH needs a name and a password');
      }
      return { verb: 'AUTH', account: args.slice(0, comma), password: args.slice(comma + 1) };
    }
    case 'WHOAMI':
      if (args !== undefined) throw new ProtocolError('BAD_REQUEST', 'WHOAMI takes no arguments');
      return { verb: 'WHOAMI' };
    default:
      throw new ProtocolError('UNKNOWN_COMMAND', 'unknown command');
  }
}

/** `OK` reply line with its fields. */
export function okLine(...fields: (string | number)[]): string {
  return fields.length === 0 ? 'OK\n' : `OK ${fields.join(' ')}\n`;
}
