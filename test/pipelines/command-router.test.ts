/**
 * The command router alone: Frame objects in (as the frame splitter would emit them), reply
 * bytes out, on a LocalStorage in a temporary directory.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ProtocolError } from '../../lib/errors.js';
import { HashCache } from '../../lib/hash-cache.js';
import { LocalStorage } from '../../lib/local-storage.js';
import { payloadLength } from '../../lib/protocol.js';
import type { Storage, StoredFile, Upload } from '../../lib/storage.js';
import {
  CommandRouter,
  type CommandRecord,
  type CommandRouterOptions,
} from '../../pipelines/command-router.js';
import type { Frame, LineFrame, PayloadFrame } from '../../pipelines/frame-splitter.js';

const WAIT_MS = 5000;
const MTIME = new Date('2026-11-24T09:30:00.000Z');
const sha256 = (bytes: Buffer | string): string => createHash('sha256').update(bytes).digest('hex');

/** A line frame, announcing the payload the real splitter would give it. */
function line(text: string | Buffer): LineFrame {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text);
  return { kind: 'line', line: bytes, payload: payloadLength(bytes) };
}

function payload(bytes: Buffer | string): PayloadFrame {
  return { kind: 'payload', chunk: Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes) };
}

/** A WRITE line and its payload, cut into `pieces` payload frames. */
function upload(name: string, bytes: Buffer | string, pieces = 1): Frame[] {
  const data = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  const frames: Frame[] = [line(`WRITE,${name},${data.length}`)];
  const step = Math.max(1, Math.ceil(data.length / pieces));
  for (let i = 0; i < data.length; i += step) frames.push(payload(data.subarray(i, i + step)));
  return frames;
}

/** Replaces each `ERR <CODE> <message>\n` by `ERR <CODE>\n`: messages are for people. */
function codes(text: string): string {
  return text.replace(/ERR ([A-Z_]+) [^\n]*\n/g, 'ERR $1\n');
}

/** One router with its output collected. */
class Session {
  readonly router: CommandRouter;
  readonly chunks: Buffer[] = [];
  readonly records: CommandRecord[] = [];
  readonly faults: Error[] = [];
  readonly errors: Error[] = [];
  ended = false;
  closed = false;
  private waiters: (() => void)[] = [];

  constructor(options: Partial<CommandRouterOptions> & { storage: Storage }) {
    this.router = new CommandRouter({
      hashes: new HashCache(),
      onCommand: (record) => this.records.push(record),
      onFault: (error) => this.faults.push(error),
      ...options,
    });
    this.router.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.wake();
    });
    this.router.on('end', () => {
      this.ended = true;
      this.wake();
    });
    this.router.on('error', (error) => {
      this.errors.push(error);
      this.wake();
    });
    this.router.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  get output(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** The output as text, with error messages dropped. */
  get text(): string {
    return codes(this.output.toString('latin1'));
  }

  /** Writes frames; resolves once the router has taken the last one. */
  send(...frames: Frame[]): Promise<void> {
    let last: Promise<void> = Promise.resolve();
    for (const frame of frames) {
      last = new Promise((resolve) => this.router.write(frame, () => resolve()));
    }
    return last;
  }

  /** Waits until the condition holds (bounded: rejects after WAIT_MS). */
  async until(condition: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${this.text}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50).unref();
      });
    }
  }

  /** Waits until the output contains `text` (or ends). */
  untilText(text: string): Promise<void> {
    return this.until(() => this.text.includes(text) || this.ended, JSON.stringify(text));
  }

  /** Ends the input and waits for the output to end. */
  async finish(): Promise<string> {
    this.router.end();
    await this.until(() => this.ended || this.closed, 'the end of the output');
    return this.text;
  }
}

async function tempRoot(t: Test): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-router-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function put(root: string, name: string, content: Buffer | string): Promise<void> {
  const path = join(root, name);
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, content);
  await utimes(path, MTIME, MTIME);
}

/** A root with a few media files and some that are not part of the catalog. */
async function setup(
  t: Test,
  options: { empty?: boolean } = {},
): Promise<{ root: string; storage: LocalStorage }> {
  const root = await tempRoot(t);
  if (!options.empty) {
    await put(root, 'a.mp3', '0123456789');
    await put(root, 'films/b.mkv', Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    await put(root, 'pics/c.JPG', '');
    await put(root, 'notes.txt', 'not media');
    await put(root, '.hidden.mp3', 'hidden');
    await mkdir(join(root, 'folder.mp3'));
  }
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  return { root: storage.root, storage };
}

async function temps(root: string): Promise<string[]> {
  const all = await readdir(root, { recursive: true });
  return all.filter((name) => name.split('/').some((s) => s.startsWith('.ioe-upload-')));
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const CATALOG =
  'OK 3\n' +
  'music\ta.mp3\t10\t2026-11-24T09:30:00.000Z\n' +
  'video\tfilms/b.mkv\t256\t2026-11-24T09:30:00.000Z\n' +
  'picture\tpics/c.JPG\t0\t2026-11-24T09:30:00.000Z\n';

t.test('LIST', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('LIST'), line('LIST,music'), line('list,Picture'), line('LIST,VIDEO'));
  await s.send(line('LIST,audio'), line('LIST,'), line('LIST\r'));
  t.equal(
    await s.finish(),
    CATALOG +
      'OK 1\nmusic\ta.mp3\t10\t2026-11-24T09:30:00.000Z\n' +
      'OK 1\npicture\tpics/c.JPG\t0\t2026-11-24T09:30:00.000Z\n' +
      'OK 1\nvideo\tfilms/b.mkv\t256\t2026-11-24T09:30:00.000Z\n' +
      'ERR BAD_REQUEST\nERR BAD_REQUEST\n' +
      CATALOG,
  );
  t.same(s.errors, []);
});

