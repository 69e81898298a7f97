/**
 * The ioe-server executable with accounts (access.md), black-box: SIGHUP with a good file
 * (open connections judged by the new rules from their next command, a removed account
 * anonymous) and with broken ones (the old accounts stay, the reason logged), the `users`
 * command end to end against the running server, `--read-only` capping everyone and saying
 * so, protected mode and `--public`, the start refusals, and the log: every AUTH outcome with
 * the account and the peer, failures at warn, and no password or token on any line.
 * `npm test` builds dist/ first; run `npm run build` before running this file alone.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  accountLine,
  ask,
  basic,
  checkNoSecrets,
  codeOf,
  credential,
  launchServer,
  nonLoopbackAddress,
  readList,
  runUsers,
  SERVER,
  tempDir,
  writeUsersFile,
  type Cli,
} from '../helpers/access-env.js';
import { HttpConn, buildRequest, mediaPath, type HttpResponse } from '../helpers/http-client.js';
import { RawClient } from '../helpers/raw-client.js';

const PASSWORDS = {
  alice: 'alice-Srv-Pw-101',
  bob: 'bob-Srv-Pw-202',
  carol: 'carol-Srv-Pw-303',
  dave: 'dave-Srv-Pw-404',
};
const WRONG = 'wrong-Srv-Pw-505';
const PLAIN_IN_FILE = 'plain-text-Pw-606';
/** Everything that must never reach a log line; tokens are added as they are made. */
const secrets: string[] = [...Object.values(PASSWORDS), WRONG, PLAIN_IN_FILE];
const outputs: string[] = [];

const FILES: Record<string, string> = {
  'music/a.mp3': 'aaaa',
  'top.mp4': 'tttttt',
  'public/p.jpg': 'pp',
};

async function mediaRoot(t: Test): Promise<string> {
  const root = join(await tempDir(t, 'ioe-access-srv-'), 'media');
  for (const [name, data] of Object.entries(FILES)) {
    await mkdir(join(root, name, '..'), { recursive: true });
    await writeFile(join(root, name), data);
  }
  return root;
}

async function connect(cli: Cli, account?: keyof typeof PASSWORDS): Promise<RawClient> {
  const c = await RawClient.connect(cli.tcpPort, '127.0.0.1');
  if (account) {
    const reply = await ask(c, `AUTH,${account},${PASSWORDS[account]}`);
    if (reply !== `OK AUTH ${account}`) throw new Error(`AUTH ${account}: ${reply}`);
  }
  return c;
}

async function get(cli: Cli, target: string, authorization?: string): Promise<HttpResponse> {
  const conn = await HttpConn.connect(cli.httpPort!);
  try {
    const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
    await conn.send(buildRequest(cli.httpPort!, { target, headers }));
    return await conn.readResponse();
  } finally {
    conn.destroy();
  }
}

/** READ's reply code, reading the bytes of an OK. */
async function read(c: RawClient, name: string): Promise<string> {
  const reply = await ask(c, `READ,${name}`);
  if (reply.startsWith('OK ')) await c.readBytes(Number(reply.slice(3)));
  return codeOf(reply);
}

