/**
 * Real programs as HTTP clients of the HTTP door (http.md): curl (whole files, ranges, HEAD,
 * `-C -` resume, an interrupted download resumed, `-T` uploads with their receipts and
 * refusals, odd names, `--compressed`), `wget -c`, and ffprobe / ffmpeg reading an mp4 whose
 * moov atom is at the end (which they can only reach with ranged requests).
 *
 * curl, ffmpeg and ffprobe are required (CI installs them): a missing one fails. wget is
 * optional: its test is skipped, saying so, when it is not installed.
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import { MediaServer } from '../../pipelines/server.js';
import { eventually, sleep } from '../helpers/raw-client.js';

/**
 * Every child program is killed after this long: it only ends a stuck one. On a shared VM
 * with a cold page cache, `ffmpeg -version` once took over 15 s (CI, 2026-12-02).
 */
const RUN_MS = 60_000;

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const sha256b64 = (data: Buffer): string => createHash('sha256').update(data).digest('base64');

interface Ran {
  /** The exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program to its end (bounded by `RUN_MS`); a missing program rejects loudly. */
function run(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        encoding: 'buffer',
        maxBuffer: 64 << 20,
        timeout: RUN_MS,
        killSignal: 'SIGKILL',
        cwd: options.cwd,
      },
      (error, stdout, stderr) => {
        const code = (error as NodeJS.ErrnoException | null)?.code;
        if (typeof code === 'string') {
          reject(new Error(`cannot run ${cmd} (${code}): is it installed?`));
          return;
        }
        resolve({
          code: error ? ((code as number | undefined) ?? null) : 0,
          signal: (error?.signal as NodeJS.Signals | undefined) ?? null,
          stdout,
          stderr: stderr.toString(),
        });
      },
    );
  });
}

/** The first line a program prints about its version; undefined when it is not installed. */
async function versionOf(cmd: string): Promise<string | undefined> {
  const flag = cmd === 'ffmpeg' || cmd === 'ffprobe' ? '-version' : '--version';
  try {
    const ran = await run(cmd, [flag]);
    return ran.stdout.toString().split('\n')[0]!.trim();
  } catch {
    return undefined;
  }
}

/** The last header block of a `curl -D` dump (after any `100 Continue`), names lower case. */
function lastHeaders(dump: string): { status: number; headers: Map<string, string> } {
  const blocks = dump.split(/\r?\n\r?\n/).filter((block) => block.startsWith('HTTP/'));
  const lines = blocks.at(-1)!.split(/\r?\n/);
  const status = Number(lines[0]!.split(' ')[1]);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status, headers };
}

/** One request line of the HTTP door's log. */
interface RequestRecord {
  method: string;
  name?: string;
  status: number;
  bytes: number;
}

/** A pino destination that keeps the HTTP door's request lines. */
class RequestLog {
  readonly records: RequestRecord[] = [];
  write(line: string): void {
    for (const text of line.split('\n')) {
      if (!text.trim()) continue;
      const record = JSON.parse(text) as Record<string, unknown>;
      if (record.door === 'http' && record.msg === 'request') {
        this.records.push(record as unknown as RequestRecord);
      }
    }
  }
  /** The records after index `mark` (from `log.records.length` taken earlier). */
  since(mark: number, name?: string): RequestRecord[] {
    return this.records.slice(mark).filter((record) => name === undefined || record.name === name);
  }
}

/** `/media/<name>` with each segment percent-encoded. */
function mediaPath(name: string): string {
  return '/media/' + name.split('/').map(encodeURIComponent).join('/');
}

/** The top-level boxes of an ISO BMFF (mp4) file: type and offset, in file order. */
function topLevelBoxes(file: Buffer): { type: string; offset: number }[] {
  const boxes: { type: string; offset: number }[] = [];
  let offset = 0;
  while (offset + 8 <= file.length) {
    let size = file.readUInt32BE(offset);
    const type = file.toString('latin1', offset + 4, offset + 8);
    if (size === 1) size = Number(file.readBigUInt64BE(offset + 8));
    else if (size === 0) size = file.length - offset;
    boxes.push({ type, offset });
    if (size < 8) break;
    offset += size;
  }
  return boxes;
}

