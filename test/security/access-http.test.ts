/**
 * Accounts and permissions on the HTTP door, black-box on real sockets (access.md): Basic on
 * every request, 401 with `WWW-Authenticate: Basic realm="ioe", charset="UTF-8"` when an
 * account is needed, 403 DENIED for an account the rules refuse, the same answer whether or
 * not the name exists, `/api/list` filtered, `/api/whoami` and `/api/login`, PUT's check
 * order, and the rate limit (with a clock the test moves) counted across both doors.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import {
  accountLine,
  ask,
  basic,
  checkNoSecrets,
  codeOf,
  READABLE_BY,
  RULE_FILES,
  ruleAccountLines,
  startAccessServer,
  type AccessEnv,
  type RuleAccount,
} from '../helpers/access-env.js';
import {
  buildRequest,
  errorBody,
  HttpConn,
  mediaPath,
  type HttpResponse,
} from '../helpers/http-client.js';
import { eventually } from '../helpers/raw-client.js';

const REALM = 'Basic realm="ioe", charset="UTF-8"';
const PASSWORDS = {
  alice: 'alice-Http-Pw-31',
  bob: 'bob-Http-Pw-62',
  carol: 'carol-Http-Pw-93',
  dan: 'dan-Http-Pw-14',
  'ü-colon': 'pä:ss wörd',
};
const WRONG = ['wrong-Http-1', 'wrong-Http-2', 'wrong-Http-3', 'wrong-Http-4', 'wrong-Http-5'];

const WRITE_TARGETS: [string, RuleAccount[]][] = [
  ['music/uploads/w.mp3', ['alice', 'carol']],
  ['music/uploads/private/w.mp3', ['carol']],
  ['music/w.mp3', ['carol']],
  ['musicals/w.mp3', ['carol']],
  ['public/drop/w.jpg', ['anonymous', 'carol']],
  ['w.mp4', ['carol']],
];

const users = await ruleAccountLines(PASSWORDS);
const files = Object.fromEntries(RULE_FILES.map((name) => [name, `content of ${name}`]));
const env = await startAccessServer(t, { users, files });
const allLogs: string[][] = [env.log.lines];

function auth(who: RuleAccount): Record<string, string> {
  return who === 'anonymous' ? {} : { Authorization: basic(who, PASSWORDS[who]) };
}

function code(res: HttpResponse): string | undefined {
  return errorBody(res)?.code;
}

/** A refusal of a request that needs an account: 401, the realm, AUTH_REQUIRED. */
function checkAuthRequired(t: Test, res: HttpResponse, what: string, head = false): void {
  t.equal(res.status, 401, `${what}: 401`);
  t.equal(res.headers['www-authenticate'], REALM, `${what}: WWW-Authenticate`);
  if (!head) t.equal(code(res), 'AUTH_REQUIRED', `${what}: AUTH_REQUIRED`);
}

function checkDenied(t: Test, res: HttpResponse, what: string, head = false): void {
  t.equal(res.status, 403, `${what}: 403`);
  t.equal(res.headers['www-authenticate'], undefined, `${what}: no login asked for`);
  if (!head) t.equal(code(res), 'DENIED', `${what}: DENIED`);
}

t.test('/api/whoami and /api/login', async (t) => {
  let res = await env.http({ target: '/api/whoami' });
  t.equal(res.status, 200);
  t.same(JSON.parse(res.body.toString()), { name: 'anonymous', accounts: true });
  res = await env.http({ target: '/api/whoami', headers: auth('alice') });
  t.same(JSON.parse(res.body.toString()), { name: 'alice', accounts: true });
  res = await env.http({ target: '/api/login' });
  checkAuthRequired(t, res, 'login, anonymous');
  res = await env.http({ target: '/api/login', headers: auth('bob') });
  t.equal(res.status, 303, 'login with an account: back to the page');
  t.equal(res.headers.location, '/');
});

