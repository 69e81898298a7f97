/**
 * Media types and the rules for a valid name (contract: "Valid names").
 * Names are compared byte for byte: nothing here normalises or folds case, except the extension test.
 */
import { ProtocolError } from './errors.js';

export type MediaType = 'video' | 'music' | 'picture';

export const MEDIA_TYPES: readonly MediaType[] = ['video', 'music', 'picture'];

export const MEDIA_EXTENSIONS: Readonly<Record<MediaType, readonly string[]>> = {
  video: ['.mov', '.mp4', '.m4v', '.mkv', '.avi', '.webm'],
  music: ['.mp3', '.m4a', '.aac', '.flac', '.wav', '.ogg', '.opus'],
  picture: ['.jpg', '.jpeg', '.png', '.gif', '.webp', '.heic', '.bmp', '.tif', '.tiff'],
};

/** The HTTP door's `Content-Type` of each extension (http.md's table). */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.mov': 'video/quicktime',
  '.mp4': 'video/mp4',
  '.m4v': 'video/x-m4v',
  '.mkv': 'video/x-matroska',
  '.avi': 'video/x-msvideo',
  '.webm': 'video/webm',
  '.mp3': 'audio/mpeg',
  '.m4a': 'audio/mp4',
  '.aac': 'audio/aac',
  '.flac': 'audio/flac',
  '.wav': 'audio/wav',
  '.ogg': 'audio/ogg',
  '.opus': 'audio/ogg',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.heic': 'image/heic',
  '.bmp': 'image/bmp',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
};

const TYPE_BY_EXTENSION = new Map<string, MediaType>(
  MEDIA_TYPES.flatMap((type) => MEDIA_EXTENSIONS[type].map((ext) => [ext, type] as const)),
);

export const MAX_NAME_BYTES = 1024;
export const MAX_SEGMENT_BYTES = 255;

// Control characters U+0000-U+001F and U+007F, and the backslash.
// eslint-disable-next-line no-control-regex
const FORBIDDEN_CHARACTERS = /[\u0000-\u001f\u007f\\]/;

/** A name's extension in lower case (ASCII folding only), or undefined. */
function extensionOf(name: string): string | undefined {
  const dot = name.lastIndexOf('.');
  if (dot < 0 || name.indexOf('/', dot) >= 0) return undefined;
  // ASCII-only folding: a Unicode fold would let the Kelvin sign (U+212A) pass for `k`.
  return name.slice(dot).replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/** The media type of a name or path by its extension (case-insensitive), or undefined. */
export function mediaTypeOf(name: string): MediaType | undefined {
  const extension = extensionOf(name);
  return extension === undefined ? undefined : TYPE_BY_EXTENSION.get(extension);
}

/** The `Content-Type` of a media name (`application/octet-stream` for anything else). */
export function contentTypeOf(name: string): string {
  const extension = extensionOf(name);
  return (extension !== undefined && CONTENT_TYPES[extension]) || 'application/octet-stream';
}

/** Parses a LIST type argument (case-insensitive), or undefined if it names no type. */
export function parseMediaType(value: string): MediaType | undefined {
  const lower = value.toLowerCase();
  return (MEDIA_TYPES as readonly string[]).includes(lower) ? (lower as MediaType) : undefined;
}

/**
 * Why a name breaks the structural rules, or undefined when it keeps them.
 * The extension is not looked at here: see {@link checkName}.
 */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `the name is over ${MAX_NAME_BYTES} bytes`;
  if (FORBIDDEN_CHARACTERS.test(name)) return 'the name holds a control character or a backslash';
  if (name.startsWith('/')) return 'the name starts with /';
  for (const segment of name.split('/')) {
    if (segment.length === 0) return 'the name has an empty path segment';
    if (segment.startsWith('.')) return 'a path segment starts with a dot';
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
      return `a path segment is over ${MAX_SEGMENT_BYTES} bytes`;
    }
  }
  return undefined;
}

/** True when a name keeps every rule, media extension included. Used to filter the catalog. */
export function isValidName(name: string): boolean {
  return nameProblem(name) === undefined && mediaTypeOf(name) !== undefined;
}

/**
 * Checks a requested name: `BAD_NAME` for a broken rule, then `UNSUPPORTED_TYPE` for a
 * name that is well formed but not media. Returns the media type.
 */
export function checkName(name: string): MediaType {
  const problem = nameProblem(name);
  if (problem !== undefined) throw new ProtocolError('BAD_NAME', problem);
  const type = mediaTypeOf(name);
  if (type === undefined) {
    throw new ProtocolError('UNSUPPORTED_TYPE', 'the name has no media extension');
  }
  return type;
}
