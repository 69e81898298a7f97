/**
 * The access layer both doors call: protected mode, TLS_REQUIRED, the checks per verb and
 * their codes (AUTH_REQUIRED for anonymous, DENIED for an account), the WRITE order around
 * READ_ONLY, LIST filtering, HTTP Basic, reload from the file, and the log of each AUTH.
 */
import t from 'tap';
import { createHmac } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import {
  Access,
  type AccessOptions,
  parseBasicAuthorization,
  type Peer,
  type Principal,
  WWW_AUTHENTICATE,
} from '../../lib/access.js';
import { Accounts, formatCredential } from '../../lib/accounts.js';
import { type DeriveKey, isAccessError } from '../../lib/authenticator.js';
import { ProtocolError } from '../../lib/errors.js';

const fakeDerive: DeriveKey = async (password, salt, keyLength) =>
  createHmac('sha256', salt).update(password).digest().subarray(0, keyLength);

function credential(password: string, seed: number): string {
  const salt = Buffer.alloc(16, seed);
  return formatCredential(
    { ln: 15, r: 1, p: 1 },
    salt,
    createHmac('sha256', salt).update(password).digest(),
  );
}

const FILE = [
  '# test accounts',
  'anonymous::r=/public,rw=/public/drop',
  `alice:${credential('alice-pw', 1)}:r=/music,rw=/music/uploads,-=/music/uploads/private`,
  `bob:${credential('bob-pw', 2)}:r=/`,
  `dan:${credential('dan-pw', 3)}:`,
].join('\n');

const LOCAL: Peer = { address: '127.0.0.1', port: 4000, secure: false, door: 'tcp' };
const REMOTE: Peer = { address: '10.0.0.5', port: 4001, secure: false, door: 'tcp' };
const REMOTE_TLS: Peer = { ...REMOTE, secure: true };

function access(text: string | undefined, options: Partial<AccessOptions> = {}): Access {
  const readOnly = options.readOnly ?? false;
  const accounts =
    text === undefined ? Accounts.open({ readOnly }) : Accounts.parse(text, { readOnly });
  return new Access(accounts, {
    bindHost: '0.0.0.0',
    ...options,
    authenticator: { derive: fakeDerive, successCacheMs: 0, ...options.authenticator },
  });
}

/** The code a call ends with: 'OK' or the error's code. */
async function code(call: () => unknown): Promise<string> {
  try {
    await call();
    return 'OK';
  } catch (error) {
    if (error instanceof ProtocolError) return error.code;
    throw error;
  }
}

t.test('protected mode: no accounts and a bind others can reach', async (t) => {
  const cases: [string, Partial<AccessOptions>, boolean, string | undefined, string][] = [
    ['no accounts, 0.0.0.0, remote', {}, false, '10.0.0.5', 'PROTECTED'],
    ['no accounts, ::, remote IPv6', { bindHost: '::' }, false, '2001:db8::1', 'PROTECTED'],
    ['no accounts, remote IPv4-mapped', {}, false, '::ffff:192.168.1.9', 'PROTECTED'],
    ['no accounts, address unknown', {}, false, undefined, 'PROTECTED'],
    ['no accounts, loopback', {}, false, '127.0.0.1', 'OK'],
    ['no accounts, 127.8.9.10', {}, false, '127.8.9.10', 'OK'],
    ['no accounts, ::1', {}, false, '::1', 'OK'],
    ['no accounts, ::ffff:127.0.0.1', {}, false, '::ffff:127.0.0.1', 'OK'],
    ['no accounts, --public', { public: true }, false, '10.0.0.5', 'OK'],
    ['no accounts, bound to 127.0.0.1', { bindHost: '127.0.0.1' }, false, '10.0.0.5', 'OK'],
    ['no accounts, bound to localhost', { bindHost: 'localhost' }, false, '10.0.0.5', 'OK'],
    ['no accounts, bound to [::1]', { bindHost: '[::1]' }, false, '10.0.0.5', 'OK'],
    [
      'no accounts, bound to a LAN address',
      { bindHost: '192.168.1.2' },
      false,
      '10.0.0.5',
      'PROTECTED',
    ],
    ['accounts', {}, true, '10.0.0.5', 'OK'],
  ];
  for (const [what, options, configured, address, expected] of cases) {
    const layer = access(configured ? FILE : undefined, options);
    t.equal(await code(() => layer.admit(address)), expected, what);
  }
  const layer = access(undefined);
  t.ok(layer.protectedMode);
  try {
    layer.admit('10.0.0.5');
  } catch (error) {
    t.ok(error instanceof ProtocolError);
    const refusal = error as ProtocolError;
    t.equal(refusal.closes, true, 'PROTECTED closes');
    t.match(refusal.toReply(), /^ERR PROTECTED .*ioe-server users add .*--public/);
    t.equal(refusal.toReply().split('\n').length, 2, 'one line');
  }
});

