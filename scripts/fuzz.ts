#!/usr/bin/env node
/**
 * Live fuzz: starts the server (port 0, a temporary root, a short idle timeout, an upload
 * limit) and sends it random and mutated command lines and payloads over several pipelined
 * connections, checking every reply the way a real client must: each reply line is `OK...`
 * or `ERR <KNOWN_CODE> ...`, READ payloads are skipped byte-exactly, LIST entry lines are
 * counted, and every reply is matched to the request it answers.
 *
 * To know which request each reply answers, the fuzzer runs its own model of the contract's
 * framing over the exact bytes it sends (lines cut at `\n`, one trailing `\r` dropped, the
 * 4096-byte line limit, a WRITE's announced payload consumed whatever it holds, the closing
 * errors). The same model predicts, where the contract is explicit, which answers are allowed
 * (e.g. an unknown verb is `ERR UNKNOWN_COMMAND`; a READ of a known file returns exactly its
 * bytes; a WRITE never succeeds twice for one name; LIST never shows an invalid name).
 *
 * A batch always ends on a request boundary: a WRITE still owed payload bytes is padded, and
 * the batch is cut right after a request after which the server closes (LINE_TOO_LONG,
 * TOO_LARGE, a WRITE with no valid size, BYE); that connection is then reopened.
 *
 * Usage: npm run fuzz -- [--count 100000] [--seed N] [--connections 8]
 * Exit code: 0 when no framing violation, contract mismatch or server crash was seen, else 1.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { integer } from '../lib/cli-options.js';
import {
  killChildServer,
  quitChildServer,
  startChildServer,
  type ChildServer,
} from './harness/child-server.js';
import { Rng } from './harness/rng.js';
import { Command } from 'commander';

// ---------------------------------------------------------------------------------------------
// Options

const program = new Command('fuzz')
  .description('Fuzz a freshly started IOE media server with random and mutated requests.')
  .option('--count <n>', 'command lines to send', integer(1), 100_000)
  .option('--seed <n>', 'seed for every random choice (default: random, printed)', integer(0))
  .option('--connections <n>', 'connections fuzzing at once', integer(1, 256), 8)
  .option('--batch <n>', 'most commands pipelined per batch', integer(1, 1000), 32)
  .option('--max-upload <bytes>', 'the server’s --max-upload', integer(1), 1024 * 1024)
  .option('--idle-timeout <s>', 'the server’s --idle-timeout', integer(1), 5)
  .showHelpAfterError();

program.parse();
const opts = program.opts<{
  count: number;
  seed?: number;
  connections: number;
  batch: number;
  maxUpload: number;
  idleTimeout: number;
}>();
const SEED = opts.seed ?? randomInt(0, 2 ** 31);
const MAX_SHOWN = 10;
/** No reply for this long while requests are outstanding is a violation. */
const REPLY_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// The contract's constants, written down here independently of lib/

const MAX_LINE_BYTES = 4096;
const KNOWN_CODES = new Set([
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
]);
/** After these the server closes (BAD_REQUEST too, for a WRITE with no valid size). */
const CLOSING_CODES = new Set(['LINE_TOO_LONG', 'TOO_LARGE', 'BUSY', 'TIMEOUT', 'SHUTTING_DOWN']);
const TYPE_OF_EXTENSION = new Map<string, string>([
  ...['.mov', '.mp4', '.m4v', '.mkv', '.avi', '.webm'].map((e) => [e, 'video'] as const),
  ...['.mp3', '.m4a', '.aac', '.flac', '.wav', '.ogg', '.opus'].map((e) => [e, 'music'] as const),
  ...['.jpg', '.jpeg', '.png', '.gif', '.webp', '.heic', '.bmp', '.tif', '.tiff'].map(
    (e) => [e, 'picture'] as const,
  ),
]);
const EXTENSIONS = [...TYPE_OF_EXTENSION.keys()];
const TYPES = ['video', 'music', 'picture'];

const asciiUpper = (s: string): string => s.replace(/[a-z]+/g, (m) => m.toUpperCase());
const asciiLower = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function decimal(field: string): number | undefined {
  if (!/^(0|[1-9][0-9]*)$/.test(field) || field.length > 16) return undefined;
  const value = Number(field);
  return value <= Number.MAX_SAFE_INTEGER ? value : undefined;
}

type Extension = { type: string } | 'none' | 'unsure';

/** The media type a name or field ends in; 'unsure' when non-ASCII case folding could matter. */
function extensionOf(name: string): Extension {
  const dot = name.lastIndexOf('.');
  if (dot < 0 || name.indexOf('/', dot) >= 0) return 'none';
  const tail = name.slice(dot);
  // eslint-disable-next-line no-control-regex
  if (/[^\u0000-\u007f]/.test(tail)) return 'unsure';
  const type = TYPE_OF_EXTENSION.get(asciiLower(tail));
  return type ? { type } : 'none';
}

type NameStatus = 'valid' | 'bad' | 'unsupported' | 'unsure';

/** The contract's "Valid names", written independently. */
function nameStatus(name: string): NameStatus {
  if (name.length === 0 || Buffer.byteLength(name) > 1024) return 'bad';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(name) || name.startsWith('/')) return 'bad';
  for (const segment of name.split('/')) {
    if (segment === '' || segment.startsWith('.') || Buffer.byteLength(segment) > 255) return 'bad';
  }
  const ext = extensionOf(name);
  return ext === 'unsure' ? 'unsure' : ext === 'none' ? 'unsupported' : 'valid';
}

const BAD_NAME_CODES = new Set(['BAD_NAME', 'UNSUPPORTED_TYPE']);
const set = (...codes: string[]): ReadonlySet<string> => new Set(codes);

// ---------------------------------------------------------------------------------------------
// Hashing (randomness is in harness/rng.ts)

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

// ---------------------------------------------------------------------------------------------
// The media root the server starts with

interface KnownFile {
  size: number;
  sha256: string;
  /** Kept for files up to 256 KiB, to check READ bytes; larger ones are checked by hash. */
  content?: Buffer;
}

/** Visible files, by name: what READ, HASH and LIST must show. */
const seeds = new Map<string, KnownFile>();
/** Valid names that are on disk but must stay invisible (NOT_FOUND), and cannot be written. */
const invisibleFixed = new Set(['folder.mkv', 'a.mp3/x.mp3', 'dir/b.jpg/c.png']);
/** Valid names of links/FIFOs that must stay invisible unless a WRITE replaces them. */
const traps = new Set(['outside-link.mp3', 'dangling.mp3', 'pipe.mp3']);
/** Names that a fuzz WRITE stored (OK received), by name. */
const written = new Map<string, KnownFile>();
const SECRET = Buffer.from('outside the root: never served\n');

function knownFile(content: Buffer): KnownFile {
  return { size: content.length, sha256: sha256(content), content };
}

