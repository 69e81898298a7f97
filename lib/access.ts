/**
 * Who may do what (access.md): the one access layer both doors call. It holds the accounts
 * (through the Authenticator, which swaps them on reload), and answers, for a client:
 * - `admit`: protected mode (PROTECTED), when a connection opens;
 * - `authenticate` / `authenticateBasic`: TLS_REQUIRED, RATE_LIMITED, AUTH_FAILED, or a
 *   Principal the connection (TCP) or request (HTTP) keeps;
 * - `checkRead`, `listFilter`, `checkWriteAccount`, `checkWrite`: AUTH_REQUIRED or DENIED,
 *   by the rules in force at the time of the call.
 * Every AUTH outcome is logged here with the account name and the peer, never a password.
 *
 * A door keeps only the Principal (or undefined) and asks again for each command: a reload
 * between two commands changes the answer, and a principal whose account was removed or
 * whose credential was replaced is anonymous from then on.
 */
import {
  Accounts,
  isValidAccountName,
  loadAccounts,
  type Permission,
  ANONYMOUS,
} from './accounts.js';
import {
  AccessError,
  Authenticator,
  type AuthenticatorOptions,
  isAccessError,
  type Principal,
} from './authenticator.js';
import { ProtocolError } from './errors.js';
import type { Logger } from './log.js';
import { isLoopbackAddress, isLoopbackHost } from './loopback.js';

export type { Principal } from './authenticator.js';
export {
  AccessError,
  ACCESS_ERROR_CODES,
  type AccessErrorCode,
  isAccessError,
} from './authenticator.js';

/** The third AUTH_FAILED on one TCP connection closes it (the door counts). */
export const AUTH_FAILURES_PER_CONNECTION = 3;

/** HTTP `WWW-Authenticate` for a 401 (AUTH_REQUIRED, AUTH_FAILED). */
export const WWW_AUTHENTICATE = 'Basic realm="ioe", charset="UTF-8"';

export const AUTH_REQUIRED_MESSAGE = 'this needs an account: authenticate first';
export const DENIED_MESSAGE = 'this account may not do that with this name';
export const TLS_REQUIRED_MESSAGE =
  'a password is accepted from this address only over TLS; connect with TLS';
export const PROTECTED_MESSAGE =
  'protected mode: this server has no accounts and serves only clients on its own machine; ' +
  'add an account (ioe-server users add NAME) and start it with --users FILE, ' +
  'or start it with --public to share everything with everyone';
/** The same text as the upload intake's, so the answer does not depend on who checks. */
export const READ_ONLY_MESSAGE = 'the server is read-only';

/** The client, as a door sees it. */
export interface Peer {
  /** `socket.remoteAddress` (any spelling: it is made canonical for counting). */
  readonly address: string | undefined;
  readonly port?: number;
  /** True when the connection is TLS: a password may then come from anywhere. */
  readonly secure: boolean;
  readonly door: 'tcp' | 'http';
}

export interface AccessOptions {
  /** The accounts file (`--users`); undefined: no accounts (everyone, or protected mode). */
  usersFile?: string;
  /** `--read-only`: every account's `rw` is capped to `r`. */
  readOnly?: boolean;
  /** `--public`: no accounts on a non-loopback bind is on purpose (no protected mode). */
  public?: boolean;
  /** The host the doors bind (`--host`): protected mode applies when it is not loopback. */
  bindHost: string;
  /** `--insecure-auth`: accept passwords in clear from non-loopback addresses. */
  insecureAuth?: boolean;
  log?: Logger;
  /** Test hooks and tuning of the password checks (clock, key derivation, cache). */
  authenticator?: Omit<AuthenticatorOptions, 'accounts'>;
}

export type ReloadResult =
  | { readonly ok: true; readonly accounts: number; readonly capped: readonly string[] }
  | { readonly ok: false; readonly error: Error };

export class Access {
  readonly authenticator: Authenticator;
  private readonly options: AccessOptions;
  /** Whether only this machine can reach the bind: asked by every HTTP request, parsed once. */
  private readonly loopbackBind: boolean;

  /** Prefer `Access.create`, which loads the file; this takes accounts already loaded. */
  constructor(accounts: Accounts, options: AccessOptions) {
    this.options = options;
    this.loopbackBind = isLoopbackHost(options.bindHost);
    const capped =
      options.readOnly === undefined ? accounts : accounts.withReadOnly(options.readOnly);
    this.authenticator = new Authenticator({ ...options.authenticator, accounts: capped });
  }

  /**
   * Loads `usersFile` (mode check, parse; throws AccountsFileError, which the server prints
   * and refuses to start on) or, without one, allows everyone (protected mode aside).
   */
  static async create(options: AccessOptions): Promise<Access> {
    const accounts = await loadOrOpen(options);
    return new Access(accounts, options);
  }

