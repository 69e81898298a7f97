/**
 * `ioe-server users`: add (password from stdin, or twice on a terminal without echo), token
 * (printed once, stored hashed), list (no credentials), remove; the file written whole with
 * mode 0600, comments kept. Mostly in process (runUsersCommand with stand-in streams); once
 * as a child process with a real pipe, and once on a real terminal (`script`) when there is one.
 */
import t, { type Test } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Accounts, loadAccounts } from '../../lib/accounts.js';
import { Authenticator } from '../../lib/authenticator.js';
import { runUsersCommand, type UsersInput } from '../../scripts/users.js';

const FAST = { ln: 15, r: 1, p: 1 };
/** The compiled module beside this compiled test (tests run from dist/test/). */
const USERS_MODULE = fileURLToPath(new URL('../../scripts/users.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

class Collect extends Writable {
  text = '';
  _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

/** Runs the command in process; `input` is what stdin holds (a pipe, not a terminal). */
async function users(args: string[], input = ''): Promise<Run> {
  const stdin = new PassThrough();
  stdin.end(input);
  const stdout = new Collect();
  const stderr = new Collect();
  const code = await runUsersCommand(args, { stdin, stdout, stderr, scrypt: FAST });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

async function tempFile(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-users-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'ioe-users');
}

/** Whether the file's accounts take this name and password. */
async function verifies(file: string, name: string, password: string): Promise<boolean> {
  const auth = new Authenticator({ accounts: await loadAccounts(file), successCacheMs: 0 });
  try {
    await auth.verify(name, password, '127.0.0.1');
    return true;
  } catch {
    return false;
  }
}

async function mode(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

t.test('add: password from stdin; the file is made with mode 0600', async (t) => {
  const file = await tempFile(t);
  const added = await users(['add', 'alice', '--file', file], 'correct horse\n');
  t.equal(added.code, 0, added.stderr);
  t.equal(added.stdout, '', 'nothing on stdout');
  t.match(added.stderr, /added alice \(r=\/\) in .*SIGHUP/);
  t.notMatch(added.stderr, /correct horse/);
  t.equal(await mode(file), 0o600);
  const text = await readFile(file, 'utf8');
  t.match(text, /^alice:\$scrypt\$ln=15,r=1,p=1\$[^:]+:r=\/\n$/);
  t.notMatch(text, /correct horse/, 'only the hash is stored');
  t.ok(await verifies(file, 'alice', 'correct horse'));
  t.notOk(await verifies(file, 'alice', 'correct horse\n'), 'the newline is not part of it');

  const crlf = await users(
    ['add', 'bob', '--rules', 'r=/music,rw=/music/up', '--file', file],
    'pw two\r\nignored\n',
  );
  t.equal(crlf.code, 0);
  t.ok(await verifies(file, 'bob', 'pw two'), 'one line, CRLF or LF');
  const noNewline = await users(['add', 'carol', '--file', file], 'last');
  t.equal(noNewline.code, 0, 'a last line without newline');
  t.ok(await verifies(file, 'carol', 'last'));
  t.same(
    Accounts.parse(await readFile(file, 'utf8')).accounts.map((a) => [a.name, a.rules.length]),
    [
      ['alice', 1],
      ['bob', 2],
      ['carol', 1],
    ],
  );
});

t.test('add an existing name: a new password; its rules stay unless --rules', async (t) => {
  const file = await tempFile(t);
  await users(['add', 'alice', '--rules', 'rw=/up', '--file', file], 'one\n');
  const again = await users(['add', 'alice', '--file', file], 'two\n');
  t.equal(again.code, 0);
  t.match(again.stderr, /updated alice \(rw=\/up\)/);
  t.notOk(await verifies(file, 'alice', 'one'));
  t.ok(await verifies(file, 'alice', 'two'));
  await users(['add', 'alice', '--rules', 'r=/', '--file', file], 'three\n');
  t.equal((await users(['list', '--file', file])).stdout, 'alice\tr=/\n');
});

t.test('token: printed once on stdout, stored hashed, works as a password', async (t) => {
  const file = await tempFile(t);
  const made = await users(['token', 'tv', '--rules', 'r=/films', '--file', file]);
  t.equal(made.code, 0, made.stderr);
  const token = made.stdout.trim();
  t.match(made.stdout, /^[A-Za-z0-9_-]{43}\n$/, 'one line: 32 random bytes, base64url');
  t.equal(Buffer.from(token, 'base64url').length, 32);
  t.notMatch(made.stderr, token, 'not on stderr');
  t.match(made.stderr, /shown only this once/);
  t.notMatch(await readFile(file, 'utf8'), token, 'not in the file');
  t.equal(await mode(file), 0o600);
  t.ok(await verifies(file, 'tv', token));

  const replaced = await users(['token', 'tv', '--file', file]);
  const second = replaced.stdout.trim();
  t.not(second, token);
  t.match(replaced.stderr, /replaced the token of tv \(r=\/films\)/, 'rules kept');
  t.notOk(await verifies(file, 'tv', token), 'the old token no longer works');
  t.ok(await verifies(file, 'tv', second));
  const refused = await users(['token', 'anonymous', '--file', file]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /anonymous has no password/);
});

t.test('add anonymous: the default rules r=/ (access.md), with a warning', async (t) => {
  const file = await tempFile(t);
  const run = await users(['add', 'anonymous', '--file', file]);
  t.equal(run.code, 0, 'added without a password');
  t.match(run.stderr, /warning: anonymous gets the default rules r=\/: every client/);
  t.equal((await users(['list', '--file', file])).stdout, 'anonymous\tr=/\n');
  t.equal(await readFile(file, 'utf8'), 'anonymous::r=/\n');
});

t.test('list: names and rules, never credentials; remove', async (t) => {
  const file = await tempFile(t);
  await writeFile(file, '# living room\n\n', { mode: 0o600 });
  await users(['add', 'alice', '--rules', 'r=/,-=/private', '--file', file], 'a\n');
  await users(['add', 'anonymous', '--rules', 'r=/public', '--file', file]);
  await users(['token', 'tv', '--rules', '', '--file', file]);
  const listed = await users(['list', '--file', file]);
  t.equal(listed.code, 0);
  t.equal(listed.stdout, 'alice\tr=/,-=/private\nanonymous\tr=/public\ntv\t(no rules)\n');
  t.notMatch(listed.stdout + listed.stderr, /scrypt|\$/);

  const removed = await users(['remove', 'alice', '--file', file]);
  t.equal(removed.code, 0);
  t.match(removed.stderr, /removed alice/);
  t.equal((await users(['list', '--file', file])).stdout, 'anonymous\tr=/public\ntv\t(no rules)\n');
  const text = await readFile(file, 'utf8');
  t.match(
    text,
    /^# living room\n\nanonymous::r=\/public\ntv:\$scrypt\$[^\n]+:\n$/,
    'comments kept',
  );
  const missing = await users(['remove', 'alice', '--file', file]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /there is no alice in/);
  t.equal((await users(['list', '--file', `${file}.nope`])).code, 1, 'list of no file');
  t.equal((await users(['remove', 'x', '--file', `${file}.nope`])).code, 1);
});

t.test(
  'the file: 0600 whatever it was; atomic; through a symbolic link; refused when broken',
  async (t) => {
    const file = await tempFile(t);
    await writeFile(file, '# shared by mistake\n');
    await chmod(file, 0o644);
    t.equal((await users(['add', 'alice', '--file', file], 'pw\n')).code, 0);
    t.equal(await mode(file), 0o600, 'tightened to 0600');
    t.match(await readFile(file, 'utf8'), /^# shared by mistake\nalice:/);
    const dir = join(file, '..');
    t.same((await readdir(dir)).sort(), ['ioe-users'], 'no temporary file left');

    const link = join(dir, 'link');
    await symlink(file, link);
    t.equal((await users(['add', 'bob', '--file', link], 'pw\n')).code, 0);
    t.match(await readFile(file, 'utf8'), /\nbob:/, 'the target changed');
    t.ok((await import('node:fs')).lstatSync(link).isSymbolicLink(), 'the link stays a link');

    const before = `alice:broken:r=/\n`;
    await writeFile(file, before);
    const broken = await users(['add', 'carol', '--file', file], 'pw\n');
    t.equal(broken.code, 1);
    t.match(broken.stderr, /line 1: .*fix it by hand first/);
    t.equal(await readFile(file, 'utf8'), before, 'a broken file is left alone');
  },
);

t.test('refusals: bad names, bad rules, no password, a password as an argument', async (t) => {
  const file = await tempFile(t);
  const cases: [string[], string, RegExp][] = [
    [['add', 'bad name', '--file', file], 'pw\n', /a name is 1 to 64/],
    [['add', 'x'.repeat(65), '--file', file], 'pw\n', /a name is 1 to 64/],
    [['add', 'alice', '--rules', 'r=music', '--file', file], 'pw\n', /does not start with \//],
    [['add', 'alice', '--rules', 'w=/', '--file', file], 'pw\n', /not r, rw or -/],
    [['add', 'alice', '--file', file], '', /no password on stdin/],
    [['add', 'alice', '--file', file], '\n', /password on stdin is empty/],
    [['add', 'alice', 'hunter2', '--file', file], '', /too many arguments/],
    [['add', '--file', file], '', /missing required argument/],
    [['frobnicate'], '', /unknown command/],
  ];
  for (const [args, input, message] of cases) {
    const run = await users(args, input);
    t.not(run.code, 0, args.join(' '));
    t.match(run.stderr, message, args.join(' '));
  }
  await t.rejects(stat(file), { code: 'ENOENT' }, 'no file was made');
  const help = await users(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /add .*token .*remove .*list/s);
});

/** A terminal stand-in: isTTY, setRawMode recorded; what is written is what is typed. */
function fakeTerminal(): { stdin: PassThrough & UsersInput; modes: boolean[] } {
  const stdin = new PassThrough() as PassThrough & UsersInput;
  const modes: boolean[] = [];
  stdin.isTTY = true;
  stdin.setRawMode = (mode: boolean) => modes.push(mode);
  return { stdin, modes };
}

async function typed(args: string[], keys: string[]): Promise<Run & { modes: boolean[] }> {
  const { stdin, modes } = fakeTerminal();
  const stdout = new Collect();
  const stderr = new Collect();
  const running = runUsersCommand(args, { stdin, stdout, stderr, scrypt: FAST });
  for (const key of keys) {
    await new Promise((resolve) => setImmediate(resolve));
    stdin.write(key);
  }
  const code = await running;
  return { code, stdout: stdout.text, stderr: stderr.text, modes };
}

t.test('on a terminal: asked twice, raw mode (no echo), the line editing keys', async (t) => {
  const file = await tempFile(t);
  const run = await typed(['add', 'alice', '--file', file], ['s3', 'cret\r', 's3cret\r']);
  t.equal(run.code, 0, run.stderr);
  t.same(run.modes, [true, false], 'raw mode on, then off again');
  t.match(run.stderr, /password for alice: \nagain: \n/);
  t.notMatch(run.stderr + run.stdout, /s3cret/, 'nothing typed is written back');
  t.ok(await verifies(file, 'alice', 's3cret'));

  const edited = await typed(['add', 'bob', '--file', file], ['pwX\u007f', 'd\r', 'q\u0015pwd\n']);
  t.equal(edited.code, 0, 'backspace erases, Ctrl-U clears');
  t.ok(await verifies(file, 'bob', 'pwd'));
  const pasted = await typed(
    ['add', 'carol', '--file', file],
    ['tw\u00f6 w\u00f6rds\rtw\u00f6 w\u00f6rds\r'],
  );
  t.equal(pasted.code, 0, 'both lines at once (pasted)');
  t.ok(await verifies(file, 'carol', 'tw\u00f6 w\u00f6rds'));

  const before = await readFile(file, 'utf8');
  const differ = await typed(['add', 'alice', '--file', file], ['one\r', 'two\r']);
  t.equal(differ.code, 1);
  t.match(differ.stderr, /differ; nothing changed/);
  t.same(differ.modes, [true, false], 'raw mode off after a failure too');
  const empty = await typed(['add', 'alice', '--file', file], ['\r']);
  t.equal(empty.code, 1);
  t.match(empty.stderr, /password is empty/);
  const cancelled = await typed(['add', 'alice', '--file', file], ['abc\u0003']);
  t.equal(cancelled.code, 130, 'Ctrl-C');
  t.same(cancelled.modes, [true, false]);
  const eof = await typed(['add', 'alice', '--file', file], ['\u0004']);
  t.equal(eof.code, 130, 'Ctrl-D on an empty line');
  t.equal(await readFile(file, 'utf8'), before, 'none of these changed the file');
});

function childScript(): string {
  return (
    `import(${JSON.stringify(USERS_MODULE)}).then(async (m) => {` +
    ` process.exitCode = await m.runUsersCommand(process.argv.slice(1)); })`
  );
}

t.test('as a process: one line from a pipe that stays open, and it exits', async (t) => {
  const file = await tempFile(t);
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', childScript(), 'add', 'alice', '--file', file],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.stdin.write('from a pipe\n'); // and the pipe is not closed
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill();
      resolve(null);
    }, 20_000);
    child.on('exit', (exit) => {
      clearTimeout(timer);
      resolve(exit);
    });
  });
  child.stdin.destroy();
  t.equal(code, 0, `exited on its own (${stderr.trim()})`);
  t.equal(await mode(file), 0o600);
  const text = await readFile(file, 'utf8');
  t.match(text, /^alice:\$scrypt\$ln=17,r=8,p=1\$/, 'the production parameters by default');
  t.ok(await verifies(file, 'alice', 'from a pipe'));
});

const hasScript = await new Promise<boolean>((resolve) =>
  execFile('script', ['--version'], (error) => resolve(!error)),
);

t.test(
  'on a real terminal (script(1)): nothing typed is echoed',
  { skip: hasScript ? false : 'script(1) is not installed' },
  async (t) => {
    const file = await tempFile(t);
    const quote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
    const command = [
      process.execPath,
      '--input-type=module',
      '-e',
      childScript(),
      'add',
      'alice',
      '--file',
      file,
    ]
      .map(quote)
      .join(' ');
    const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    let output = '';
    const waitFor = (pattern: RegExp): Promise<boolean> =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 20_000);
        const check = (): void => {
          if (pattern.test(output)) {
            clearTimeout(timer);
            child.stdout.off('data', check);
            resolve(true);
          }
        };
        child.stdout.on('data', (chunk) => {
          output += chunk;
          check();
        });
        check();
      });
    const exited = new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill();
        resolve(null);
      }, 25_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    t.ok(await waitFor(/password for alice: /), 'the first prompt');
    child.stdin.write('t3rminal-pw\r');
    t.ok(await waitFor(/again: /), 'the second prompt');
    child.stdin.write('t3rminal-pw\r');
    t.equal(await exited, 0, output.replace(/\r/g, ''));
    t.notMatch(output, /t3rminal-pw/, 'the terminal showed no password');
    t.ok(await verifies(file, 'alice', 't3rminal-pw'));
  },
);