t.test('Basic: a wrong password and an unknown name get the same bytes', async (t) => {
  const wrong = await env.http(
    { target: '/api/whoami', headers: { Authorization: basic('alice', WRONG[0]) } },
    '127.0.9.1',
  );
  const unknown = await env.http(
    { target: '/api/whoami', headers: { Authorization: basic('nobody', WRONG[1]) } },
    '127.0.9.1',
  );
  t.equal(wrong.status, 401);
  t.equal(code(wrong), 'AUTH_FAILED');
  t.equal(wrong.headers['www-authenticate'], REALM, 'a failed login may be retried');
  t.equal(unknown.status, wrong.status);
  t.equal(unknown.body.toString(), wrong.body.toString(), 'the same body');
  // A name and password in UTF-8, with a colon in the password (RFC 7617: the first colon).
  const utf8 = await startAccessServer(t, {
    users: [await accountLine('u', PASSWORDS['ü-colon'], 'r=/')],
  });
  allLogs.push(utf8.log.lines);
  const ok = await utf8.http({
    target: '/api/whoami',
    headers: { Authorization: basic('u', PASSWORDS['ü-colon']) },
  });
  t.same(JSON.parse(ok.body.toString()), { name: 'u', accounts: true }, 'a UTF-8 password');
});

t.test('the prefix matrix: /api/list, GET, HEAD and PUT per account', async (t) => {
  const m = await startAccessServer(t, { users, files });
  allLogs.push(m.log.lines);
  const who: RuleAccount[] = ['anonymous', 'alice', 'bob', 'carol', 'dan'];
  for (const account of who) {
    const list = await m.http({ target: '/api/list', headers: auth(account) });
    t.equal(list.status, 200, `${account}: /api/list`);
    const names = (JSON.parse(list.body.toString()) as { entries: { name: string }[] }).entries;
    t.same(
      names.map((entry) => entry.name),
      READABLE_BY[account],
      `${account}: /api/list shows only what it may read`,
    );
    const m3u = await m.http({ target: '/api/list?format=m3u', headers: auth(account) });
    const hrefs = m3u.body
      .toString()
      .split('\n')
      .filter((line) => line.startsWith('http'));
    t.equal(hrefs.length, READABLE_BY[account].length, `${account}: the M3U too`);
    for (const name of RULE_FILES) {
      for (const method of ['GET', 'HEAD']) {
        const res = await m.http({ method, target: mediaPath(name), headers: auth(account) });
        const what = `${account} ${method} ${name}`;
        if (READABLE_BY[account].includes(name)) {
          t.equal(res.status, 200, what);
          if (method === 'GET') t.equal(res.body.toString(), files[name]);
        } else if (account === 'anonymous') {
          checkAuthRequired(t, res, what, method === 'HEAD');
        } else {
          checkDenied(t, res, what, method === 'HEAD');
        }
      }
    }
  }
  for (const account of who) {
    for (const [name, writers] of WRITE_TARGETS) {
      const target = name.replace(/w\.(\w+)$/, `w-${account}.$1`);
      const res = await m.http({
        method: 'PUT',
        target: mediaPath(target),
        headers: auth(account),
        body: 'hi',
      });
      const what = `${account} PUT ${target}`;
      if (writers.includes(account)) t.equal(res.status, 201, what);
      else if (account === 'anonymous') checkAuthRequired(t, res, what);
      else checkDenied(t, res, what);
      t.equal(await m.exists(target), writers.includes(account), `${what}: stored or not`);
    }
  }
});

t.test('a refusal never reveals whether the name exists', async (t) => {
  const pairs: [string, string][] = [
    ['music/a.mp3', 'music/none.mp3'],
    ['public/secret/s.jpg', 'public/secret/none.jpg'],
    ['musicals/c.mp3', 'musicals/none.mp3'],
  ];
  for (const account of ['anonymous', 'bob', 'dan'] as const) {
    for (const [existing, missing] of pairs) {
      if (READABLE_BY[account].includes(existing)) continue;
      for (const method of ['GET', 'HEAD']) {
        const a = await env.http({ method, target: mediaPath(existing), headers: auth(account) });
        const b = await env.http({ method, target: mediaPath(missing), headers: auth(account) });
        t.equal(a.status, account === 'anonymous' ? 401 : 403, `${account} ${method} ${existing}`);
        t.equal(b.status, a.status, `${account} ${method}: the same status for a missing name`);
        t.equal(b.body.toString(), a.body.toString(), `${account} ${method}: the same body`);
        const headers = (r: HttpResponse): string[] =>
          r.rawHeaders.filter(([name]) => !/^date$/i.test(name)).map(([n, v]) => `${n}: ${v}`);
        t.same(headers(b), headers(a), `${account} ${method}: the same header fields`);
      }
    }
  }
  const res = await env.http({ target: mediaPath('music/none.mp3'), headers: auth('alice') });
  t.equal(res.status, 404, 'readable and missing: 404');
});