async function makeRoot(base: string, rng: Rng): Promise<string> {
  const root = join(base, 'media');
  const put = async (name: string, content: Buffer, visible: boolean): Promise<void> => {
    await mkdir(dirname(join(root, name)), { recursive: true });
    await writeFile(join(root, name), content);
    if (visible) seeds.set(name, knownFile(content));
  };
  await put('a.mp3', rng.bytes(1000), true);
  await put('UPPER.MP3', rng.bytes(17), true);
  await put('dir/b.jpg', rng.bytes(5000), true);
  await put('Crosby, Stills & Nash.mp3', rng.bytes(300), true);
  await put('x/日本語.mp4', rng.bytes(70_000), true);
  await put('e\u0301.flac', rng.bytes(10), true); // NFD
  await put('\u00e9.flac', rng.bytes(11), true); // NFC: a different name
  await put('empty.png', Buffer.alloc(0), true);
  await put('a,5.mp3', rng.bytes(50), true);
  await put('5.mp3', rng.bytes(42), true);
  await put('folder.mkv/inner.ogg', rng.bytes(20), true);
  await put('deep/er/still/song.opus', rng.bytes(3000), true);
  // Invisible: hidden, not media, inside a hidden folder.
  await put('.hidden.mp3', rng.bytes(30), false);
  await put('notes.txt', rng.bytes(30), false);
  await put('sub/.dot/c.mp3', rng.bytes(30), false);
  await mkdir(join(base, 'outside'), { recursive: true });
  await writeFile(join(base, 'outside', 'secret.mp3'), SECRET);
  await symlink('../outside/secret.mp3', join(root, 'outside-link.mp3'));
  await symlink('nowhere.mp3', join(root, 'dangling.mp3'));
  await symlink('a.mp3', join(root, 'link-in.mp3'));
  seeds.set('link-in.mp3', seeds.get('a.mp3')!);
  spawnSync('mkfifo', [join(root, 'pipe.mp3')]);
  return root;
}

// ---------------------------------------------------------------------------------------------
// Generating requests

const NUMBERS = [
  '0',
  '1',
  '2',
  '5',
  '17',
  '100',
  '999',
  '1000',
  '1001',
  '4095',
  '70000',
  '007',
  '00',
  '-1',
  '+1',
  ' 1',
  '1 ',
  '0x10',
  '1e3',
  '1.5',
  '',
  '9007199254740991',
  '9007199254740992',
  '99999999999999999999999',
  '\u0663',
  '\uff11',
  '1\u0000',
];

const NAME_FLAVOURS = ['', '', ' x', '-é', '-e\u0301', '-日本', '-🎵', ', and more', ',7', '#1'];

/** Names a WRITE may create: a bounded set, so the catalog (and LIST) stays small. */
function writableName(rng: Rng): string {
  const k = rng.int(200);
  return `w/${k % 20}${NAME_FLAVOURS[Math.floor(k / 20)]}${EXTENSIONS[k % EXTENSIONS.length]}`;
}

const BAD_NAMES: (string | Buffer)[] = [
  '',
  '/',
  '/abs.mp3',
  '../up.mp3',
  'a/../b.mp3',
  'a/./b.mp3',
  './a.mp3',
  '.hidden.mp3',
  'a//b.mp3',
  'a/.b/c.mp3',
  'a\\b.mp3',
  'a\tb.mp3',
  'a\u0000b.mp3',
  'a\u007fb.mp3',
  'a\u001bb.mp3',
  'a\rb.mp3',
  'notes.txt',
  'noext',
  'a.mp3.txt',
  'a.mp3/',
  'x.mp3 ',
  '..',
  '.',
  `${'s'.repeat(252)}.mp3`, // a 256-byte segment
  `${'s'.repeat(251)}.mp3`, // exactly 255: valid
  `${'é'.repeat(126)}.mp3`, // 256 bytes in two-byte characters
  `${'d/'.repeat(511)}x.mp3`, // over 1024 bytes
  '%2e%2e/a.mp3', // valid, literally
  'a\u200b.mp3',
  '\ufeffa.mp3',
  'ＡＢ.ｍｐ３',
  'a.M\u212aV', // Kelvin sign: ASCII-only case folding says not media
  'a.mp3\u0301',
  'sub/.dot/c.mp3',
  'x/日本語.MP4',
  'A.MP3',
  'link-in.mp3/',
  Buffer.from([0x61, 0xff, 0x2e, 0x6d, 0x70, 0x33]), // a\xff.mp3
  Buffer.from([0xc0, 0x80, 0x2e, 0x6d, 0x70, 0x33]), // overlong NUL
  Buffer.from([0xed, 0xa0, 0x80, 0x2e, 0x6d, 0x70, 0x33]), // lone surrogate
  Buffer.from([0x61, 0xe6, 0x97, 0x2e, 0x6d, 0x70, 0x33]), // truncated sequence
  Buffer.from([0xf4, 0x90, 0x80, 0x80, 0x2e, 0x6a, 0x70, 0x67]), // above U+10FFFF
];

const VERB_VARIANTS = [
  'list',
  'LiSt',
  ' LIST',
  'LIST ',
  'LIST\t',
  'L IST',
  'LİST',
  'lıst',
  'ＬＩＳＴ',
  'READ ',
  'rEaD',
  'reading',
  'wrıte',
  'WRITE ',
  'write',
  'WrItE',
  'HASH',
  'hash',
  'SHA',
  'BYE',
  'bye',
  'GET',
  'PUT',
  'DELETE',
  'QUIT',
  'FORCEQUIT',
  'OK',
  'ERR',
  '',
  ',',
  '\u0000',
];

class Generator {
  private readonly seedNames = [...seeds.keys()];
  private readonly otherNames = [...invisibleFixed, ...traps];

  /** Set while the stream is out of step (a half line, or a WRITE owed bytes): payloads stay
   * tiny then, since what follows may reach the server as lines rather than as payload. */
  small = false;

  constructor(private readonly rng: Rng) {}

  private name(): Buffer {
    const r = this.rng.int(100);
    let name: string | Buffer;
    if (r < 35) name = this.rng.pick(this.seedNames);
    else if (r < 60) name = writableName(this.rng);
    else if (r < 75) name = this.rng.pick(BAD_NAMES);
    else if (r < 80) name = this.rng.pick(this.otherNames);
    else name = this.mutateName(this.rng.pick(this.seedNames));
    return Buffer.isBuffer(name) ? name : Buffer.from(name);
  }

