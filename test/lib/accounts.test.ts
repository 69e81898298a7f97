/** The accounts file: parsing, every malformed line, the mode check, the rules, credentials. */
import t from 'tap';
import { scrypt } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Accounts,
  AccountsFileError,
  DEFAULT_SCRYPT,
  deriveKey,
  formatCredential,
  hashPassword,
  loadAccounts,
  makeAccount,
  parseCredential,
  scryptMaxmem,
} from '../../lib/accounts.js';

const FAST = { ln: 15, r: 1, p: 1 };
const SALT = Buffer.alloc(16, 1).toString('base64'); // AQEBAQEBAQEBAQEBAQEBAQ==
const HASH = Buffer.alloc(32, 2).toString('base64');
/** A well-formed credential (not of any real password: parsing does not hash). */
const CRED = `$scrypt$ln=15,r=8,p=1$${SALT}$${HASH}`;

function parse(text: string, readOnly = false): Accounts {
  return Accounts.parse(text, { readOnly });
}

/** The error parsing `text` raises (fails the test when it parses). */
function parseError(text: string): AccountsFileError {
  try {
    parse(text);
  } catch (error) {
    if (error instanceof AccountsFileError) return error;
    throw error;
  }
  throw new Error('parsed, but should not have');
}

t.test('a well-formed file: comments, blank lines, CRLF, anonymous, accounts', async (t) => {
  const text = [
    '# the accounts of the living room server',
    '',
    'anonymous::r=/public',
    '   # an indented comment',
    `alice:${CRED}:r=/music,rw=/music/uploads,-=/private`,
    `bob.smith_2-x:${CRED}:r=/\r`,
    `nobody:${CRED}:`,
    `carol:${CRED}:r=/films/`,
    `dave:${CRED}:r=/odd:name`,
    '\t',
  ].join('\n');
  const accounts = parse(text);
  t.ok(accounts.configured);
  t.same(
    accounts.accounts.map((account) => account.name),
    ['anonymous', 'alice', 'bob.smith_2-x', 'nobody', 'carol', 'dave'],
  );
  t.equal(accounts.size, 5, 'anonymous cannot log in, so it does not count');
  t.equal(accounts.get('anonymous'), undefined, 'anonymous is not an account to log in to');
  t.same(accounts.get('alice')?.rules, [
    { permission: 'r', prefix: '/music' },
    { permission: 'rw', prefix: '/music/uploads' },
    { permission: '-', prefix: '/private' },
  ]);
  t.same(accounts.get('nobody')?.rules, [], 'empty rules: nothing, but a valid line');
  t.same(
    accounts.get('carol')?.rules,
    [{ permission: 'r', prefix: '/films' }],
    'trailing / dropped',
  );
  t.same(accounts.get('dave')?.rules, [{ permission: 'r', prefix: '/odd:name' }], 'colon in rules');
  const credential = accounts.get('alice')!.credential!;
  t.match(credential, { ln: 15, r: 8, p: 1, text: CRED });
  t.equal(credential.salt.length, 16);
  t.equal(credential.hash.length, 32);
  t.equal(
    accounts.toText(),
    text.replace('\r', '') + '\n',
    'written back as it was read (CR dropped, final newline)',
  );
  t.equal(parse('').toText(), '', 'an empty file stays empty');
  t.equal(parse(`\uFEFFalice:${CRED}:r=/\n`).size, 1, 'a byte order mark is not part of a name');
  t.equal(parse('').size, 0);
});