/** Sends a PUT's head (and `body`, if any) and reads the answer, on a fresh connection. */
async function putHead(
  server: AccessEnv,
  target: string,
  who: RuleAccount,
  length: string,
  body = '',
): Promise<HttpResponse> {
  const conn = await HttpConn.connect(server.httpPort);
  try {
    const head = buildRequest(server.httpPort, {
      method: 'PUT',
      target,
      headers: { ...auth(who), 'Content-Length': length },
    });
    await conn.send(Buffer.concat([head, Buffer.from(body)]));
    return await conn.readResponse();
  } finally {
    conn.destroy();
  }
}

t.test('the PUT check order (access.md), two failures at a time', async (t) => {
  // Content-Length malformed · before AUTH_REQUIRED
  let res = await putHead(env, mediaPath('../bad.txt'), 'anonymous', '12x');
  t.equal(res.status, 400, 'a malformed length first');
  // name not UTF-8 · before AUTH_REQUIRED
  res = await putHead(env, '/media/music/%FF.mp3', 'anonymous', '2', 'hi');
  t.equal(res.status, 400, 'a name that is not UTF-8 before AUTH_REQUIRED');
  t.not(code(res), 'AUTH_REQUIRED');
  // AUTH_REQUIRED · before BAD_NAME, UNSUPPORTED_TYPE, EXISTS, NO_SPACE
  for (const [target, length] of [
    ['/media/music/.hidden.mp3', '2'],
    ['/media/music/a%2Fb.mp3', '2'],
    ['/media/music/a.txt', '2'],
    [mediaPath('music/a.mp3'), '2'],
    [mediaPath('music/huge.mp3'), String(2 ** 50)],
  ]) {
    res = await putHead(env, target, 'anonymous', length);
    checkAuthRequired(t, res, `anonymous PUT ${target} (${length})`);
  }
  // BAD_NAME / UNSUPPORTED_TYPE · before DENIED
  res = await putHead(env, '/media/music/.hidden.mp3', 'bob', '0');
  t.equal(res.status, 400, 'BAD_NAME before DENIED');
  t.equal(code(res), 'BAD_NAME');
  res = await putHead(env, '/media/music/n.txt', 'bob', '0');
  t.equal(res.status, 415, 'UNSUPPORTED_TYPE before DENIED');
  // DENIED · before EXISTS
  checkDenied(t, await putHead(env, mediaPath('music/a.mp3'), 'bob', '0'), 'DENIED before EXISTS');
  t.equal((await putHead(env, mediaPath('top.mp4'), 'carol', '0')).status, 409, '(carol: 409)');
  // DENIED · before LOCKED: carol holds an upload open on the TCP door
  const holder = await env.connect('127.0.9.2');
  t.equal(await ask(holder, `AUTH,carol,${PASSWORDS.carol}`), 'OK AUTH carol');
  await holder.send('WRITE,music/lock.mp3,10\nabc');
  await eventually(
    async () => (await env.files()).some((f) => f.includes('.ioe-upload')),
    'upload',
  );
  checkDenied(t, await putHead(env, mediaPath('music/lock.mp3'), 'bob', '0'), 'before LOCKED');
  t.equal((await putHead(env, mediaPath('music/lock.mp3'), 'carol', '0')).status, 423, '(423)');
  await holder.send('defghij');
  t.equal(codeOf(await holder.readLine()), 'OK');
  // DENIED · before NO_SPACE; EXISTS · before NO_SPACE
  const huge = String(2 ** 50);
  checkDenied(t, await putHead(env, mediaPath('music/huge.mp3'), 'bob', huge), 'before NO_SPACE');
  t.equal((await putHead(env, mediaPath('top.mp4'), 'carol', huge)).status, 409, 'EXISTS first');
  t.equal((await putHead(env, mediaPath('huge.mp4'), 'carol', huge)).status, 507, '(507)');
});

