// The `ioe` CLI end to end: the built dist/scripts/client.js as a child process, against an
// in-process MediaServer on a free port, in a temporary working directory. The access options
// (--user, --password-stdin, --tls, --ca, --fingerprint) against servers with accounts and TLS.
import t, { type Test } from 'tap';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Access } from '../../lib/access.js';
import { hashPassword } from '../../lib/accounts.js';
import { TlsSetup } from '../../lib/tls.js';
import { MediaServer } from '../../pipelines/server.js';
import { built } from '../helpers/paths.js';

const CLI = built('scripts/client.js');

interface Env {
  root: string;
  cwd: string;
  port: number;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function setup(tt: Test): Promise<Env> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-cli-root-'));
  const cwd = await mkdtemp(join(tmpdir(), 'ioe-cli-cwd-'));
  const server = await MediaServer.create({ root, port: 0 });
  const { port } = await server.listen();
  tt.teardown(async () => {
    await server.forceQuit();
    await rm(root, { recursive: true, force: true });
    await rm(cwd, { recursive: true, force: true });
  });
  return { root, cwd, port };
}

/** Runs `ioe ...args`; IOE_PORT is `port` unless `port` is undefined. Never rejects. */
function ioe(cwd: string, port: number | undefined, ...args: string[]): Promise<Run> {
  return ioeWith({ cwd, port }, ...args);
}

/**
 * `ioe` with more of its environment: `env` added to it (IOE_* are cleared first), and `input`
 * written to its stdin (a pipe, never closed unless `input` is given). Bounded by 20 s.
 */
function ioeWith(
  options: { cwd: string; port?: number; env?: NodeJS.ProcessEnv; input?: string },
  ...args: string[]
): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('IOE_')) delete env[key];
  if (options.port !== undefined) env.IOE_PORT = String(options.port);
  Object.assign(env, options.env);
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: options.cwd, env, timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

async function put(dir: string, name: string, content: Buffer | string): Promise<void> {
  await mkdir(dirname(join(dir, name)), { recursive: true });
  await writeFile(join(dir, name), content);
}

/** A port on which nothing listens (bound, then released). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Checks a failed run: exit code 1, exactly one line on stderr matching `pattern`. */
function failsWith(tt: Test, run: Run, pattern: RegExp, what: string): void {
  tt.equal(run.code, 1, `${what}: exit code 1`);
  const lines = run.stderr.trimEnd().split('\n');
  tt.equal(lines.length, 1, `${what}: one line on stderr`);
  tt.match(run.stderr, pattern, `${what}: stderr says why`);
  tt.equal(run.stdout, '', `${what}: nothing on stdout`);
}

t.test('the built bins are executable, as package.json "bin" links them', async (t) => {
  // npx may run a cached link to them without setting the mode itself.
  for (const bin of [CLI, built('scripts/server.js')]) {
    t.ok((await stat(bin)).mode & 0o100, `${bin.split('/').pop()} is executable`);
  }
});

t.test('list on an empty server prints a plain sentence', async (t) => {
  const { cwd, port } = await setup(t);
  const run = await ioe(cwd, port, 'list');
  t.equal(run.code, 0, 'exit code 0');
  t.match(run.stdout, /no media files/i, 'says there are no media files');
  t.equal(run.stdout.trim().split('\n').length, 1, 'one sentence');
  t.equal(run.stderr, '', 'nothing on stderr');

  const json = await ioe(cwd, port, 'list', '--json');
  t.equal(json.code, 0, '--json exit code 0');
  t.same(JSON.parse(json.stdout), [], '--json prints an empty array');
});