t.test('open mode (no accounts; loopback or --public): everyone may do everything', async (t) => {
  const layer = access(undefined, { bindHost: '127.0.0.1' });
  t.notOk(layer.protectedMode);
  t.equal(layer.whoami(undefined), 'anonymous');
  t.equal(await code(() => layer.checkRead(undefined, 'a/b.mp3')), 'OK');
  t.equal(await code(() => layer.checkWriteAccount(undefined, 'a/b.mp3')), 'OK');
  t.equal(await code(() => layer.checkWrite(undefined, 'a/b.mp3')), 'OK');
  t.equal(layer.listFilter(undefined)('x/y.mp3'), true);
  t.equal(
    await code(() => layer.authenticate('alice', 'pw', LOCAL)),
    'AUTH_FAILED',
    'there is no account to log in to',
  );
  const readOnly = access(undefined, { bindHost: '127.0.0.1', readOnly: true });
  t.equal(
    await code(() => readOnly.checkWriteAccount(undefined, 'a.mp3')),
    'OK',
    'not AUTH_REQUIRED',
  );
  t.equal(await code(() => readOnly.checkWrite(undefined, 'a.mp3')), 'READ_ONLY');
  t.same(readOnly.startWarnings(), []);
  t.equal(new Access(Accounts.open(), { bindHost: '::1', readOnly: true }).accounts.readOnly, true);
  t.same(access(undefined, { public: true }).startWarnings(), [
    '--public with no accounts: every client may do everything',
  ]);
});

t.test('TLS_REQUIRED: a password in clear from a non-loopback address', async (t) => {
  let derived = 0;
  const layer = access(FILE, {
    authenticator: {
      successCacheMs: 0,
      derive: (...args) => {
        derived++;
        return fakeDerive(...args);
      },
    },
  });
  for (let i = 0; i < 15; i++) {
    const error = await layer.authenticate('alice', 'alice-pw', REMOTE).catch((e: unknown) => e);
    t.ok(isAccessError(error, 'TLS_REQUIRED'), `attempt ${i + 1}: TLS_REQUIRED`);
    if (i === 0) t.equal((error as ProtocolError).closes, false, 'the connection stays');
  }
  t.equal(derived, 0, 'the password is not checked');
  t.equal(
    await code(() => layer.authenticate('alice', 'alice-pw', REMOTE_TLS)),
    'OK',
    '15 TLS_REQUIRED answers are no failures: the same address over TLS is not limited',
  );
  t.equal(await code(() => layer.authenticate('alice', 'alice-pw', LOCAL)), 'OK', 'loopback');
  t.equal(
    await code(() =>
      layer.authenticate('alice', 'alice-pw', { ...LOCAL, address: '::ffff:127.0.0.1' }),
    ),
    'OK',
  );
  const insecure = access(FILE, { insecureAuth: true });
  t.equal(await code(() => insecure.authenticate('alice', 'alice-pw', REMOTE)), 'OK');
  t.match(insecure.startWarnings(), [
    '--insecure-auth: passwords are accepted in clear from any address',
  ]);
});