  private mutateName(name: string): string | Buffer {
    switch (this.rng.int(10)) {
      case 0:
        return name.toUpperCase();
      case 1:
        return `../${name}`;
      case 2:
        return `${name.slice(0, this.rng.int(4))}/${name}`;
      case 3:
        return name.normalize(this.rng.chance(0.5) ? 'NFD' : 'NFC');
      case 4:
        return `${name},${this.rng.pick(NUMBERS)}`;
      case 5:
        return Buffer.concat([Buffer.from(name), this.rng.bytes(1 + this.rng.int(4))]);
      case 6:
        return `${name}${this.rng.pick(['/', ' ', '.', '..', '\u0000', '\t'])}`;
      case 7:
        return `${this.rng.pick(['/', './', '.', ' ', 'x/../'])}${name}`;
      case 8:
        return name.replace(/\//g, '\\');
      default:
        // A few folders deep, or (5 bytes a level) past the 1024-byte limit. Few distinct
        // folders: the catalog scan's cost grows with them, and LIST would slow the whole fuzz.
        return this.rng.chance(0.9)
          ? `${'deep/'.repeat(1 + this.rng.int(3))}${name}`
          : `${'deep/'.repeat(205 + this.rng.int(20))}${name}`;
    }
  }

  private number(): string {
    return this.rng.chance(0.6) ? String(this.rng.int(80_000)) : this.rng.pick(NUMBERS);
  }

  private eol(): string {
    const r = this.rng.int(100);
    return r < 75 ? '\n' : r < 97 ? '\r\n' : '\r\r\n';
  }

  private line(...parts: (string | Buffer)[]): Buffer {
    return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
  }

  private list(): Buffer {
    const r = this.rng.int(10);
    if (r < 4) return this.line('LIST', this.eol());
    if (r < 8) {
      const type = this.rng.pick(TYPES);
      return this.line('LIST,', this.rng.chance(0.3) ? type.toUpperCase() : type, this.eol());
    }
    return this.line(
      'LIST,',
      this.rng.pick(['', 'videos', 'Music,', 'picture ', 'ᴍusic', 'all', 'video,music']),
      this.eol(),
    );
  }

  private read(): Buffer {
    const args: string[] = [];
    const r = this.rng.int(4);
    if (r >= 1) args.push(this.number());
    if (r >= 2) args.push(this.number());
    if (r >= 3 && this.rng.chance(0.2)) args.push(this.number());
    return this.line('READ,', this.name(), ...args.map((a) => `,${a}`), this.eol());
  }

  private hash(): Buffer {
    return this.line('HASH,', this.name(), this.eol());
  }

  private writeSize(): number {
    if (this.small) return this.rng.int(64);
    const r = this.rng.int(100);
    if (r < 5) return 0;
    if (r < 85) return this.rng.int(2048);
    if (r < 98) return this.rng.int(65_536);
    return this.rng.int(opts.maxUpload + 1);
  }

  private write(): Buffer {
    const r = this.rng.int(100);
    const name = r < 70 ? Buffer.from(writableName(this.rng)) : this.name();
    if (r >= 97) {
      // Closes the connection: a size that is missing, malformed or over the limit.
      const size = this.rng.pick([
        '',
        'x',
        '-1',
        '01',
        '1e3',
        String(opts.maxUpload + 1),
        '9007199254740991',
        '99999999999999999999',
      ]);
      const header = this.rng.chance(0.2) ? 'WRITE' : `WRITE,${name.toString('latin1')},${size}`;
      return this.line(Buffer.from(header, 'latin1'), this.eol());
    }
    const size = this.writeSize();
    const payload = this.rng.bytes(size);
    const p = this.rng.int(100);
    // Mostly the announced bytes; sometimes fewer or more (the framing model follows either).
    const sent =
      p < 85
        ? payload
        : p < 92
          ? payload.subarray(0, this.rng.int(size + 1))
          : Buffer.concat([payload, this.rng.bytes(this.rng.int(64))]);
    const header = this.rng.chance(0.05)
      ? this.line('WRITE,', String(size)) // no name
      : this.line('WRITE,', name, ',', String(size));
    return this.line(header, this.eol(), sent);
  }

  private valid(): Buffer {
    const r = this.rng.int(100);
    if (r < 8) return this.list();
    if (r < 50) return this.read();
    if (r < 65) return this.hash();
    return this.write();
  }

  /** 1 to 3 byte-level mutations of a valid-looking command. */
  private mutated(): Buffer {
    let bytes = this.valid();
    // Mutate the command line only: keep a WRITE payload, if any, as it was.
    const newline = bytes.indexOf(0x0a);
    let line = bytes.subarray(0, newline < 0 ? bytes.length : newline + 1);
    const rest = bytes.subarray(line.length);
    for (let n = 1 + this.rng.int(3); n > 0; n--) {
      const at = this.rng.int(line.length + 1);
      const cut = (k: number): Buffer =>
        Buffer.concat([line.subarray(0, at), line.subarray(Math.min(line.length, at + k))]);
      const insert = (b: Buffer): Buffer =>
        Buffer.concat([line.subarray(0, at), b, line.subarray(at)]);
      switch (this.rng.int(12)) {
        case 0:
          line = cut(1 + this.rng.int(4));
          break;
        case 1:
          line = insert(this.rng.bytes(1 + this.rng.int(3)));
          break;
        case 2:
          line = insert(Buffer.from(','));
          break;
        case 3:
          line = insert(Buffer.from(this.rng.pick(['\r', '\n', '\r\n', '\u0000', ' ', '\t'])));
          break;
        case 4:
          line = insert(Buffer.from(this.rng.pick(['é', '日', '🎵', '\u0301', '\ufeff'])));
          break;
        case 5:
          line = insert(Buffer.from([this.rng.pick([0x80, 0xc3, 0xe2, 0xf0, 0xff, 0xfe])]));
          break;
        case 6:
          line = insert(Buffer.from(this.rng.pick(NUMBERS)));
          break;
        case 7: {
          // Flip the case of the bytes around the cut point.
          const copy = Buffer.from(line);
          for (let i = at; i < Math.min(copy.length, at + 4); i++) {
            if (copy[i] >= 0x41 && copy[i] <= 0x5a) copy[i] += 32;
            else if (copy[i] >= 0x61 && copy[i] <= 0x7a) copy[i] -= 32;
          }
          line = copy;
          break;
        }
        case 8:
          line = line.subarray(0, at); // truncated (the newline may be gone)
          break;
        case 9:
          line = insert(Buffer.from(this.rng.pick(['..', '/', '../', './', '\\', '//'])));
          break;
        case 10:
          line = insert(Buffer.from(`,${this.number()}`));
          break;
        default: {
          const copy = Buffer.from(line);
          if (copy.length > 0) copy[this.rng.int(copy.length)] = this.rng.int(256);
          line = copy;
        }
      }
    }
    // A payload whose header no longer announces it would reach the server as lines of noise;
    // keep a little of that, not whole payloads of it.
    const still = model(Buffer.concat([line, rest]));
    const announced =
      still.requests.length === 1 &&
      still.cut === undefined &&
      still.owed === 0 &&
      !still.midLine &&
      still.requests[0].payload?.length === rest.length;
    if (rest.length > 0 && !announced && !this.rng.chance(0.1)) return line;
    bytes = Buffer.concat([line, announced ? rest : rest.subarray(0, 256)]);
    return bytes;
  }

  private verbVariant(): Buffer {
    const verb = this.rng.pick(VERB_VARIANTS);
    const args = this.rng.pick(['', `,${this.rng.pick(this.seedNames)}`, ',a.mp3,5', ',video']);
    const payload = this.rng.chance(0.3) ? '12345' : '';
    return this.line(verb, args, this.eol(), payload);
  }

  private longLine(): Buffer {
    const r = this.rng.int(6);
    if (r === 0) return this.line('LIST,', 'v'.repeat(MAX_LINE_BYTES - 6), '\n'); // 4096 exactly
    if (r === 1) return this.line('HASH,', 'n'.repeat(MAX_LINE_BYTES - 11), '.mp3\r\n'); // 4096
    if (r === 2) return this.line('READ,', 'r'.repeat(MAX_LINE_BYTES - 5), '\n'); // 4097: too long
    if (r === 3) return this.line('LIST', ' '.repeat(MAX_LINE_BYTES - 5), '\r\n'); // 4097
    if (r === 4) return this.line('x'.repeat(MAX_LINE_BYTES + this.rng.int(2000))); // no newline
    return this.line(
      Buffer.from(
        this.rng.bytes(MAX_LINE_BYTES - 1 + this.rng.int(3)).map((b) => (b === 10 ? 32 : b)),
      ),
    );
  }

  /** The next item of traffic: one command (maybe with payload), or some other bytes. */
  next(): Buffer {
    const r = this.rng.int(1000);
    if (r < 450) return this.valid();
    if (r < 780) return this.mutated();
    if (r < 850) return this.verbVariant();
    if (r < 900) return this.line(this.rng.bytes(1 + this.rng.int(120)), '\n');
    if (r < 930) return this.line(this.rng.pick(['\n', '\r\n', '\r\r\n', '\n\n']));
    if (r < 945) return this.longLine();
    if (r < 950) return this.line(this.rng.pick(['BYE', 'bye', 'Bye']), this.eol());
    if (r < 960) return this.line('BYE,', this.rng.pick(['', 'now', '0']), this.eol());
    return this.line(this.rng.pick(['READ', 'HASH', 'READ,', 'HASH,', 'LIST,']), this.eol());
  }
}

// ---------------------------------------------------------------------------------------------
// The framing model: which requests a byte stream holds, and what each may be answered

type Kind = 'LIST' | 'READ' | 'WRITE' | 'HASH' | 'BYE' | 'OTHER' | 'TOOLONG';

interface Expect {
  kind: Kind;
  /** The command line, for reports. */
  line: Buffer;
  /** ERR codes allowed; undefined: any known code. */
  codes?: ReadonlySet<string>;
  /** An OK reply is allowed. */
  ok: boolean;
  /** The server must close after the reply (it is cut there: nothing follows it). */
  closes: boolean;
  /** A READ's or HASH's target, when the contract fixes the answer. */
  name?: string;
  file?: KnownFile;
  offset?: number;
  length?: number;
  /** A trap name: OK only once a WRITE has stored it. */
  trap?: boolean;
  /** WRITE: the payload that was actually sent, and the name to record on OK. */
  payload?: Buffer;
  listType?: string;
  /** Names written (OK) before this request was sent: a LIST must show them. */
  writtenBefore?: [string, KnownFile][];
}

interface Model {
  requests: Expect[];
  empty: number;
  /** Bytes to keep: the stream is cut right after a request after which the server closes. */
  cut?: number;
  /** Payload bytes a WRITE is still owed at the end. */
  owed: number;
  /** The stream ends inside a command line. */
  midLine: boolean;
}

function knownAtSend(name: string): KnownFile | undefined {
  return seeds.get(name) ?? written.get(name);
}

function expectNamed(kind: 'READ' | 'HASH', line: Buffer, name: string): Expect {
  const status = nameStatus(name);
  if (status === 'unsure') return { kind, line, ok: true, closes: false };
  if (status !== 'valid') return { kind, line, codes: BAD_NAME_CODES, ok: false, closes: false };
  if (invisibleFixed.has(name))
    return { kind, line, codes: set('NOT_FOUND'), ok: false, closes: false };
  const file = knownAtSend(name);
  if (file) return { kind, line, codes: set(), ok: true, closes: false, name, file };
  return {
    kind,
    line,
    codes: set('NOT_FOUND'),
    ok: true,
    closes: false,
    name,
    trap: traps.has(name),
  };
}

function expectRead(line: Buffer, args: string): Expect {
  const fields = args.split(',');
  let unsure = false;
  let nameEnd = -1;
  for (let i = fields.length - 1; i >= 0; i--) {
    const ext = extensionOf(fields[i]);
    if (ext === 'unsure') unsure = true;
    if (typeof ext === 'object') {
      nameEnd = i;
      break;
    }
  }
  if (unsure) return { kind: 'READ', line, ok: true, closes: false };
  if (nameEnd < 0) {
    nameEnd = fields.length - 1;
    while (
      nameEnd >= 0 &&
      fields.length - 1 - nameEnd < 2 &&
      decimal(fields[nameEnd]) !== undefined
    )
      nameEnd--;
  }
  const numbers = fields.slice(nameEnd + 1).map(decimal);
  if (numbers.length > 2 || numbers.some((n) => n === undefined)) {
    return { kind: 'READ', line, codes: set('BAD_REQUEST'), ok: false, closes: false };
  }
  const [offset = 0, length] = numbers as number[];
  const expect = expectNamed('READ', line, fields.slice(0, nameEnd + 1).join(','));
  expect.offset = offset;
  expect.length = length;
  if (expect.file && offset > expect.file.size) {
    expect.codes = set('BAD_RANGE');
    expect.ok = false;
  } else if (!expect.file && expect.codes?.has('NOT_FOUND') && offset > 0) {
    // A file this fuzz does not know yet (another connection's upload) may be shorter.
    expect.codes = set('NOT_FOUND', 'BAD_RANGE');
  }
  return expect;
}

/** The expectations for one complete command line (without `\n`) that has no payload. */
function expectLine(raw: Buffer, line: Buffer, verb: string, comma: number): Expect {
  const text = decodeUtf8(line);
  const known = ['LIST', 'READ', 'HASH', 'BYE'].includes(verb);
  if (text === undefined) {
    return {
      kind: known ? (verb as Kind) : 'OTHER',
      line: raw,
      codes: known ? set('BAD_REQUEST') : set('BAD_REQUEST', 'UNKNOWN_COMMAND'),
      ok: false,
      closes: false,
    };
  }
  const args = comma < 0 ? undefined : text.slice(text.indexOf(',') + 1);
  switch (verb) {
    case 'LIST': {
      if (args === undefined)
        return { kind: 'LIST', line: raw, codes: set(), ok: true, closes: false };
      // eslint-disable-next-line no-control-regex
      if (/[^\u0000-\u007f]/.test(args))
        return { kind: 'LIST', line: raw, ok: true, closes: false };
      const type = asciiLower(args);
      return TYPES.includes(type)
        ? { kind: 'LIST', line: raw, codes: set(), ok: true, closes: false, listType: type }
        : { kind: 'LIST', line: raw, codes: set('BAD_REQUEST'), ok: false, closes: false };
    }
    case 'READ':
      if (args === undefined)
        return { kind: 'READ', line: raw, codes: set('BAD_REQUEST'), ok: false, closes: false };
      return expectRead(raw, args);
    case 'HASH':
      if (args === undefined)
        return { kind: 'HASH', line: raw, codes: set('BAD_REQUEST'), ok: false, closes: false };
      return expectNamed('HASH', raw, args);
    case 'BYE':
      return args === undefined
        ? { kind: 'BYE', line: raw, codes: set(), ok: true, closes: true }
        : { kind: 'BYE', line: raw, codes: set('BAD_REQUEST'), ok: false, closes: false };
    default:
      return { kind: 'OTHER', line: raw, codes: set('UNKNOWN_COMMAND'), ok: false, closes: false };
  }
}

function expectWrite(raw: Buffer, line: Buffer, comma: number, payload: Buffer): Expect {
  const base = { kind: 'WRITE' as const, line: raw, payload, closes: false };
  const last = line.lastIndexOf(0x2c);
  if (last === comma) return { ...base, codes: set('BAD_REQUEST'), ok: false };
  const name = decodeUtf8(line.subarray(comma + 1, last));
  if (name === undefined) return { ...base, codes: set('BAD_REQUEST'), ok: false };
  const status = nameStatus(name);
  if (status === 'unsure') return { ...base, name, ok: true };
  if (status !== 'valid') return { ...base, codes: BAD_NAME_CODES, ok: false };
  if (traps.has(name)) return { ...base, name, trap: true, ok: true };
  if (knownAtSend(name) || invisibleFixed.has(name))
    return { ...base, name, codes: set('EXISTS', 'LOCKED'), ok: false };
  return { ...base, name, codes: set('EXISTS', 'LOCKED', 'NO_SPACE'), ok: true };
}

function model(bytes: Buffer): Model {
  const requests: Expect[] = [];
  let empty = 0;
  let pos = 0;
  while (pos < bytes.length) {
    const newline = bytes.indexOf(0x0a, pos);
    const end = newline < 0 ? bytes.length : newline;
    if (end - pos >= MAX_LINE_BYTES) {
      const line = bytes.subarray(pos, pos + MAX_LINE_BYTES);
      requests.push({
        kind: 'TOOLONG',
        line,
        codes: set('LINE_TOO_LONG'),
        ok: false,
        closes: true,
      });
      return { requests, empty, cut: pos + MAX_LINE_BYTES, owed: 0, midLine: false };
    }
    if (newline < 0) return { requests, empty, owed: 0, midLine: true };
    const raw = bytes.subarray(pos, newline);
    const line = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, -1) : raw;
    pos = newline + 1;
    if (line.length === 0) {
      empty++;
      continue;
    }
    const comma = line.indexOf(0x2c);
    const verb = asciiUpper(line.subarray(0, comma < 0 ? line.length : comma).toString('latin1'));
    if (verb === 'WRITE') {
      const last = line.lastIndexOf(0x2c);
      const size = comma < 0 ? undefined : decimal(line.subarray(last + 1).toString('latin1'));
      if (size === undefined || size > opts.maxUpload) {
        const code = size === undefined ? 'BAD_REQUEST' : 'TOO_LARGE';
        requests.push({ kind: 'WRITE', line: raw, codes: set(code), ok: false, closes: true });
        return { requests, empty, cut: pos, owed: 0, midLine: false };
      }
      const payload = bytes.subarray(pos, pos + size);
      requests.push(expectWrite(raw, line, comma, payload));
      pos += size;
      if (pos > bytes.length) return { requests, empty, owed: pos - bytes.length, midLine: false };
      continue;
    }
    const expect = expectLine(raw, line, verb, comma);
    if (expect.kind === 'LIST' && expect.ok) expect.writtenBefore = [...written];
    requests.push(expect);
    if (expect.closes) return { requests, empty, cut: pos, owed: 0, midLine: false };
  }
  return { requests, empty, owed: 0, midLine: false };
}

