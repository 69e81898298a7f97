/**
 * The accounts file (access.md, "Accounts"): parsing, the mode check, scrypt credentials, and
 * the rules that say who may do what. Pure data; the password checks themselves (the queue,
 * the rate limit) are in authenticator.ts, and what the doors call is access.ts.
 *
 *     # comment
 *     anonymous::r=/music
 *     alice:$scrypt$ln=17,r=8,p=1$<salt base64>$<hash base64>:r=/,rw=/music/uploads,-=/private
 *
 * An `Accounts` is immutable: an edit (`withAccount`, `without`) returns a new one, so a reload
 * swaps one reference and a check in flight never sees half a file.
 */
import { randomBytes, scrypt as scryptCallback, type ScryptOptions } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';

export type Permission = 'r' | 'rw' | '-';

export interface Rule {
  readonly permission: Permission;
  /** `/`, or `/`-separated segments with no trailing `/` (`/music/uploads`). */
  readonly prefix: string;
}

export interface ScryptParams {
  /** log2 of N, scrypt's cost. */
  readonly ln: number;
  readonly r: number;
  readonly p: number;
}

/** A parsed `$scrypt$…` credential. The stored hash's length is the derived key's length. */
export interface Credential extends ScryptParams {
  readonly salt: Buffer;
  readonly hash: Buffer;
  /** The credential as written in the file: what a session compares to notice a change. */
  readonly text: string;
}

export interface Account {
  readonly name: string;
  /** Undefined only for `anonymous`. */
  readonly credential?: Credential;
  readonly rules: readonly Rule[];
}

export const ANONYMOUS = 'anonymous';
/** access.md: N ≥ 2^15. */
export const MIN_LN = 15;
/** What `users add` and `users token` write: 128 MiB and about 0.3 s per check on this machine. */
export const DEFAULT_SCRYPT: ScryptParams = { ln: 17, r: 8, p: 1 };
export const SALT_BYTES = 16;
export const HASH_BYTES = 32;
/** The most memory one check may take (128·r·N): beyond it a line is refused, not run. */
export const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;
/** Bounds a file's credential must keep: salts and hashes shorter than this are refused. */
export const MIN_SALT_BYTES = 8;
export const MIN_HASH_BYTES = 16;
export const MAX_HASH_BYTES = 64;
const MAX_P = 16;

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A malformed accounts file, or one with the wrong mode. The message never quotes a field. */
export class AccountsFileError extends Error {
  constructor(
    /** What is wrong, without the file and line. */
    readonly reason: string,
    /** 1-based line number, when one line is at fault. */
    readonly line?: number,
    /** The file's path, when it came from one. */
    readonly file?: string,
  ) {
    const where = [file, line === undefined ? undefined : `line ${line}`].filter(Boolean);
    super([...where, reason].join(': '));
    this.name = 'AccountsFileError';
  }
}

/** A reason a field is malformed (parseAccounts adds the line number). */
class FieldError extends Error {}

export function isValidAccountName(name: string): boolean {
  return NAME.test(name);
}

/** `r=/music,rw=/music/uploads,-=/private` → rules; `''` → none. Throws on a malformed list. */
export function parseRules(text: string): Rule[] {
  if (text === '') return [];
  const rules: Rule[] = [];
  const seen = new Set<string>();
  for (const item of text.split(',')) {
    if (item === '') throw new FieldError('the rules have an empty item (two commas in a row?)');
    const equals = item.indexOf('=');
    if (equals < 0) throw new FieldError('a rule is not <perm>=<prefix>');
    const permission = item.slice(0, equals);
    if (permission !== 'r' && permission !== 'rw' && permission !== '-') {
      throw new FieldError('a rule permission is not r, rw or -');
    }
    const prefix = normalisePrefix(item.slice(equals + 1));
    if (seen.has(prefix)) throw new FieldError('two rules name the same prefix');
    seen.add(prefix);
    rules.push({ permission, prefix });
  }
  return rules;
}

/** `/`, `/music`, `/music/uploads` (one trailing `/` is dropped). Throws on anything else. */
function normalisePrefix(raw: string): string {
  if (!raw.startsWith('/')) throw new FieldError('a rule prefix does not start with /');
  if (CONTROL.test(raw)) throw new FieldError('a rule prefix holds a control character');
  if (raw === '/') return raw;
  const prefix = raw.endsWith('/') ? raw.slice(0, -1) : raw;
  for (const segment of prefix.slice(1).split('/')) {
    if (segment === '') throw new FieldError('a rule prefix has an empty segment (//)');
    if (segment === '.' || segment === '..') {
      throw new FieldError('a rule prefix has a . or .. segment');
    }
  }
  return prefix;
}