t.test('LIST of an empty catalog is OK 0', async (t) => {
  const { storage } = await setup(t, { empty: true });
  const s = new Session({ storage });
  await s.send(line('LIST'), line('LIST,music'));
  t.equal(await s.finish(), 'OK 0\nOK 0\n');
});

t.test('LIST of a catalog larger than one 64 KiB batch', async (t) => {
  const root = await tempRoot(t);
  // 300 names of 244 bytes: a listing of about 80 KB, more than one formatter batch.
  const names = Array.from(
    { length: 300 },
    (_, i) => `${String(i).padStart(4, '0')}${'n'.repeat(236)}.mp3`,
  );
  await Promise.all(names.map((name) => put(root, name, 'x')));
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  const s = new Session({ storage });
  await s.send(line('LIST'), line('BYE'));
  const text = await s.finish();
  const expected =
    'OK 300\n' +
    names.map((name) => `music\t${name}\t1\t2026-11-24T09:30:00.000Z\n`).join('') +
    'OK BYE\n';
  t.ok(expected.length > 65536);
  t.equal(text, expected);
});

t.test('READ: whole, ranges, every byte value', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(
    line('READ,a.mp3'),
    line('READ,a.mp3,3'),
    line('READ,a.mp3,3,4'),
    line('READ,a.mp3,3,100'),
    line('READ,a.mp3,0,0'),
    line('READ,a.mp3,9,1'),
    line('read,A.mp3'),
    line('READ,pics/c.JPG'),
  );
  t.equal(
    s.text,
    'OK 10\n0123456789' +
      'OK 7\n3456789' +
      'OK 4\n3456' +
      'OK 7\n3456789' +
      'OK 0\n' +
      'OK 1\n9' +
      'ERR NOT_FOUND\n' +
      'OK 0\n',
  );
  await s.send(line('READ,films/b.mkv'));
  await s.untilText('OK 256\n');
  const out = s.output;
  const start = out.lastIndexOf('OK 256\n');
  t.ok(out.subarray(start + 7).equals(ALL_BYTES), 'binary bytes are sent untouched');
  await s.finish();
});

t.test('READ: offset equal to the size is OK 0, past it BAD_RANGE', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(
    line('READ,a.mp3,10'),
    line('READ,a.mp3,10,5'),
    line('READ,a.mp3,11'),
    line('READ,a.mp3,9007199254740991'),
    line('READ,pics/c.JPG,0'),
    line('READ,pics/c.JPG,1'),
    line('READ,a.mp3,2,1'),
  );
  t.equal(
    await s.finish(),
    'OK 0\nOK 0\nERR BAD_RANGE\nERR BAD_RANGE\nOK 0\nERR BAD_RANGE\nOK 1\n2',
  );
});

t.test('READ: errors that keep the connection', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(
    line('READ,missing.mp3'),
    line('READ,notes.txt'),
    line('READ,notes.txt,5'),
    line('READ,.hidden.mp3'),
    line('READ,../a.mp3'),
    line('READ,/a.mp3'),
    line('READ,'),
    line('READ'),
    line('READ,a.mp3,x'),
    line('READ,a.mp3,1,2,3'),
    line(Buffer.from([0x52, 0x45, 0x41, 0x44, 0x2c, 0xff, 0x2e, 0x6d, 0x70, 0x33])),
    line('READ,films'),
    line('READ,a.mp3,1,1'),
  );
  t.equal(
    await s.finish(),
    'ERR NOT_FOUND\n' +
      'ERR UNSUPPORTED_TYPE\n' +
      'ERR UNSUPPORTED_TYPE\n' +
      'ERR BAD_NAME\n' +
      'ERR BAD_NAME\n' +
      'ERR BAD_NAME\n' +
      'ERR BAD_NAME\n' +
      'ERR BAD_REQUEST\n' +
      'ERR BAD_REQUEST\n' +
      'ERR BAD_REQUEST\n' +
      'ERR BAD_REQUEST\n' +
      'ERR UNSUPPORTED_TYPE\n' +
      'OK 1\n1',
  );
});