t.test('SIGHUP: new rules from the next command, removed accounts, broken files', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'users');
  // alice keeps her credential text across the edits (a new one would end her session).
  const alice = await credential(PASSWORDS.alice);
  await writeUsersFile(file, [
    'anonymous::r=/public',
    `alice:${alice}:r=/music`,
    await accountLine('bob', PASSWORDS.bob, 'r=/'),
  ]);
  const cli = await launchServer(t, ['--users', file], { root: await mediaRoot(t) });
  t.teardown(() => void outputs.push(cli.stdout(), cli.stderr()));
  const a = await connect(cli, 'alice');
  const b = await connect(cli, 'bob');
  const peer = (c: RawClient): string => `127.0.0.1:${c.socket.localPort}`;
  const [pa, pb] = [peer(a), peer(b)];
  t.equal(await read(a, 'music/a.mp3'), 'OK');
  t.equal(await read(a, 'top.mp4'), 'DENIED');
  t.equal(await read(b, 'top.mp4'), 'OK');
  t.equal((await get(cli, mediaPath('top.mp4'), basic('bob', PASSWORDS.bob))).status, 200);

  // alice: now everything but /music; bob removed.
  await writeUsersFile(file, ['anonymous::r=/public', `alice:${alice}:r=/,-=/music`]);
  const reload = await cli.sighup();
  t.match(reload, { msg: 'accounts reloaded', accounts: 1 }, 'reloaded: one account');
  t.equal(await read(a, 'music/a.mp3'), 'DENIED', "alice's open connection: the new rules");
  t.equal(await read(a, 'top.mp4'), 'OK');
  t.equal(await ask(a, 'WHOAMI'), 'OK WHOAMI alice');
  t.equal(await ask(b, 'WHOAMI'), 'OK WHOAMI anonymous', "bob's connection: anonymous now");
  t.equal(await read(b, 'top.mp4'), 'AUTH_REQUIRED', 'with anonymous rules');
  t.equal(await read(b, 'public/p.jpg'), 'OK');
  t.equal(codeOf(await ask(b, `AUTH,bob,${PASSWORDS.bob}`)), 'AUTH_FAILED', 'bob is gone');
  const http = await get(cli, mediaPath('top.mp4'), basic('bob', PASSWORDS.bob));
  t.equal(http.status, 401, 'HTTP: bob is gone too (no cached success)');

  // A malformed line: all or nothing, the old accounts stay.
  await writeUsersFile(file, [
    'anonymous::r=/',
    `alice:${PLAIN_IN_FILE}:r=/`,
    await accountLine('bob', PASSWORDS.bob, 'r=/'),
  ]);
  const broken = await cli.sighup();
  t.match(broken, { level: 50, msg: 'accounts not reloaded; the previous accounts stay in force' });
  t.match(String(broken.reason), /line 2/, `the reason names the line: ${broken.reason}`);
  t.equal(await read(a, 'music/a.mp3'), 'DENIED', 'the rules in force stay');
  t.equal(await read(a, 'top.mp4'), 'OK');
  t.equal(codeOf(await ask(b, `AUTH,bob,${PASSWORDS.bob}`)), 'AUTH_FAILED', 'no half file');
  const a2 = await connect(cli);
  const pa2 = peer(a2);
  t.equal(await ask(a2, `AUTH,alice,${PASSWORDS.alice}`), 'OK AUTH alice');
  t.equal(await read(a2, 'public/p.jpg'), 'OK');

  // A file others may read: refused the same way.
  await writeUsersFile(file, [await accountLine('bob', PASSWORDS.bob, 'r=/')]);
  await chmod(file, 0o644);
  const open = await cli.sighup();
  t.match(open, { level: 50 });
  t.match(String(open.reason), /mode 0644/, `the reason: ${open.reason}`);
  t.equal(codeOf(await ask(b, `AUTH,bob,${PASSWORDS.bob}`)), 'AUTH_FAILED', 'still refused');
  t.equal(await ask(a, 'WHOAMI'), 'OK WHOAMI alice');

  // Every AUTH outcome so far, with the account and the peer; failures at warn. (The log
  // reaches us by a pipe, the replies by the socket: wait for the last line.)
  await cli.waitLog((r) => r.msg === 'auth', 7);
  const auths = cli.logs().filter((r) => r.msg === 'auth');
  const outcomes = auths.map((r) => [r.door, r.account, r.result, r.level, r.peer]);
  t.same(
    outcomes.filter(([door]) => door === 'tcp'),
    [
      ['tcp', 'alice', 'OK', 30, pa],
      ['tcp', 'bob', 'OK', 30, pb],
      ['tcp', 'bob', 'AUTH_FAILED', 40, pb],
      ['tcp', 'bob', 'AUTH_FAILED', 40, pb],
      ['tcp', 'alice', 'OK', 30, pa2],
      ['tcp', 'bob', 'AUTH_FAILED', 40, pb],
    ],
    'every TCP AUTH outcome, in order',
  );
  t.same(
    outcomes.filter(([door]) => door === 'http').map((o) => o.slice(0, 4)),
    [['http', 'bob', 'AUTH_FAILED', 40]],
    "the HTTP failure (its success came from the cache of bob's TCP login: logged at debug)",
  );
  t.ok(
    cli.logs().some((r) => r.msg === 'request' && r.account === 'bob' && r.status === 200),
    'the HTTP success: its request line names the account',
  );
});