t.test('every malformed line is refused with its line number and no secret', async (t) => {
  const cred = (params: string, salt = SALT, hash = HASH): string =>
    `$scrypt$${params}$${salt}$${hash}`;
  const cases: [string, string, RegExp][] = [
    ['no colon', 'alice', /<name>:<credential>:<rules>/],
    ['one colon', `alice:${CRED}`, /<name>:<credential>:<rules>/],
    ['empty name', `:${CRED}:r=/`, /name is not 1 to 64/],
    ['name of 65', `${'a'.repeat(65)}:${CRED}:r=/`, /name is not 1 to 64/],
    ['space in name', `al ice:${CRED}:r=/`, /name is not 1 to 64/],
    ['non-ASCII name', `alíce:${CRED}:r=/`, /name is not 1 to 64/],
    ['leading space', ` alice:${CRED}:r=/`, /name is not 1 to 64/],
    ['anonymous with a credential', `anonymous:${CRED}:r=/`, /anonymous must have an empty/],
    ['empty credential', 'bob::r=/', /credential is empty/],
    ['plain password', 'bob:hunter2-SECRET:r=/', /plain passwords are not accepted/],
    ['another hash', 'bob:$argon2id$v=19$SECRET$SECRET:r=/', /not \$scrypt\$/],
    ['a $ part too many', `bob:${CRED}$SECRET:r=/`, /not \$scrypt\$/],
    ['a $ part too few', `bob:$scrypt$ln=15,r=8,p=1$${SALT}:r=/`, /not \$scrypt\$/],
    ['no p', `bob:${cred('ln=15,r=8')}:r=/`, /ln=<log2 N>,r=<r>,p=<p>/],
    ['other order', `bob:${cred('r=8,ln=15,p=1')}:r=/`, /ln=<log2 N>,r=<r>,p=<p>/],
    ['N below 2^15', `bob:${cred('ln=14,r=8,p=1')}:r=/`, /below 2\^15/],
    ['leading zero', `bob:${cred('ln=015,r=8,p=1')}:r=/`, /ln is not a whole number/],
    ['ln not a number', `bob:${cred('ln=x,r=8,p=1')}:r=/`, /ln is not a whole number/],
    ['r = 0', `bob:${cred('ln=15,r=0,p=1')}:r=/`, /r is not a whole number/],
    ['negative p', `bob:${cred('ln=15,r=8,p=-1')}:r=/`, /p is not a whole number/],
    ['p too large', `bob:${cred('ln=15,r=8,p=17')}:r=/`, /p is over 16/],
    ['too much memory', `bob:${cred('ln=20,r=16,p=1')}:r=/`, /over 1024 MiB/],
    ['absurd ln', `bob:${cred('ln=64,r=1,p=1')}:r=/`, /over 1024 MiB/],
    ['salt not base64', `bob:${cred('ln=15,r=8,p=1', 'SECRET!!')}:r=/`, /salt is not standard/],
    [
      'salt unpadded',
      `bob:${cred('ln=15,r=8,p=1', SALT.slice(0, -2))}:r=/`,
      /salt is not standard/,
    ],
    ['salt URL-safe', `bob:${cred('ln=15,r=8,p=1', 'AQEB-_EBAQEBAQEBAQEBAQ==')}:r=/`, /salt/],
    [
      'salt stray bits',
      `bob:${cred('ln=15,r=8,p=1', 'AQEBAQEBAQEBAQEBAQEBAR==')}:r=/`,
      /canonical/,
    ],
    ['salt empty', `bob:${cred('ln=15,r=8,p=1', '')}:r=/`, /salt is not standard/],
    ['salt of 4 bytes', `bob:${cred('ln=15,r=8,p=1', 'AQEBAQ==')}:r=/`, /salt is shorter/],
    ['hash of 8 bytes', `bob:${cred('ln=15,r=8,p=1', SALT, 'AgICAgICAgI=')}:r=/`, /hash is not 16/],
    [
      'hash of 65 bytes',
      `bob:${cred('ln=15,r=8,p=1', SALT, Buffer.alloc(65).toString('base64'))}:r=/`,
      /hash is not 16/,
    ],
    ['hash not base64', `bob:${cred('ln=15,r=8,p=1', SALT, 'SECRET')}:r=/`, /hash is not standard/],
    ['rule without =', `bob:${CRED}:r`, /not <perm>=<prefix>/],
    ['unknown permission', `bob:${CRED}:w=/a`, /not r, rw or -/],
    ['upper-case permission', `bob:${CRED}:R=/a`, /not r, rw or -/],
    ['prefix without /', `bob:${CRED}:r=music`, /does not start with \//],
    ['empty prefix', `bob:${CRED}:r=`, /does not start with \//],
    ['empty segment', `bob:${CRED}:r=/a//b`, /empty segment/],
    ['double slash alone', `bob:${CRED}:r=//`, /empty segment/],
    ['dot-dot segment', `bob:${CRED}:r=/a/../b`, /\. or \.\. segment/],
    ['dot segment', `bob:${CRED}:r=/./a`, /\. or \.\. segment/],
    ['control character', `bob:${CRED}:r=/a\u0001b`, /control character/],
    ['two commas', `bob:${CRED}:r=/a,,r=/b`, /empty item/],
    ['trailing comma', `bob:${CRED}:r=/a,`, /empty item/],
    ['leading comma', `bob:${CRED}:,r=/a`, /empty item/],
    ['same prefix twice', `bob:${CRED}:r=/a,rw=/a`, /same prefix/],
    ['same prefix, once with /', `bob:${CRED}:r=/a,rw=/a/`, /same prefix/],
  ];
  for (const [what, line, reason] of cases) {
    const error = parseError(`# header\n\n${line}\nzed:${CRED}:r=/\n`);
    t.equal(error.line, 3, `${what}: line 3`);
    t.match(error.message, /^line 3: /, `${what}: the message starts with the line`);
    t.match(error.reason, reason, `${what}: ${error.reason}`);
    t.notMatch(error.message, /SECRET|hunter2|AQEBAQ|AgIC/, `${what}: quotes no field`);
  }
  const duplicate = parseError(`alice:${CRED}:r=/\n# x\nalice:${CRED}:rw=/\n`);
  t.equal(duplicate.line, 3);
  t.match(duplicate.message, /^line 3: the name is already on line 1$/);
  const twoAnonymous = parseError('anonymous::r=/\nanonymous::rw=/');
  t.equal(twoAnonymous.line, 2, 'anonymous twice');
});

t.test('the file: mode check, not a regular file, errors naming the file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-accounts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'users');
  await writeFile(file, `alice:${CRED}:r=/\n`);
  for (const mode of [0o600, 0o400, 0o700]) {
    await chmod(file, mode);
    t.equal((await loadAccounts(file)).size, 1, `mode ${mode.toString(8)} is accepted`);
  }
  for (const mode of [0o644, 0o640, 0o620, 0o604, 0o602, 0o610, 0o601, 0o666]) {
    await chmod(file, mode);
    await t.rejects(
      loadAccounts(file),
      {
        name: 'AccountsFileError',
        message: new RegExp(
          `^${file}: mode 0${mode.toString(8)} gives group or others access; run chmod 600`,
        ),
      },
      `mode ${mode.toString(8)} is refused`,
    );
  }
  await chmod(file, 0o600);
  await writeFile(file, `alice:${CRED}:r=/\nbob:${CRED}:r=music\n`);
  await t.rejects(loadAccounts(file), {
    name: 'AccountsFileError',
    line: 2,
    file,
    message: `${file}: line 2: a rule prefix does not start with /`,
  });
  await t.rejects(loadAccounts(dir), { message: /not a regular file/ }, 'a folder');
  await t.rejects(loadAccounts(join(dir, 'missing')), { code: 'ENOENT' });
  const readOnly = await loadAccounts(file.replace('users', 'ro'), { readOnly: true }).catch(
    (error: NodeJS.ErrnoException) => error.code,
  );
  t.equal(readOnly, 'ENOENT');
});

t.test('permissions: longest whole-segment prefix wins; no rule is -', async (t) => {
  const accounts = parse(
    [
      'anonymous::r=/public,-=/public/hidden',
      `alice:${CRED}:r=/music,rw=/music/uploads,-=/music/uploads/private,-=/private`,
      `bob:${CRED}:r=/`,
      `carol:${CRED}:rw=/,-=/secret,r=/secret/shared`,
      `dan:${CRED}:`,
      `erin:${CRED}:-=/,r=/music/a.mp3`,
    ].join('\n'),
  );
  const matrix: [string | undefined, string, string][] = [
    ['alice', 'music/a.mp3', 'r'],
    ['alice', 'music/x/b.mp3', 'r'],
    ['alice', 'musicals/c.mp3', '-'],
    ['alice', 'music.mp3', '-'],
    ['alice', 'Music/a.mp3', '-'],
    ['alice', 'music/uploads/new.mp3', 'rw'],
    ['alice', 'music/uploads/deep/new.mp3', 'rw'],
    ['alice', 'music/uploadsX/new.mp3', 'r'],
    ['alice', 'music/uploads/private/x.mp3', '-'],
    ['alice', 'private/x.mp3', '-'],
    ['alice', 'other.mp3', '-'],
    ['bob', 'a.mp3', 'r'],
    ['bob', 'deep/down/a.mp3', 'r'],
    ['carol', 'a.mp3', 'rw'],
    ['carol', 'secret/a.mp3', '-'],
    ['carol', 'secret/shared/a.mp3', 'r'],
    ['carol', 'secretive/a.mp3', 'rw'],
    ['dan', 'a.mp3', '-'],
    ['erin', 'music/a.mp3', 'r'],
    ['erin', 'music/a.mp3x', '-'],
    ['erin', 'music/b.mp3', '-'],
    [undefined, 'public/a.mp3', 'r'],
    [undefined, 'public/hidden/a.mp3', '-'],
    [undefined, 'publicity/a.mp3', '-'],
    [undefined, 'music/a.mp3', '-'],
    ['nobody-such', 'public/a.mp3', 'r'],
    ['nobody-such', 'music/a.mp3', '-'],
    ['anonymous', 'public/a.mp3', 'r'],
  ];
  for (const [account, name, expected] of matrix) {
    t.equal(accounts.permission(account, name), expected, `${account ?? '(anonymous)'} ${name}`);
  }
  t.ok(accounts.canRead('alice', 'music/a.mp3'));
  t.notOk(accounts.canWrite('alice', 'music/a.mp3'));
  t.ok(accounts.canWrite('alice', 'music/uploads/a.mp3'));
  t.notOk(accounts.canRead('alice', 'musicals/c.mp3'));
  t.ok(accounts.canReadSomething(undefined));
  t.ok(accounts.canReadSomething('alice'));
  t.notOk(accounts.canReadSomething('dan'), 'no rules');
  t.notOk(parse(`x:${CRED}:-=/`).canReadSomething('x'), 'only - rules');
  t.notOk(parse(`x:${CRED}:r=/`).canReadSomething(undefined), 'no anonymous line: nothing');
  t.equal(parse(`x:${CRED}:r=/`).permission(undefined, 'a.mp3'), '-');
});

t.test('--read-only caps rw to r, and says whose rw it caps', async (t) => {
  const text = [
    'anonymous::rw=/drop',
    `alice:${CRED}:r=/,rw=/uploads`,
    `bob:${CRED}:r=/`,
    `carol:${CRED}:rw=/`,
  ].join('\n');
  const capped = parse(text, true);
  t.equal(capped.readOnly, true);
  t.equal(capped.permission('alice', 'uploads/a.mp3'), 'r');
  t.equal(capped.rulePermission('alice', 'uploads/a.mp3'), 'rw', 'the rules themselves stay');
  t.notOk(capped.canWrite('carol', 'a.mp3'));
  t.ok(capped.canRead('carol', 'a.mp3'));
  t.equal(capped.permission(undefined, 'drop/a.mp3'), 'r');
  t.same(capped.cappedAccounts(), ['anonymous', 'alice', 'carol']);
  const free = parse(text);
  t.same(free.cappedAccounts(), []);
  t.equal(free.permission('alice', 'uploads/a.mp3'), 'rw');
  t.same(capped.withReadOnly(false).cappedAccounts(), []);
});

t.test('no accounts file: anonymous may do everything, --read-only caps it', async (t) => {
  const open = Accounts.open();
  t.equal(open.configured, false);
  t.equal(open.size, 0);
  t.equal(open.permission(undefined, 'a/b/c.mp3'), 'rw');
  t.equal(open.permission('alice', 'a.mp3'), 'rw', 'an unknown name is anonymous');
  t.equal(Accounts.open({ readOnly: true }).permission(undefined, 'a.mp3'), 'r');
  t.same(Accounts.open({ readOnly: true }).cappedAccounts(), [], 'no accounts: no warning');
});

t.test('edits: add, replace in place, remove; comments and order kept', async (t) => {
  const text = `# top\nalice:${CRED}:r=/\n\n# bob next\nbob:${CRED}:r=/music\n`;
  const accounts = parse(text);
  const other = `$scrypt$ln=16,r=8,p=1$${SALT}$${HASH}`;
  const replaced = accounts.withAccount(makeAccount('alice', other, 'rw=/'));
  t.equal(replaced.toText(), `# top\nalice:${other}:rw=/\n\n# bob next\nbob:${CRED}:r=/music\n`);
  t.equal(accounts.toText(), text, 'the original is unchanged (immutable)');
  const added = replaced.withAccount(makeAccount('anonymous', undefined, 'r=/public'));
  t.match(added.toText(), /\nanonymous::r=\/public\n$/);
  t.equal(
    added.without('bob').toText(),
    `# top\nalice:${other}:rw=/\n\n# bob next\nanonymous::r=/public\n`,
  );
  t.equal(added.without('nobody').toText(), added.toText());
  t.throws(() => makeAccount('bad name', CRED, 'r=/'), { name: 'AccountsFileError' });
  t.throws(() => makeAccount('x', CRED, 'r=nope'), { message: /does not start with/ });
  t.throws(() => makeAccount('x', undefined, 'r=/'), { message: /credential is empty/ });
  t.equal(
    Accounts.empty()
      .withAccount(makeAccount('x', CRED, ''))
      .toText(),
    `x:${CRED}:\n`,
  );
  t.same(Accounts.parse(added.toText()).toText(), added.toText(), 'what it writes, it reads');
});

t.test('credentials: hashPassword makes what parseCredential reads, and verifies', async (t) => {
  const text = await hashPassword('correct horse', FAST);
  t.match(text, /^\$scrypt\$ln=15,r=1,p=1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
  const credential = parseCredential(text);
  const again = await deriveKey(
    'correct horse',
    credential.salt,
    credential.hash.length,
    credential,
  );
  t.ok(again.equals(credential.hash), 'the same password derives the same key');
  const wrong = await deriveKey(
    'correct horsf',
    credential.salt,
    credential.hash.length,
    credential,
  );
  t.notOk(wrong.equals(credential.hash));
  t.not(await hashPassword('correct horse', FAST), text, 'a new salt each time');
  const nfd = await deriveKey('cafe\u0301', credential.salt, 32, credential);
  const nfc = await deriveKey('caf\u00e9', credential.salt, 32, credential);
  t.ok(nfd.equals(nfc), 'passwords are compared in NFC');
  // A credential from elsewhere: the derived key is as long as the stored hash.
  const salt = Buffer.alloc(16, 7);
  const hash64 = await deriveKey('pw', salt, 64, FAST);
  const foreign = parseCredential(formatCredential(FAST, salt, hash64));
  t.equal(foreign.hash.length, 64);
});

t.test('the production parameters: N = 2^17, r = 8 need maxmem beyond Node default', async (t) => {
  t.same(DEFAULT_SCRYPT, { ln: 17, r: 8, p: 1 });
  t.ok(scryptMaxmem(DEFAULT_SCRYPT) > 128 * 8 * 2 ** 17, 'room for 128·r·N');
  t.ok(scryptMaxmem(DEFAULT_SCRYPT) <= 256 * 1024 * 1024);
  const refused = await new Promise<Error | null>((resolve) => {
    try {
      scrypt('pw', 'salt', 32, { N: 2 ** 17, r: 8, p: 1 }, (error) => resolve(error));
    } catch (error) {
      resolve(error as Error); // Node checks the parameters before it starts
    }
  });
  t.ok(refused, `Node's default maxmem refuses them (${refused?.message})`);
  const started = performance.now();
  const text = await hashPassword('correct horse');
  const ms = performance.now() - started;
  t.match(text, /^\$scrypt\$ln=17,r=8,p=1\$/);
  t.ok(ms > 20, `it costs real time (${ms.toFixed(0)} ms)`);
  t.comment(`one production hash: ${ms.toFixed(0)} ms`);
});