t.test('READ of a file larger than the buffers, with a slow reader', async (t) => {
  const root = await tempRoot(t);
  const big = randomBytes(5 * 1024 * 1024 + 3);
  await put(root, 'big.mov', big);
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  const router = new CommandRouter({ storage, hashes: new HashCache() });
  router.write(line('READ,big.mov,1'));
  router.write(line('BYE'));
  router.end();
  const chunks: Buffer[] = [];
  for await (const chunk of router) {
    chunks.push(chunk as Buffer);
    await new Promise((resolve) => setImmediate(resolve));
  }
  const out = Buffer.concat(chunks);
  const header = `OK ${big.length - 1}\n`;
  t.equal(out.subarray(0, header.length).toString(), header);
  t.ok(
    out.subarray(header.length, header.length + big.length - 1).equals(big.subarray(1)),
    'the bytes',
  );
  t.equal(out.subarray(header.length + big.length - 1).toString(), 'OK BYE\n');
});

/** READs `size` bytes with a consumer that waits `pauseMs` after each chunk; the chunk sizes. */
async function readChunkSizes(t: Test, size: number, pauseMs: number): Promise<number[]> {
  const root = await tempRoot(t);
  const content = randomBytes(size);
  await put(root, 'film.mkv', content);
  const storage = await LocalStorage.open(root);
  t.teardown(() => storage.close());
  const router = new CommandRouter({ storage, hashes: new HashCache() });
  router.end(line('READ,film.mkv'));
  const chunks: Buffer[] = [];
  for await (const chunk of router) {
    chunks.push(chunk as Buffer);
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  const out = Buffer.concat(chunks);
  const header = `OK ${size}\n`;
  t.equal(out.subarray(0, header.length).toString(), header, 'the header');
  t.ok(out.subarray(header.length).equals(content), 'every byte, in order');
  return chunks.map((chunk) => chunk.length);
}

t.test('READ chunks follow the reader: large for a fast one, small for a slow one', async (t) => {
  const fast = await readChunkSizes(t, 24 * 1024 * 1024, 0);
  t.ok(
    Math.max(...fast) >= 512 * 1024,
    `a fast reader is given large chunks (largest ${Math.max(...fast)} B)`,
  );
  t.ok(fast[0] <= 64 * 1024 + 16, `the first chunk (with the header) is small (${fast[0]} B)`);
  // At most 64 KiB every 20 ms is about 3 MB/s: a slow reader that never proves itself fast.
  const slow = await readChunkSizes(t, 2 * 1024 * 1024, 20);
  t.ok(
    slow.every((length) => length <= 64 * 1024 + 16),
    `a slow reader is never given large chunks (largest ${Math.max(...slow)} B)`,
  );
  t.ok(
    slow.slice(2, -1).every((length) => length <= 32 * 1024),
    `and soon only the smallest (${slow.slice(0, 6).join(', ')} … B)`,
  );
});

t.test('WRITE + payload → OK <size> <sha256>, stored and readable', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  const bytes = Buffer.concat([ALL_BYTES, Buffer.from('\nLIST\nBYE\n'), randomBytes(1000)]);
  await s.send(...upload('new/song.flac', bytes, 7));
  await s.untilText('OK');
  t.equal(s.text, `OK ${bytes.length} ${sha256(bytes)}\n`);
  t.ok((await readFile(join(root, 'new/song.flac'))).equals(bytes), 'stored byte for byte');
  t.same(await temps(root), []);
  await s.send(line('READ,new/song.flac'), line('HASH,new/song.flac'));
  const text = await s.finish();
  t.ok(
    s.output.equals(
      Buffer.concat([
        Buffer.from(`OK ${bytes.length} ${sha256(bytes)}\nOK ${bytes.length}\n`),
        bytes,
        Buffer.from(`OK ${sha256(bytes)} ${bytes.length}\n`),
      ]),
    ),
    text.slice(0, 80),
  );
});

t.test('WRITE of 0 bytes, and of a large payload in many frames', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(...upload('empty.png', ''));
  const big = randomBytes(4 * 1024 * 1024 + 5);
  await s.send(...upload('big.mp4', big, 50));
  await s.send(line('LIST,picture'));
  const text = await s.finish();
  t.match(text, new RegExp(`^OK 0 ${sha256('')}\nOK ${big.length} ${sha256(big)}\nOK 2\n`));
  t.ok((await readFile(join(root, 'big.mp4'))).equals(big));
  t.equal((await readFile(join(root, 'empty.png'))).length, 0);
});

