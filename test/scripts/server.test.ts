/**
 * Black-box tests of the ioe-server executable (the compiled dist/scripts/server.js, run with
 * node as the package's bin entry does): options, the console on stdin, signals, shutdown.
 * `npm test` builds dist/ first; run `npm run build` before running this file alone.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  appendFile,
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawClient, eventually, refused, sleep } from '../helpers/raw-client.js';
import { reusePortSupported } from '../../pipelines/listeners.js';
import { built } from '../helpers/paths.js';

const SERVER = built('scripts/server.js');

interface Teardown {
  teardown(fn: () => unknown): void;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Cli {
  child: ChildProcess;
  root: string;
  host: string;
  port: number;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
  /** Waits for stdout (from `from` on) to match; resolves with the match. */
  waitStdout(pattern: RegExp, from?: number, ms?: number): Promise<RegExpExecArray>;
  /** Waits for the process to exit; rejects after `ms`. */
  waitExit(ms?: number): Promise<Exit>;
  /** Writes one line to the console (stdin). */
  type(line: string): void;
  connect(localAddress?: string): Promise<RawClient>;
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

async function tempDir(t: Teardown, prefix = 'ioe-cli-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Servers still running when this file's tests end (a test that failed before its server
 * exited): killed, so that none outlives the run. Such a server once went on listening after
 * its test had timed out and removed the folder whose absence it was meant to refuse.
 */
const running = new Set<ChildProcess>();
t.teardown(() => {
  for (const child of running) child.kill('SIGKILL');
});

/** Spawns the executable and collects its output. */
function launch(args: string[], cwd?: string) {
  const child = spawn(process.execPath, [SERVER, ...args], {
    cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  const wake = (): void => {
    for (const listener of [...listeners]) listener();
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    wake();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    wake();
  });
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      // Let the last output arrive before anyone looks at it.
      child.stdout!.once('close', () => resolve({ code, signal }));
      if (child.stdout!.closed) resolve({ code, signal });
      wake();
    }),
  );
  const waitExit = (ms = 10_000): Promise<Exit> =>
    Promise.race([
      exited,
      sleep(ms).then(() => {
        throw new Error(`the server did not exit within ${ms} ms; stdout: ${stdout}`);
      }),
    ]);
  const waitStdout = (pattern: RegExp, from = 0, ms = 10_000): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const match = pattern.exec(stdout.slice(from));
        if (match) {
          done();
          resolve(match);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          done();
          reject(new Error(`exited before stdout matched ${pattern}; stdout: ${stdout}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`stdout never matched ${pattern}: ${stdout}; stderr: ${stderr}`));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return {
    child,
    exited,
    waitExit,
    waitStdout,
    stdout: () => stdout,
    stderr: () => stderr,
  };
}

/** Starts the server on a free port with a fresh root (unless args give one) and waits for it. */
async function startCli(
  t: Teardown,
  args: string[] = [],
  options: { cwd?: string; root?: string } = {},
): Promise<Cli> {
  // With a cwd and no root, the server picks its default root, ./media.
  const useDefault = options.cwd !== undefined && options.root === undefined;
  const root = useDefault ? join(options.cwd!, 'media') : (options.root ?? (await tempDir(t)));
  const full = [
    '--port',
    '0',
    '--http-port',
    '0',
    ...(useDefault ? [] : ['--root', root]),
    ...args,
  ];
  const proc = launch(full, options.cwd);
  const clients: RawClient[] = [];
  t.teardown(async () => {
    for (const client of clients) client.destroy();
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      proc.child.kill('SIGKILL');
      await proc.exited;
    }
  });
  const match = await proc.waitStdout(/listening on (\S+):(\d+)/);
  const host = match[1];
  const port = Number(match[2]);
  return {
    ...proc,
    root,
    host,
    port,
    type: (line) => proc.child.stdin!.write(line + '\n'),
    async connect(localAddress?: string) {
      const client = await RawClient.connect(port, host, localAddress);
      clients.push(client);
      return client;
    },
  };
}

async function tempFiles(root: string): Promise<string[]> {
  return (await readdir(root)).filter((name) => name.startsWith('.ioe-upload-'));
}

async function uploadStarted(root: string, count: number): Promise<void> {
  await eventually(async () => (await tempFiles(root)).length >= count, 'the upload to start');
}

/** Starts a WRITE of `total` bytes and sends only `sent` of them. */
async function startUpload(cli: Cli, name: string, total: number, sent: number) {
  const before = (await tempFiles(cli.root)).length;
  const client = await cli.connect();
  const data = Buffer.alloc(total, 'm');
  await client.send(
    Buffer.concat([Buffer.from(`WRITE,${name},${total}\n`), data.subarray(0, sent)]),
  );
  await uploadStarted(cli.root, before + 1);
  return {
    client,
    async finish(): Promise<string> {
      await client.send(data.subarray(sent));
      return client.readLine();
    },
    sha: sha256(data),
  };
}

t.before(() => {
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run npm run build first`);
});

