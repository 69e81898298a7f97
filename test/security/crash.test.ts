/**
 * Crash safety (SECURITY.md, "Faults"): the server executable is killed with SIGKILL in the
 * middle of two uploads (one replacing an existing file under --overwrite, one new). The
 * existing file is intact, nothing half-written is visible, and the restarted server deletes
 * the left-over temporary files. Needs `npm run build` (it runs dist/scripts/server.js).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listeningPort } from '../helpers/listening.js';
import { built } from '../helpers/paths.js';

const SERVER = built('scripts/server.js');
const WAIT_MS = 10_000;

/** Starts the executable; resolves with the child and its port once it is listening. */
function startServer(args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    [SERVER, '--port', '0', '--no-http', '--log-level', 'warn', ...args],
    {
      stdio: ['pipe', 'pipe', 'ignore'],
    },
  );
  return listeningPort(child, WAIT_MS).then((port) => ({ child, port }));
}

function connectRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port, host: '127.0.0.1' });
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Sends one command and collects everything until `done(text)` holds. */
async function ask(port: number, command: string, done: (text: string) => boolean) {
  const socket = await connectRaw(port);
  let text = '';
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no full reply to ${command}: ${text}`)),
      WAIT_MS,
    );
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (done(text)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(text);
      }
    });
    socket.write(command + '\n');
  });
}

const temporaries = (root: string): string[] =>
  readdirSync(root).filter((name) => name.startsWith('.ioe-upload-'));

t.test('kill -9 mid-upload: the old file is intact, left-overs go at restart', async (t) => {
  t.ok(existsSync(SERVER), `the executable is built (${SERVER}); run npm run build`);
  const base = mkdtempSync(join(tmpdir(), 'ioe-crash-'));
  const root = join(base, 'media');
  mkdirSync(root);
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(base, { recursive: true, force: true });
  });
  const old = randomBytes(2 * 1024 * 1024);
  writeFileSync(join(root, 'old.mp3'), old);

  const first = await startServer(['--root', root, '--overwrite', '--idle-timeout', '0']);
  children.push(first.child);
  const size = 4 * 1024 * 1024;
  const half = size / 2;
  for (const name of ['old.mp3', 'new.mp3']) {
    const socket = await connectRaw(first.port);
    t.teardown(() => socket.destroy());
    socket.write(Buffer.concat([Buffer.from(`WRITE,${name},${size}\n`), randomBytes(half)]));
  }
  // Wait until both halves are on disk in the temporary files.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const sizes = temporaries(root).map((name) => statSync(join(root, name)).size);
    if (sizes.length === 2 && sizes.every((bytes) => bytes === half)) break;
    if (Date.now() > deadline) throw new Error(`the uploads did not arrive: ${sizes.join(',')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  const exited = new Promise((resolve) => first.child.once('exit', resolve));
  first.child.kill('SIGKILL');
  await exited;
  t.equal(temporaries(root).length, 2, 'the crash left two temporary files behind');
  t.ok(readFileSync(join(root, 'old.mp3')).equals(old), 'the old file is intact after the crash');
  t.notOk(existsSync(join(root, 'new.mp3')), 'the unfinished new file is not there');

  const second = await startServer(['--root', root, '--overwrite', '--idle-timeout', '0']);
  children.push(second.child);
  t.same(temporaries(root), [], 'the restarted server deleted the left-overs');
  t.same(readdirSync(root), ['old.mp3'], 'only the old file is in the root');
  t.ok(readFileSync(join(root, 'old.mp3')).equals(old), 'the old file is intact byte for byte');
  const listing = await ask(second.port, 'LIST', (text) => text.split('\n').length > 2);
  t.match(listing, /^OK 1\nmusic\told\.mp3\t2097152\t/, 'LIST shows the old file only');

  const exit = new Promise((resolve) => second.child.once('exit', resolve));
  second.child.stdin!.write('QUIT\n');
  t.equal(await exit, 0, 'the restarted server quits cleanly');
});
