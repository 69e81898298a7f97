/**
 * Confinement (SECURITY.md, "Hostile or odd files in the media folder"): nothing outside the
 * media root is ever listed, read, hashed or written through a link, and nothing that is not a
 * regular file is ever visible or able to hang a request.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';
import { LocalStorage } from '../../lib/local-storage.js';
import { connect, ProtocolError, type IoeClient } from '../../pipelines/client.js';

/** How long a refusal may take before we call it a hang. */
const PROMPT_MS = 3000;

function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** The error code a promise rejects with, or 'OK' when it resolves. */
async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw error;
  }
}

async function startServer(
  t: Test,
  options: Partial<ServerOptions>,
): Promise<{ server: MediaServer; client: IoeClient }> {
  const server = await MediaServer.create({ port: 0, idleTimeoutSeconds: 0, ...options });
  const { port } = await server.listen();
  const client = await connect({ port });
  t.teardown(async () => {
    client.destroy();
    await server.forceQuit();
  });
  return { server, client };
}

/** base/media is the root; base/media2 and base/elsewhere are outside it. */
function makeTree(t: Test): { base: string; root: string; elsewhere: string; media2: string } {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'ioe-confine-')));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'media');
  const media2 = join(base, 'media2'); // shares the root's path as a string prefix
  const elsewhere = join(base, 'elsewhere');
  for (const dir of [root, media2, elsewhere, join(root, 'sub')]) mkdirSync(dir);
  writeFileSync(join(media2, 'a.mp3'), 'secret from the sibling folder');
  writeFileSync(join(elsewhere, 'f.mp3'), 'secret from elsewhere');
  writeFileSync(join(root, 'real.mp3'), 'inside the root');
  writeFileSync(join(root, 'sub', 'song.mp3'), 'a song in a sub folder');
  symlinkSync('../media2/a.mp3', join(root, 'a.mp3')); // the sibling-prefix trap
  symlinkSync(elsewhere, join(root, 'out')); // a folder link leading outside
  symlinkSync('real.mp3', join(root, 'link.mp3')); // inside → inside: fine
  symlinkSync('sub', join(root, 'linkdir')); // a folder link inside the root: fine
  return { base, root, elsewhere, media2 };
}

t.test('links that lead outside the root are invisible', async (t) => {
  const { root, elsewhere, media2 } = makeTree(t);
  const { client } = await startServer(t, { root });

  const names = (await client.list()).map((entry) => entry.name);
  t.same(
    names,
    ['link.mp3', 'linkdir/song.mp3', 'real.mp3', 'sub/song.mp3'],
    'LIST shows the files inside the root and the links that stay inside',
  );

  for (const name of ['a.mp3', 'out/f.mp3']) {
    t.equal(await outcome(collect(client.read(name))), 'NOT_FOUND', `READ ${name}`);
    t.equal(await outcome(client.hash(name)), 'NOT_FOUND', `HASH ${name}`);
  }

  t.equal(
    (await collect(client.read('link.mp3'))).toString(),
    'inside the root',
    'a link inside the root to a file inside the root is readable',
  );
  t.equal(
    (await collect(client.read('linkdir/song.mp3'))).toString(),
    'a song in a sub folder',
    'a folder link inside the root is followed',
  );
  t.equal(readFileSync(join(media2, 'a.mp3'), 'utf8'), 'secret from the sibling folder');
  t.equal(readFileSync(join(elsewhere, 'f.mp3'), 'utf8'), 'secret from elsewhere');
});

t.test('WRITE through a folder link leading outside is refused', async (t) => {
  const { root, elsewhere, media2 } = makeTree(t);
  const { client } = await startServer(t, { root });

  for (const name of ['out/new.mp3', 'out/deeper/new.mp3']) {
    const code = await outcome(client.write(name, Buffer.from('payload'), 7));
    t.not(code, 'OK', `WRITE ${name} is refused (${code})`);
  }
  t.same(readdirSync(elsewhere), ['f.mp3'], 'nothing was created outside the root');

  // The sibling-prefix link exists (as a link), so it is EXISTS, and the sibling is untouched.
  t.equal(await outcome(client.write('a.mp3', Buffer.from('payload'), 7)), 'EXISTS');
  t.equal(readFileSync(join(media2, 'a.mp3'), 'utf8'), 'secret from the sibling folder');

  t.same(
    readdirSync(root).filter((name) => name.startsWith('.')),
    [],
    'no temporary file is left',
  );
  t.equal((await client.list()).length, 4, 'the connection is still usable');
});

