/**
 * Accounts and permissions on the TCP door, black-box on real sockets (access.md): AUTH and
 * WHOAMI, the replies of pipelined commands behind an AUTH still being checked, a WRITE from
 * a client with no account (its payload never read), the third failure closing, the prefix
 * rules (`/music` is not `/musicals`, nested `-`, anonymous), refusals that never reveal
 * whether a name exists, the WRITE check order, and the cross-protocol defence.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { deriveKey } from '../../lib/accounts.js';
import type { DeriveKey } from '../../lib/authenticator.js';
import {
  accountLine,
  ask,
  checkNoSecrets,
  codeOf,
  READABLE_BY,
  RULE_FILES,
  readList,
  ruleAccountLines,
  startAccessServer,
  type AccessEnv,
} from '../helpers/access-env.js';
import { eventually, sleep } from '../helpers/raw-client.js';

const PASSWORDS = {
  alice: 'alice-Pw-7731',
  bob: 'bob-Pw-9904',
  carol: 'carol-Pw-1258',
  dan: 'dan-Pw-4410',
  comma: 'a,b,,c,',
};
const WRONG = ['wrong-Pw-0001', 'wrong-Pw-0002', 'wrong-Pw-0003', 'wrong-Pw-0004'];
/** A password typed into the name field by mistake (`AUTH,<password>,…`). */
const NAME_TYPO = 'hunter2 Typo-Pw-5150';

/** New names to write, and who may (rw). */
const WRITE_TARGETS: [string, string[]][] = [
  ['music/uploads/w.mp3', ['alice', 'carol']],
  ['music/uploads/deep/w.mp3', ['alice', 'carol']],
  ['music/uploads/private/w.mp3', ['carol']],
  ['music/w.mp3', ['carol']],
  ['musicals/w.mp3', ['carol']],
  ['public/drop/w.jpg', ['anonymous', 'carol']],
  ['public/w.jpg', ['carol']],
  ['w.mp4', ['carol']],
];

let delayMs = 0;
let derives = 0;
let running = 0;
let mostAtOnce = 0;
/** The real scrypt, slowed on demand so a pipelined command can overtake a slow check. */
const slowDerive: DeriveKey = async (password, salt, keyLength, params) => {
  derives++;
  running++;
  mostAtOnce = Math.max(mostAtOnce, running);
  try {
    if (delayMs > 0) await sleep(delayMs);
    return await deriveKey(password, salt, keyLength, params);
  } finally {
    running--;
  }
};

async function usersLines(): Promise<string[]> {
  return [
    '# black-box test accounts',
    ...(await ruleAccountLines(PASSWORDS)),
    await accountLine('comma', PASSWORDS.comma, 'r=/top.mp4'),
  ];
}

const users = await usersLines();
const files = Object.fromEntries(RULE_FILES.map((name) => [name, `content of ${name}`]));

async function start(
  test: Test,
  options: { readOnly?: boolean; maxUpload?: number } = {},
): Promise<AccessEnv> {
  return startAccessServer(test, {
    users,
    files,
    ...options,
    authenticator: { derive: slowDerive, successCacheMs: 0 },
  });
}

const env = await start(t);

/** A client from its own loopback address (failures count per address), logged in or not. */
async function client(from: string, account?: keyof typeof PASSWORDS, server = env) {
  const c = await server.connect(from);
  if (account) {
    const reply = await ask(c, `AUTH,${account},${PASSWORDS[account]}`);
    if (reply !== `OK AUTH ${account}`) throw new Error(`AUTH ${account}: ${reply}`);
  }
  return c;
}

t.test('WHOAMI, AUTH, a second AUTH switches or fails and keeps the account', async (t) => {
  const c = await client('127.0.1.1');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous');
  t.equal(await ask(c, `AUTH,alice,${PASSWORDS.alice}`), 'OK AUTH alice');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI alice');
  t.equal(await ask(c, `AUTH,bob,${PASSWORDS.bob}`), 'OK AUTH bob', 'a second AUTH switches');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI bob');
  t.equal(await ask(c, 'READ,top.mp4'), `OK ${files['top.mp4'].length}`, "bob's rules apply");
  await c.readBytes(files['top.mp4'].length);
  const failed = await ask(c, `AUTH,alice,${WRONG[0]}`);
  t.equal(codeOf(failed), 'AUTH_FAILED');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI bob', 'a failed AUTH keeps the current account');
  t.same(await (c.send('LIST\n'), readList(c)), READABLE_BY.bob, "and bob's LIST");
  t.equal(
    await ask(c, `AUTH,comma,${PASSWORDS.comma}`),
    'OK AUTH comma',
    'the password is everything after the second comma',
  );
  t.equal(codeOf(await ask(c, `AUTH,anonymous,`)), 'AUTH_FAILED', 'anonymous cannot log in');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI comma');
  t.equal(codeOf(await ask(c, 'WHOAMI,x')), 'BAD_REQUEST');
  t.equal(codeOf(await ask(c, 'AUTH,alice')), 'BAD_REQUEST', 'AUTH without a password');
});