t.test(
  'prints "listening on HOST:PORT" and serves; stdin QUIT with no connections exits 0',
  async (t) => {
    const cli = await startCli(t);
    t.equal(cli.host, '127.0.0.1', 'the default host');
    t.ok(cli.port > 0);
    const c = await cli.connect();
    await c.send('LIST\nBYE\n');
    t.equal(await c.readLine(), 'OK 0');
    t.equal(await c.readLine(), 'OK BYE');
    await c.waitClose();
    c.destroy();
    cli.type('QUIT');
    t.same(await cli.waitExit(), { code: 0, signal: null });
  },
);

t.test('console commands are case-insensitive: quit', async (t) => {
  const cli = await startCli(t);
  cli.type('quit');
  t.same(await cli.waitExit(), { code: 0, signal: null });
});

t.test('the default root ./media is created if missing', async (t) => {
  const cwd = await tempDir(t);
  const cli = await startCli(t, [], { cwd });
  t.ok((await stat(join(cwd, 'media'))).isDirectory(), './media exists');
  await writeFile(join(cwd, 'media', 'song.mp3'), 'abc');
  const c = await cli.connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 1', 'and it is the served root');
  t.match(await c.readLine(), /^music\tsong\.mp3\t3\t/);
  cli.type('FORCEQUIT');
  await cli.waitExit();
});

t.test(
  'LIST shows a file copied into the root at once (the catalog cache is never stale)',
  async (t) => {
    const cli = await startCli(t);
    await writeFile(join(cli.root, 'a.mp3'), 'tune');
    const c = await cli.connect();
    const list = async (): Promise<string[]> => {
      await c.send('LIST\n');
      const head = await c.readLine();
      const match = /^OK (\d+)$/.exec(head);
      if (!match) throw new Error(`unexpected LIST reply: ${head}`);
      const lines = await c.readLines(Number(match[1]));
      return lines.map((line) => line.split('\t').slice(1, 3).join(' '));
    };
    t.same(await list(), ['a.mp3 4']);
    t.same(await list(), ['a.mp3 4'], 'again (from the cache)');
    await copyFile(join(cli.root, 'a.mp3'), join(cli.root, 'b.mp3'));
    t.same(await list(), ['a.mp3 4', 'b.mp3 4'], 'the copy is listed by the very next LIST');
    await appendFile(join(cli.root, 'b.mp3'), 'more');
    t.same(await list(), ['a.mp3 4', 'b.mp3 8'], 'a file that grew is listed with its new size');
    await mkdir(join(cli.root, 'sub'));
    await rename(join(cli.root, 'a.mp3'), join(cli.root, 'sub', 'a.mp3'));
    t.same(await list(), ['b.mp3 8', 'sub/a.mp3 4'], 'a file moved into a new folder');
    const other = await cli.connect();
    await other.send(`WRITE,c.mp3,3\nnew`);
    t.match(await other.readLine(), /^OK 3 /);
    t.same(await list(), ['b.mp3 8', 'c.mp3 3', 'sub/a.mp3 4'], "another client's WRITE");
    cli.type('QUIT');
    t.equal((await cli.waitExit()).code, 0, 'the server still exits promptly on QUIT');
  },
);

t.test('leftover uploads are deleted at start; other files are kept', async (t) => {
  const root = await tempDir(t);
  await writeFile(join(root, '.ioe-upload-x.tmp'), 'crash leftover');
  await writeFile(join(root, '.ioe-upload-0123abcd.tmp'), 'crash leftover');
  await writeFile(join(root, '.keep'), 'keep');
  await writeFile(join(root, 'keep.mp3'), 'keep');
  const cli = await startCli(t, [], { root });
  t.same((await readdir(root)).sort(), ['.keep', 'keep.mp3']);
  cli.type('QUIT');
  t.equal((await cli.waitExit()).code, 0);
});