// ---------------------------------------------------------------------------------------------
// Results

const results = {
  commands: 0,
  byKind: new Map<Kind, number>(),
  empty: 0,
  replies: new Map<string, number>(),
  connections: 0,
  bytesSent: 0,
  bytesReceived: 0,
  closesExpected: 0,
  violations: 0,
  mismatches: 0,
  notes: 0,
  firstViolations: [] as string[],
  firstMismatches: [] as string[],
  firstNotes: [] as string[],
};
let serverCrashed: string | undefined;

const show = (line: Buffer): string => {
  const text = JSON.stringify(line.subarray(0, 160).toString('latin1'));
  return line.length > 160 ? `${text}… (${line.length} bytes)` : text;
};

function violation(conn: number, message: string): void {
  results.violations++;
  if (results.firstViolations.length < MAX_SHOWN)
    results.firstViolations.push(`conn ${conn}: ${message}`);
}

function mismatch(conn: number, request: Expect, message: string): void {
  results.mismatches++;
  if (results.firstMismatches.length < MAX_SHOWN)
    results.firstMismatches.push(`conn ${conn}: ${show(request.line)} → ${message}`);
}

function note(conn: number, message: string): void {
  results.notes++;
  if (results.firstNotes.length < MAX_SHOWN) results.firstNotes.push(`conn ${conn}: ${message}`);
}