t.test('WRITE rejected up front: ERR at once, exactly its payload drained', async (t) => {
  const cases: { name: string; code: string; readOnly?: boolean; raw?: Buffer }[] = [
    { name: 'a.mp3', code: 'EXISTS' },
    { name: 'films', code: 'UNSUPPORTED_TYPE' },
    { name: 'films/b.mkv/x.mp3', code: 'EXISTS' },
    { name: 'folder.mp3', code: 'EXISTS' },
    { name: 'notes.txt', code: 'UNSUPPORTED_TYPE' },
    { name: '../escape.mp3', code: 'BAD_NAME' },
    { name: '.hidden2.mp3', code: 'BAD_NAME' },
    { name: 'a\\b.mp3', code: 'BAD_NAME' },
    { name: '', code: 'BAD_NAME' },
    { name: 'fresh.mp3', code: 'READ_ONLY', readOnly: true },
    { name: '../x.txt', code: 'READ_ONLY', readOnly: true },
    { name: 'bad-utf8', code: 'BAD_REQUEST', raw: Buffer.from('WRITE,\xff\xfe.mp3,', 'latin1') },
    { name: 'no-name', code: 'BAD_REQUEST', raw: Buffer.from('WRITE,') },
  ];
  for (const c of cases) {
    const { root, storage } = await setup(t);
    const s = new Session({ storage, readOnly: c.readOnly });
    // The payload holds command-like text: none of it may be taken as commands.
    const body = Buffer.from('LIST\nBYE\nWRITE,z.mp3,1\nz');
    const header = c.raw
      ? Buffer.concat([c.raw, Buffer.from(String(body.length))])
      : Buffer.from(`WRITE,${c.name},${body.length}`);
    const headerFrame = line(header);
    t.equal(headerFrame.payload, body.length, `${c.name}: the splitter announces the payload`);
    await s.send(headerFrame);
    await s.untilText('ERR');
    t.equal(s.text, `ERR ${c.code}\n`, `${c.name}: ERR ${c.code} at once, before the payload`);
    await s.send(payload(body.subarray(0, 5)), payload(body.subarray(5)));
    await s.send(line('READ,a.mp3,0,3'));
    t.equal(await s.finish(), `ERR ${c.code}\nOK 3\n012`, `${c.name}: the next command works`);
    t.equal(s.records.length, 2, `${c.name}: two commands recorded`);
    t.match(s.records[0], { verb: 'WRITE', result: c.code, bytes: body.length });
    t.match(s.records[1], { verb: 'READ', result: 'OK' });
    t.equal(
      await readFile(join(root, 'a.mp3'), 'utf8'),
      '0123456789',
      `${c.name}: existing file untouched`,
    );
    t.same(await temps(root), [], `${c.name}: no temporary file`);
    t.notOk(await exists(join(root, 'z.mp3')));
  }
});

t.test('a rejected WRITE of 0 bytes is answered and recorded once', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('WRITE,notes.txt,0'), line('WRITE,a.mp3,0'), line('LIST,music'));
  t.equal(
    await s.finish(),
    'ERR UNSUPPORTED_TYPE\nERR EXISTS\nOK 1\nmusic\ta.mp3\t10\t2026-11-24T09:30:00.000Z\n',
  );
  t.same(
    s.records.map((r) => [r.verb, r.result]),
    [
      ['WRITE', 'UNSUPPORTED_TYPE'],
      ['WRITE', 'EXISTS'],
      ['LIST', 'OK'],
    ],
  );
});

t.test('WRITE check order: READ_ONLY before BAD_NAME before EXISTS', async (t) => {
  const { storage } = await setup(t);
  const readOnly = new Session({ storage, readOnly: true });
  await readOnly.send(line('WRITE,../a.txt,0'), line('WRITE,a.mp3,0'));
  t.equal(await readOnly.finish(), 'ERR READ_ONLY\nERR READ_ONLY\n');
  const s = new Session({ storage });
  await s.send(line('WRITE,../a.mp3,0'), line('WRITE,a.txt,0'), line('WRITE,a.mp3,0'));
  t.equal(await s.finish(), 'ERR BAD_NAME\nERR UNSUPPORTED_TYPE\nERR EXISTS\n');
});

t.test('WRITE whose size is malformed or too large closes without draining', async (t) => {
  const { root, storage } = await setup(t);
  for (const [header, code, maxUpload] of [
    ['WRITE,x.mp3,abc', 'BAD_REQUEST', undefined],
    ['WRITE,x.mp3', 'BAD_REQUEST', undefined],
    ['WRITE', 'BAD_REQUEST', undefined],
    ['WRITE,x.mp3,11', 'TOO_LARGE', 10],
    ['WRITE,\xff,11', 'TOO_LARGE', 10],
  ] as const) {
    const s = new Session({ storage, maxUpload });
    const frame = line(Buffer.from(header, 'latin1'));
    await s.send(frame);
    await s.until(() => s.ended, `${header}: end of output`);
    t.equal(s.text, `ERR ${code}\n`, header);
    // Whatever follows is not answered.
    await s.send(payload('LIST\n'), line('LIST'));
    t.equal(await s.finish(), `ERR ${code}\n`);
    t.match(s.records, [{ result: code }]);
  }
  t.notOk(await exists(join(root, 'x.mp3')));
  // Within the limit, the upload goes through.
  const s = new Session({ storage, maxUpload: 10 });
  await s.send(...upload('x.mp3', '0123456789'));
  t.equal(await s.finish(), `OK 10 ${sha256('0123456789')}\n`);
});