t.test('the users command against a running server, with SIGHUP', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'users');
  await writeUsersFile(file, [
    '# kept as written',
    await accountLine('alice', PASSWORDS.alice, 'r=/'),
  ]);
  const cli = await launchServer(t, ['--users', file], { root: await mediaRoot(t) });
  t.teardown(() => void outputs.push(cli.stdout(), cli.stderr()));

  const add = await runUsers(
    ['add', 'carol', '--rules', 'rw=/uploads,r=/music', '--file', file],
    `${PASSWORDS.carol}\n`,
  );
  t.equal(add.code, 0, `users add: ${add.stderr.trim()}`);
  outputs.push(add.stdout, add.stderr);
  t.equal((await stat(file)).mode & 0o777, 0o600, 'the file stays 0600');
  const text = await readFile(file, 'utf8');
  t.match(text, /^# kept as written$/m, 'comments kept');
  t.match(text, /^carol:\$scrypt\$ln=\d+,r=\d+,p=\d+\$[^$]+\$[^$:]+:rw=\/uploads,r=\/music$/m);
  t.notMatch(text, PASSWORDS.carol, 'the password is not in the file');
  t.equal(codeOf(await ask(await connect(cli), `AUTH,carol,${PASSWORDS.carol}`)), 'AUTH_FAILED');
  await cli.sighup();
  const c = await connect(cli, 'carol');
  await c.send('WRITE,uploads/new.mp3,3\nabc');
  t.equal(codeOf(await c.readLine()), 'OK', 'carol may write where her rules say');
  t.equal(await read(c, 'top.mp4'), 'DENIED');

  const token = await runUsers(['token', 'tok', '--rules', 'r=/music', '--file', file]);
  t.equal(token.code, 0, `users token: ${token.stderr.trim()}`);
  outputs.push(token.stderr);
  const value = token.stdout.trim();
  t.match(value, /^[A-Za-z0-9_-]{43}$/, 'one token of 32 random bytes, printed once');
  secrets.push(value);
  t.notMatch(await readFile(file, 'utf8'), value, 'stored only as a hash');
  await cli.sighup();
  const k = await RawClient.connect(cli.tcpPort, '127.0.0.1');
  t.equal(await ask(k, `AUTH,tok,${value}`), 'OK AUTH tok', 'the token is a password on TCP');
  t.same(await (k.send('LIST\n'), readList(k)), ['music/a.mp3'], 'with its rules');
  t.equal((await get(cli, mediaPath('music/a.mp3'), basic('tok', value))).status, 200, 'HTTP');
  t.equal((await get(cli, mediaPath('top.mp4'), basic('tok', value))).status, 403, 'DENIED');

  const list = await runUsers(['list', '--file', file]);
  t.equal(list.code, 0);
  outputs.push(list.stdout, list.stderr);
  t.same(
    list.stdout.trim().split('\n').sort(),
    ['alice\tr=/', 'carol\trw=/uploads,r=/music', 'tok\tr=/music'],
    'names and rules',
  );
  t.notMatch(list.stdout, /\$scrypt\$/, 'never credentials');

  const remove = await runUsers(['remove', 'carol', '--file', file]);
  t.equal(remove.code, 0, `users remove: ${remove.stderr.trim()}`);
  outputs.push(remove.stdout, remove.stderr);
  await cli.sighup();
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous', "carol's open connection: anonymous");
  t.equal(codeOf(await ask(c, 'WRITE,uploads/later.mp3,3')), 'AUTH_REQUIRED', 'may not write');
  t.equal(await ask(k, 'WHOAMI'), 'OK WHOAMI tok', 'the others stay');
});

t.test('--read-only caps every account and says so at start and on reload', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'users');
  await writeUsersFile(file, [await accountLine('carol', PASSWORDS.carol, 'rw=/')]);
  const cli = await launchServer(t, ['--users', file, '--read-only'], {
    root: await mediaRoot(t),
  });
  t.teardown(() => void outputs.push(cli.stdout(), cli.stderr()));
  // stderr comes by its own pipe: wait for the start warnings, bounded.
  await cli.waitLog((r) => r.msg === '--read-only: every account may read at most');
  const warnings = cli
    .logs()
    .filter((r) => r.level === 40)
    .map((r) => String(r.msg));
  t.ok(warnings.includes('--read-only caps the rw rules of carol to r'), 'names the account');
  t.ok(
    warnings.some((w) => /read-only/.test(w) && /every account/.test(w)),
    'and the cap',
  );
  const c = await connect(cli, 'carol');
  await c.send('WRITE,new.mp3,2\nhi');
  t.equal(codeOf(await c.readLine()), 'READ_ONLY', 'carol (rw=/) may not write');
  t.equal(await read(c, 'top.mp4'), 'OK', 'but reads');
  const conn = await HttpConn.connect(cli.httpPort!);
  await conn.send(
    buildRequest(cli.httpPort!, {
      method: 'PUT',
      target: mediaPath('new.mp3'),
      headers: { Authorization: basic('carol', PASSWORDS.carol) },
      body: 'hi',
    }),
  );
  const put = await conn.readResponse();
  conn.destroy();
  t.equal(put.status, 403, 'PUT: 403');
  t.match(put.body.toString(), /READ_ONLY/);

  await writeUsersFile(file, [
    await accountLine('carol', PASSWORDS.carol, 'rw=/'),
    await accountLine('dave', PASSWORDS.dave, 'rw=/'),
  ]);
  await cli.sighup();
  await cli.waitLog((r) => r.msg === '--read-only caps the rw rules of dave to r');
  const d = await connect(cli, 'dave');
  await d.send('WRITE,new.mp3,2\nhi');
  t.equal(codeOf(await d.readLine()), 'READ_ONLY', 'a reloaded account is capped too');
});