/** What an ffmpeg tool at `-v debug` requested (each `Range` header) and read in all. */
function readsOf(stderr: string): { ranges: string[]; bytes: number } {
  const ranges = [...stderr.matchAll(/request: GET [^\n]*\n(?:[^\n]+\n)*?Range: (\S+)/g)].map(
    (match) => match[1]!,
  );
  const stats = [...stderr.matchAll(/Statistics: (\d+) bytes read/g)];
  return { ranges, bytes: stats.reduce((sum, match) => sum + Number(match[1]), 0) };
}

/** An ffmpeg tool's error lines (its debug output is long). */
function errorLines(stderr: string): string {
  return stderr
    .split('\n')
    .filter((line) => /error|fail|invalid/i.test(line))
    .slice(0, 10)
    .join('\n');
}

/** The parts of a log record worth showing. */
const brief = ({ method, status, bytes }: RequestRecord): Partial<RequestRecord> => ({
  method,
  status,
  bytes,
});

// ---------------------------------------------------------------------------------------------
// The programs

const missing: string[] = [];
for (const cmd of ['curl', 'ffmpeg', 'ffprobe']) {
  const version = await versionOf(cmd);
  if (version) t.comment(version);
  else missing.push(cmd);
}
if (missing.length > 0) {
  t.fail(
    `required programs missing: ${missing.join(', ')} (CI installs them: apt-get install ` +
      `curl ffmpeg); their tests fail below`,
  );
}
const wgetVersion = await versionOf('wget');
const haveWget = wgetVersion !== undefined;
t.comment(wgetVersion ?? 'wget is not installed: its test is skipped');

// ---------------------------------------------------------------------------------------------
// The server, its library and a work directory

const root = await mkdtemp(join(tmpdir(), 'ioe-http-clients-root-'));
const work = await mkdtemp(join(tmpdir(), 'ioe-http-clients-work-'));
const log = new RequestLog();
const server = await MediaServer.create({
  root,
  host: '127.0.0.1',
  port: 0,
  httpPort: 0,
  logger: pino({ level: 'info' }, log),
});
await server.listen();
const base = `http://127.0.0.1:${server.httpAddress!.port}`;
t.teardown(async () => {
  await server.forceQuit();
  await rm(root, { recursive: true, force: true });
  await rm(work, { recursive: true, force: true });
});

/** Writes a file straight into the library (it is in the catalog at once). */
async function put(name: string, data: Buffer): Promise<void> {
  await mkdir(dirname(join(root, name)), { recursive: true });
  await writeFile(join(root, name), data);
}

/** Waits until every connection to the server has closed, so each request has its log line. */
async function settled(): Promise<void> {
  await eventually(() => server.connectionCount === 0, 'the connections to close', 5000);
  await sleep(20);
}

const DATA = randomBytes(256 * 1024 + 123);
const BIG = randomBytes(3 * 1024 * 1024 + 7);
await put('data.mp4', DATA);
await put('folder/big.mkv', BIG);

/** curl, bounded, quiet but for errors; `-w` prints the status on stdout. */
const curl = (args: string[]): Promise<Ran> =>
  run('curl', ['-sS', '--max-time', String(RUN_MS / 1000 - 1), ...args]);

// ---------------------------------------------------------------------------------------------
// curl: downloads