t.test('pipelined behind a slow AUTH: every command is judged after it', async (t) => {
  delayMs = 150;
  t.teardown(() => {
    delayMs = 0;
  });
  const c = await client('127.0.1.2');
  let before = Date.now();
  await c.send(`AUTH,alice,${PASSWORDS.alice}\nLIST\nWHOAMI\n`);
  t.equal(await c.readLine(), 'OK AUTH alice');
  t.ok(Date.now() - before >= 120, 'the check was slow (the order matters)');
  t.same(await readList(c), READABLE_BY.alice, 'LIST in the same write runs as alice');
  t.equal(await c.readLine(), 'OK WHOAMI alice');

  // A failed AUTH, then LIST: anonymous's listing, not alice's (she is still logged in here,
  // so log in as bob first on a fresh connection).
  const d = await client('127.0.1.3');
  await d.send(`AUTH,alice,${WRONG[0]}\nLIST\nWHOAMI\n`);
  t.equal(codeOf(await d.readLine()), 'AUTH_FAILED');
  t.same(await readList(d), READABLE_BY.anonymous, 'LIST after a failed AUTH runs as anonymous');
  t.equal(await d.readLine(), 'OK WHOAMI anonymous');

  // Logged in as bob: a failed AUTH as alice, then LIST: still bob's.
  await d.send(`AUTH,bob,${PASSWORDS.bob}\nAUTH,alice,${WRONG[1]}\nLIST\n`);
  t.equal(await d.readLine(), 'OK AUTH bob');
  t.equal(codeOf(await d.readLine()), 'AUTH_FAILED');
  t.same(await readList(d), READABLE_BY.bob, 'a failed AUTH in a pipeline keeps bob');

  // AUTH then WRITE and its payload in one write: the WRITE is alice's, not anonymous's
  // (anonymous would get AUTH_REQUIRED and a closed connection).
  const e = await client('127.0.1.4');
  const payload = 'abc';
  before = Date.now();
  await e.send(`AUTH,alice,${PASSWORDS.alice}\nWRITE,music/uploads/pipe.mp3,3\n${payload}WHOAMI\n`);
  t.equal(await e.readLine(), 'OK AUTH alice');
  const sha = createHash('sha256').update(payload).digest('hex');
  t.equal(await e.readLine(), `OK 3 ${sha}`, 'the pipelined WRITE ran as alice');
  t.equal(await e.readLine(), 'OK WHOAMI alice');

  // Two AUTHs and a READ in one write: the READ is judged as the second account.
  await e.send(`AUTH,bob,${PASSWORDS.bob}\nAUTH,alice,${PASSWORDS.alice}\nREAD,top.mp4\n`);
  t.equal(await e.readLine(), 'OK AUTH bob');
  t.equal(await e.readLine(), 'OK AUTH alice');
  t.equal(codeOf(await e.readLine()), 'DENIED', 'READ judged as alice, who may not read top.mp4');
});

t.test('at most 2 checks at once; other connections are answered meanwhile', async (t) => {
  // Each check takes 400 ms: the WHOAMI must be answered before the first of them is over,
  // whatever else slows a loaded machine down (with a fixed budget of 150 ms, it did not).
  delayMs = 400;
  t.teardown(() => {
    delayMs = 0;
  });
  const clients = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => client(`127.0.1.${20 + i}`)));
  const other = await client('127.0.1.30');
  mostAtOnce = 0;
  const started = Date.now();
  for (const c of clients) await c.send(`AUTH,bob,${PASSWORDS.bob}\n`);
  const authed = Promise.all(
    clients.map((c) => c.readLine().then((line) => ({ line, at: Date.now() }))),
  );
  await sleep(20);
  t.equal(await ask(other, 'WHOAMI'), 'OK WHOAMI anonymous');
  const whoamiAt = Date.now();
  const replies = await authed;
  t.ok(
    replies.every(({ at }) => whoamiAt < at),
    'a WHOAMI elsewhere is answered while the checks wait',
  );
  t.same(new Set(replies.map(({ line }) => line)), new Set(['OK AUTH bob']), 'all six pass');
  t.equal(mostAtOnce, 2, 'never more than two checks at once');
  t.ok(Date.now() - started >= 3 * 400 - 20, 'six checks took three rounds');
});