t.test('protected mode and --public on the executable', async (t) => {
  const remote = await nonLoopbackAddress(t);
  const guarded = await launchServer(t, ['--host', '0.0.0.0'], { root: await mediaRoot(t) });
  t.teardown(() => void outputs.push(guarded.stdout(), guarded.stderr()));
  t.match(guarded.stdout(), /protected mode/, 'says so on stdout');
  const far = await RawClient.connect(guarded.tcpPort, remote, remote);
  const refusal = await far.readLine();
  t.match(refusal, /^ERR PROTECTED .*users add.*--public/, `from ${remote}: ${refusal}`);
  t.equal((await far.waitClose(2000)).length, 0, 'and closed');
  const farHttp = await HttpConn.connect(guarded.httpPort!, remote, remote);
  await farHttp.send(buildRequest(guarded.httpPort!, { target: '/api/list' }));
  const res = await farHttp.readResponse();
  farHttp.destroy();
  t.equal(res.status, 403, 'HTTP: 403');
  t.match(res.body.toString(), /PROTECTED/);
  const near = await RawClient.connect(guarded.tcpPort, '127.0.0.1');
  t.same(
    await (near.send('LIST\n'), readList(near)),
    ['music/a.mp3', 'public/p.jpg', 'top.mp4'],
    'a loopback client is served',
  );
  near.destroy();

  const open = await launchServer(t, ['--host', '0.0.0.0', '--public'], {
    root: await mediaRoot(t),
  });
  t.teardown(() => void outputs.push(open.stdout(), open.stderr()));
  await open.waitLog((r) => r.level === 40 && /--public/.test(String(r.msg)));
  t.pass('a warning in the log at start');
  t.notMatch(open.stdout(), /protected mode/);
  const other = await RawClient.connect(open.tcpPort, remote, remote);
  t.same(await (other.send('LIST\n'), readList(other)), ['music/a.mp3', 'public/p.jpg', 'top.mp4']);
  other.destroy();
});

/** Runs the server expecting it to refuse to start; resolves with its exit code and output. */
function refusedStart(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVER, '--port', '0', '--no-http', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not exit: ${output}`));
    }, 10_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

t.test('the server refuses to start on an unsafe or malformed accounts file', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'media');
  const file = join(dir, 'users');
  await writeUsersFile(file, [await accountLine('alice', PASSWORDS.alice, 'r=/')]);
  await chmod(file, 0o640);
  let result = await refusedStart(['--root', root, '--users', file]);
  t.not(result.code, 0, 'mode 0640: refused');
  t.match(result.output, /0640/);
  t.notMatch(result.output, /listening on/);
  outputs.push(result.output);

  await writeUsersFile(file, [
    '# comment',
    await accountLine('alice', PASSWORDS.alice, 'r=/'),
    `bob:${PLAIN_IN_FILE}:r=/`,
  ]);
  result = await refusedStart(['--root', root, '--users', file]);
  t.not(result.code, 0, 'a plain password: refused');
  t.match(result.output, /line 3/, 'the message names the line');
  t.notMatch(result.output, PLAIN_IN_FILE, 'never the secret');
  outputs.push(result.output);
});

t.test('no password or token on any line the server or the tool wrote', async (t) => {
  const lines = outputs.flatMap((text) => text.split('\n'));
  t.ok(lines.length > 50, `${lines.length} lines`);
  checkNoSecrets(t, lines, secrets, 'stdout and stderr');
});
