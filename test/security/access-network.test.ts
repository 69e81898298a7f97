/**
 * What a client on another machine meets (access.md, "Protected mode" and TLS_REQUIRED), on
 * real sockets from a non-loopback address of this machine (127.0.0.0/8 is loopback, so the
 * test finds, or adds, an address outside it; it fails rather than skip when it cannot):
 * - no accounts and a non-loopback bind: `ERR PROTECTED <how to fix>` on connect and closed,
 *   HTTP 403; loopback clients are still served; `--public` opts out;
 * - a password in clear from a non-loopback address: TLS_REQUIRED, the connection stays, the
 *   password is not checked and nothing is counted; `--insecure-auth` accepts it.
 */
import t from 'tap';
import { deriveKey } from '../../lib/accounts.js';
import type { DeriveKey } from '../../lib/authenticator.js';
import {
  accountLine,
  ask,
  basic,
  checkNoSecrets,
  codeOf,
  nonLoopbackAddress,
  readList,
  startAccessServer,
} from '../helpers/access-env.js';
import { buildRequest, errorBody, HttpConn } from '../helpers/http-client.js';

const PASSWORD = 'alice-Net-Pw-77';
const WRONG = 'wrong-Net-Pw-78';
const remote = await nonLoopbackAddress(t);
if (remote.startsWith('127.')) throw new Error(`${remote} is loopback`);

let derives = 0;
const countingDerive: DeriveKey = (password, salt, keyLength, params) => {
  derives++;
  return deriveKey(password, salt, keyLength, params);
};

const users = ['anonymous::r=/public', await accountLine('alice', PASSWORD, 'rw=/')];
const files = { 'public/p.jpg': 'p', 'private/q.jpg': 'q' };
const logs: string[][] = [];

/** One HTTP request from `from` to `host`; also says whether the server then closed. */
async function httpFrom(
  port: number,
  host: string,
  from: string,
  headers = {},
  expectClose = false,
) {
  const conn = await HttpConn.connect(port, host, from);
  try {
    await conn.send(buildRequest(port, { target: '/api/list', headers }));
    const res = await conn.readResponse();
    // Only where a close is expected (a kept-alive connection would wait in vain).
    let closed = false;
    if (expectClose) {
      closed = await conn.waitClose(1500).then(
        () => true,
        () => false,
      );
    }
    return { res, closed };
  } finally {
    conn.destroy();
  }
}

t.test('protected mode: no accounts, a non-loopback bind', async (t) => {
  t.comment(`the non-loopback client connects from ${remote}`);
  const env = await startAccessServer(t, { host: '0.0.0.0', files });
  logs.push(env.log.lines);
  t.ok(env.access.protectedMode, 'in protected mode');

  const c = await env.connect(remote);
  const reply = await c.readLine();
  t.match(reply, /^ERR PROTECTED \S/, 'ERR PROTECTED on connect, before any command');
  t.match(reply, /ioe-server users add/, 'says how to add an account');
  t.match(reply, /--public/, 'and how to share on purpose');
  await c.send('LIST\n').catch(() => undefined);
  t.equal((await c.waitClose(2000)).length, 0, 'closed; nothing else answered');

  const { res, closed } = await httpFrom(env.httpPort, remote, remote, {}, true);
  t.equal(res.status, 403, 'HTTP: 403');
  t.equal(errorBody(res)?.code, 'PROTECTED');
  t.match(errorBody(res)?.message ?? '', /users add/);
  t.ok(closed, 'HTTP: and the connection is closed');

  // Loopback clients are served as in v1: everything.
  const local = await env.connect('127.0.0.1');
  t.same(await (local.send('LIST\n'), readList(local)), ['private/q.jpg', 'public/p.jpg']);
  await local.send('WRITE,new.mp3,2\nhi');
  t.equal(codeOf(await local.readLine()), 'OK', 'a loopback client may write');
  const other = await env.connect('127.0.0.9');
  t.equal(await ask(other, 'WHOAMI'), 'OK WHOAMI anonymous', 'any 127.x address is loopback');
  const http = await httpFrom(env.httpPort, '127.0.0.1', '127.0.0.1');
  t.equal(http.res.status, 200, 'HTTP from loopback: 200');
});