t.test(
  'a pre-auth WRITE whose payload is command text: closed, nothing run or stored',
  async (t) => {
    const before = await env.files();
    const inner =
      `LIST\nAUTH,carol,${PASSWORDS.carol}\nWRITE,public/injected.jpg,3\nabcHASH,public/pub.jpg\n` +
      'WRITE,music/injected.mp3,3\nxyzBYE\n';
    const c = await client('127.0.1.5');
    const peer = `127.0.1.5:${c.socket.localPort}`;
    await c.send(`WRITE,public/outer.jpg,${Buffer.byteLength(inner)}\n${inner}`);
    const reply = await c.readLine();
    t.match(reply, /^ERR AUTH_REQUIRED \S/, 'AUTH_REQUIRED');
    const rest = await c.waitClose(2000);
    t.equal(rest.toString('latin1'), '', 'nothing after it: no command of the payload answered');
    t.same(await env.files(), before, 'nothing stored, no temporary left');
    await sleep(100);
    const commands = env.log.records.filter((r) => r.msg === 'command' && r.peer === peer);
    t.same(
      commands.map((r) => [r.verb, r.result]),
      [['WRITE', 'AUTH_REQUIRED']],
      'the log shows the WRITE alone',
    );
    t.notOk(
      env.log.auths.some((r) => r.account === 'carol' && String(r.peer).startsWith('127.0.1.5')),
      'the AUTH in the payload never ran',
    );

    // The header alone: AUTH_REQUIRED and a close without waiting for the payload.
    const d = await client('127.0.1.5');
    await d.send('WRITE,music/uploads/x.mp3,5\n');
    t.match(await d.readLine(), /^ERR AUTH_REQUIRED /);
    t.equal((await d.waitClose(2000)).length, 0, 'closed without the payload being sent');
  },
);

t.test('DENIED on a WRITE is answered at once and the payload drained', async (t) => {
  const c = await client('127.0.1.6', 'bob');
  await c.send('WRITE,music/d.mp3,5\n');
  t.match(await c.readLine(), /^ERR DENIED \S/, 'DENIED before any payload byte was sent');
  await c.send('BYE\n\nWHOAMI\n'); // the 5 payload bytes are command text: drained, not run
  t.equal(await c.readLine(), 'OK WHOAMI bob', 'in step: the payload was drained');
  t.notOk(await env.exists('music/d.mp3'));
});

t.test('three failures close a connection; a success between them does not reset', async (t) => {
  const c = await client('127.0.1.7');
  const first = await ask(c, `AUTH,alice,${WRONG[0]}`);
  const unknown = await ask(c, `AUTH,nobody,${WRONG[1]}`);
  t.equal(codeOf(first), 'AUTH_FAILED');
  t.equal(unknown, first, 'an unknown name and a wrong password: the same bytes');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous', 'two failures: still open');
  t.equal(codeOf(await ask(c, `AUTH,alice,${WRONG[2]}`)), 'AUTH_FAILED');
  t.equal((await c.waitClose(2000)).length, 0, 'closed after the third');

  const d = await client('127.0.1.8');
  t.equal(codeOf(await ask(d, `AUTH,bob,${WRONG[0]}`)), 'AUTH_FAILED');
  t.equal(await ask(d, `AUTH,bob,${PASSWORDS.bob}`), 'OK AUTH bob');
  t.equal(codeOf(await ask(d, `AUTH,bob,${WRONG[1]}`)), 'AUTH_FAILED');
  t.equal(await ask(d, 'WHOAMI'), 'OK WHOAMI bob');
  t.equal(codeOf(await ask(d, `AUTH,bob,${WRONG[2]}`)), 'AUTH_FAILED');
  t.equal((await d.waitClose(2000)).length, 0, 'the third failure closes, whatever came between');
});