const count = <K>(map: Map<K, number>, key: K): void => {
  map.set(key, (map.get(key) ?? 0) + 1);
};

// ---------------------------------------------------------------------------------------------
// A connection that reads replies as a real client must

const ISO_MS = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$/;
const HEX64 = /^[0-9a-f]{64}$/;

class FuzzConnection {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly queue: Expect[] = [];
  /** Entry lines of the LIST reply being read. */
  private list?: { expect: Expect; left: number; names: string[] };
  /** Payload bytes of the READ reply being read. */
  private payload?: {
    expect: Expect;
    left: number;
    at: number;
    hash?: ReturnType<typeof createHash>;
  };
  /** A reply after which the server closes has arrived. */
  private closingReply?: string;
  ended = false;
  private waiter?: () => void;

  private constructor(
    readonly id: number,
    readonly socket: Socket,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', (error) => {
      if (!this.ended) this.onEnd(error);
    });
    socket.on('close', () => this.onEnd());
  }

  static async open(id: number, port: number): Promise<FuzzConnection> {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    await once(socket, 'connect');
    results.connections++;
    return new FuzzConnection(id, socket);
  }

  /** Sends bytes holding these requests; resolves when all are answered (and closed, if due). */
  async exchange(bytes: Buffer, requests: Expect[]): Promise<void> {
    this.queue.push(...requests);
    results.bytesSent += bytes.length;
    if (!this.ended) this.socket.write(bytes);
    await this.settled();
  }

  private done(): boolean {
    if (this.ended) return true;
    return this.queue.length === 0 && !this.list && !this.payload && !this.closingReply;
  }

  private settled(): Promise<void> {
    if (this.done()) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const head = this.queue[0];
        violation(
          this.id,
          `no reply within ${REPLY_TIMEOUT_MS / 1000} s; ${this.queue.length} request(s) ` +
            `outstanding${head ? `, first ${show(head.line)}` : ''}` +
            (this.closingReply ? `; the server did not close after ${this.closingReply}` : ''),
        );
        this.socket.destroy();
        this.ended = true;
        resolve();
      }, REPLY_TIMEOUT_MS);
      this.waiter = () => {
        if (!this.done()) return;
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
  }

  close(): void {
    this.socket.destroy();
  }

  /** A reply after which the server closes: we have nothing more to send, so we end our side. */
  private closing(reply: string): void {
    this.closingReply = reply;
    this.socket.end();
  }

  private onEnd(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    const outstanding = this.queue.length + (this.list || this.payload ? 1 : 0);
    if (!this.closingReply) {
      const head = this.list?.expect ?? this.payload?.expect ?? this.queue[0];
      violation(
        this.id,
        `the server closed the connection${error ? ` (${error.message})` : ''} with no closing ` +
          `reply; ${outstanding} request(s) unanswered` +
          (head ? `, first ${show(head.line)}` : ''),
      );
    } else if (outstanding > 0 && this.buffer.length === 0) {
      // An unpredicted closing reply (e.g. TIMEOUT) left requests behind; already reported.
    }
    this.queue.length = 0;
    this.list = undefined;
    this.payload = undefined;
    this.waiter?.();
  }

  private onData(chunk: Buffer): void {
    results.bytesReceived += chunk.length;
    if (this.closingReply) {
      violation(
        this.id,
        `${chunk.length} byte(s) after the closing reply ${this.closingReply}: ${show(chunk)}`,
      );
      this.socket.destroy();
      return;
    }
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    try {
      this.process();
    } catch (error) {
      violation(this.id, (error as Error).message);
      this.socket.destroy();
      this.closingReply = 'a framing violation';
    }
    this.waiter?.();
  }

  private takeLine(): Buffer | undefined {
    const newline = this.buffer.indexOf(0x0a);
    if (newline < 0) {
      if (this.buffer.length > 1024 * 1024) throw new Error('a reply line over 1 MiB');
      return undefined;
    }
    const line = this.buffer.subarray(0, newline);
    this.buffer = this.buffer.subarray(newline + 1);
    return line;
  }

  private process(): void {
    for (;;) {
      if (this.closingReply) {
        if (this.buffer.length > 0) {
          throw new Error(
            `bytes after the closing reply ${this.closingReply}: ${show(this.buffer)}`,
          );
        }
        return;
      }
      if (this.payload) {
        if (this.buffer.length === 0) return;
        const take = Math.min(this.payload.left, this.buffer.length);
        this.checkPayload(this.buffer.subarray(0, take));
        this.buffer = this.buffer.subarray(take);
        this.payload.left -= take;
        if (this.payload.left === 0) this.finishPayload();
        continue;
      }
      const line = this.takeLine();
      if (!line) return;
      if (this.list) {
        this.checkEntry(line);
        if (--this.list.left === 0) this.finishList();
        continue;
      }
      const head = this.queue.shift();
      const text = line.toString('utf8');
      if (!head) {
        const code = /^ERR ([A-Z_]+)/.exec(text)?.[1];
        if (code && CLOSING_CODES.has(code)) {
          count(results.replies, `ERR ${code}`);
          note(this.id, `unsolicited ${text}`);
          this.closing(text);
          continue;
        }
        throw new Error(`a reply with no request outstanding: ${show(line)}`);
      }
      this.reply(head, line, text);
    }
  }

  private reply(request: Expect, line: Buffer, text: string): void {
    if (text.startsWith('ERR ')) {
      const match = /^ERR ([A-Z_]+)(?: (.*))?$/s.exec(text);
      const code = match?.[1] ?? '';
      if (!KNOWN_CODES.has(code))
        throw new Error(`unknown error code in ${show(line)} for ${show(request.line)}`);
      count(results.replies, `ERR ${code}`);
      const closes =
        CLOSING_CODES.has(code) ||
        (code === 'BAD_REQUEST' && request.kind === 'WRITE' && request.closes);
      if (request.codes && !request.codes.has(code)) {
        mismatch(
          this.id,
          request,
          `${text.slice(0, 120)}; expected ${[...request.codes].join('|') || 'OK'}`,
        );
      }
      if (closes) {
        this.closing(`ERR ${code}`);
        if (!request.closes)
          note(this.id, `unexpected closing reply ${text} to ${show(request.line)}`);
        if (this.queue.length > 0)
          note(this.id, `${this.queue.length} request(s) dropped by ${code}`);
      } else if (request.closes) {
        mismatch(
          this.id,
          request,
          `${text.slice(0, 120)}, which leaves open a connection that must close`,
        );
      }
      return;
    }
    if (text !== 'OK' && !text.startsWith('OK ')) {
      throw new Error(`reply is neither OK nor ERR: ${show(line)} (for ${show(request.line)})`);
    }
    count(results.replies, 'OK');
    if (!request.ok) {
      mismatch(
        this.id,
        request,
        `${text.slice(0, 120)}; expected ERR ${[...(request.codes ?? [])].join('|')}`,
      );
    }
    const fields = text.split(' ').slice(1);
    switch (request.kind) {
      case 'LIST': {
        const n = fields.length === 1 ? decimal(fields[0]) : undefined;
        if (n === undefined) throw new Error(`malformed LIST reply ${show(line)}`);
        const listing = { expect: request, left: n, names: [] };
        if (n === 0) this.checkListing(listing);
        else this.list = listing;
        return;
      }
      case 'READ': {
        const n = fields.length === 1 ? decimal(fields[0]) : undefined;
        if (n === undefined) throw new Error(`malformed READ reply ${show(line)}`);
        this.checkReadSize(request, n);
        this.payload = { expect: request, left: n, at: 0 };
        if (request.name !== undefined && !request.file?.content && (request.offset ?? 0) === 0)
          this.payload.hash = createHash('sha256');
        if (n === 0) this.finishPayload();
        return;
      }
      case 'WRITE': {
        if (fields.length !== 2 || decimal(fields[0]) === undefined || !HEX64.test(fields[1]))
          throw new Error(`malformed WRITE reply ${show(line)}`);
        this.checkWrite(request, Number(fields[0]), fields[1]);
        return;
      }
      case 'HASH': {
        if (fields.length !== 2 || !HEX64.test(fields[0]) || decimal(fields[1]) === undefined)
          throw new Error(`malformed HASH reply ${show(line)}`);
        const file = request.name !== undefined ? knownAtSend(request.name) : undefined;
        if (request.trap && !written.has(request.name!))
          mismatch(this.id, request, `${text}: an invisible file was hashed`);
        if (file && (file.sha256 !== fields[0] || file.size !== Number(fields[1])))
          mismatch(this.id, request, `${text}; expected OK ${file.sha256} ${file.size}`);
        return;
      }
      case 'BYE':
        if (text !== 'OK BYE') throw new Error(`malformed BYE reply ${show(line)}`);
        this.closing('OK BYE');
        return;
      default:
        throw new Error(`OK to a command with no OK form: ${show(line)} for ${show(request.line)}`);
    }
  }

  private checkReadSize(request: Expect, n: number): void {
    if (request.trap && !written.has(request.name!)) {
      mismatch(this.id, request, `OK ${n}: an invisible file was served`);
    }
    const file =
      request.file ?? (request.name !== undefined ? written.get(request.name) : undefined);
    if (!file) return;
    const offset = request.offset ?? 0;
    const expected = Math.min(request.length ?? Infinity, file.size - offset);
    if (n !== expected) mismatch(this.id, request, `OK ${n}; expected OK ${expected}`);
  }

  private checkPayload(chunk: Buffer): void {
    const payload = this.payload!;
    const request = payload.expect;
    const file =
      request.file ?? (request.name !== undefined ? written.get(request.name) : undefined);
    if (file?.content) {
      const from = (request.offset ?? 0) + payload.at;
      if (!chunk.equals(file.content.subarray(from, from + chunk.length))) {
        mismatch(this.id, request, `payload bytes ${payload.at}.. differ from the file`);
      }
    }
    payload.hash?.update(chunk);
    payload.at += chunk.length;
  }

  private finishPayload(): void {
    const { expect: request, hash, at } = this.payload!;
    this.payload = undefined;
    const file =
      request.file ?? (request.name !== undefined ? written.get(request.name) : undefined);
    if (hash && file && at === file.size && hash.digest('hex') !== file.sha256) {
      mismatch(this.id, request, 'READ bytes do not hash to the file’s SHA-256');
    }
  }

  private checkWrite(request: Expect, size: number, sha: string): void {
    const payload = request.payload!;
    if (size !== payload.length || sha !== sha256(payload)) {
      mismatch(
        this.id,
        request,
        `OK ${size} ${sha}; expected OK ${payload.length} ${sha256(payload)}`,
      );
    }
    if (request.name === undefined) return;
    const before = written.get(request.name) ?? seeds.get(request.name);
    if (before) {
      mismatch(
        this.id,
        request,
        `OK: replaced ${JSON.stringify(request.name)}, which already existed`,
      );
      return;
    }
    if (request.trap) note(this.id, `WRITE replaced the link/FIFO ${request.name} (allowed?)`);
    written.set(request.name, {
      size: payload.length,
      sha256: sha,
      content: payload.length <= 256 * 1024 ? Buffer.from(payload) : undefined,
    });
  }

  private checkEntry(line: Buffer): void {
    const listing = this.list!;
    const text = decodeUtf8(line);
    const fields = text?.split('\t') ?? [];
    if (fields.length < 4) {
      mismatch(this.id, listing.expect, `malformed LIST entry ${show(line)}`);
      return;
    }
    const [type, name, size, mtime] = fields;
    const status = nameStatus(name);
    const ext = extensionOf(name);
    if (
      status === 'bad' ||
      status === 'unsupported' ||
      (status === 'valid' && invisibleFixed.has(name))
    )
      mismatch(this.id, listing.expect, `LIST shows an invalid or invisible name ${show(line)}`);
    else if (traps.has(name) && !written.has(name))
      mismatch(this.id, listing.expect, `LIST shows the invisible ${show(line)}`);
    if (!TYPES.includes(type) || (typeof ext === 'object' && ext.type !== type))
      mismatch(this.id, listing.expect, `LIST entry with a wrong type ${show(line)}`);
    if (listing.expect.listType && type !== listing.expect.listType)
      mismatch(this.id, listing.expect, `LIST,${listing.expect.listType} shows ${show(line)}`);
    if (decimal(size) === undefined || !ISO_MS.test(mtime))
      mismatch(this.id, listing.expect, `LIST entry with a bad size or mtime ${show(line)}`);
    const file = knownAtSend(name);
    if (file && file.size !== Number(size))
      mismatch(
        this.id,
        listing.expect,
        `LIST size ${size} for ${JSON.stringify(name)}, expected ${file.size}`,
      );
    listing.names.push(name);
  }

  private finishList(): void {
    const listing = this.list!;
    this.list = undefined;
    this.checkListing(listing);
  }

  private checkListing(listing: { expect: Expect; names: string[] }): void {
    const { expect, names } = listing;
    for (let i = 1; i < names.length; i++) {
      if (Buffer.compare(Buffer.from(names[i - 1]), Buffer.from(names[i])) >= 0) {
        mismatch(this.id, expect, `LIST not in byte order at ${JSON.stringify(names[i])}`);
        break;
      }
    }
    const shown = new Set(names);
    const must = [...seeds.keys(), ...(expect.writtenBefore ?? []).map(([name]) => name)];
    for (const name of must) {
      const ext = extensionOf(name);
      const type = typeof ext === 'object' ? ext.type : undefined;
      if ((!expect.listType || type === expect.listType) && !shown.has(name)) {
        mismatch(this.id, expect, `LIST is missing ${JSON.stringify(name)}`);
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The server

// ---------------------------------------------------------------------------------------------
// The run

/** Builds one batch: bytes ending on a request boundary, and the requests they hold. */
function batch(gen: Generator, rng: Rng, limit: number): { bytes: Buffer; model: Model } {
  const items: Buffer[] = [];
  const target = 1 + rng.int(Math.max(1, Math.min(opts.batch, limit)));
  let bytes = Buffer.alloc(0);
  let result = model(bytes);
  for (let i = 0; i < target * 2 && result.requests.length < target; i++) {
    // A half line left by a mutation mostly ends here; sometimes the next item joins it.
    if (result.midLine && rng.chance(0.8)) items.push(Buffer.from('\n'));
    gen.small = result.midLine || result.owed > 0;
    items.push(gen.next());
    bytes = Buffer.concat(items);
    result = model(bytes);
    if (result.cut !== undefined) break;
  }
  // End on a request boundary: pay what a WRITE is owed, finish a half line.
  for (let i = 0; i < 8 && result.cut === undefined && (result.owed > 0 || result.midLine); i++) {
    bytes = Buffer.concat([bytes, result.owed > 0 ? rng.bytes(result.owed) : Buffer.from('\n')]);
    result = model(bytes);
  }
  if (result.owed > 0 || result.midLine) throw new Error('the generator could not end a batch');
  if (result.cut !== undefined) bytes = bytes.subarray(0, result.cut);
  return { bytes, model: result };
}

async function worker(id: number, port: number, quota: number): Promise<void> {
  const rng = new Rng(SEED, id);
  const gen = new Generator(rng);
  let conn: FuzzConnection;
  try {
    conn = await FuzzConnection.open(id, port);
  } catch (error) {
    serverCrashed ??= `connect failed: ${(error as Error).message}`;
    return;
  }
  let sent = 0;
  while (sent < quota && !serverCrashed) {
    const { bytes, model: m } = batch(gen, rng, quota - sent);
    sent += m.requests.length;
    results.commands += m.requests.length;
    results.empty += m.empty;
    for (const request of m.requests) count(results.byKind, request.kind);
    if (m.cut !== undefined) results.closesExpected++;
    await conn.exchange(bytes, m.requests);
    if (conn.ended || m.cut !== undefined) {
      conn.close();
      if (serverCrashed) break;
      try {
        conn = await FuzzConnection.open(id, port);
      } catch (error) {
        serverCrashed ??= `reconnect failed: ${(error as Error).message}`;
        return;
      }
    }
  }
  if (!conn.ended && !serverCrashed) {
    await conn.exchange(Buffer.from('BYE\n'), [
      { kind: 'BYE', line: Buffer.from('BYE'), codes: set(), ok: true, closes: true },
    ]);
  }
  conn.close();
}

/** A fresh connection's LIST; returns a description of what went wrong, if anything. */
async function finalList(port: number): Promise<string | undefined> {
  try {
    const conn = await FuzzConnection.open(0, port);
    const before = results.violations + results.mismatches;
    const replies = results.replies.get('OK') ?? 0;
    await conn.exchange(Buffer.from('LIST\nBYE\n'), [
      {
        kind: 'LIST',
        line: Buffer.from('LIST'),
        codes: set(),
        ok: true,
        closes: false,
        writtenBefore: [...written],
      },
      { kind: 'BYE', line: Buffer.from('BYE'), codes: set(), ok: true, closes: true },
    ]);
    conn.close();
    if ((results.replies.get('OK') ?? 0) !== replies + 2)
      return 'the final LIST was not answered OK';
    if (results.violations + results.mismatches > before) return 'the final LIST was wrong';
    return undefined;
  } catch (error) {
    return `cannot connect: ${(error as Error).message}`;
  }
}

async function main(): Promise<number> {
  const base = await mkdtemp(join(tmpdir(), 'ioe-fuzz-'));
  // Also on an interrupt (process.exit skips `finally`).
  process.on('exit', () => rmSync(base, { recursive: true, force: true }));
  let server: ChildServer | undefined;
  try {
    const root = await makeRoot(base, new Rng(SEED, 0));
    server = await startChildServer([
      '--root',
      root,
      '--idle-timeout',
      String(opts.idleTimeout),
      '--max-upload',
      String(opts.maxUpload),
      '--log-level',
      'warn',
    ]);
    let stopping = false;
    void server.exited.then((how) => {
      if (!stopping) serverCrashed = `the server ${how} during the fuzz`;
    });
    console.log(
      `fuzz: ${opts.count} commands over ${opts.connections} connections to 127.0.0.1:${server.port} ` +
        `(server pid ${server.child.pid}, --max-upload ${opts.maxUpload}, --idle-timeout ${opts.idleTimeout}); seed ${SEED}`,
    );
    const started = performance.now();
    const progress = setInterval(() => {
      const s = ((performance.now() - started) / 1000).toFixed(0);
      console.log(
        `  ${s} s: ${results.commands} commands, ${results.violations + results.mismatches} problems`,
      );
    }, 15_000);
    const share = Math.floor(opts.count / opts.connections);
    await Promise.all(
      Array.from({ length: opts.connections }, (_, i) =>
        worker(i + 1, server!.port, share + (i < opts.count % opts.connections ? 1 : 0)),
      ),
    );
    clearInterval(progress);
    const elapsed = (performance.now() - started) / 1000;

    const listProblem = serverCrashed ? 'the server is gone' : await finalList(server.port);
    const secret = await readFile(join(base, 'outside', 'secret.mp3')).catch(() => undefined);
    const outsideIntact =
      secret?.equals(SECRET) === true &&
      (await readdir(join(base, 'outside'))).length === 1 &&
      (await readdir(base)).sort().join(',') === 'media,outside';

    stopping = true;
    const stopped = await quitChildServer(server);

    const failed =
      results.violations > 0 ||
      results.mismatches > 0 ||
      serverCrashed !== undefined ||
      listProblem !== undefined ||
      !outsideIntact ||
      stopped !== 'exit code 0';

    console.log('');
    console.log('=== fuzz summary ===');
    console.log(
      `seed ${SEED}, elapsed ${elapsed.toFixed(1)} s (${(results.commands / elapsed).toFixed(0)} commands/s)`,
    );
    console.log(
      `commands sent: ${results.commands} (` +
        [...results.byKind]
          .sort()
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') +
        `), plus ${results.empty} empty lines; ${(results.bytesSent / 2 ** 20).toFixed(1)} MiB sent, ` +
        `${(results.bytesReceived / 2 ** 20).toFixed(1)} MiB received`,
    );
    console.log(
      'replies by code: ' +
        [...results.replies]
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k} ${v}`)
          .join(', '),
    );
    console.log(
      `connections opened: ${results.connections} (${results.closesExpected} batches ended by a closing request)`,
    );
    console.log(`files stored by fuzz WRITEs: ${written.size}`);
    console.log(`framing violations: ${results.violations}`);
    for (const line of results.firstViolations) console.log(`  - ${line}`);
    console.log(`contract mismatches: ${results.mismatches}`);
    for (const line of results.firstMismatches) console.log(`  - ${line}`);
    if (results.notes > 0) {
      console.log(`notes (not failures): ${results.notes}`);
      for (const line of results.firstNotes) console.log(`  - ${line}`);
    }
    console.log(`server crash: ${serverCrashed ?? 'none'}`);
    console.log(`final LIST on a fresh connection: ${listProblem ?? 'OK'}`);
    console.log(`outside the root untouched: ${outsideIntact ? 'yes' : 'NO'}`);
    console.log(`server stop (QUIT): ${stopped}`);
    if (server.stderrTail.length > 0) {
      console.log(`server stderr (last ${server.stderrTail.length} lines):`);
      for (const line of server.stderrTail) console.log(`  ${line.slice(0, 400)}`);
    }
    const errors =
      results.violations + results.mismatches + (serverCrashed ? 1 : 0) + (listProblem ? 1 : 0);
    console.log(
      `errors: ${errors + (outsideIntact ? 0 : 1) + (stopped === 'exit code 0' ? 0 : 1)}`,
    );
    console.log(`result: ${failed ? 'FAIL' : 'PASS'}`);
    return failed ? 1 : 0;
  } finally {
    if (server) await killChildServer(server);
    await rm(base, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(
      `fuzz: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
    );
    process.exit(2);
  },
);