export function formatRules(rules: readonly Rule[]): string {
  return rules.map((rule) => `${rule.permission}=${rule.prefix}`).join(',');
}

/** Bytes of one base64 field, which must be standard base64 with padding, canonical. */
function base64Field(text: string, what: string): Buffer {
  if (text === '' || !BASE64.test(text)) {
    throw new FieldError(`the ${what} is not standard base64 with padding`);
  }
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) {
    throw new FieldError(`the ${what} is not canonical base64 (stray bits in the padding)`);
  }
  return bytes;
}

function wholeNumber(text: string, what: string): number {
  if (!/^[1-9][0-9]{0,2}$/.test(text)) throw new FieldError(`${what} is not a whole number`);
  return Number(text);
}

/** Parses `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>`. Throws without quoting it. */
export function parseCredential(text: string): Credential {
  const parts = text.split('$');
  // ['', 'scrypt', 'ln=…,r=…,p=…', salt, hash]
  if (parts.length !== 5 || parts[0] !== '' || parts[1] !== 'scrypt') {
    throw new FieldError(
      'the credential is not $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash> (plain passwords are not accepted)',
    );
  }
  const params = /^ln=([^,]*),r=([^,]*),p=([^,]*)$/.exec(parts[2]);
  if (!params) throw new FieldError('the scrypt parameters are not ln=<log2 N>,r=<r>,p=<p>');
  const ln = wholeNumber(params[1], 'ln');
  const r = wholeNumber(params[2], 'r');
  const p = wholeNumber(params[3], 'p');
  if (ln < MIN_LN) throw new FieldError(`scrypt N is below 2^${MIN_LN} (ln < ${MIN_LN})`);
  if (p > MAX_P) throw new FieldError(`scrypt p is over ${MAX_P}`);
  if (ln > 30 || 128 * r * 2 ** ln > MAX_SCRYPT_MEMORY) {
    throw new FieldError(`scrypt 128·r·N is over ${MAX_SCRYPT_MEMORY / 2 ** 20} MiB`);
  }
  const salt = base64Field(parts[3], 'salt');
  if (salt.length < MIN_SALT_BYTES) {
    throw new FieldError(`the salt is shorter than ${MIN_SALT_BYTES} bytes`);
  }
  const hash = base64Field(parts[4], 'hash');
  if (hash.length < MIN_HASH_BYTES || hash.length > MAX_HASH_BYTES) {
    throw new FieldError(`the hash is not ${MIN_HASH_BYTES} to ${MAX_HASH_BYTES} bytes`);
  }
  return { ln, r, p, salt, hash, text };
}