t.test('read-only and a size limit: 413 · 401 · READ_ONLY · BAD_NAME · DENIED', async (t) => {
  const ro = await startAccessServer(t, { users, files, readOnly: true, maxUpload: 1000 });
  allLogs.push(ro.log.lines);
  let res = await putHead(ro, mediaPath('music/x.mp3'), 'anonymous', '1001');
  t.equal(res.status, 413, 'too large before AUTH_REQUIRED');
  res = await putHead(ro, mediaPath('music/uploads/x.mp3'), 'anonymous', '2', 'hi');
  checkAuthRequired(t, res, 'AUTH_REQUIRED before READ_ONLY');
  res = await putHead(ro, mediaPath('public/drop/x.jpg'), 'anonymous', '2', 'hi');
  t.equal(res.status, 403, "anonymous's own rw is capped too");
  t.equal(code(res), 'READ_ONLY');
  for (const who of ['alice', 'bob', 'carol'] as const) {
    for (const target of ['/media/music/.h.mp3', mediaPath('music/a.mp3'), mediaPath('w.mp4')]) {
      res = await putHead(ro, target, who, '2', 'hi');
      t.equal(res.status, 403, `${who} PUT ${target}: 403`);
      t.equal(code(res), 'READ_ONLY', `${who} PUT ${target}: READ_ONLY first`);
    }
  }
  t.notOk(await ro.exists('w.mp4'));
});

t.test('the rate limit: 10 failures from one address over both doors', async (t) => {
  let now = Date.parse('2030-01-01T00:00:00Z');
  const rl = await startAccessServer(t, {
    // No anonymous line: anonymous may read nothing.
    users: [await accountLine('alice', PASSWORDS.alice, 'r=/')],
    files: { 'a.mp3': 'a' },
    authenticator: { now: () => now },
  });
  allLogs.push(rl.log.lines);
  const from = '127.0.10.1';
  const tcpAuth = async (password: string, name = 'alice', address = from) => {
    const c = await rl.connect(address);
    const reply = await ask(c, `AUTH,${name},${password}`);
    return { c, reply };
  };
  const httpAuth = (password: string, address = from, name = 'alice') =>
    rl.http({ target: '/api/whoami', headers: { Authorization: basic(name, password) } }, address);

  // anonymous may read nothing here: LIST needs an account on both doors
  checkAuthRequired(t, await rl.http({ target: '/api/list' }), 'anonymous /api/list');
  const anon = await rl.connect(from);
  t.equal(codeOf(await ask(anon, 'LIST')), 'AUTH_REQUIRED', 'anonymous LIST');

  // 1-3 on TCP (the third closes), 4-6 on HTTP, 7-9 on TCP with an unknown name, 10 on HTTP
  const c1 = await rl.connect(from);
  for (const password of WRONG.slice(0, 3)) {
    t.equal(codeOf(await ask(c1, `AUTH,alice,${password}`)), 'AUTH_FAILED');
  }
  await c1.waitClose(2000);
  for (const password of WRONG.slice(0, 3)) {
    const res = await httpAuth(password);
    t.equal(res.status, 401);
    t.equal(code(res), 'AUTH_FAILED');
  }
  const c2 = await rl.connect(from);
  for (const password of WRONG.slice(0, 3)) {
    t.equal(codeOf(await ask(c2, `AUTH,nobody,${password}`)), 'AUTH_FAILED');
  }
  await c2.waitClose(2000);
  let res = await httpAuth(WRONG[4]);
  t.equal(code(res), 'AUTH_FAILED', 'the 10th failure is still answered AUTH_FAILED');

  // The 11th AUTH, right or wrong, either door: RATE_LIMITED
  let tcp = await tcpAuth(PASSWORDS.alice);
  t.match(tcp.reply, /^ERR RATE_LIMITED \S/, 'TCP, the right password: RATE_LIMITED');
  t.equal((await tcp.c.waitClose(2000)).length, 0, 'and the connection closes');
  res = await httpAuth(PASSWORDS.alice);
  t.equal(res.status, 429, 'HTTP, the right password: 429');
  t.equal(code(res), 'RATE_LIMITED');
  t.equal(res.headers['retry-after'], '600', 'Retry-After: the 10 minutes');
  res = await httpAuth(WRONG[0]);
  t.equal(res.status, 429, 'a wrong password: 429 too');

  // Another address is not limited: accounts are never locked globally.
  tcp = await tcpAuth(PASSWORDS.alice, 'alice', '127.0.10.2');
  t.equal(tcp.reply, 'OK AUTH alice', 'the same account from another address');
  t.equal((await httpAuth(PASSWORDS.alice, '127.0.10.2')).status, 200);

  // Just under 10 minutes: still limited; the RATE_LIMITED answers did not extend it.
  now += 10 * 60_000 - 1000;
  tcp = await tcpAuth(PASSWORDS.alice);
  t.equal(codeOf(tcp.reply), 'RATE_LIMITED', '9:59 later: still RATE_LIMITED');
  res = await httpAuth(PASSWORDS.alice);
  t.equal(res.status, 429);
  t.equal(res.headers['retry-after'], '1', 'Retry-After counts down');
  now += 2000;
  tcp = await tcpAuth(PASSWORDS.alice);
  t.equal(tcp.reply, 'OK AUTH alice', '10 quiet minutes after the last failure: TCP again');
  t.equal((await httpAuth(PASSWORDS.alice)).status, 200, 'and HTTP');

  // Failures older than 10 minutes do not count.
  const other = '127.0.10.3';
  for (let i = 0; i < 9; i++) {
    if (i % 2) t.equal((await httpAuth(WRONG[i % 5], other)).status, 401);
    else t.equal(codeOf((await tcpAuth(WRONG[i % 5], 'alice', other)).reply), 'AUTH_FAILED');
  }
  now += 10 * 60_000 + 1000;
  t.equal(codeOf((await tcpAuth(WRONG[0], 'alice', other)).reply), 'AUTH_FAILED');
  t.equal((await tcpAuth(PASSWORDS.alice, 'alice', other)).reply, 'OK AUTH alice', 'not limited');
  const warn = rl.log.auths.filter((r) => r.result === 'RATE_LIMITED');
  t.ok(warn.length >= 4 && warn.every((r) => r.level === 40), 'RATE_LIMITED logged at warn');
});