t.test('READ, HASH, GET: AUTH_REQUIRED for anonymous, DENIED for an account', async (t) => {
  const layer = access(FILE);
  const alice = await layer.authenticate('alice', 'alice-pw', LOCAL);
  const bob = await layer.authenticate('bob', 'bob-pw', LOCAL);
  const dan = await layer.authenticate('dan', 'dan-pw', LOCAL);
  const cases: [Principal | undefined, string, string][] = [
    [undefined, 'public/a.mp3', 'OK'],
    [undefined, 'music/a.mp3', 'AUTH_REQUIRED'],
    [undefined, 'missing/whatever.mp3', 'AUTH_REQUIRED'],
    [alice, 'music/a.mp3', 'OK'],
    [alice, 'musicals/c.mp3', 'DENIED'],
    [alice, 'public/a.mp3', 'DENIED'],
    [alice, 'music/uploads/private/x.mp3', 'DENIED'],
    [bob, 'anything/at/all.mp3', 'OK'],
    [dan, 'public/a.mp3', 'DENIED'],
  ];
  for (const [principal, name, expected] of cases) {
    t.equal(
      await code(() => layer.checkRead(principal, name)),
      expected,
      `${principal?.name ?? 'anonymous'} ${name}`,
    );
  }
  t.equal(layer.whoami(alice), 'alice');
  t.equal(layer.whoami(undefined), 'anonymous');
  t.equal(layer.permission(alice, 'music/uploads/a.mp3'), 'rw');
  try {
    layer.checkRead(undefined, 'music/a.mp3');
  } catch (error) {
    t.equal((error as ProtocolError).closes, false);
    t.equal(
      (error as ProtocolError).toReply(),
      'ERR AUTH_REQUIRED this needs an account: authenticate first\n',
    );
  }
  t.equal(WWW_AUTHENTICATE, 'Basic realm="ioe", charset="UTF-8"');
});

t.test(
  'LIST: only what the client may read; AUTH_REQUIRED when anonymous may read nothing',
  async (t) => {
    const layer = access(FILE);
    const names = [
      'public/a.mp3',
      'public/drop/b.mp3',
      'music/c.mp3',
      'music/uploads/d.mp3',
      'music/uploads/private/e.mp3',
      'musicals/f.mp3',
      'g.mp3',
    ];
    const alice = await layer.authenticate('alice', 'alice-pw', LOCAL);
    const dan = await layer.authenticate('dan', 'dan-pw', LOCAL);
    t.same(names.filter(layer.listFilter(undefined)), ['public/a.mp3', 'public/drop/b.mp3']);
    t.same(names.filter(layer.listFilter(alice)), ['music/c.mp3', 'music/uploads/d.mp3']);
    t.same(names.filter(layer.listFilter(dan)), [], 'an account that may read nothing: empty');
    const closed = access(`alice:${credential('alice-pw', 1)}:r=/\n`);
    t.equal(await code(() => closed.listFilter(undefined)), 'AUTH_REQUIRED');
    const hidden = access(`anonymous::-=/\nalice:${credential('alice-pw', 1)}:r=/\n`);
    t.equal(await code(() => hidden.listFilter(undefined)), 'AUTH_REQUIRED', 'only - rules');
  },
);

t.test('WRITE and PUT, in the contract order around READ_ONLY', async (t) => {
  const check = async (layer: Access, principal: Principal | undefined, name: string) => {
    // The door's order: AUTH_REQUIRED · READ_ONLY · (name rules) · DENIED.
    return code(() => {
      layer.checkWriteAccount(principal, name);
      if (layer.accounts.readOnly) throw new ProtocolError('READ_ONLY', 'the server is read-only');
      layer.checkWrite(principal, name);
    });
  };
  for (const readOnly of [false, true]) {
    const layer = access(FILE, { readOnly });
    const alice = await layer.authenticate('alice', 'alice-pw', LOCAL);
    const bob = await layer.authenticate('bob', 'bob-pw', LOCAL);
    const cases: [Principal | undefined, string, string, string][] = [
      [undefined, 'public/drop/a.mp3', 'OK', 'READ_ONLY'],
      [undefined, 'public/a.mp3', 'AUTH_REQUIRED', 'AUTH_REQUIRED'],
      [undefined, 'music/uploads/a.mp3', 'AUTH_REQUIRED', 'AUTH_REQUIRED'],
      [alice, 'music/uploads/a.mp3', 'OK', 'READ_ONLY'],
      [alice, 'music/a.mp3', 'DENIED', 'READ_ONLY'],
      [alice, 'music/uploads/private/a.mp3', 'DENIED', 'READ_ONLY'],
      [bob, 'a.mp3', 'DENIED', 'READ_ONLY'],
    ];
    for (const [principal, name, open, capped] of cases) {
      t.equal(
        await check(layer, principal, name),
        readOnly ? capped : open,
        `${readOnly ? 'read-only' : 'read-write'}: ${principal?.name ?? 'anonymous'} ${name}`,
      );
    }
    t.equal(
      await code(() => layer.checkWrite(bob, 'a.mp3')),
      readOnly ? 'READ_ONLY' : 'DENIED',
      'checkWrite alone refuses too',
    );
    t.equal(await code(() => layer.checkWrite(undefined, 'music/a.mp3')), 'AUTH_REQUIRED');
  }
  t.same(access(FILE, { readOnly: true }).startWarnings(), [
    '--read-only caps the rw rules of anonymous to r',
    '--read-only caps the rw rules of alice to r',
  ]);
});

