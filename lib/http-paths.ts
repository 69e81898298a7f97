/**
 * Request targets of the HTTP door (http.md, "Paths"): `/media/<name>` with the protocol's name
 * percent-encoded per segment, and the way back, a name to its URL path.
 *
 * Node hands the request target over as a latin1 string (one character per byte), so raw bytes
 * and `%XX` escapes decode to the same bytes. Each segment is decoded on its own: a `%2F` is a
 * byte inside a segment, never a separator. Nothing is normalised: NFC and NFD spellings of a
 * name are two names, as on the TCP door.
 */
import { ProtocolError } from './errors.js';

export const MEDIA_PREFIX = '/media/';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The scheme and authority of an absolute-form target (`GET http://host/media/a.mp4`). */
const ABSOLUTE_FORM = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/**
 * The authority of an absolute-form target, which HTTP/1.1 allows and which then stands in for
 * the Host header (RFC 9112 §3.2.2); undefined for the usual origin-form (`/media/a.mp4`).
 */
export function targetAuthority(target: string): string | undefined {
  return ABSOLUTE_FORM.exec(target)?.[1];
}

/** The target split at its first `?`; the path stays encoded. */
export function splitTarget(target: string): { path: string; query: URLSearchParams } {
  const start = ABSOLUTE_FORM.exec(target)?.[0].length ?? 0;
  const question = target.indexOf('?', start);
  const end = question < 0 ? target.length : question;
  return {
    path: target.slice(start, end) || '/',
    query: new URLSearchParams(question < 0 ? '' : target.slice(question + 1)),
  };
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  const lower = code | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** One segment's bytes: `%XX` escapes decoded, every other character taken as its byte. */
function segmentBytes(segment: string): Buffer {
  const bytes = Buffer.allocUnsafe(segment.length);
  let length = 0;
  for (let i = 0; i < segment.length; i++) {
    const code = segment.charCodeAt(i);
    if (code !== 0x25) {
      bytes[length++] = code & 0xff;
      continue;
    }
    const high = hexValue(segment.charCodeAt(i + 1));
    const low = hexValue(segment.charCodeAt(i + 2));
    if (high < 0 || low < 0) {
      throw new ProtocolError('BAD_NAME', 'the path has a malformed percent-encoding');
    }
    bytes[length++] = high * 16 + low;
    i += 2;
  }
  return bytes.subarray(0, length);
}

/** A decoded `/media/` path: the name, and whether a segment held an encoded `/`. */
export interface MediaPath {
  name: string;
  /** A `%2F` decoded inside a segment: the name is BAD_NAME (judged with the name's rules). */
  slashInSegment: boolean;
}

/**
 * Decodes the part of a path after `/media/` into a name. Throws BAD_NAME for a malformed
 * escape or bytes that are not UTF-8; every other rule of a valid name is the caller's to
 * check, in the contract's order (checkName, and `slashInSegment`).
 */
export function decodeMediaPath(encoded: string): MediaPath {
  let slashInSegment = false;
  const segments = encoded.split('/').map((segment) => {
    let text: string;
    try {
      text = utf8.decode(segmentBytes(segment));
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      throw new ProtocolError('BAD_NAME', 'the name is not valid UTF-8');
    }
    if (text.includes('/')) slashInSegment = true;
    return text;
  });
  return { name: segments.join('/'), slashInSegment };
}

/** The URL path of a media name: `/media/` and each segment percent-encoded. */
export function mediaHref(name: string): string {
  return MEDIA_PREFIX + name.split('/').map(encodeURIComponent).join('/');
}
