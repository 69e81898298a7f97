// @ts-check
/**
 * Small pure helpers of the page: URLs of names, human units, and the server's error codes in
 * words. Nothing here touches the document, so each piece is easy to read on its own.
 */

/** @typedef {'video' | 'music' | 'picture'} MediaType */

/**
 * One catalog entry, as `/api/list` sends it.
 * @typedef {object} Entry
 * @property {MediaType} type
 * @property {string} name `/`-separated, exactly the server's bytes (never normalised here)
 * @property {number} size
 * @property {string} mtime ISO 8601
 */

/** @type {Record<MediaType, string>} */
export const TYPE_LABELS = { video: 'video', music: 'song', picture: 'picture' };

/**
 * The URL of a name: each segment percent-encoded on its own (http.md), so `#`, `?`, `%` and
 * spaces in a name stay part of it and a `/` inside a name is a folder separator.
 * @param {string} name
 */
export function mediaHref(name) {
  return '/media/' + name.split('/').map(encodeURIComponent).join('/');
}

/**
 * The M3U playlist, for the type filter in use (VLC, mpv and phones open it).
 * @param {MediaType | ''} type
 */
export function playlistHref(type) {
  return type ? `/api/list?format=m3u&type=${type}` : '/api/list?format=m3u';
}

/** @param {string} name */
export function folderOf(name) {
  const slash = name.lastIndexOf('/');
  return slash < 0 ? '' : name.slice(0, slash);
}

/** @param {string} name */
export function baseName(name) {
  return name.slice(name.lastIndexOf('/') + 1);
}

/**
 * Where an upload goes: the folder the person typed (slashes at its ends dropped) and the file's
 * own name, byte for byte as the browser gave it (macOS gives NFD names; they stay NFD).
 * @param {string} folder
 * @param {string} fileName
 */
export function uploadName(folder, fileName) {
  const trimmed = folder.replace(/^\/+|\/+$/g, '');
  return trimmed ? `${trimmed}/${fileName}` : fileName;
}

const SIZE_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/**
 * Bytes in decimal units with three significant digits: 999 B, 1.23 kB, 45.6 MB, 789 GB.
 * @param {number} bytes
 */
export function formatSize(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 999.5 && unit < SIZE_UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  const digits = value >= 99.95 ? 0 : value >= 9.995 ? 1 : 2;
  return `${value.toFixed(digits)} ${SIZE_UNITS[unit]}`;
}

/** @param {number} bytesPerSecond */
export function formatSpeed(bytesPerSecond) {
  return `${formatSize(Math.round(bytesPerSecond))}/s`;
}

/** @param {number} seconds */
export function formatDuration(seconds) {
  if (seconds < 0.1) return 'under 0.1 s';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

// One formatter for every row: building an Intl formatter per call is slow on long lists.
const DATE_FORMAT = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** @param {string} iso */
export function formatDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : DATE_FORMAT.format(date);
}

/** @param {number} n @param {string} one @param {string} many */
export function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

/**
 * The server's error codes (http.md, "Errors") in words a person can act on. The server's own
 * message is shown next to them, smaller, for whoever has to look closer.
 * @type {Record<string, string>}
 */
const ERROR_WORDS = {
  EXISTS: 'a file of that name already exists',
  PRECONDITION_FAILED: 'a file of that name already exists',
  TOO_LARGE: 'the file is larger than this server accepts',
  UNSUPPORTED_TYPE:
    'this is not a kind of file the library keeps (videos, music and pictures, by extension)',
  BAD_NAME:
    'the name is not allowed (an empty folder name, a name starting with a dot, a backslash or a control character)',
  LOCKED: 'a file of that name is being uploaded by someone else right now; try again later',
  READ_ONLY: 'this server is read-only: it accepts no uploads',
  NO_SPACE: 'the server has no room left on its disk for this file',
  BUSY: 'the server is too busy right now; try again in a moment',
  SHUTTING_DOWN: 'the server is shutting down',
  TIMEOUT: 'the upload stalled for too long and the server gave up',
  DIGEST_MISMATCH: 'the bytes the server received are not the bytes that were sent',
  LENGTH_REQUIRED: 'the browser did not say how large the file is',
  FORBIDDEN: 'the server refused a change coming from this page',
  BAD_REQUEST: 'the server could not understand the request',
  NOT_FOUND: 'the file is not in the library (any more)',
  INTERNAL: 'the server hit an unexpected fault',
  // Accounts, TLS and protected mode (access.md).
  AUTH_REQUIRED: 'this needs an account: sign in first',
  AUTH_FAILED: 'the name or password was not accepted',
  DENIED: 'your account is not allowed to do this in this folder',
  RATE_LIMITED: 'too many failed sign-ins from this address; wait a few minutes, then try again',
  TLS_REQUIRED: 'a password is accepted from here only over a secure (https) connection',
  PROTECTED: 'this server shares only with its own machine until it has accounts (protected mode)',
};

/** Refusals that signing in (or signing in again) may lift. */
export const SIGN_IN_CODES = ['AUTH_REQUIRED', 'AUTH_FAILED'];

/**
 * @param {string | undefined} code
 * @param {number} status the HTTP status, for replies without a JSON body
 */
export function errorInWords(code, status) {
  if (code && ERROR_WORDS[code]) return ERROR_WORDS[code];
  if (status === 0) return 'the connection to the server was lost';
  return `the server answered ${status}`;
}

/**
 * The error code of a refused request, from its JSON body (`{ code, message }`), if it has one.
 * @param {Response} response
 * @returns {Promise<string | undefined>}
 */
export async function errorCodeOf(response) {
  try {
    const body = await response.json();
    return typeof body?.code === 'string' ? body.code : undefined;
  } catch {
    return undefined;
  }
}

/** @param {Uint8Array} bytes */
export function toHex(bytes) {
  let hex = '';
  for (const byte of bytes) hex += byte.toString(16).padStart(2, '0');
  return hex;
}