t.test('HTTP Basic: parsing (RFC 7617) and authenticating', async (t) => {
  const basic = (text: string): string => `Basic ${Buffer.from(text).toString('base64')}`;
  t.equal(parseBasicAuthorization(undefined), undefined);
  t.equal(parseBasicAuthorization('Bearer abc'), undefined, 'another scheme: anonymous');
  t.equal(parseBasicAuthorization('Digest username="x"'), undefined);
  t.same(parseBasicAuthorization(basic('alice:pw')), { name: 'alice', password: 'pw' });
  t.same(parseBasicAuthorization(basic('alice:p:w,x')), { name: 'alice', password: 'p:w,x' });
  t.same(parseBasicAuthorization(basic('alice:')), { name: 'alice', password: '' });
  t.same(parseBasicAuthorization(basic('zoë:pässwörd')), { name: 'zoë', password: 'pässwörd' });
  t.same(parseBasicAuthorization(`basic   ${Buffer.from('a:b').toString('base64')}`), {
    name: 'a',
    password: 'b',
  });
  for (const bad of [
    'Basic',
    'Basic ',
    'Basic !!!!',
    basic('no colon'),
    `Basic ${Buffer.from([0x61, 0x3a, 0xff]).toString('base64')}`,
    `Basic a b`,
  ]) {
    t.throws(() => parseBasicAuthorization(bad), { code: 'BAD_REQUEST' }, JSON.stringify(bad));
  }
  const layer = access(FILE);
  const http: Peer = { ...LOCAL, door: 'http' };
  t.equal(await layer.authenticateBasic(undefined, http), undefined);
  t.equal((await layer.authenticateBasic(basic('alice:alice-pw'), http))?.name, 'alice');
  t.equal(await code(() => layer.authenticateBasic(basic('alice:nope'), http)), 'AUTH_FAILED');
  t.equal(
    await code(() => layer.authenticateBasic(basic('alice:alice-pw'), { ...REMOTE, door: 'http' })),
    'TLS_REQUIRED',
  );
});

t.test('counting is per address across both doors', async (t) => {
  const layer = access(FILE);
  const tcp: Peer = { address: '::ffff:10.9.9.9', secure: true, door: 'tcp' };
  const http: Peer = { address: '10.9.9.9', secure: true, door: 'http' };
  for (let i = 0; i < 5; i++) {
    t.equal(await code(() => layer.authenticate('alice', 'x', tcp)), 'AUTH_FAILED');
    t.equal(await code(() => layer.authenticate('bob', 'x', http)), 'AUTH_FAILED');
  }
  t.equal(await code(() => layer.authenticate('alice', 'alice-pw', http)), 'RATE_LIMITED');
  t.equal(await code(() => layer.authenticate('alice', 'alice-pw', tcp)), 'RATE_LIMITED');
  t.equal(
    await code(() => layer.authenticate('alice', 'alice-pw', { ...tcp, address: '10.9.9.8' })),
    'OK',
    'no account is locked: alice logs in from elsewhere',
  );
});