t.test('LOCKED: a WRITE to a name whose upload is in progress', async (t) => {
  const { root, storage } = await setup(t);
  // Another connection is uploading song.mp3.
  const first = new Session({ storage });
  await first.send(line('WRITE,song.mp3,10'), payload('01234'));
  const second = new Session({ storage });
  await second.send(line('WRITE,song.mp3,4'));
  await second.untilText('ERR');
  t.equal(second.text, 'ERR LOCKED\n');
  await second.send(payload('abcd'), line('HASH,a.mp3'));
  t.equal(await second.finish(), `ERR LOCKED\nOK ${sha256('0123456789')} 10\n`);
  // The first upload is unaffected.
  await first.send(payload('56789'));
  t.equal(await first.finish(), `OK 10 ${sha256('0123456789')}\n`);
  t.equal(await readFile(join(root, 'song.mp3'), 'utf8'), '0123456789');
  // Once it is done, the name is taken: EXISTS, not LOCKED.
  const third = new Session({ storage });
  await third.send(...upload('song.mp3', 'x'));
  t.equal(await third.finish(), 'ERR EXISTS\n');
});

t.test('LOCKED by an upload begun directly on the storage', async (t) => {
  const { storage } = await setup(t);
  const held = await storage.beginUpload('held.mp3', 5);
  t.teardown(() => held.abort());
  const s = new Session({ storage });
  await s.send(...upload('held.mp3', 'abc'), line('LIST,video'));
  t.equal(
    await s.finish(),
    'ERR LOCKED\nOK 1\nvideo\tfilms/b.mkv\t256\t2026-11-24T09:30:00.000Z\n',
  );
});

t.test('NO_SPACE up front for a size beyond the free disk', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('WRITE,huge.mkv,9007199254740991'));
  await s.untilText('ERR');
  t.equal(s.text, 'ERR NO_SPACE\n');
  t.equal(s.router.busy, true, 'still draining the announced payload');
  t.equal(s.ended, false, 'the connection stays');
  await s.finish();
  t.same(await temps(root), []);
});

t.test('HASH', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(
    line('HASH,a.mp3'),
    line('hash,films/b.mkv'),
    line('HASH,pics/c.JPG'),
    line('HASH,a.mp3'),
    line('HASH,missing.mp3'),
    line('HASH,notes.txt'),
    line('HASH,.hidden.mp3'),
    line('HASH,'),
    line('HASH'),
  );
  t.equal(
    await s.finish(),
    `OK ${sha256('0123456789')} 10\n` +
      `OK ${sha256(ALL_BYTES)} 256\n` +
      `OK ${sha256('')} 0\n` +
      `OK ${sha256('0123456789')} 10\n` +
      'ERR NOT_FOUND\nERR UNSUPPORTED_TYPE\nERR BAD_NAME\nERR BAD_NAME\nERR BAD_REQUEST\n',
  );
});

t.test('HASH sees a changed file', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('HASH,a.mp3'));
  await put(root, 'a.mp3', 'changed content');
  await s.send(line('HASH,a.mp3'));
  t.equal(await s.finish(), `OK ${sha256('0123456789')} 10\nOK ${sha256('changed content')} 15\n`);
});

t.test('BYE ends the output; nothing after it is answered', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('LIST,music'), line('bye'));
  await s.until(() => s.ended, 'the end of the output');
  await s.send(line('LIST'), ...upload('after.mp3', 'abc'));
  t.equal(await s.finish(), 'OK 1\nmusic\ta.mp3\t10\t2026-11-24T09:30:00.000Z\nOK BYE\n');
  t.equal(s.router.closing, true);
  t.notOk(await exists(join(root, 'after.mp3')), 'a WRITE after BYE is not stored');
  const bye = new Session({ storage });
  await bye.send(line('BYE,now'), line('BYE'));
  t.equal(await bye.finish(), 'ERR BAD_REQUEST\nOK BYE\n');
});

t.test('unknown commands and empty lines', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line(''), line('\r'), line(' LIST'), line('GET,a.mp3'), line('LIST,music'));
  t.equal(
    await s.finish(),
    'ERR UNKNOWN_COMMAND\nERR UNKNOWN_COMMAND\nOK 1\nmusic\ta.mp3\t10\t2026-11-24T09:30:00.000Z\n',
  );
  t.same(
    s.records.map((r) => r.result),
    ['UNKNOWN_COMMAND', 'UNKNOWN_COMMAND', 'OK'],
    'empty lines are not commands',
  );
  t.equal(s.records[1].verb, '?', 'an unknown verb is logged as ?');
});

t.test('overflow → ERR LINE_TOO_LONG and the output ends', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('LIST,picture'), { kind: 'overflow' });
  await s.until(() => s.ended, 'the end of the output');
  await s.send(line('LIST'));
  t.equal(
    await s.finish(),
    'OK 1\npicture\tpics/c.JPG\t0\t2026-11-24T09:30:00.000Z\nERR LINE_TOO_LONG\n',
  );
});