t.test('--read-only and --max-upload', async (t) => {
  const cli = await startCli(t, ['--read-only', '--max-upload', '5']);
  const c1 = await cli.connect();
  await c1.send('WRITE,a.mp3,5\nabcdeLIST\n');
  t.match(await c1.readLine(), /^ERR READ_ONLY /);
  t.equal(await c1.readLine(), 'OK 0', 'payload drained, connection stays');
  await c1.send('WRITE,a.mp3,6\nabcdef');
  t.match((await c1.waitClose()).toString(), /^ERR TOO_LARGE [^\n]*\n$/);
  t.same(await readdir(cli.root), []);
  cli.type('QUIT');
  t.equal((await cli.waitExit()).code, 0);
});

t.test('--overwrite replaces; without it EXISTS', async (t) => {
  const plain = await startCli(t);
  await writeFile(join(plain.root, 'e.mp3'), 'old');
  const c1 = await plain.connect();
  await c1.send('WRITE,e.mp3,3\nnew');
  t.match(await c1.readLine(), /^ERR EXISTS /);
  t.equal(await readFile(join(plain.root, 'e.mp3'), 'utf8'), 'old');
  plain.type('FORCEQUIT');

  const cli = await startCli(t, ['--overwrite']);
  await writeFile(join(cli.root, 'e.mp3'), 'old');
  const c2 = await cli.connect();
  await c2.send('WRITE,e.mp3,3\nnewREAD,e.mp3\n');
  t.equal(await c2.readLine(), `OK 3 ${sha256('new')}`);
  t.equal(await c2.readLine(), 'OK 3');
  t.equal((await c2.readBytes(3)).toString(), 'new');
  cli.type('FORCEQUIT');
  await Promise.all([plain.waitExit(), cli.waitExit()]);
});

t.test('--max-connections and --max-connections-per-ip', async (t) => {
  const cli = await startCli(t, ['--max-connections', '2', '--max-connections-per-ip', '1']);
  const c1 = await cli.connect('127.0.0.1');
  await c1.send('LIST\n');
  t.equal(await c1.readLine(), 'OK 0');
  const c2 = await cli.connect('127.0.0.1');
  t.match((await c2.waitClose()).toString(), /^ERR BUSY /, 'per-address limit');
  const c3 = await cli.connect('127.0.0.2');
  await c3.send('LIST\n');
  t.equal(await c3.readLine(), 'OK 0', 'another address is let in');
  const c4 = await cli.connect('127.0.0.3');
  t.match((await c4.waitClose()).toString(), /^ERR BUSY /, 'total limit');
  cli.type('FORCEQUIT');
  await cli.waitExit();
});

t.test('--idle-timeout: 1 closes an idle connection; 0 turns it off', async (t) => {
  const short = await startCli(t, ['--idle-timeout', '1']);
  const off = await startCli(t, ['--idle-timeout', '0']);
  const c1 = await short.connect();
  const c2 = await off.connect();
  t.match((await c1.waitClose(8000)).toString(), /^ERR TIMEOUT [^\n]*\n$/);
  await sleep(300);
  t.notOk(c2.ended, 'no timeout with --idle-timeout 0');
  await c2.send('LIST\n');
  t.equal(await c2.readLine(), 'OK 0');
  short.type('FORCEQUIT');
  off.type('FORCEQUIT');
  await Promise.all([short.waitExit(), off.waitExit()]);
});

t.test('--host binds that address only', async (t) => {
  const cli = await startCli(t, ['--host', '127.0.0.2']);
  t.equal(cli.host, '127.0.0.2');
  const c = await cli.connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 0');
  await t.rejects(RawClient.connect(cli.port, '127.0.0.1'), 'not listening on 127.0.0.1');
  cli.type('QUIT');
  await cli.waitExit();
});