t.test('curl GET: the whole file, byte-exact', async (t) => {
  const out = join(work, 'whole.mp4');
  const ran = await curl(['-o', out, '-w', '%{http_code}', `${base}/media/data.mp4`]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  t.equal(ran.stdout.toString(), '200');
  t.equal(sha256(await readFile(out)), sha256(DATA), 'same sha256 as the file');
});

t.test('curl -r: ranges, byte-exact', async (t) => {
  const cases: [string, number, number][] = [
    ['100-199', 100, 200],
    ['-500', DATA.length - 500, DATA.length],
    ['1000-', 1000, DATA.length],
    ['0-0', 0, 1],
    ['0-1', 0, 2],
    [`${DATA.length - 10}-${DATA.length + 5000}`, DATA.length - 10, DATA.length],
  ];
  for (const [range, start, end] of cases) {
    const out = join(work, `range-${range}`);
    const dump = join(work, `range-${range}.headers`);
    const ran = await curl(['-r', range, '-D', dump, '-o', out, `${base}/media/data.mp4`]);
    t.equal(ran.code, 0, `curl -r ${range} exits 0`, { stderr: ran.stderr });
    const { status, headers } = lastHeaders(await readFile(dump, 'utf8'));
    t.equal(status, 206, `-r ${range}: 206`);
    t.equal(
      headers.get('content-range'),
      `bytes ${start}-${end - 1}/${DATA.length}`,
      `-r ${range}: Content-Range`,
    );
    t.equal(headers.get('content-length'), String(end - start), `-r ${range}: Content-Length`);
    t.ok((await readFile(out)).equals(DATA.subarray(start, end)), `-r ${range}: the bytes`);
  }
});

t.test('curl -r past the end: 416 with Content-Range bytes */size', async (t) => {
  const dump = join(work, 'range-416.headers');
  const ran = await curl([
    '-r',
    `${DATA.length}-`,
    '-D',
    dump,
    '-o',
    join(work, 'range-416'),
    `${base}/media/data.mp4`,
  ]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  const { status, headers } = lastHeaders(await readFile(dump, 'utf8'));
  t.equal(status, 416, '416');
  t.equal(headers.get('content-range'), `bytes */${DATA.length}`, 'Content-Range: bytes */size');
});

t.test('curl -I: Content-Length, Accept-Ranges, a strong ETag', async (t) => {
  const ran = await curl(['-I', `${base}/media/data.mp4`]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  const { status, headers } = lastHeaders(ran.stdout.toString());
  t.equal(status, 200);
  t.equal(headers.get('content-length'), String(DATA.length));
  t.equal(headers.get('accept-ranges'), 'bytes');
  t.equal(headers.get('content-type'), 'video/mp4');
  t.match(headers.get('etag'), /^"[^"]+"$/, 'a strong, quoted ETag');
  t.notOk(headers.has('content-encoding'));
});

t.test('curl -C -: resumes a partial file byte-exact', async (t) => {
  const out = join(work, 'resume.mp4');
  await writeFile(out, DATA.subarray(0, 12_345));
  const mark = log.records.length;
  const ran = await curl(['-C', '-', '-o', out, '-w', '%{http_code}', `${base}/media/data.mp4`]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  t.equal(ran.stdout.toString(), '206');
  t.equal(sha256(await readFile(out)), sha256(DATA), 'byte-exact after the resume');
  await settled();
  t.same(
    log.since(mark, 'data.mp4').map(brief),
    [{ method: 'GET', status: 206, bytes: DATA.length - 12_345 }],
    'one 206 with only the missing bytes',
  );
});

t.test('curl interrupted mid-transfer, then resumed with -C -: byte-exact', async (t) => {
  // curl writes to a pipe that is read up to a point and then no more, so it stalls mid-file
  // whatever the socket buffers hold (curl 7.88's --limit-rate first reads ~10 MB in a burst);
  // it is then killed, and what it delivered is the partial file to resume.
  const out = join(work, 'interrupted.mkv');
  const url = `${base}/media/folder/big.mkv`;
  const mark = log.records.length;
  const child = spawn('curl', ['-sS', '-o', '-', url], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const chunks: Buffer[] = [];
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('curl delivered no 256 kB in 8 s')), 8000);
    child.stdout.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= 256 * 1024) {
        child.stdout.pause();
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('error', reject);
  });
  child.kill('SIGKILL');
  await Promise.race([exited, sleep(5000)]);
  const partial = Buffer.concat(chunks);
  t.ok(partial.length < BIG.length, `curl was cut after ${partial.length} of ${BIG.length}`);
  t.ok(partial.equals(BIG.subarray(0, partial.length)), 'what it delivered is a prefix');
  await writeFile(out, partial);
  await settled();
  t.match(
    log.since(mark, 'folder/big.mkv').map(brief),
    [{ method: 'GET', status: 200 }],
    'the server logged the cut request',
  );

  const ran = await curl(['-C', '-', '-o', out, '-w', '%{http_code}', url]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  t.equal(ran.stdout.toString(), '206');
  t.equal(sha256(await readFile(out)), sha256(BIG), 'byte-exact after the resume');
});

t.test('curl --compressed: no Content-Encoding, byte-exact', async (t) => {
  const text = Buffer.from('la la la la la '.repeat(20_000));
  await put('songs/compressible.wav', text);
  const dump = join(work, 'compressed.headers');
  const out = join(work, 'compressed.wav');
  const ran = await curl([
    '--compressed',
    '-D',
    dump,
    '-o',
    out,
    `${base}/media/songs/compressible.wav`,
  ]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  const { status, headers } = lastHeaders(await readFile(dump, 'utf8'));
  t.equal(status, 200);
  t.notOk(
    headers.has('content-encoding'),
    `no Content-Encoding (${headers.get('content-encoding')})`,
  );
  t.equal(headers.get('content-length'), String(text.length));
  t.ok((await readFile(out)).equals(text), 'byte-exact');

  const ranged = await curl([
    '--compressed',
    '-r',
    '10-99',
    '-D',
    dump,
    '-o',
    out,
    `${base}/media/songs/compressible.wav`,
  ]);
  t.equal(ranged.code, 0, 'curl exits 0', { stderr: ranged.stderr });
  const again = lastHeaders(await readFile(dump, 'utf8'));
  t.equal(again.status, 206);
  t.notOk(again.headers.has('content-encoding'), 'no Content-Encoding on a 206 either');
  t.ok((await readFile(out)).equals(text.subarray(10, 100)), 'byte-exact range');
});

// ---------------------------------------------------------------------------------------------
// curl: uploads

/** `curl -T file URL` with extra arguments: the final status, headers and parsed body. */
async function upload(
  file: string,
  path: string,
  extra: string[] = [],
): Promise<{ ran: Ran; status: number; headers: Map<string, string>; body: unknown }> {
  const dump = join(work, 'upload.headers');
  const out = join(work, 'upload.body');
  await rm(out, { force: true });
  const ran = await curl(['-T', file, ...extra, '-D', dump, '-o', out, `${base}${path}`]);
  const { status, headers } = lastHeaders(await readFile(dump, 'utf8'));
  const text = existsSync(out) ? await readFile(out, 'utf8') : '';
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text for the assertion's message
  }
  return { ran, status, headers, body };
}

/** The library's files, hidden ones included (a left-over temporary upload would show). */
async function libraryFiles(): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(root.length + 1))
    .sort();
}