t.test('shutdown() while idle → ERR SHUTTING_DOWN at once, output ends', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('READ,a.mp3,0,1'));
  s.router.shutdown();
  await s.until(() => s.ended, 'the end of the output');
  t.equal(s.text, 'OK 1\n0ERR SHUTTING_DOWN\n');
  await s.send(line('LIST'));
  t.equal(await s.finish(), 'OK 1\n0ERR SHUTTING_DOWN\n');
  // A fresh, idle router.
  const idle = new Session({ storage });
  idle.router.shutdown();
  await idle.until(() => idle.ended, 'the end of the output');
  t.equal(idle.text, 'ERR SHUTTING_DOWN\n');
});

t.test(
  'shutdown() during a WRITE payload: the write completes with OK, then SHUTTING_DOWN',
  async (t) => {
    const { root, storage } = await setup(t);
    const s = new Session({ storage });
    await s.send(line('WRITE,late.mp3,10'), payload('01234'));
    t.equal(s.router.busy, true);
    s.router.shutdown();
    t.equal(s.text, '', 'nothing yet');
    t.equal(s.ended, false);
    await s.send(payload('56789'), line('LIST'));
    await s.until(() => s.ended, 'the end of the output');
    t.equal(await s.finish(), `OK 10 ${sha256('0123456789')}\nERR SHUTTING_DOWN\n`);
    t.equal(await readFile(join(root, 'late.mp3'), 'utf8'), '0123456789');
    // Likewise for a rejected WRITE still draining its payload.
    const d = new Session({ storage });
    await d.send(line('WRITE,a.mp3,6'), payload('abc'));
    d.router.shutdown();
    await d.send(payload('def'));
    await d.until(() => d.ended, 'the end of the output');
    t.equal(await d.finish(), 'ERR EXISTS\nERR SHUTTING_DOWN\n');
  },
);

t.test(
  'shutdown() during a pipelined batch: the command in flight finishes, the rest is not run',
  async (t) => {
    const { root, storage } = await setup(t);
    const s = new Session({ storage });
    const sent = s.send(line('READ,films/b.mkv'), ...upload('never.mp3', 'abc'), line('LIST'));
    t.equal(s.router.busy, true, 'the READ is in flight');
    s.router.shutdown();
    await sent;
    await s.finish();
    const prefix = Buffer.concat([
      Buffer.from('OK 256\n'),
      ALL_BYTES,
      Buffer.from('ERR SHUTTING_DOWN '),
    ]);
    t.ok(
      s.output.subarray(0, prefix.length).equals(prefix),
      'the READ completes, then SHUTTING_DOWN',
    );
    t.match(s.text, /ERR SHUTTING_DOWN\n$/);
    t.notOk(await exists(join(root, 'never.mp3')));
    t.same(
      s.records.map((r) => r.verb),
      ['READ'],
      'only the READ ran',
    );
  },
);

t.test('timeout() → ERR TIMEOUT and the output ends', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('WRITE,slow.mp3,10'), payload('012'));
  t.equal((await temps(root)).length, 1, 'the upload is under way');
  s.router.timeout();
  await s.until(() => s.ended, 'the end of the output');
  t.equal(s.text, 'ERR TIMEOUT\n');
  s.router.destroy();
  await s.until(() => s.closed, 'close');
  t.same(await temps(root), [], 'the partial upload is deleted');
  t.notOk(await exists(join(root, 'slow.mp3')));
});

t.test('the input ends mid-payload: the partial upload is deleted', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('WRITE,cut.mp3,100'), payload(randomBytes(40)));
  t.equal((await temps(root)).length, 1);
  await s.finish();
  await s.until(() => s.closed, 'close');
  // The abort runs after the output ends: wait (bounded) for the file to go.
  const deadline = Date.now() + WAIT_MS;
  while ((await temps(root)).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'cut.mp3')));
});

t.test('destroy() mid-payload: the temporary file is gone when it closes', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(line('WRITE,gone.mp3,100'), payload(randomBytes(40)));
  t.equal((await temps(root)).length, 1);
  s.router.destroy();
  await s.until(() => s.closed, 'close');
  t.same(await temps(root), []);
  t.notOk(await exists(join(root, 'gone.mp3')));
});

/** A storage whose uploads fail as told; everything else is the real one. */
function faultyStorage(real: LocalStorage, fault: { write?: () => Error; publish?: () => Error }) {
  const aborted: string[] = [];
  const storage: Storage = {
    list: () => real.list(),
    open: (name) => real.open(name),
    close: () => real.close(),
    beginUpload: async (name, size) => {
      const inner = await real.beginUpload(name, size);
      const wrapped: Upload = {
        write: async (chunks) => {
          if (fault.write) throw fault.write();
          return inner.write(chunks);
        },
        publish: async () => {
          if (fault.publish) {
            await inner.abort();
            throw fault.publish();
          }
          return inner.publish();
        },
        abort: async () => {
          aborted.push(name);
          return inner.abort();
        },
      };
      return wrapped;
    },
  };
  return { storage, aborted };
}