export function formatCredential(params: ScryptParams, salt: Buffer, hash: Buffer): string {
  return `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/**
 * The `maxmem` one scrypt call needs (OpenSSL counts 128·r·(N+2) + 128·r·p), with room to
 * spare. Node's default of 32 MiB would refuse N = 2^17, r = 8.
 */
export function scryptMaxmem(params: ScryptParams): number {
  return 128 * params.r * (2 ** params.ln + 2 + params.p) + 1024 * 1024;
}

/** Passwords are compared as the UTF-8 bytes of their NFC form (RFC 8265 leans that way). */
export function passwordBytes(password: string | Buffer): Buffer {
  return typeof password === 'string' ? Buffer.from(password.normalize('NFC'), 'utf8') : password;
}

/** crypto.scrypt on libuv's thread pool: never on the event loop. */
export function deriveKey(
  password: string | Buffer,
  salt: Buffer,
  keyLength: number,
  params: ScryptParams,
): Promise<Buffer> {
  const options: ScryptOptions = {
    N: 2 ** params.ln,
    r: params.r,
    p: params.p,
    maxmem: scryptMaxmem(params),
  };
  return new Promise((resolve, reject) => {
    scryptCallback(passwordBytes(password), salt, keyLength, options, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

/** A new credential for a password (or token): random salt, `params` (default production). */
export async function hashPassword(
  password: string | Buffer,
  params: ScryptParams = DEFAULT_SCRYPT,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await deriveKey(password, salt, HASH_BYTES, params);
  return formatCredential(params, salt, hash);
}

/** One line of the file: kept as written (comments, blank lines) or an account. */
type Line = { readonly text: string; readonly account?: Account };

export interface AccountsOptions {
  /** `--read-only`: every `rw` is capped to `r`. */
  readOnly?: boolean;
}

/** The accounts of one file (or none), with the permission rules over names. */
export class Accounts {
  private readonly byName: ReadonlyMap<string, Account>;
  private readonly anonymousRules: ReadonlyMap<string, Permission>;
  private readonly rulesByName = new Map<string, ReadonlyMap<string, Permission>>();

  private constructor(
    private readonly lines: readonly Line[],
    /** False when there is no accounts file: anonymous may do everything (or protected mode). */
    readonly configured: boolean,
    readonly readOnly: boolean,
  ) {
    const byName = new Map<string, Account>();
    for (const line of lines) if (line.account) byName.set(line.account.name, line.account);
    this.byName = byName;
    for (const account of byName.values()) {
      this.rulesByName.set(account.name, ruleMap(account.rules));
    }
    this.anonymousRules = this.rulesByName.get(ANONYMOUS) ?? new Map();
  }

  /** Parses a file's text. Throws AccountsFileError naming the first bad line. */
  static parse(text: string, options: AccountsOptions = {}): Accounts {
    const lines: Line[] = [];
    const firstLine = new Map<string, number>();
    const body = text.startsWith('\uFEFF') ? text.slice(1) : text; // a BOM from an editor
    const rows = body === '' ? [] : body.split('\n');
    if (rows[rows.length - 1] === '') rows.pop();
    rows.forEach((raw, index) => {
      const number = index + 1;
      const row = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (/^\s*(#|$)/.test(row)) {
        lines.push({ text: row });
        return;
      }
      let account: Account;
      try {
        account = parseAccountLine(row);
      } catch (error) {
        if (error instanceof FieldError) throw new AccountsFileError(error.message, number);
        throw error;
      }
      const earlier = firstLine.get(account.name);
      if (earlier !== undefined) {
        throw new AccountsFileError(`the name is already on line ${earlier}`, number);
      }
      firstLine.set(account.name, number);
      lines.push({ text: row, account });
    });
    return new Accounts(lines, true, options.readOnly ?? false);
  }

  /** No accounts file: anonymous may do everything (`rw=/`), capped by `--read-only`. */
  static open(options: AccountsOptions = {}): Accounts {
    const everyone: Account = { name: ANONYMOUS, rules: [{ permission: 'rw', prefix: '/' }] };
    return new Accounts([{ text: '', account: everyone }], false, options.readOnly ?? false);
  }

  /** An empty file, for `users add` on a file that does not exist yet. */
  static empty(options: AccountsOptions = {}): Accounts {
    return new Accounts([], true, options.readOnly ?? false);
  }

  withReadOnly(readOnly: boolean): Accounts {
    return new Accounts(this.lines, this.configured, readOnly);
  }

  /** An account with a credential (not `anonymous`), or undefined. */
  get(name: string): Account | undefined {
    const account = this.byName.get(name);
    return account?.credential ? account : undefined;
  }

  /** Every entry in file order, `anonymous` included when the file has it. */
  get accounts(): Account[] {
    return [...this.byName.values()];
  }

  /** The number of accounts that can log in (`anonymous` does not count). */
  get size(): number {
    return this.accounts.filter((account) => account.credential).length;
  }

  /**
   * What `account` (undefined or unknown: anonymous) may do with a name, `--read-only`
   * applied: the longest rule prefix that covers the name's whole leading segments wins;
   * no rule is `-`.
   */
  permission(account: string | undefined, name: string): Permission {
    const permission = this.rulePermission(account, name);
    return this.readOnly && permission === 'rw' ? 'r' : permission;
  }

  /** The permission the rules give, before `--read-only` caps it. */
  rulePermission(account: string | undefined, name: string): Permission {
    const rules = this.rulesOf(account);
    // The name itself, then each shorter run of whole segments, then the root ('').
    let end = name.length;
    for (;;) {
      const found = rules.get(name.slice(0, end));
      if (found !== undefined) return found;
      if (end === 0) return '-';
      end = Math.max(0, name.lastIndexOf('/', end - 1));
    }
  }

  /** LIST shows it; READ, HASH, GET, HEAD may open it. */
  canRead(account: string | undefined, name: string): boolean {
    return this.permission(account, name) !== '-';
  }

  /** WRITE and PUT may create it (`--read-only` applied). */
  canWrite(account: string | undefined, name: string): boolean {
    return this.permission(account, name) === 'rw';
  }

  /** True when some name could be readable: a rule other than `-`. */
  canReadSomething(account: string | undefined): boolean {
    for (const permission of this.rulesOf(account).values()) if (permission !== '-') return true;
    return false;
  }

  /** Entries (`anonymous` included) whose `rw` rules `--read-only` caps: for the start warning. */
  cappedAccounts(): string[] {
    if (!this.readOnly || !this.configured) return [];
    return this.accounts
      .filter((account) => account.rules.some((rule) => rule.permission === 'rw'))
      .map((account) => account.name);
  }

  /** Adds or replaces an entry, in place when it exists (its line keeps its position). */
  withAccount(account: Account): Accounts {
    // The checks a parsed line passes, also for an entry built in code.
    makeAccount(account.name, account.credential?.text, formatRules(account.rules));
    const text = formatAccount(account);
    let replaced = false;
    const lines = this.lines.map((line) => {
      if (line.account?.name !== account.name) return line;
      replaced = true;
      return { text, account };
    });
    if (!replaced) lines.push({ text, account });
    return new Accounts(lines, true, this.readOnly);
  }

  /** Without the entry of that name (unchanged when there is none). */
  without(name: string): Accounts {
    const lines = this.lines.filter((line) => line.account?.name !== name);
    return new Accounts(lines, true, this.readOnly);
  }

  /** The file's text: comments, blank lines and untouched entries as they were. */
  toText(): string {
    return this.lines.map((line) => `${line.text}\n`).join('');
  }

  private rulesOf(account: string | undefined): ReadonlyMap<string, Permission> {
    if (account !== undefined && this.get(account)) {
      return this.rulesByName.get(account) ?? this.anonymousRules;
    }
    return this.anonymousRules;
  }
}

/** Prefix (without its leading `/`, so `/` is `''`) → permission. */
function ruleMap(rules: readonly Rule[]): ReadonlyMap<string, Permission> {
  return new Map(rules.map((rule) => [rule.prefix.slice(1), rule.permission]));
}

function parseAccountLine(row: string): Account {
  const first = row.indexOf(':');
  const second = first < 0 ? -1 : row.indexOf(':', first + 1);
  if (second < 0) throw new FieldError('expected <name>:<credential>:<rules>');
  const name = row.slice(0, first);
  const credentialText = row.slice(first + 1, second);
  const rulesText = row.slice(second + 1);
  if (!NAME.test(name)) {
    throw new FieldError('the name is not 1 to 64 of A-Z a-z 0-9 . _ -');
  }
  const rules = parseRules(rulesText);
  if (name === ANONYMOUS) {
    if (credentialText !== '') throw new FieldError('anonymous must have an empty credential');
    return { name, rules };
  }
  if (credentialText === '') throw new FieldError('the credential is empty');
  return { name, credential: parseCredential(credentialText), rules };
}

function formatAccount(account: Account): string {
  return `${account.name}:${account.credential?.text ?? ''}:${formatRules(account.rules)}`;
}

/** Builds an entry from a name, a credential's text (or none for anonymous) and rules text. */
export function makeAccount(name: string, credential: string | undefined, rules: string): Account {
  try {
    return parseAccountLine(`${name}:${credential ?? ''}:${rules}`);
  } catch (error) {
    if (error instanceof FieldError) throw new AccountsFileError(error.message);
    throw error;
  }
}

/** Mode bits that let group or others read or write: the server refuses such a file. */
export const UNSAFE_MODE_BITS = 0o077;

/**
 * Reads and parses the accounts file. Refuses it when its mode lets group or others in
 * (mode & 077), with a message that says how to fix it. The mode is read from the same
 * descriptor the text is read from.
 */
export async function loadAccounts(path: string, options: AccountsOptions = {}): Promise<Accounts> {
  // O_NONBLOCK: a FIFO put in the file's place must not hang the open.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new AccountsFileError('not a regular file', undefined, path);
    const mode = stats.mode & 0o777;
    if (mode & UNSAFE_MODE_BITS) {
      throw new AccountsFileError(
        `mode ${mode.toString(8).padStart(4, '0')} gives group or others access; run chmod 600 ${path}`,
        undefined,
        path,
      );
    }
    const text = await readFile(handle, 'utf8');
    try {
      return Accounts.parse(text, options);
    } catch (error) {
      if (error instanceof AccountsFileError) {
        throw new AccountsFileError(error.reason, error.line, path);
      }
      throw error;
    }
  } finally {
    await handle.close();
  }
}