t.test('curl -T: 201 with the receipt; again: 409 and the file unchanged', async (t) => {
  // Over 1 MiB: curl sends `Expect: 100-continue` first.
  const content = randomBytes(1536 * 1024);
  const src = join(work, 'upload-src.mp4');
  await writeFile(src, content);
  const first = await upload(src, '/media/uploads/x.mp4');
  t.equal(first.ran.code, 0, 'curl exits 0', { stderr: first.ran.stderr });
  t.equal(first.status, 201, '201 Created', { body: first.body });
  t.same(first.body, { name: 'uploads/x.mp4', size: content.length, sha256: sha256(content) });
  t.equal(first.headers.get('repr-digest'), `sha-256=:${sha256b64(content)}:`);
  t.match(first.headers.get('location'), /\/media\/uploads\/x\.mp4$/);
  t.match(first.headers.get('etag'), /^"[^"]+"$/);
  t.equal(sha256(await readFile(join(root, 'uploads/x.mp4'))), sha256(content), 'stored');

  const head = lastHeaders((await curl(['-I', `${base}/media/uploads/x.mp4`])).stdout.toString());
  t.equal(head.headers.get('etag'), first.headers.get('etag'), "the next GET carries PUT's ETag");

  const other = randomBytes(content.length);
  await writeFile(src, other);
  const second = await upload(src, '/media/uploads/x.mp4');
  t.equal(second.ran.code, 0, 'curl exits 0', { stderr: second.ran.stderr });
  t.equal(second.status, 409, 'again: 409');
  t.match(second.body, { code: 'EXISTS' }, 'code EXISTS');
  t.equal(sha256(await readFile(join(root, 'uploads/x.mp4'))), sha256(content), 'unchanged');

  const third = await upload(src, '/media/uploads/x.mp4', ['-H', 'If-None-Match: *']);
  t.equal(third.status, 412, 'If-None-Match: * makes it 412');
  // http.md, Errors: the body's code is the protocol's, EXISTS, with 412 for If-None-Match: *.
  t.match(third.body, { code: 'EXISTS' }, 'the code is EXISTS (http.md error table)');
  t.equal(sha256(await readFile(join(root, 'uploads/x.mp4'))), sha256(content), 'unchanged');

  // A small one (no Expect): the same receipt.
  const small = Buffer.from('tiny mp3 body');
  await writeFile(src, small);
  const tiny = await upload(src, '/media/uploads/tiny.mp3');
  t.equal(tiny.status, 201, 'a small upload: 201');
  t.same(tiny.body, { name: 'uploads/tiny.mp3', size: small.length, sha256: sha256(small) });
});