t.test(
  'a disk fault mid-payload: ERR INTERNAL at once, payload drained, connection stays',
  async (t) => {
    const { root, storage: real } = await setup(t);
    const { storage, aborted } = faultyStorage(real, {
      write: () => new Error('EIO: i/o error, write'),
    });
    const s = new Session({ storage });
    await s.send(line('WRITE,fault.mp3,20'), payload('0123456789'));
    await s.untilText('ERR');
    t.equal(s.text, 'ERR INTERNAL\n', 'answered before the payload ends');
    t.equal(s.ended, false);
    await s.send(payload('abcdefghij'), line('READ,a.mp3,0,2'));
    t.equal(await s.finish(), 'ERR INTERNAL\nOK 2\n01');
    t.equal(s.faults.length, 1, 'the fault is reported');
    t.match(s.faults[0].message, /EIO/);
    t.same(aborted, ['fault.mp3'], 'the upload is aborted');
    t.match(s.records[0], { verb: 'WRITE', name: 'fault.mp3', result: 'INTERNAL', bytes: 20 });
    t.same(await temps(root), []);
    t.notOk(await exists(join(root, 'fault.mp3')));
  },
);

t.test('a full disk mid-payload: ERR NO_SPACE at once, connection stays', async (t) => {
  const { root, storage: real } = await setup(t);
  const { storage } = faultyStorage(real, {
    write: () => new ProtocolError('NO_SPACE', 'the disk is full'),
  });
  const s = new Session({ storage });
  await s.send(line('WRITE,full.mp3,6'), payload('abc'));
  await s.untilText('ERR');
  await s.send(payload('def'), line('LIST,video'));
  t.equal(
    await s.finish(),
    'ERR NO_SPACE\nOK 1\nvideo\tfilms/b.mkv\t256\t2026-11-24T09:30:00.000Z\n',
  );
  t.same(s.faults, [], 'NO_SPACE is not a fault');
  t.same(await temps(root), []);
});

t.test(
  'a publish that fails (the name was taken meanwhile): ERR EXISTS after the payload',
  async (t) => {
    const { root, storage } = await setup(t);
    const s = new Session({ storage });
    await s.send(line('WRITE,race.mp3,3'), payload('ne'));
    await writeFile(join(root, 'race.mp3'), 'old');
    await s.send(payload('w'), line('READ,race.mp3'));
    t.equal(await s.finish(), 'ERR EXISTS\nOK 3\nold');
    t.same(await temps(root), []);
  },
);

t.test('a publish fault is INTERNAL', async (t) => {
  const { root, storage: real } = await setup(t);
  const { storage } = faultyStorage(real, { publish: () => new Error('fsync failed') });
  const s = new Session({ storage });
  await s.send(...upload('p.mp3', 'abc'), line('HASH,a.mp3'));
  t.equal(await s.finish(), `ERR INTERNAL\nOK ${sha256('0123456789')} 10\n`);
  t.equal(s.faults.length, 1);
  t.same(await temps(root), []);
});

t.test('a file that shrinks mid-READ: the router fails rather than send fewer bytes', async (t) => {
  const { storage: real } = await setup(t);
  const shrinking: Storage = {
    list: () => real.list(),
    close: () => real.close(),
    beginUpload: (name, size) => real.beginUpload(name, size),
    open: async (): Promise<StoredFile> => ({
      size: 10,
      mtime: MTIME,
      version: 'v',
      stream: () => Readable.from([Buffer.from('01234')]),
      close: async () => undefined,
    }),
  };
  const s = new Session({ storage: shrinking });
  await s.send(line('READ,a.mp3'), line('LIST'));
  await s.until(() => s.closed, 'close');
  t.equal(s.errors.length, 1, 'the router errors (the connection is closed)');
  t.notMatch(s.text, /ERR/, 'no ERR inside the announced bytes');
  t.notMatch(s.text, /OK 3\n/, 'the next command is not answered');
});

t.test('READ: the header leaves in one chunk with the first bytes', async (t) => {
  const { storage } = await setup(t);
  const router = new CommandRouter({ storage, hashes: new HashCache() });
  router.end(line('READ,films/b.mkv'));
  const chunks: Buffer[] = [];
  for await (const chunk of router) chunks.push(chunk as Buffer);
  t.equal(chunks.length, 1, 'one chunk for a file smaller than the first read');
  t.ok(chunks[0].equals(Buffer.concat([Buffer.from('OK 256\n'), ALL_BYTES])), 'header and bytes');
});