t.test('a folder swapped for a link after the path check cannot lead outside', async (t) => {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'ioe-swap-')));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'media');
  const outside = join(base, 'outside');
  mkdirSync(join(root, 'd'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(root, 'd', 'f.mp3'), 'inside');
  writeFileSync(join(outside, 'f.mp3'), 'OUTSIDE SECRET');
  const storage = await LocalStorage.open(root);

  // Deterministic race: the moment LocalStorage opens the checked path, the folder d is
  // swapped for a link to `outside`. O_NOFOLLOW only covers the last segment, so the kernel
  // follows the new link: only the check of /proc/self/fd/N can catch it.
  const target = join(root, 'd', 'f.mp3');
  const original = fs.openSync;
  let swapped = false;
  const mutable = fs as { openSync: typeof fs.openSync };
  mutable.openSync = ((path: Parameters<typeof fs.openSync>[0], ...rest: unknown[]) => {
    if (path === target && !swapped) {
      swapped = true;
      renameSync(join(root, 'd'), join(root, '.d-moved'));
      symlinkSync(outside, join(root, 'd'));
    }
    return (original as (...args: unknown[]) => number)(path, ...rest);
  }) as typeof fs.openSync;
  syncBuiltinESMExports();
  let code: string;
  try {
    code = await outcome(storage.open('d/f.mp3').then((file) => file.close()));
  } finally {
    mutable.openSync = original;
    syncBuiltinESMExports();
  }
  t.ok(swapped, 'the folder was swapped between the check and the open');
  t.equal(readFileSync(target, 'utf8'), 'OUTSIDE SECRET', 'the path now leads outside');
  t.equal(code, 'NOT_FOUND', 'the opened descriptor is checked and refused');
});

t.test('non-regular files are invisible and never hang a request', async (t) => {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'ioe-special-')));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'media');
  mkdirSync(root);
  writeFileSync(join(root, 'ok.mp3'), 'a plain file');
  execFileSync('mkfifo', [join(root, 'x.mp3')]);
  mkdirSync(join(root, 'y.jpg'));
  symlinkSync('x.mp3', join(root, 'fifolink.mp3'));
  const special = ['x.mp3', 'y.jpg', 'fifolink.mp3'];
  try {
    execFileSync('mknod', [join(root, 'z.mp3'), 'c', '1', '3'], { stdio: 'ignore' });
    special.push('z.mp3');
  } catch {
    t.comment('mknod is not permitted here: no device node in this run');
  }
  const unixServer = createNetServer();
  await new Promise<void>((resolve) => unixServer.listen(join(root, 'w.mp3'), resolve));
  t.teardown(() => new Promise<void>((resolve) => unixServer.close(() => resolve())));
  special.push('w.mp3');

  const { client } = await startServer(t, { root });
  const names = (await within(PROMPT_MS, client.list(), 'LIST')).map((entry) => entry.name);
  t.same(names, ['ok.mp3'], 'LIST shows only the regular file');
  for (const name of special) {
    const read = await within(PROMPT_MS, outcome(collect(client.read(name))), `READ ${name}`);
    t.equal(read, 'NOT_FOUND', `READ ${name}`);
    const hash = await within(PROMPT_MS, outcome(client.hash(name)), `HASH ${name}`);
    t.equal(hash, 'NOT_FOUND', `HASH ${name}`);
  }
  t.equal((await collect(client.read('ok.mp3'))).toString(), 'a plain file');
  t.ok(existsSync(join(root, 'x.mp3')), 'the FIFO is still there, untouched');
});