  /** The accounts in force. */
  get accounts(): Accounts {
    return this.authenticator.accounts;
  }

  /** No accounts file, a bind others can reach, and no `--public`. */
  get protectedMode(): boolean {
    return !this.loopbackBind && !this.accounts.configured && !this.options.public;
  }

  /** Lines for the start-up log (`warn`): what is more open, or less, than it looks. */
  startWarnings(): string[] {
    const warnings: string[] = [];
    if (!this.accounts.configured && this.options.public) {
      warnings.push('--public with no accounts: every client may do everything');
    }
    if (this.accounts.configured && this.accounts.size === 0) {
      warnings.push('the accounts file has no account that can log in');
    }
    for (const name of this.accounts.cappedAccounts()) {
      warnings.push(`--read-only caps the rw rules of ${name} to r`);
    }
    if (this.options.insecureAuth) {
      warnings.push('--insecure-auth: passwords are accepted in clear from any address');
    }
    return warnings;
  }

  /**
   * When a connection opens (TCP: before anything is read; HTTP: the door answers the first
   * request `403` and closes). Throws PROTECTED (closes) in protected mode for a client that
   * is not loopback.
   */
  admit(address: string | undefined): void {
    if (this.protectedMode && !isLoopbackAddress(address)) {
      throw new AccessError('PROTECTED', PROTECTED_MESSAGE);
    }
  }

  /**
   * TCP `AUTH,<name>,<password>` (and each HTTP Basic request). Resolves with the principal;
   * rejects with TLS_REQUIRED (the password is not checked; not a failure), RATE_LIMITED (not
   * a failure; closes) or AUTH_FAILED (a failure; the door closes on the third). The door
   * must not take the next command until this settles, and must keep the previous principal
   * when it rejects.
   */
  async authenticate(name: string, password: string | Buffer, peer: Peer): Promise<Principal> {
    const logFields = {
      door: peer.door,
      peer: peerText(peer),
      // A name typed into the password field would otherwise land in the log.
      account: isValidAccountName(name) ? name : '(not a valid name)',
      tls: peer.secure,
    };
    try {
      if (!peer.secure && !this.options.insecureAuth && !isLoopbackAddress(peer.address)) {
        throw new AccessError('TLS_REQUIRED', TLS_REQUIRED_MESSAGE);
      }
      const { principal, cached } = await this.authenticator.verify(
        name,
        password,
        peer.address ?? '',
      );
      // HTTP sends the password with every request: a success the cache answered is not news
      // (the request's own log line names the account). A TCP AUTH is always logged.
      const level = cached && peer.door === 'http' ? 'debug' : 'info';
      this.options.log?.[level]({ ...logFields, result: 'OK' }, 'auth');
      return principal;
    } catch (error) {
      if (isAccessError(error)) {
        this.options.log?.warn({ ...logFields, result: error.accessCode }, 'auth');
      }
      throw error;
    }
  }

  /**
   * HTTP: the request's `Authorization` header. No header, or a scheme other than Basic:
   * undefined (anonymous). Basic: as `authenticate`. A Basic header that is not base64 of
   * `name:password`: BAD_REQUEST.
   */
  async authenticateBasic(
    authorization: string | undefined,
    peer: Peer,
  ): Promise<Principal | undefined> {
    const credentials = parseBasicAuthorization(authorization);
    if (!credentials) return undefined;
    return this.authenticate(credentials.name, credentials.password, peer);
  }

  /** The account a principal holds now, or undefined (anonymous). */
  account(principal: Principal | undefined): string | undefined {
    return this.authenticator.resolve(principal);
  }

  /** TCP `WHOAMI`: the account's name, or `anonymous`. */
  whoami(principal: Principal | undefined): string {
    return this.account(principal) ?? ANONYMOUS;
  }

  /** The permission for a name, `--read-only` applied. */
  permission(principal: Principal | undefined, name: string): Permission {
    return this.accounts.permission(this.account(principal), name);
  }

  /**
   * READ, HASH, GET, HEAD: before the store is asked anything, so the answer is the same
   * whether or not the name exists. AUTH_REQUIRED (401) for anonymous, DENIED (403) for an
   * account.
   */
  checkRead(principal: Principal | undefined, name: string): void {
    const account = this.account(principal);
    if (this.accounts.canRead(account, name)) return;
    throw refusal(account);
  }