t.test('curl -T with a wrong Content-Digest: 400 DIGEST_MISMATCH, nothing stored', async (t) => {
  const content = randomBytes(200_000);
  const src = join(work, 'digest-src.mp4');
  await writeFile(src, content);
  const before = await libraryFiles();
  const wrong = `sha-256=:${sha256b64(Buffer.from('something else'))}:`;
  const bad = await upload(src, '/media/uploads/bad-digest.mp4', [
    '-H',
    `Content-Digest: ${wrong}`,
  ]);
  t.equal(bad.ran.code, 0, 'curl exits 0', { stderr: bad.ran.stderr });
  t.equal(bad.status, 400, 'a wrong digest: 400');
  t.match(bad.body, { code: 'DIGEST_MISMATCH' }, 'code DIGEST_MISMATCH');
  t.notOk(existsSync(join(root, 'uploads/bad-digest.mp4')), 'not published');
  await eventually(
    async () => JSON.stringify(await libraryFiles()) === JSON.stringify(before),
    'no file left behind (temporary included)',
    3000,
  ).catch(() => undefined);
  t.same(await libraryFiles(), before, 'no file left behind, temporary ones included');
  const listed = await curl([`${base}/api/list`]);
  t.notMatch(listed.stdout.toString(), 'bad-digest', 'not in the list');

  // The right digest: published.
  const right = `sha-256=:${sha256b64(content)}:`;
  const good = await upload(src, '/media/uploads/good-digest.mp4', [
    '-H',
    `Content-Digest: ${right}`,
  ]);
  t.equal(good.status, 201, 'the right digest: 201');
  t.same(good.body, {
    name: 'uploads/good-digest.mp4',
    size: content.length,
    sha256: sha256(content),
  });
});

t.test('curl -T - (a chunked body from stdin): 411, nothing stored', async (t) => {
  const src = join(work, 'chunked-src.mp4');
  await writeFile(src, randomBytes(100_000));
  const before = await libraryFiles();
  const dump = join(work, 'chunked.headers');
  // `-T -` reads stdin and, with no length known, sends the body chunked.
  const ran = await run('sh', [
    '-c',
    `curl -sS --max-time 10 -T - -D "$1" -o /dev/null "$2" < "$3"`,
    'sh',
    dump,
    `${base}/media/uploads/chunked.mp4`,
    src,
  ]);
  t.equal(ran.code, 0, 'curl exits 0', { stderr: ran.stderr });
  t.equal(lastHeaders(await readFile(dump, 'utf8')).status, 411, '411 Length Required');
  t.notOk(existsSync(join(root, 'uploads/chunked.mp4')), 'not published');
  await eventually(
    async () => JSON.stringify(await libraryFiles()) === JSON.stringify(before),
    'no file left behind',
    3000,
  ).catch(() => undefined);
  t.same(await libraryFiles(), before, 'no file left behind, temporary ones included');
});