t.test('put, then list, list --json and list TYPE show it', async (t) => {
  const { root, cwd, port } = await setup(t);
  const song = randomBytes(300_000);
  await put(cwd, 'song.mp3', song);
  await put(cwd, 'photo.jpg', 'a photo');

  const up = await ioe(cwd, port, 'put', 'song.mp3');
  t.equal(up.code, 0, 'put exits 0');
  t.match(up.stdout, sha256(song), 'put prints the sha256');
  t.equal(up.stderr, '', 'no progress bar output on a non-TTY stderr');
  t.ok((await readFile(join(root, 'song.mp3'))).equals(song), 'the server stored the bytes');
  t.equal((await ioe(cwd, port, 'put', 'photo.jpg')).code, 0, 'second put exits 0');

  const listed = await ioe(cwd, port, 'list');
  t.equal(listed.code, 0, 'list exits 0');
  t.equal(listed.stderr, '', 'list: nothing on stderr');
  const lines = listed.stdout.trim().split('\n');
  t.equal(lines.length, 2, 'one line per file');
  t.match(lines[0], /picture.*photo\.jpg$/, 'photo.jpg first, with its type');
  t.match(lines[1], /music.*song\.mp3$/, 'song.mp3 second, with its type');

  const json = await ioe(cwd, port, 'list', '--json');
  t.equal(json.code, 0, 'list --json exits 0');
  const entries = JSON.parse(json.stdout) as {
    type: string;
    name: string;
    size: number;
    mtime: string;
  }[];
  t.same(
    entries.map(({ type, name, size }) => ({ type, name, size })),
    [
      { type: 'picture', name: 'photo.jpg', size: 7 },
      { type: 'music', name: 'song.mp3', size: song.length },
    ],
    'JSON entries',
  );
  for (const entry of entries) {
    t.notOk(Number.isNaN(Date.parse(entry.mtime)), `${entry.name}: mtime is a date`);
  }

  const music = await ioe(cwd, port, 'list', 'music');
  t.equal(music.code, 0, 'list music exits 0');
  t.match(music.stdout, 'song.mp3', 'music lists the song');
  t.notMatch(music.stdout, 'photo.jpg', 'music does not list the photo');

  const pictures = await ioe(cwd, port, 'list', 'Picture', '--json');
  t.same(
    (JSON.parse(pictures.stdout) as { name: string }[]).map((e) => e.name),
    ['photo.jpg'],
    'list Picture --json (case-insensitive type) lists only the photo',
  );

  const videos = await ioe(cwd, port, 'list', 'video');
  t.equal(videos.code, 0, 'list video exits 0');
  t.match(videos.stdout, /no video files/i, 'an empty type is said in words');
});

t.test('put --as stores under the given name, folders included', async (t) => {
  const { root, cwd, port } = await setup(t);
  const data = randomBytes(5000);
  await put(cwd, 'local.bin', data);
  const run = await ioe(cwd, port, 'put', 'local.bin', '--as', 'folder/name.mp3');
  t.equal(run.code, 0, 'exit code 0');
  t.equal(run.stderr, '', 'nothing on stderr');
  t.ok((await readFile(join(root, 'folder/name.mp3'))).equals(data), 'stored under folder/');
  const listed = await ioe(cwd, port, 'list');
  t.match(listed.stdout, /music.*folder\/name\.mp3/, 'listed with its folder');
});

t.test('get saves an identical file, -o saves elsewhere', async (t) => {
  const { root, cwd, port } = await setup(t);
  const clip = randomBytes(3 * 1024 * 1024 + 5);
  await put(root, 'dir/clip.mp4', clip);

  const run = await ioe(cwd, port, 'get', 'dir/clip.mp4');
  t.equal(run.code, 0, 'exit code 0');
  t.equal(run.stderr, '', 'no progress output on a non-TTY stderr');
  t.match(run.stdout, sha256(clip), 'prints the sha256');
  t.ok((await readFile(join(cwd, 'clip.mp4'))).equals(clip), 'saved under the base name');
  t.same((await readdir(cwd)).sort(), ['clip.mp4'], 'no .part left behind');

  await mkdir(join(cwd, 'sub'));
  const other = await ioe(cwd, port, 'get', 'dir/clip.mp4', '-o', 'sub/saved.mp4');
  t.equal(other.code, 0, '-o exit code 0');
  t.ok((await readFile(join(cwd, 'sub/saved.mp4'))).equals(clip), '-o saves to the path');
  t.same(await readdir(join(cwd, 'sub')), ['saved.mp4'], 'only the file in sub/');

  await put(root, 'empty.ogg', '');
  const empty = await ioe(cwd, port, 'get', 'empty.ogg');
  t.equal(empty.code, 0, 'an empty file downloads');
  t.same(await readFile(join(cwd, 'empty.ogg')), Buffer.alloc(0), 'and is empty');
});