t.test('--public: no protected mode, everyone may do everything', async (t) => {
  const env = await startAccessServer(t, { host: '0.0.0.0', public: true, files });
  logs.push(env.log.lines);
  t.notOk(env.access.protectedMode);
  t.match(env.access.startWarnings().join('\n'), /--public/, 'a warning for the start log');
  const c = await env.connect(remote);
  t.same(await (c.send('LIST\n'), readList(c)), ['private/q.jpg', 'public/p.jpg']);
  await c.send('WRITE,remote.mp3,2\nhi');
  t.equal(codeOf(await c.readLine()), 'OK');
  t.equal((await httpFrom(env.httpPort, remote, remote)).res.status, 200);
});

t.test('accounts on a non-loopback bind: no protected mode, anonymous rules', async (t) => {
  const env = await startAccessServer(t, { host: '0.0.0.0', users, files });
  logs.push(env.log.lines);
  const c = await env.connect(remote);
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous', 'served');
  t.same(await (c.send('LIST\n'), readList(c)), ['public/p.jpg'], "anonymous's rules");
});

t.test('a password in clear from a non-loopback address: TLS_REQUIRED', async (t) => {
  const env = await startAccessServer(t, {
    host: '0.0.0.0',
    users,
    files,
    authenticator: { derive: countingDerive, successCacheMs: 0 },
  });
  logs.push(env.log.lines);
  const before = derives;
  const c = await env.connect(remote);
  // More than 3 (the per-connection close) and more than 10 (the rate limit).
  for (let i = 0; i < 12; i++) {
    const password = i % 2 ? PASSWORD : WRONG;
    t.match(
      await ask(c, `AUTH,alice,${password}`),
      /^ERR TLS_REQUIRED \S/,
      `AUTH #${i + 1} (${i % 2 ? 'right' : 'wrong'}): TLS_REQUIRED`,
    );
  }
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous', 'the connection stays, anonymous');
  t.equal(derives, before, 'the password was never checked');
  t.notOk(env.access.authenticator.limiter.isLimited(remote), 'and nothing counted');

  const { res } = await httpFrom(env.httpPort, remote, remote, {
    Authorization: basic('alice', PASSWORD),
  });
  t.equal(res.status, 403, 'HTTP Basic in clear: 403');
  t.equal(errorBody(res)?.code, 'TLS_REQUIRED');
  t.equal(derives, before, 'not checked either');
  const anon = await httpFrom(env.httpPort, remote, remote);
  t.equal(anon.res.status, 200, 'without credentials: served as anonymous');

  // From loopback the same password in clear is fine.
  const local = await env.connect('127.0.0.1');
  t.equal(await ask(local, `AUTH,alice,${PASSWORD}`), 'OK AUTH alice', 'loopback: clear is fine');
  t.ok(derives > before);

  const lines = env.log.auths.filter((r) => r.result === 'TLS_REQUIRED');
  t.ok(lines.length >= 13, 'each TLS_REQUIRED is logged');
  t.ok(
    lines.every(
      (r) => r.level === 40 && r.account === 'alice' && String(r.peer).startsWith(remote),
    ),
    'at warn, with the account and the peer',
  );
});

t.test('--insecure-auth: a password in clear is accepted from anywhere', async (t) => {
  const env = await startAccessServer(t, { host: '0.0.0.0', users, files, insecureAuth: true });
  logs.push(env.log.lines);
  const c = await env.connect(remote);
  t.equal(await ask(c, `AUTH,alice,${PASSWORD}`), 'OK AUTH alice');
  t.same(await (c.send('LIST\n'), readList(c)), ['private/q.jpg', 'public/p.jpg']);
  t.equal(codeOf(await ask(c, `AUTH,alice,${WRONG}`)), 'AUTH_FAILED', 'and checked');
  const { res } = await httpFrom(env.httpPort, remote, remote, {
    Authorization: basic('alice', PASSWORD),
  });
  t.equal(res.status, 200);
  t.match(env.access.startWarnings().join('\n'), /--insecure-auth/, 'with a start warning');
});

t.test('no password appears in any log line', async (t) => {
  checkNoSecrets(t, logs.flat(), [PASSWORD, WRONG], 'the non-loopback tests');
});