t.test('--log-level: structured pino JSON lines on stderr', async (t) => {
  const cli = await startCli(t, ['--log-level', 'info']);
  const c = await cli.connect();
  await c.send('WRITE,log.mp3,5\nhelloREAD,log.mp3\nREAD,none.mp3\nBYE\n');
  t.equal(await c.readLine(), `OK 5 ${sha256('hello')}`);
  t.equal(await c.readLine(), 'OK 5');
  t.equal((await c.readBytes(5)).toString(), 'hello');
  t.match(await c.readLine(), /^ERR NOT_FOUND /);
  t.equal(await c.readLine(), 'OK BYE');
  await c.waitClose();
  c.destroy();
  cli.type('QUIT');
  await cli.waitExit();
  const lines = cli
    .stderr()
    .split('\n')
    .filter((line) => line.trim() !== '');
  t.ok(lines.length > 0, 'something was logged');
  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  for (const record of records) {
    t.type(record.level, 'number', 'a pino record has a numeric level');
    t.type(record.msg, 'string');
  }
  t.ok(
    records.some(
      (r) => r.verb === 'WRITE' && r.name === 'log.mp3' && r.bytes === 5 && r.result === 'OK',
    ),
    'the WRITE is logged with verb, name, bytes and result',
  );
  t.ok(
    records.some(
      (r) => r.verb === 'READ' && r.name === 'log.mp3' && r.bytes === 5 && r.result === 'OK',
    ),
    'the READ is logged',
  );
  t.ok(
    records.some((r) => r.verb === 'READ' && r.name === 'none.mp3' && r.result === 'NOT_FOUND'),
    'a failed READ is logged with its code',
  );

  const quiet = await startCli(t, ['--log-level', 'warn']);
  const q = await quiet.connect();
  await q.send('LIST\n');
  t.equal(await q.readLine(), 'OK 0');
  q.destroy();
  quiet.type('QUIT');
  await quiet.waitExit();
  t.equal(quiet.stderr(), '', 'nothing below warn is logged');
});

t.test('bad option values exit non-zero with a message', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'a-file');
  await writeFile(file, 'x');
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => blocker.close(resolve)));
  const busyPort = String((blocker.address() as { port: number }).port);
  const cases = [
    ['--port', 'abc'],
    ['--port', '65536'],
    ['--max-connections', '1.5'],
    ['--max-connections-per-ip', '-2'],
    ['--max-upload', 'lots'],
    ['--idle-timeout', '-1'],
    ['--log-level', 'loud'],
    ['--bogus'],
    ['--root', join(file, 'below')],
    ['--port', busyPort],
  ];
  await Promise.all(
    cases.map(async (args) => {
      // The last occurrence of an option wins: the bad value comes last.
      const proc = launch(['--port', '0', '--root', join(dir, 'root'), ...args]);
      proc.child.stdin!.end();
      // Ten servers start at once: on a busy two-core machine one took over 10 s.
      const exit = await proc.waitExit(30_000);
      t.not(exit.code, 0, `${args.join(' ')}: non-zero exit`);
      t.not(exit.code, null, `${args.join(' ')}: exited by itself`);
      t.match(proc.stderr(), /\S/, `${args.join(' ')}: a message on stderr`);
      t.notMatch(proc.stdout(), /listening on/, `${args.join(' ')}: never listened`);
    }),
  );
});

t.test('--threads: refused in words where it cannot serve', async (t) => {
  const dir = await tempDir(t);
  const users = join(dir, 'users');
  await writeFile(users, 'anonymous::r=/\n', { mode: 0o600 });
  const cases: [string[], RegExp][] = [
    [['--threads', '0'], /--threads/],
    [['--threads', '2', '--users', users], /--threads does not serve accounts yet/],
  ];
  if (!reusePortSupported()) cases.push([['--threads', '2'], /Node 22\.12 or later/]);
  for (const [args, message] of cases) {
    const proc = launch(['--port', '0', '--http-port', '0', '--root', join(dir, 'r'), ...args]);
    proc.child.stdin!.end();
    const exit = await proc.waitExit();
    t.equal(exit.code, 1, `${args.join(' ')}: exit 1`);
    t.match(proc.stderr(), message, `${args.join(' ')}: says why`);
  }
});