t.test('get refuses to overwrite without --force', async (t) => {
  const { root, cwd, port } = await setup(t);
  const remote = randomBytes(10_000);
  await put(root, 'song.flac', remote);
  await put(cwd, 'song.flac', 'mine, keep it');

  const refused = await ioe(cwd, port, 'get', 'song.flac');
  failsWith(t, refused, /exists.*--force/, 'existing target');
  t.equal(await readFile(join(cwd, 'song.flac'), 'utf8'), 'mine, keep it', 'file untouched');

  const forced = await ioe(cwd, port, 'get', 'song.flac', '--force');
  t.equal(forced.code, 0, '--force exits 0');
  t.ok((await readFile(join(cwd, 'song.flac'))).equals(remote), '--force replaces it');
});

t.test('get --resume continues a .part; a corrupt .part fails the SHA-256 check', async (t) => {
  const { root, cwd, port } = await setup(t);
  const movie = randomBytes(2 * 1024 * 1024 + 333);
  await put(root, 'movie.mkv', movie);

  await put(cwd, 'movie.mkv.part', movie.subarray(0, 1024 * 1024 + 7));
  const resumed = await ioe(cwd, port, 'get', 'movie.mkv', '--resume');
  t.equal(resumed.code, 0, 'resume exits 0');
  t.equal(resumed.stderr, '', 'nothing on stderr');
  t.ok((await readFile(join(cwd, 'movie.mkv'))).equals(movie), 'the resumed file is whole');
  t.same(await readdir(cwd), ['movie.mkv'], 'the .part became the file');

  // A .part whose bytes differ from the server's: only the rest is fetched, so the result
  // cannot match, and nothing is kept.
  await rm(join(cwd, 'movie.mkv'));
  const corrupt = Buffer.from(movie.subarray(0, 500_000));
  corrupt[1234] = (corrupt[1234]! + 1) % 256;
  await put(cwd, 'movie.mkv.part', corrupt);
  const failed = await ioe(cwd, port, 'get', 'movie.mkv', '--resume');
  failsWith(t, failed, /SHA-256/, 'corrupt .part');
  t.same(await readdir(cwd), [], 'no final file and no .part left');

  // A .part as long as the file: nothing left to fetch, still verified and kept.
  await put(cwd, 'movie.mkv.part', movie);
  const complete = await ioe(cwd, port, 'get', 'movie.mkv', '--resume');
  t.equal(complete.code, 0, 'a complete .part exits 0');
  t.ok((await readFile(join(cwd, 'movie.mkv'))).equals(movie), 'and becomes the file');

  // A .part longer than the file.
  await rm(join(cwd, 'movie.mkv'));
  await put(cwd, 'movie.mkv.part', Buffer.concat([movie, Buffer.from('extra')]));
  const tooLong = await ioe(cwd, port, 'get', 'movie.mkv', '--resume');
  failsWith(t, tooLong, /longer than/, '.part longer than the file');
});

t.test('hash prints the same sha256 as crypto', async (t) => {
  const { root, cwd, port } = await setup(t);
  const data = randomBytes(123_456);
  await put(root, 'pics/p.png', data);
  const run = await ioe(cwd, port, 'hash', 'pics/p.png');
  t.equal(run.code, 0, 'exit code 0');
  t.equal(run.stderr, '', 'nothing on stderr');
  const [sha, size, name] = run.stdout.trim().split(/\s+/);
  t.equal(sha, sha256(data), 'sha256');
  t.equal(size, String(data.length), 'size');
  t.equal(name, 'pics/p.png', 'name');
});