t.test('a name with spaces, #, ?, % and non-ASCII round trips through curl', async (t) => {
  const name = 'odd names/a b #1 ?x=y&z 100% café 日本.mp4';
  const content = randomBytes(50_000);
  const src = join(work, 'odd-src.mp4');
  await writeFile(src, content);
  const path = mediaPath(name);
  const up = await upload(src, path);
  t.equal(up.ran.code, 0, 'curl exits 0', { stderr: up.ran.stderr });
  t.equal(up.status, 201, '201 Created', { body: up.body });
  t.same(up.body, { name, size: content.length, sha256: sha256(content) });
  t.ok((await readFile(join(root, name))).equals(content), 'stored under the exact name');

  const out = join(work, 'odd-out.mp4');
  const dump = join(work, 'odd.headers');
  const got = await curl(['-D', dump, '-o', out, `${base}${path}`]);
  t.equal(got.code, 0, 'curl exits 0', { stderr: got.stderr });
  const { status, headers } = lastHeaders(await readFile(dump, 'latin1'));
  t.equal(status, 200);
  t.ok((await readFile(out)).equals(content), 'downloaded byte-exact');
  const disposition = headers.get('content-disposition') ?? '';
  t.match(disposition, /^inline;/);
  const extended = /filename\*=UTF-8''([^;\s]+)/.exec(disposition)?.[1];
  t.equal(
    extended && decodeURIComponent(extended),
    'a b #1 ?x=y&z 100% café 日本.mp4',
    `filename* holds the last segment: ${disposition}`,
  );
  t.notOk(/[^\x20-\x7e]/.test(disposition), 'no byte >= 0x80 in Content-Disposition');

  const list = JSON.parse((await curl([`${base}/api/list`])).stdout.toString()) as {
    entries: { name: string }[];
  };
  t.ok(
    list.entries.some((entry) => entry.name === name),
    'listed under the exact name',
  );

  // A file written straight into the library under such a name downloads too.
  const direct = 'odd names/ü ñ [1], #2?.flac';
  const directContent = randomBytes(30_000);
  await put(direct, directContent);
  const out2 = join(work, 'odd-out2.flac');
  const got2 = await curl(['-o', out2, '-w', '%{http_code}', `${base}${mediaPath(direct)}`]);
  t.equal(got2.stdout.toString(), '200', 'GET: 200', { stderr: got2.stderr });
  t.ok((await readFile(out2)).equals(directContent), 'byte-exact');
});

// ---------------------------------------------------------------------------------------------
// wget

t.test(
  'wget -c: resumes a partial file byte-exact',
  { skip: haveWget ? false : 'wget is not installed' },
  async (t) => {
    const dir = join(work, 'wget');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'big.mkv'), BIG.subarray(0, 777_777));
    const mark = log.records.length;
    const url = `${base}/media/folder/big.mkv`;
    const ran = await run('wget', ['-q', '-c', '-T', '10', '-t', '1', url], { cwd: dir });
    t.equal(ran.code, 0, 'wget exits 0', { stderr: ran.stderr });
    t.equal(sha256(await readFile(join(dir, 'big.mkv'))), sha256(BIG), 'byte-exact');
    await settled();
    t.same(
      log.since(mark, 'folder/big.mkv').map(brief),
      [{ method: 'GET', status: 206, bytes: BIG.length - 777_777 }],
      'one 206 with only the missing bytes',
    );
  },
);

// ---------------------------------------------------------------------------------------------
// ffprobe and ffmpeg: an mp4 with its moov atom at the end