t.test('a small file that shrank after it was opened: ERR INTERNAL, still in step', async (t) => {
  // Read at once (no stream), the shortfall is known before a byte leaves: an ERR, not a close.
  const { root, storage: real } = await setup(t);
  const shrinking: Storage = {
    list: () => real.list(),
    close: () => real.close(),
    beginUpload: (name, size) => real.beginUpload(name, size),
    open: async (name): Promise<StoredFile> => {
      const file = await real.open(name);
      await writeFile(join(root, name), '01234'); // rewritten in place: 10 → 5 bytes
      return file;
    },
  };
  const s = new Session({ storage: shrinking });
  await s.send(line('READ,a.mp3'), line('READ,a.mp3'));
  // The second READ opens the file as it is now (5 bytes), and nothing shrinks it further.
  t.equal(await s.finish(), 'ERR INTERNAL\nOK 5\n01234', 'an ERR, then the next READ in step');
  t.equal(s.errors.length, 0, 'the connection is not torn down');
  t.match(s.faults[0]?.message, /the file shrank while it was sent \(5 of 10 bytes\)/);
});

t.test('a READ whose file fails before its first byte: ERR INTERNAL, still in step', async (t) => {
  const { storage: real } = await setup(t);
  const failing: Storage = {
    list: () => real.list(),
    close: () => real.close(),
    beginUpload: (name, size) => real.beginUpload(name, size),
    open: async (): Promise<StoredFile> => ({
      size: 10,
      mtime: MTIME,
      version: 'v',
      stream: () =>
        new Readable({
          read() {
            this.destroy(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }));
          },
        }),
      close: async () => undefined,
    }),
  };
  const s = new Session({ storage: failing });
  await s.send(line('READ,a.mp3'), line('LIST'));
  t.equal(await s.finish(), 'ERR INTERNAL\n' + CATALOG, 'an ERR, then the next reply');
  t.equal(s.faults.length, 1, 'the fault is reported');
  t.equal(s.errors.length, 0, 'the connection is not torn down');
});

t.test('onCommand records every finished command', async (t) => {
  const { storage } = await setup(t);
  const s = new Session({ storage });
  await s.send(
    line('LIST'),
    line('READ,a.mp3,2'),
    ...upload('rec.mp3', 'hello'),
    line('HASH,rec.mp3'),
    line('READ,nope.mp3'),
    line('NOPE'),
    line('BYE'),
  );
  await s.finish();
  t.same(
    s.records.map(({ verb, name, bytes, result }) => ({ verb, name, bytes, result })),
    [
      { verb: 'LIST', name: undefined, bytes: Buffer.byteLength(CATALOG), result: 'OK' },
      { verb: 'READ', name: 'a.mp3', bytes: 8, result: 'OK' },
      { verb: 'WRITE', name: 'rec.mp3', bytes: 5, result: 'OK' },
      { verb: 'HASH', name: 'rec.mp3', bytes: 0, result: 'OK' },
      { verb: 'READ', name: 'nope.mp3', bytes: 0, result: 'NOT_FOUND' },
      { verb: '?', name: undefined, bytes: 0, result: 'UNKNOWN_COMMAND' },
      { verb: 'BYE', name: undefined, bytes: 0, result: 'OK' },
    ],
  );
  t.ok(
    s.records.every((r) => typeof r.ms === 'number' && r.ms >= 0),
    'each record has a duration',
  );
});

t.test('pipelined requests are answered in order', async (t) => {
  const { root, storage } = await setup(t);
  const s = new Session({ storage });
  const body = Buffer.concat([ALL_BYTES, ALL_BYTES]);
  // Everything written at once, without waiting for any reply.
  const all = s.send(
    line('HASH,a.mp3'),
    ...upload('p/one.wav', body, 3),
    line('READ,p/one.wav,510'),
    line('LIST,music'),
    ...upload('a.mp3', 'zz'),
    line('READ,missing.mp3'),
    ...upload('p/two.gif', ''),
    line('HASH,p/one.wav'),
    line('READ,a.mp3,0,3'),
    line('BYE'),
    line('LIST'),
  );
  await all;
  await s.finish();
  const expected = Buffer.concat([
    Buffer.from(`OK ${sha256('0123456789')} 10\n`),
    Buffer.from(`OK 512 ${sha256(body)}\n`),
    Buffer.from('OK 2\n'),
    body.subarray(510),
    Buffer.from(
      'OK 2\n' + 'music\ta.mp3\t10\t2026-11-24T09:30:00.000Z\n' + 'music\tp/one.wav\t512\t',
    ),
  ]);
  const out = s.output;
  t.ok(out.subarray(0, expected.length).equals(expected), 'HASH, WRITE, READ, LIST in order');
  const rest = codes(out.subarray(expected.length).toString('latin1'));
  t.match(
    rest,
    new RegExp(
      '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z\n' +
        'ERR EXISTS\n' +
        'ERR NOT_FOUND\n' +
        `OK 0 ${sha256('')}\n` +
        `OK ${sha256(body)} 512\n` +
        'OK 3\n012' +
        'OK BYE\n$',
    ),
  );
  t.ok((await readFile(join(root, 'p/one.wav'))).equals(body));
});