t.test('errors: one line on stderr and exit code 1', async (t) => {
  const { cwd, port } = await setup(t);

  const missing = await ioe(cwd, port, 'get', 'missing.mp3');
  failsWith(t, missing, /NOT_FOUND/, 'get of a missing file');
  t.same(await readdir(cwd), [], 'get of a missing file leaves nothing');

  failsWith(t, await ioe(cwd, port, 'hash', 'missing.mp3'), /NOT_FOUND/, 'hash of a missing file');
  failsWith(t, await ioe(cwd, port, 'get', 'notes.txt'), /UNSUPPORTED_TYPE/, 'get of a .txt');

  await put(cwd, 'twice.mp3', randomBytes(2 * 1024 * 1024));
  t.equal((await ioe(cwd, port, 'put', 'twice.mp3')).code, 0, 'first put succeeds');
  failsWith(t, await ioe(cwd, port, 'put', 'twice.mp3'), /EXISTS/, 'second put');
  failsWith(t, await ioe(cwd, port, 'put', 'absent.mp3'), /absent\.mp3/, 'put of a missing file');

  const dead = await deadPort();
  const refused = await ioe(cwd, dead, 'list');
  failsWith(
    t,
    refused,
    new RegExp(`cannot connect to 127\\.0\\.0\\.1:${dead}`),
    'nothing listening',
  );

  // Another kind of server on the port: its first line is reported, nothing else.
  const http = createServer((socket) =>
    socket.once('data', () => socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')),
  );
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  t.teardown(() => http.close());
  const wrongService = await ioe(cwd, (http.address() as AddressInfo).port, 'list');
  failsWith(t, wrongService, /unexpected reply: HTTP\/1\.1 400/, 'not an IOE server');

  const badType = await ioe(cwd, port, 'list', 'films');
  t.not(badType.code, 0, 'a bad TYPE exits non-zero');
  t.match(badType.stderr, /video, music or picture/, 'and says which types exist');
  t.equal(badType.stdout, '', 'a bad TYPE prints nothing on stdout');
});

t.test('--port works without IOE_PORT and wins over it', async (t) => {
  const { root, cwd, port } = await setup(t);
  await put(root, 'a.mp3', 'aaa');
  const flag = await ioe(cwd, undefined, '--port', String(port), 'list');
  t.equal(flag.code, 0, '--port without IOE_PORT exits 0');
  t.match(flag.stdout, 'a.mp3', '--port reaches the server');

  const dead = await deadPort();
  const both = await ioe(cwd, dead, '--port', String(port), 'hash', 'a.mp3');
  t.equal(both.code, 0, '--port overrides a wrong IOE_PORT');
  t.match(both.stdout, sha256('aaa'), 'and reaches the server');

  const envOnly = await ioe(cwd, dead, 'list');
  t.equal(envOnly.code, 1, 'IOE_PORT alone is used (it points nowhere here)');

  const badPort = await ioe(cwd, undefined, '--port', 'nope', 'list');
  t.not(badPort.code, 0, 'a malformed --port exits non-zero');
});

// ---- accounts and TLS (access.md) ----

const PASSWORD = 'alice, her password';
const FAST = { ln: 15, r: 1, p: 1 };

interface AccessFixture {
  dir: string;
  usersFile: string;
  tls: TlsSetup;
  /** The certificate's PEM file (for --ca). */
  cert: string;
}

// Made on first use, not at the top level: an await between t.test calls could let the run end
// before the later tests are registered (as with --grep).
let fixture: Promise<AccessFixture> | undefined;
t.teardown(async () => {
  if (fixture) await rm((await fixture).dir, { recursive: true, force: true });
});

/** The accounts file (alice rw=/, bob r=/music, anonymous r=/music) and a TLS certificate. */
function accessFixture(): Promise<AccessFixture> {
  fixture ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ioe-cli-access-'));
    const usersFile = join(dir, 'ioe-users');
    await writeFile(
      usersFile,
      [
        `alice:${await hashPassword(PASSWORD, FAST)}:rw=/`,
        `bob:${await hashPassword('bob pw', FAST)}:r=/music`,
        'anonymous::r=/music',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const tls = await TlsSetup.load({ selfSignedDir: join(dir, 'tls'), hosts: ['127.0.0.1'] });
    return { dir, usersFile, tls, cert: join(dir, 'tls', 'cert.pem') };
  })();
  return fixture;
}

/** A server with the accounts above (TLS with `tls`), on `host`, and a working directory. */
async function setupAccess(tt: Test, options: { tls?: boolean; host?: string } = {}) {
  const { usersFile, tls } = await accessFixture();
  const host = options.host ?? '127.0.0.1';
  const root = await mkdtemp(join(tmpdir(), 'ioe-cli-access-root-'));
  const cwd = await mkdtemp(join(tmpdir(), 'ioe-cli-access-cwd-'));
  await put(root, 'music/song.mp3', 'la la la');
  await put(root, 'films/film.mp4', 'a film');
  const server = await MediaServer.create({
    root,
    host,
    port: 0,
    access: await Access.create({ usersFile, bindHost: host }),
    tls: options.tls ? tls : undefined,
  });
  const { port } = await server.listen();
  tt.teardown(async () => {
    await server.forceQuit();
    await rm(root, { recursive: true, force: true });
    await rm(cwd, { recursive: true, force: true });
  });
  return { root, cwd, port, tls, cert: (await accessFixture()).cert };
}

/** A run that printed exactly `line` and exited 0. */
function printed(tt: Test, run: Run, line: string, what: string): void {
  tt.equal(run.code, 0, `${what}: exit code 0 (${run.stderr.trim()})`);
  tt.equal(run.stdout, `${line}\n`, `${what}: ${line}`);
}

t.test('--user: the password from IOE_PASSWORD or --password-stdin; whoami', async (t) => {
  const { cwd, port } = await setupAccess(t);
  const as = (env: NodeJS.ProcessEnv, input: string | undefined, ...args: string[]) =>
    ioeWith({ cwd, port, env, input }, ...args);
  const [anonymous, byEnv, userEnv, byStdin, stdinWins] = await Promise.all([
    as({}, undefined, 'whoami'),
    as({ IOE_PASSWORD: PASSWORD }, undefined, '--user', 'alice', 'whoami'),
    as({ IOE_USER: 'alice', IOE_PASSWORD: PASSWORD }, undefined, 'whoami'),
    as({}, `${PASSWORD}\n`, '--user', 'alice', '--password-stdin', 'whoami'),
    as(
      { IOE_PASSWORD: 'not it' },
      `${PASSWORD}\r\n`,
      '--user',
      'alice',
      '--password-stdin',
      'whoami',
    ),
  ]);
  printed(t, anonymous, 'anonymous', 'no --user');
  printed(t, byEnv, 'alice', '--user with IOE_PASSWORD');
  printed(t, userEnv, 'alice', 'IOE_USER with IOE_PASSWORD');
  printed(t, byStdin, 'alice', '--password-stdin');
  printed(t, stdinWins, 'alice', '--password-stdin wins over IOE_PASSWORD (and a CRLF is cut)');

  const listed = await as({ IOE_PASSWORD: PASSWORD }, undefined, '--user', 'alice', 'list');
  t.match(listed.stdout, 'films/film.mp4', 'alice lists the films');
  t.notMatch((await as({}, undefined, 'list')).stdout, 'film', 'anonymous does not');
});

t.test('--user refusals: one line with the code, exit 1, never the password', async (t) => {
  const { cwd, port } = await setupAccess(t);
  await put(cwd, 'new.mp3', 'new');
  const as = (env: NodeJS.ProcessEnv, input: string | undefined, ...args: string[]) =>
    ioeWith({ cwd, port, env, input }, ...args);
  const [wrong, unknown, noPassword, emptyStdin, stdinAlone, required, denied] = await Promise.all([
    as({ IOE_PASSWORD: 'wrong' }, undefined, '--user', 'alice', 'whoami'),
    as({ IOE_PASSWORD: PASSWORD }, undefined, '--user', 'nobody', 'whoami'),
    // stdin is a pipe left open: it must not be read (nor waited on) unless asked
    as({}, undefined, '--user', 'alice', 'whoami'),
    as({}, '', '--user', 'alice', '--password-stdin', 'whoami'),
    as({}, `${PASSWORD}\n`, '--password-stdin', 'whoami'),
    as({}, undefined, 'hash', 'films/film.mp4'),
    as(
      { IOE_PASSWORD: 'bob pw' },
      undefined,
      '--user',
      'bob',
      'put',
      'new.mp3',
      '--as',
      'music/new.mp3',
    ),
  ]);
  failsWith(t, wrong, /^ioe: AUTH_FAILED: wrong name or password$/m, 'a wrong password');
  failsWith(t, unknown, /^ioe: AUTH_FAILED: wrong name or password$/m, 'an unknown name');
  failsWith(
    t,
    noPassword,
    /no password for alice: set IOE_PASSWORD, pass --password-stdin, or run ioe on a terminal/,
    'no password and no terminal',
  );
  failsWith(t, emptyStdin, /--password-stdin: nothing on stdin/, 'an empty stdin');
  failsWith(t, stdinAlone, /--password-stdin needs --user/, '--password-stdin alone');
  failsWith(t, required, /AUTH_REQUIRED: .*\(sign in with --user NAME\)$/m, 'anonymous HASH');
  failsWith(t, denied, /^ioe: DENIED: /m, 'bob may not write');
  for (const run of [wrong, unknown, noPassword, emptyStdin, stdinAlone, required, denied]) {
    t.notMatch(run.stderr + run.stdout, PASSWORD, 'the password is never printed');
  }
});

t.test('TLS: --fingerprint, --ca and IOE_FINGERPRINT; every operation over it', async (t) => {
  const { root, cwd, port, tls, cert } = await setupAccess(t, { tls: true });
  const pin = tls.fingerprint.replaceAll(':', '').toLowerCase(); // any case, colons optional
  const env = { IOE_PASSWORD: PASSWORD };
  const [pinned, byCa, byName, byEnv] = await Promise.all([
    ioeWith({ cwd, port, env }, '--fingerprint', pin, '--user', 'alice', 'whoami'),
    ioeWith({ cwd, port, env }, '--ca', cert, '--user', 'alice', 'whoami'),
    ioeWith({ cwd, port }, '--ca', cert, '--host', 'localhost', 'whoami'),
    ioeWith({ cwd, port, env: { IOE_FINGERPRINT: tls.fingerprint, IOE_CA: cert } }, 'whoami'),
  ]);
  printed(t, pinned, 'alice', '--fingerprint (lower case, no colons) with --user');
  printed(t, byCa, 'alice', '--ca with --user');
  printed(t, byName, 'anonymous', '--ca, by host name');
  printed(t, byEnv, 'anonymous', 'IOE_FINGERPRINT and IOE_CA');

  const song = randomBytes(100_000);
  await put(cwd, 'tls.mp3', song);
  const tlsArgs = ['--fingerprint', tls.fingerprint, '--user', 'alice'];
  const up = await ioeWith(
    { cwd, port, env },
    ...tlsArgs,
    'put',
    'tls.mp3',
    '--as',
    'music/tls.mp3',
  );
  t.equal(up.code, 0, `put over TLS (${up.stderr.trim()})`);
  t.ok((await readFile(join(root, 'music/tls.mp3'))).equals(song), 'stored');
  const down = await ioeWith(
    { cwd, port, env },
    ...tlsArgs,
    'get',
    'music/tls.mp3',
    '-o',
    'back.mp3',
  );
  t.equal(down.code, 0, `get over TLS (${down.stderr.trim()})`);
  t.ok((await readFile(join(cwd, 'back.mp3'))).equals(song), 'the same bytes back');
  const hashed = await ioeWith({ cwd, port }, '--tls', '--ca', cert, 'hash', 'music/tls.mp3');
  t.match(hashed.stdout, sha256(song), 'hash over TLS');
});

t.test('TLS failures are one clear line: a wrong pin never falls back to clear text', async (t) => {
  const secure = await setupAccess(t, { tls: true });
  const plain = await setupAccess(t);
  const { cwd, tls } = secure;
  const other = await TlsSetup.load({ selfSignedDir: join(cwd, 'other') });
  const env = { IOE_PASSWORD: PASSWORD };
  const [mismatch, malformed, untrusted, noCaFile, notTls, clearToTls] = await Promise.all([
    ioeWith(
      { cwd, port: secure.port, env },
      '--fingerprint',
      other.fingerprint,
      '--user',
      'alice',
      'list',
    ),
    ioeWith({ cwd, port: secure.port }, '--fingerprint', 'abc123', 'list'),
    ioeWith({ cwd, port: secure.port }, '--tls', 'list'),
    ioeWith({ cwd, port: secure.port }, '--ca', join(cwd, 'missing.pem'), 'list'),
    ioeWith({ cwd, port: plain.port }, '--fingerprint', tls.fingerprint, 'list'),
    ioeWith({ cwd, port: secure.port }, 'list'),
  ]);
  failsWith(
    t,
    mismatch,
    new RegExp(
      `not the pinned one: expected sha256 ${other.fingerprint}, the server presented sha256 ${tls.fingerprint}; disconnected before sending anything`,
    ),
    'a wrong pin names both fingerprints',
  );
  failsWith(t, malformed, /--fingerprint abc123: not a SHA-256 fingerprint/, 'a malformed pin');
  failsWith(
    t,
    untrusted,
    /certificate is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT.*pass --ca FILE, or --fingerprint/,
    '--tls with a self-signed certificate',
  );
  failsWith(t, noCaFile, /cannot read the CA file .*missing\.pem/, 'a missing --ca file');
  failsWith(
    t,
    notTls,
    /TLS handshake with 127\.0\.0\.1:\d+ failed/,
    '--fingerprint to a plain server',
  );
  failsWith(t, clearToTls, /if the server runs with TLS, add --tls/, 'clear text to a TLS server');
});

/** A non-loopback IPv4 address of this machine, if it has one. */
const outside = Object.values(networkInterfaces())
  .flat()
  .find((entry) => entry && entry.family === 'IPv4' && !entry.internal)?.address;

t.test(
  'TLS_REQUIRED: a password in clear from another address is refused, with the fix',
  { skip: outside ? false : 'this machine has no non-loopback IPv4 address' },
  async (t) => {
    const { cwd, port } = await setupAccess(t, { host: outside });
    const run = await ioeWith(
      { cwd, port, env: { IOE_HOST: outside, IOE_PASSWORD: PASSWORD } },
      '--user',
      'alice',
      'whoami',
    );
    failsWith(
      t,
      run,
      /^ioe: TLS_REQUIRED: .*\(add --tls, with --ca FILE or --fingerprint/m,
      'clear',
    );
  },
);

const hasScript = ((): boolean => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test(
  'on a real terminal (script(1)): the password is asked for and not echoed',
  { skip: hasScript ? false : 'script(1) is not installed' },
  async (t) => {
    const { cwd, port } = await setupAccess(t);
    const quote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
    const command = [process.execPath, CLI, '--user', 'alice', 'whoami'].map(quote).join(' ');
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '', IOE_PORT: String(port) };
    delete env.IOE_PASSWORD;
    delete env.IOE_USER;
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd, env });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill();
        resolve(null);
      }, 15_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    const prompted = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      const check = (): void => {
        if (!/password for alice at 127\.0\.0\.1:\d+: /.test(output)) return;
        clearTimeout(timer);
        child.stdout.off('data', check);
        resolve(true);
      };
      child.stdout.on('data', check);
      check();
    });
    t.ok(prompted, 'the prompt names the account and the server');
    child.stdin.write(`${PASSWORD}\r`);
    t.equal(await exited, 0, output.replace(/\r/g, ''));
    t.match(output, /\nalice\r?\n/, 'signed in');
    t.notMatch(output, PASSWORD, 'the terminal showed no password');
  },
);