if (reusePortSupported()) {
  t.test('--threads 2: both threads serve, and QUIT waits for a transfer on either', async (t) => {
    const cli = await startCli(t, ['--threads', '2']);
    // Uploads in flight on 16 connections: the kernel puts some on each thread (all on one:
    // odds of 2 in 65,536).
    const uploads = await Promise.all(
      Array.from({ length: 16 }, (_, i) => startUpload(cli, `t-${i}.mp3`, 1000, 100)),
    );
    // Its log lines are written within 100 ms.
    const fromSecond = /"thread":1[^\n]*"msg":"connection opened"/;
    await eventually(() => fromSecond.test(cli.stderr()), 'the second thread to log');
    t.pass('the second thread serves some of them');
    // And 16 idle ones, which QUIT closes at once: their last log lines come right at the end.
    const idle = await Promise.all(Array.from({ length: 16 }, () => cli.connect()));
    for (const client of idle) {
      await client.send('LIST\n');
      t.equal(await client.readLine(), 'OK 0');
    }
    const mark = cli.stdout().length;
    cli.type('QUIT');
    t.match(
      (await cli.waitStdout(/^.*\b16\b.*$/m, mark))[0],
      /FORCEQUIT/,
      'the 16 uploads counted',
    );
    t.ok(await refused(cli.port, cli.host), 'new connections are refused');
    for (const upload of uploads) {
      t.equal(await upload.finish(), `OK 1000 ${upload.sha}`);
      upload.client.destroy();
    }
    t.same(await cli.waitExit(), { code: 0, signal: null });
    t.equal((await readdir(cli.root)).length, 16, 'every upload was published');
    // The second thread's last lines are written before the process exits.
    const lines = cli.stderr().split('\n');
    const second = (msg: string): number =>
      lines.filter((line) => line.includes('"thread":1') && line.includes(`"msg":"${msg}"`)).length;
    t.equal(second('connection closed'), second('connection opened'), 'each close logged');
  });
}

if (reusePortSupported()) {
  t.test(
    '--threads 2: FORCEQUIT drops the connections of both threads and logs each',
    async (t) => {
      const cli = await startCli(t, ['--threads', '2']);
      const clients = await Promise.all(Array.from({ length: 24 }, () => cli.connect()));
      for (const client of clients) {
        await client.send('LIST\n');
        t.equal(await client.readLine(), 'OK 0');
      }
      cli.type('FORCEQUIT');
      t.same(await cli.waitExit(), { code: 0, signal: null });
      for (const client of clients) await client.waitClose();
      const lines = cli.stderr().split('\n');
      const second = (msg: string): number =>
        lines.filter((line) => line.includes('"thread":1') && line.includes(`"msg":"${msg}"`))
          .length;
      t.ok(second('connection opened') > 0, 'the second thread held some');
      t.equal(second('connection closed'), second('connection opened'), 'each close logged');
    },
  );
}

t.test('QUIT with a transfer in flight: it finishes with OK, then exit 0', async (t) => {
  const cli = await startCli(t);
  const upload = await startUpload(cli, 'slow.mp3', 1000, 300);
  const idle = await cli.connect();
  await idle.send('LIST\n');
  t.equal(await idle.readLine(), 'OK 0');
  const mark = cli.stdout().length;
  cli.type('QUIT');
  t.match((await idle.waitClose()).toString(), /^ERR SHUTTING_DOWN [^\n]*\n$/, 'idle: at once');
  const waiting = await cli.waitStdout(/^.*FORCEQUIT.*$/m, mark);
  t.match(waiting[0], /\b[12]\b/, 'says how many connections are left');
  t.ok(await refused(cli.port, cli.host), 'new connections are refused after QUIT');
  t.equal(cli.child.exitCode, null, 'still running while the transfer is in flight');
  t.equal(await upload.finish(), `OK 1000 ${upload.sha}`);
  t.match((await upload.client.waitClose()).toString(), /^ERR SHUTTING_DOWN /);
  t.same(await cli.waitExit(), { code: 0, signal: null });
  t.equal((await stat(join(cli.root, 'slow.mp3'))).size, 1000, 'the upload was published');
});

t.test('QUIT with an idle connection: it gets SHUTTING_DOWN, exit 0', async (t) => {
  const cli = await startCli(t);
  const c = await cli.connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 0');
  cli.type('QUIT');
  t.match((await c.waitClose()).toString(), /^ERR SHUTTING_DOWN [^\n]*\n$/);
  c.destroy();
  t.same(await cli.waitExit(), { code: 0, signal: null });
});