t.test('ffprobe and ffmpeg read and seek an mp4 whose moov is at the end', async (t) => {
  const encoders = (await run('ffmpeg', ['-hide_banner', '-encoders'])).stdout.toString();
  const video = /\blibx264\b/.test(encoders) ? 'libx264' : 'mpeg4';
  const made = join(work, 'a.mp4');
  const gen = await run('ffmpeg', [
    '-hide_banner',
    '-loglevel',
    'error',
    '-y',
    '-f',
    'lavfi',
    // Noise keeps the encoder from shrinking it: a file of a few MB.
    '-i',
    'testsrc=duration=10:size=320x240:rate=25,noise=alls=40:allf=t',
    '-f',
    'lavfi',
    '-i',
    'sine=duration=10',
    '-c:v',
    video,
    ...(video === 'libx264' ? ['-preset', 'ultrafast'] : []),
    '-b:v',
    '3M',
    // A key frame every second, so that a seek to 5 s need not decode from the start.
    '-g',
    '25',
    '-pix_fmt',
    'yuv420p',
    '-c:a',
    'aac',
    '-shortest',
    made,
  ]);
  t.equal(gen.code, 0, `ffmpeg made the mp4 with ${video}`, { stderr: gen.stderr });
  const movie = await readFile(made);
  const boxes = topLevelBoxes(movie);
  const moov = boxes.find((box) => box.type === 'moov');
  const mdat = boxes.find((box) => box.type === 'mdat');
  t.ok(moov && mdat && moov.offset > mdat.offset, `moov after mdat: ${JSON.stringify(boxes)}`);
  t.ok(movie.length > 2_000_000, `a few MB (${movie.length} bytes)`);
  t.comment(`a.mp4: ${movie.length} bytes, ${video}, boxes ${JSON.stringify(boxes)}`);
  await mkdir(join(root, 'movies'), { recursive: true });
  await copyFile(made, join(root, 'movies/a.mp4'));
  const url = `${base}/media/movies/a.mp4`;

  // ffprobe: the duration is in the moov, at the end. At `-v debug` ffmpeg's tools print each
  // HTTP request they send and, at the end, how many bytes they read: the server's log counts
  // what it handed to the socket, and loopback socket buffers take a few MB at once.
  let mark = log.records.length;
  const probe = await run('ffprobe', [
    '-v',
    'debug',
    '-show_entries',
    'format=duration',
    '-of',
    'csv=p=0',
    url,
  ]);
  t.equal(probe.code, 0, 'ffprobe exits 0', { stderr: errorLines(probe.stderr) });
  const duration = Number(probe.stdout.toString().trim());
  t.ok(Math.abs(duration - 10) < 0.5, `ffprobe says ≈ 10 s: ${duration}`);
  const probeReads = readsOf(probe.stderr);
  t.comment(`ffprobe asked ${JSON.stringify(probeReads.ranges)}, read ${probeReads.bytes} bytes`);
  t.ok(
    probeReads.ranges.includes(`bytes=${moov!.offset}-`),
    'ffprobe jumped to the moov with a range',
  );
  await settled();
  const probed = log.since(mark, 'movies/a.mp4');
  t.comment(`server log for ffprobe: ${JSON.stringify(probed.map(brief))}`);
  t.equal(probed.length, probeReads.ranges.length, 'one logged request per request sent');
  t.ok(
    probed.length > 0 && probed.every((record) => record.status === 206),
    'every ranged request got a 206',
  );

  // ffmpeg -ss 5: one frame from the middle.
  mark = log.records.length;
  const png = join(work, 'out.png');
  const grab = await run('ffmpeg', [
    '-hide_banner',
    '-v',
    'debug',
    '-y',
    '-ss',
    '5',
    '-i',
    url,
    '-frames:v',
    '1',
    png,
  ]);
  t.equal(grab.code, 0, 'ffmpeg exits 0', { stderr: errorLines(grab.stderr) });
  const image = await readFile(png);
  t.ok(
    image.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
    'a PNG',
  );
  t.same([image.readUInt32BE(16), image.readUInt32BE(20)], [320, 240], 'of 320×240');
  const grabReads = readsOf(grab.stderr);
  t.comment(
    `ffmpeg -ss 5 asked ${JSON.stringify(grabReads.ranges)}, read ${grabReads.bytes} of ` +
      `${movie.length} bytes`,
  );
  const starts = grabReads.ranges.map((range) => Number(/^bytes=(\d+)-/.exec(range)?.[1]));
  t.ok(
    starts.some((start) => start > movie.length / 4 && start < moov!.offset),
    'ffmpeg seeked into the middle of the mdat with a range',
  );
  t.ok(
    grabReads.bytes > 0 && grabReads.bytes < movie.length / 4,
    `ffmpeg read far fewer bytes than the file (${grabReads.bytes} of ${movie.length})`,
  );
  await settled();
  const seeked = log.since(mark, 'movies/a.mp4');
  t.comment(`server log for ffmpeg: ${JSON.stringify(seeked.map(brief))}`);
  t.equal(seeked.length, grabReads.ranges.length, 'one logged request per request sent');
  t.ok(
    seeked.length > 0 && seeked.every((record) => record.status === 206),
    'every ranged request got a 206',
  );
});