t.test('the prefix matrix: LIST, READ, HASH and WRITE per account', async (t) => {
  // A server of its own: the names written below must not show in another test's LIST.
  const m = await start(t);
  const accounts = ['anonymous', 'alice', 'bob', 'carol', 'dan'] as const;
  let n = 10;
  for (const account of accounts) {
    const from = `127.0.2.${n++}`;
    const c = await client(from, account === 'anonymous' ? undefined : account, m);
    await c.send('LIST\n');
    t.same(await readList(c), READABLE_BY[account], `${account}: LIST shows only what it may read`);
    await c.send('LIST,picture\n');
    t.same(
      await readList(c),
      READABLE_BY[account].filter((name) => name.endsWith('.jpg')),
      `${account}: LIST,picture too`,
    );
    const refusal = account === 'anonymous' ? 'AUTH_REQUIRED' : 'DENIED';
    for (const name of RULE_FILES) {
      const readable = READABLE_BY[account].includes(name);
      const read = await ask(c, `READ,${name}`);
      if (readable) {
        t.equal(read, `OK ${files[name].length}`, `${account} READ ${name}`);
        t.equal((await c.readBytes(files[name].length)).toString(), files[name]);
      } else {
        t.equal(codeOf(read), refusal, `${account} READ ${name}: ${refusal}`);
      }
      const hash = await ask(c, `HASH,${name}`);
      t.equal(codeOf(hash), readable ? 'OK' : refusal, `${account} HASH ${name}`);
    }
    c.destroy();
  }
  // Then the writes (after every LIST, so that no LIST sees another account's new file).
  n = 10;
  for (const account of accounts) {
    const from = `127.0.2.${n++}`;
    const c = await client(from, account === 'anonymous' ? undefined : account, m);
    for (const [name, writers] of WRITE_TARGETS) {
      const target = name.replace(/w\.(\w+)$/, `w-${account}.$1`);
      const w = account === 'anonymous' ? await client(from, undefined, m) : c;
      await w.send(`WRITE,${target},2\nhi`);
      const reply = await w.readLine();
      if (writers.includes(account)) {
        t.equal(codeOf(reply), 'OK', `${account} WRITE ${target}`);
        t.ok(await m.exists(target));
      } else if (account === 'anonymous') {
        t.equal(codeOf(reply), 'AUTH_REQUIRED', `anonymous WRITE ${target}: AUTH_REQUIRED`);
        await w.waitClose(2000);
        t.notOk(await m.exists(target));
      } else {
        t.equal(codeOf(reply), 'DENIED', `${account} WRITE ${target}: DENIED`);
        t.notOk(await m.exists(target));
      }
    }
    c.destroy();
  }
});

t.test('a refusal never reveals whether the name exists', async (t) => {
  const pairs: [string, string][] = [
    ['music/a.mp3', 'music/none.mp3'],
    ['music/uploads/private/p.mp3', 'music/uploads/private/none.mp3'],
    ['musicals/c.mp3', 'musicals/none.mp3'],
    ['public/secret/s.jpg', 'public/secret/none.jpg'],
  ];
  for (const account of ['anonymous', 'dan', 'bob'] as const) {
    const c = await client('127.0.3.1', account === 'anonymous' ? undefined : account);
    for (const [existing, missing] of pairs) {
      if (READABLE_BY[account].includes(existing)) continue;
      for (const verb of ['READ', 'HASH']) {
        const a = await ask(c, `${verb},${existing}`);
        const b = await ask(c, `${verb},${missing}`);
        t.match(a, account === 'anonymous' ? /^ERR AUTH_REQUIRED / : /^ERR DENIED /);
        t.equal(b, a, `${account} ${verb} ${existing} vs ${missing}: the same bytes`);
      }
    }
    t.equal(
      await ask(c, 'WHOAMI'),
      `OK WHOAMI ${account}`,
      'the connection stays after READ/HASH refusals',
    );
  }
  const c = await client('127.0.3.2', 'alice');
  t.equal(codeOf(await ask(c, 'READ,music/none.mp3')), 'NOT_FOUND', 'readable and missing');
});