  /**
   * LIST, `/api/list`: the entries to show. AUTH_REQUIRED when the client is anonymous and
   * anonymous may read nothing at all; an account that may read nothing gets an empty list.
   * Take it once per LIST: it is fixed to the rules in force now.
   */
  listFilter(principal: Principal | undefined): (name: string) => boolean {
    const account = this.account(principal);
    const accounts = this.accounts;
    if (!accounts.canReadSomething(account)) {
      if (account === undefined) throw new AccessError('AUTH_REQUIRED', AUTH_REQUIRED_MESSAGE);
      return () => false;
    }
    return (name) => accounts.canRead(account, name);
  }

  /**
   * WRITE, PUT, first part, after the size and the name's bytes and before READ_ONLY:
   * AUTH_REQUIRED when the client is anonymous and anonymous's rules do not let it write this
   * name (the rules before `--read-only`, which READ_ONLY reports next).
   */
  checkWriteAccount(principal: Principal | undefined, name: string): void {
    const account = this.account(principal);
    if (account === undefined && this.accounts.rulePermission(undefined, name) !== 'rw') {
      throw new AccessError('AUTH_REQUIRED', AUTH_REQUIRED_MESSAGE);
    }
  }

  /**
   * WRITE, PUT, second part, after BAD_NAME / UNSUPPORTED_TYPE and before LOCKED: DENIED when
   * the account's rules do not allow `rw` here. Also READ_ONLY and AUTH_REQUIRED, so that
   * calling only this one still refuses what it must (in the contract's order they came
   * earlier).
   */
  checkWrite(principal: Principal | undefined, name: string): void {
    const account = this.account(principal);
    if (account === undefined) this.checkWriteAccount(principal, name);
    if (this.accounts.readOnly) throw new ProtocolError('READ_ONLY', READ_ONLY_MESSAGE);
    if (this.accounts.rulePermission(account, name) !== 'rw') throw refusal(account);
  }

  /**
   * SIGHUP: reads the accounts file again; all or nothing. On failure the accounts in force
   * stay and the reason is logged (`error`) and returned. Without `--users`, nothing to do.
   */
  async reload(): Promise<ReloadResult> {
    const { usersFile } = this.options;
    if (usersFile === undefined) return { ok: true, accounts: 0, capped: [] };
    try {
      const accounts = await this.authenticator.reload(() =>
        loadAccounts(usersFile, { readOnly: this.accounts.readOnly }),
      );
      const capped = accounts.cappedAccounts();
      this.options.log?.info({ file: usersFile, accounts: accounts.size }, 'accounts reloaded');
      for (const name of capped) {
        this.options.log?.warn(`--read-only caps the rw rules of ${name} to r`);
      }
      return { ok: true, accounts: accounts.size, capped };
    } catch (error) {
      const reason = error instanceof Error ? error : new Error(String(error));
      this.options.log?.error(
        { file: usersFile, reason: reason.message },
        'accounts not reloaded; the previous accounts stay in force',
      );
      return { ok: false, error: reason };
    }
  }
}

async function loadOrOpen(options: AccessOptions): Promise<Accounts> {
  if (options.usersFile === undefined) return Accounts.open({ readOnly: options.readOnly });
  return loadAccounts(options.usersFile, { readOnly: options.readOnly });
}

function refusal(account: string | undefined): AccessError {
  return account === undefined
    ? new AccessError('AUTH_REQUIRED', AUTH_REQUIRED_MESSAGE)
    : new AccessError('DENIED', DENIED_MESSAGE);
}

function peerText(peer: Peer): string {
  return peer.port === undefined ? `${peer.address}` : `${peer.address}:${peer.port}`;
}

/**
 * `Authorization: Basic <base64(name:password)>` (RFC 7617; the name ends at the first
 * colon; UTF-8). Undefined without a header or for another scheme; BAD_REQUEST when a Basic
 * header is malformed.
 */
export function parseBasicAuthorization(
  header: string | undefined,
): { name: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const match = /^([A-Za-z]+)[ ]+(\S*)[ ]*$/.exec(header);
  if (!match || match[1].toLowerCase() !== 'basic') {
    if (/^basic(\s|$)/i.test(header)) {
      throw new ProtocolError('BAD_REQUEST', 'the Authorization header is malformed');
    }
    return undefined;
  }
  const token = match[2];
  const decoded = /^[A-Za-z0-9+/]*={0,2}$/.test(token) ? Buffer.from(token, 'base64') : undefined;
  let text: string | undefined;
  try {
    text = decoded && new TextDecoder('utf-8', { fatal: true }).decode(decoded);
  } catch {
    text = undefined;
  }
  const colon = text?.indexOf(':') ?? -1;
  if (text === undefined || colon < 0) {
    throw new ProtocolError('BAD_REQUEST', 'the Authorization header is malformed');
  }
  return { name: text.slice(0, colon), password: text.slice(colon + 1) };
}