t.test('reload from the file: all or nothing; sessions follow the new rules', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-access-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'users');
  await writeFile(file, FILE, { mode: 0o600 });
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()));
        done();
      },
    }),
  );
  const layer = await Access.create({
    usersFile: file,
    bindHost: '0.0.0.0',
    log,
    authenticator: { derive: fakeDerive, successCacheMs: 0 },
  });
  const alice = await layer.authenticate('alice', 'alice-pw', LOCAL);
  const bob = await layer.authenticate('bob', 'bob-pw', LOCAL);

  await writeFile(file, `${FILE}\ncarol:${credential('c', 5)}:r=music\n`);
  const broken = await layer.reload();
  t.equal(broken.ok, false);
  t.match(
    !broken.ok && broken.error.message,
    `${file}: line 6: a rule prefix does not start with /`,
  );
  t.equal(layer.whoami(bob), 'bob', 'the old accounts stay');
  t.equal(await code(() => layer.authenticate('carol', 'c', LOCAL)), 'AUTH_FAILED');

  await writeFile(file, FILE.replace(/\nbob:.*/, '').replace('r=/music,', 'r=/,'));
  await chmod(file, 0o644);
  const open = await layer.reload();
  t.equal(open.ok, false, 'a mode that lets others read is refused on reload too');
  t.equal(layer.whoami(bob), 'bob');

  await chmod(file, 0o600);
  const fine = await layer.reload();
  t.same(fine, { ok: true, accounts: 2, capped: [] });
  t.equal(layer.whoami(bob), 'anonymous', 'a removed account is anonymous from now on');
  t.equal(await code(() => layer.checkRead(bob, 'a.mp3')), 'AUTH_REQUIRED');
  t.equal(await code(() => layer.checkRead(alice, 'films/a.mp4')), 'OK', 'the new rules apply');

  const reloadLines = lines.filter((line) => /reload/.test(String(line.msg)));
  t.equal(reloadLines.length, 3);
  t.match(reloadLines[0], { level: 50, reason: /line 6/ });
  t.match(reloadLines[2], { level: 30, msg: 'accounts reloaded', accounts: 2 });
  t.equal((await Access.create({ bindHost: '::' })).accounts.configured, false);
  t.same(await (await Access.create({ bindHost: '::' })).reload(), {
    ok: true,
    accounts: 0,
    capped: [],
  });
});

t.test('every AUTH is logged with the account and the peer, never the password', async (t) => {
  const lines: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  );
  const layer = access(FILE, { log });
  const secret = 'alice-pw';
  await layer.authenticate('alice', secret, LOCAL);
  await code(() => layer.authenticate('alice', 'wrong-SECRET-1', LOCAL));
  await code(() => layer.authenticate('mallory', 'wrong-SECRET-2', { ...LOCAL, door: 'http' }));
  await code(() => layer.authenticate('alice', 'wrong-SECRET-3', REMOTE));
  await code(() => layer.authenticate('my password!', 'wrong-SECRET-4', LOCAL));
  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  t.match(records, [
    { level: 30, msg: 'auth', door: 'tcp', peer: '127.0.0.1:4000', account: 'alice', result: 'OK' },
    { level: 40, msg: 'auth', account: 'alice', result: 'AUTH_FAILED' },
    { level: 40, door: 'http', account: 'mallory', result: 'AUTH_FAILED' },
    { level: 40, peer: '10.0.0.5:4001', account: 'alice', result: 'TLS_REQUIRED', tls: false },
    { level: 40, account: '(not a valid name)', result: 'AUTH_FAILED' },
  ]);
  const all = lines.join('');
  t.notMatch(all, /SECRET|alice-pw|my password/, 'no password, no name that is not a name');

  // A success answered from the cache: still logged for TCP, debug for HTTP's every request.
  const cachedLayer = access(FILE, { log, authenticator: { successCacheMs: 60_000 } });
  lines.length = 0;
  await cachedLayer.authenticate('bob', 'bob-pw', LOCAL);
  await cachedLayer.authenticate('bob', 'bob-pw', LOCAL);
  await cachedLayer.authenticate('bob', 'bob-pw', { ...LOCAL, door: 'http' });
  t.match(
    lines.map((line) => JSON.parse(line) as Record<string, unknown>),
    [
      { level: 30, door: 'tcp', result: 'OK' },
      { level: 30, door: 'tcp', result: 'OK' },
      { level: 20, door: 'http', result: 'OK' },
    ],
  );
  t.notMatch(lines.join(''), /bob-pw/);
});