t.test('the WRITE check order (access.md), two failures at a time', async (t) => {
  const anon = async (): Promise<Awaited<ReturnType<typeof client>>> => client('127.0.4.1');
  // size malformed · before everything (closes)
  let c = await anon();
  t.equal(codeOf(await ask(c, 'WRITE,../bad.txt,12x')), 'BAD_REQUEST', 'size malformed first');
  await c.waitClose(2000);
  // name missing or not UTF-8 · before AUTH_REQUIRED (the payload is drained, it stays)
  c = await anon();
  t.equal(codeOf(await ask(c, 'WRITE,3')), 'BAD_REQUEST', 'name missing before AUTH_REQUIRED');
  await c.send('abc');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous');
  await c.send(
    Buffer.concat([Buffer.from('WRITE,music/'), Buffer.from([0xff]), Buffer.from('.mp3,3\n')]),
  );
  t.equal(codeOf(await c.readLine()), 'BAD_REQUEST', 'name not UTF-8 before AUTH_REQUIRED');
  await c.send('abc');
  t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous');
  // AUTH_REQUIRED · before BAD_NAME, UNSUPPORTED_TYPE, EXISTS, NO_SPACE
  for (const line of [
    'WRITE,../x.mp3,3',
    'WRITE,music/.hidden.mp3,3',
    'WRITE,music/a.txt,3',
    'WRITE,music/a.mp3,3',
    `WRITE,music/huge.mp3,${2 ** 50}`,
  ]) {
    c = await anon();
    t.equal(codeOf(await ask(c, line)), 'AUTH_REQUIRED', `${line}: AUTH_REQUIRED first`);
    await c.waitClose(2000);
  }
  // BAD_NAME / UNSUPPORTED_TYPE · before DENIED (bob may write nothing)
  const bob = await client('127.0.4.2', 'bob');
  t.equal(
    codeOf(await ask(bob, 'WRITE,music/.hidden.mp3,0')),
    'BAD_NAME',
    'BAD_NAME before DENIED',
  );
  t.equal(codeOf(await ask(bob, 'WRITE,../x.mp3,0')), 'BAD_NAME');
  t.equal(codeOf(await ask(bob, 'WRITE,music/n.txt,0')), 'UNSUPPORTED_TYPE', 'then the type');
  // DENIED · before EXISTS and NO_SPACE
  t.equal(codeOf(await ask(bob, 'WRITE,music/a.mp3,0')), 'DENIED', 'DENIED before EXISTS');
  t.equal(codeOf(await ask(bob, 'WRITE,top.mp4,0')), 'DENIED', 'DENIED before EXISTS (r rule)');
  const carol = await client('127.0.4.3', 'carol');
  t.equal(codeOf(await ask(carol, 'WRITE,top.mp4,0')), 'EXISTS', '(carol: EXISTS)');
  // DENIED · before LOCKED: carol holds an upload open
  await carol.send('WRITE,music/lock.mp3,10\nabc');
  await eventually(
    async () => (await env.files()).some((f) => f.includes('.ioe-upload')),
    'upload',
  );
  t.equal(codeOf(await ask(bob, 'WRITE,music/lock.mp3,0')), 'DENIED', 'DENIED before LOCKED');
  const carol2 = await client('127.0.4.3', 'carol');
  t.equal(codeOf(await ask(carol2, 'WRITE,music/lock.mp3,0')), 'LOCKED', '(carol: LOCKED)');
  await carol.send('defghij');
  t.equal(codeOf(await carol.readLine()), 'OK');
  // DENIED · before NO_SPACE; EXISTS · before NO_SPACE
  const huge = 2 ** 50;
  t.equal(codeOf(await ask(bob, `WRITE,music/huge.mp3,${huge}`)), 'DENIED', 'before NO_SPACE');
  t.equal(codeOf(await ask(carol2, `WRITE,music/a.mp3,${huge}`)), 'EXISTS', 'EXISTS, NO_SPACE');
  const carol3 = await client('127.0.4.3', 'carol');
  t.equal(codeOf(await ask(carol3, `WRITE,music/huge.mp3,${huge}`)), 'NO_SPACE', '(NO_SPACE)');
});