t.test('while draining, the console reports the connections left', async (t) => {
  const cli = await startCli(t);
  const one = await startUpload(cli, 'one.mp3', 100, 10);
  const two = await startUpload(cli, 'two.mp3', 100, 10);
  const mark = cli.stdout().length;
  cli.type('QUIT');
  t.match((await cli.waitStdout(/^.*\b2\b.*$/m, mark))[0], /FORCEQUIT/, '2 left at first');
  const mark2 = cli.stdout().length;
  t.match(await one.finish(), /^OK 100 /);
  one.client.destroy();
  t.match((await cli.waitStdout(/^.*\b1\b.*$/m, mark2))[0], /FORCEQUIT/, 'then 1 left');
  t.match(await two.finish(), /^OK 100 /);
  two.client.destroy();
  t.equal((await cli.waitExit()).code, 0);
});

t.test('FORCEQUIT mid-upload exits promptly and leaves no partial upload', async (t) => {
  const cli = await startCli(t);
  const upload = await startUpload(cli, 'big.mp3', 10_000_000, 100_000);
  const started = Date.now();
  cli.type('FORCEQUIT');
  await cli.waitExit(5000);
  t.ok(Date.now() - started < 5000, 'exited (upper bound 5 s; the contract says about 1 s)');
  await upload.client.waitClose();
  t.same(await readdir(cli.root), [], 'no .ioe-upload-* file and nothing published');
});

t.test('SIGTERM acts as QUIT', async (t) => {
  const cli = await startCli(t);
  const upload = await startUpload(cli, 'term.mp3', 500, 100);
  const mark = cli.stdout().length;
  cli.child.kill('SIGTERM');
  await cli.waitStdout(/QUIT/, mark);
  t.ok(await refused(cli.port, cli.host), 'new connections are refused');
  t.equal(await upload.finish(), `OK 500 ${upload.sha}`);
  t.match((await upload.client.waitClose()).toString(), /^ERR SHUTTING_DOWN /);
  t.same(await cli.waitExit(), { code: 0, signal: null });
  t.equal((await stat(join(cli.root, 'term.mp3'))).size, 500);
});

t.test('a second SIGINT at least 0.6 s after the first forces', async (t) => {
  const cli = await startCli(t);
  const upload = await startUpload(cli, 'int.mp3', 1_000_000, 1000);
  const mark = cli.stdout().length;
  cli.child.kill('SIGINT');
  await cli.waitStdout(/QUIT/, mark);
  await sleep(650);
  t.equal(cli.child.exitCode, null, 'the first SIGINT only drains');
  cli.child.kill('SIGINT');
  await cli.waitExit(5000);
  t.equal((await upload.client.waitClose()).toString(), '', 'the upload got no OK');
  t.same(await readdir(cli.root), [], 'no partial upload left');
});

t.test('two SIGINTs at once do not force: the transfer still completes', async (t) => {
  const cli = await startCli(t);
  const upload = await startUpload(cli, 'twice.mp3', 800, 100);
  const mark = cli.stdout().length;
  cli.child.kill('SIGINT');
  cli.child.kill('SIGINT');
  await cli.waitStdout(/QUIT/, mark);
  await sleep(700);
  t.equal(cli.child.exitCode, null, 'still draining');
  t.equal(await upload.finish(), `OK 800 ${upload.sha}`);
  t.match((await upload.client.waitClose()).toString(), /^ERR SHUTTING_DOWN /);
  t.same(await cli.waitExit(), { code: 0, signal: null });
  t.equal((await stat(join(cli.root, 'twice.mp3'))).size, 800);
});

t.test('end of stdin does not stop the server', async (t) => {
  const cli = await startCli(t);
  cli.child.stdin!.end();
  await sleep(300);
  t.equal(cli.child.exitCode, null);
  const c = await cli.connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 0');
  c.destroy();
  cli.child.kill('SIGTERM');
  t.same(await cli.waitExit(), { code: 0, signal: null });
});

t.test('an unknown console command is answered and ignored', async (t) => {
  const cli = await startCli(t);
  const mark = cli.stdout().length;
  cli.type('HELLO');
  await cli.waitStdout(/QUIT/, mark);
  const c = await cli.connect();
  await c.send('LIST\n');
  t.equal(await c.readLine(), 'OK 0', 'still serving');
  c.destroy();
  cli.type('QUIT');
  t.equal((await cli.waitExit()).code, 0);
});