t.test(
  'every AUTH outcome is logged with the account and the peer; failures at warn',
  async (t) => {
    // A fresh server, so that the first success is not answered from the success cache.
    const fresh = await startAccessServer(t, { users });
    allLogs.push(fresh.log.lines);
    const whoami = (authorization: string) =>
      fresh.http({ target: '/api/whoami', headers: { Authorization: authorization } });
    await whoami(basic('dan', WRONG[3]));
    await whoami(basic('dan', PASSWORDS.dan));
    await whoami(basic('dan', PASSWORDS.dan)); // the success cache answers this one
    const lines = fresh.log.auths;
    t.same(
      lines.map((r) => [r.account, r.result, r.level, r.door]),
      [
        ['dan', 'AUTH_FAILED', 40, 'http'],
        ['dan', 'OK', 30, 'http'],
        // access.ts: a success from the cache is logged at debug; the request line names
        // the account and the peer at info (checked below)
        ['dan', 'OK', 20, 'http'],
      ],
      'each outcome: the failure at warn',
    );
    t.ok(
      lines.every((r) => /^127\.0\.0\.1:\d+$/.test(String(r.peer))),
      'the peer, with its port',
    );
    const requests = fresh.log.records.filter((r) => r.msg === 'request');
    t.same(
      requests.map((r) => [r.account, r.status, r.level]),
      [
        [undefined, 401, 30],
        ['dan', 200, 30],
        ['dan', 200, 30],
      ],
      'each request line names its account',
    );
  },
);

t.test('no password appears in any log line', async (t) => {
  const secrets = [...Object.values(PASSWORDS), ...WRONG];
  checkNoSecrets(t, allLogs.flat(), secrets, 'the HTTP tests');
  const sha = createHash('sha256').update(PASSWORDS.alice).digest('hex');
  checkNoSecrets(t, allLogs.flat(), [sha], 'no fast hash of a password either');
});