t.test(
  'read-only with a size limit: TOO_LARGE · AUTH_REQUIRED · READ_ONLY · BAD_NAME',
  async (t) => {
    const ro = await start(t, { readOnly: true, maxUpload: 1000 });
    const anon = await ro.connect('127.0.5.1');
    t.equal(codeOf(await ask(anon, 'WRITE,music/x.mp3,1001')), 'TOO_LARGE', 'too large first');
    await anon.waitClose(2000);
    for (const line of ['WRITE,music/uploads/x.mp3,3', 'WRITE,public/drop/x.jpg,3']) {
      const c = await ro.connect('127.0.5.1');
      const reply = await ask(c, line);
      if (line.includes('drop')) {
        // anonymous's own rules allow rw there: READ_ONLY is the answer, and the door stays
        t.equal(codeOf(reply), 'READ_ONLY', `${line}: anonymous with rw is capped: READ_ONLY`);
      } else {
        t.equal(codeOf(reply), 'AUTH_REQUIRED', `${line}: AUTH_REQUIRED before READ_ONLY`);
        await c.waitClose(2000);
      }
    }
    for (const account of ['alice', 'bob', 'carol'] as const) {
      const c = await client('127.0.5.2', account, ro);
      t.equal(codeOf(await ask(c, 'WRITE,../x.mp3,0')), 'READ_ONLY', `${account}: before BAD_NAME`);
      t.equal(
        codeOf(await ask(c, 'WRITE,music/a.mp3,0')),
        'READ_ONLY',
        `${account}: before DENIED`,
      );
      t.equal(
        codeOf(await ask(c, 'WRITE,music/uploads/n.mp3,0')),
        'READ_ONLY',
        `${account}: --read-only caps every rw`,
      );
    }
    t.notOk(await ro.exists('music/uploads/n.mp3'));
  },
);

t.test(
  'cross-protocol: an HTTP request line or a TLS record first closes without a reply',
  async (t) => {
    const firsts: [string, string | Buffer][] = [
      ['GET', 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nLIST\n'],
      ['POST after blank lines', '\r\n\nPOST /api/x HTTP/1.0\r\nContent-Length: 5\r\n\r\nLIST\n'],
      ['OPTIONS *', 'OPTIONS * HTTP/1.1\nWHOAMI\n'],
      ['a TLS ClientHello', Buffer.from('16030100a5010000a10303', 'hex')],
      [
        'a TLS record then a command',
        Buffer.concat([Buffer.from([0x16, 0x03, 0x03]), Buffer.from('\nLIST\n')]),
      ],
    ];
    for (const [what, bytes] of firsts) {
      const c = await client('127.0.6.1');
      await c.send(bytes);
      const started = Date.now();
      const rest = await c.waitClose(1500);
      t.equal(rest.length, 0, `${what}: no reply at all`);
      t.ok(Date.now() - started < 1500, `${what}: closed at once`);
    }
    // Later lines are ordinary commands.
    const c = await client('127.0.6.2');
    t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous');
    t.equal(codeOf(await ask(c, 'GET / HTTP/1.1')), 'UNKNOWN_COMMAND', 'a later HTTP line');
    t.equal(await ask(c, 'WHOAMI'), 'OK WHOAMI anonymous', 'and the connection stays');
  },
);

t.test(
  'every AUTH outcome is logged with the account and the peer; failures at warn',
  async (t) => {
    const c = await client('127.0.7.1');
    await ask(c, `AUTH,alice,${PASSWORDS.alice}`);
    await ask(c, `AUTH,alice,${WRONG[3]}`);
    await ask(c, `AUTH,${NAME_TYPO},x`); // a password typed into the name field
    const port = c.socket.localPort;
    const lines = env.log.auths.filter((r) => r.peer === `127.0.7.1:${port}`);
    t.same(
      lines.map((r) => [r.account, r.result, r.level, r.door]),
      [
        ['alice', 'OK', 30, 'tcp'],
        ['alice', 'AUTH_FAILED', 40, 'tcp'],
        ['(not a valid name)', 'AUTH_FAILED', 40, 'tcp'],
      ],
      'one line per outcome; the failures at warn; a name that is not one is not logged',
    );
    t.ok(derives > 0, 'the checks ran scrypt');
  },
);

// Last: every line this file's servers logged.
t.test('no password appears in any log line', async (t) => {
  checkNoSecrets(t, env.log.lines, [...Object.values(PASSWORDS), ...WRONG], 'the TCP log');
});

// access.ts logs such a name as '(not a valid name)' on purpose ("a name typed into the
// password field would otherwise land in the log"); no other line may undo that.
t.test('a password typed into the name field is in no log line either', async (t) => {
  t.ok(
    env.log.auths.some((r) => r.account === '(not a valid name)'),
    'the AUTH with it was made',
  );
  checkNoSecrets(t, env.log.lines, [NAME_TYPO], 'the TCP log');
});
