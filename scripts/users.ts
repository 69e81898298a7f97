/**
 * `ioe-server users add|token|remove|list` (access.md, "Accounts"): edits the accounts file.
 *
 *   users add NAME [--rules R] [--file F]     password twice on a terminal, never echoed; with
 *                                            stdin not a terminal, one line from stdin
 *   users token NAME [--rules R] [--file F]   a random 32-byte token, printed once on stdout
 *   users remove NAME [--file F]
 *   users list [--file F]                     names and rules, never credentials
 *
 * Defaults: `--file ./ioe-users`, `--rules r=/` for a new account (an existing one keeps its
 * rules unless `--rules` is given, so `add` also changes a password and `token` replaces a
 * token). `add anonymous --rules R` sets what clients that have not logged in may do.
 * The file is written whole to a temporary file (mode 0600) and renamed over the old one;
 * comments and other lines stay as they were. A running server reads it on SIGHUP.
 *
 * `runUsersCommand(argv)` takes the arguments after `users` and resolves with the exit code.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import {
  Cancelled,
  HiddenLineReader,
  readOneLine,
  type TerminalInput,
} from '../lib/terminal-input.js';
import {
  Accounts,
  AccountsFileError,
  ANONYMOUS,
  DEFAULT_SCRYPT,
  formatRules,
  hashPassword,
  isValidAccountName,
  makeAccount,
  parseRules,
  type ScryptParams,
} from '../lib/accounts.js';

export const DEFAULT_USERS_FILE = './ioe-users';
export const DEFAULT_RULES = 'r=/';
export const TOKEN_BYTES = 32;

/** A readable that may be a terminal (process.stdin, or a test's stand-in). */
export type UsersInput = TerminalInput;

export interface UsersIo {
  stdin: UsersInput;
  stdout: Writable;
  stderr: Writable;
  /** The cost of new credentials (tests lower it); default DEFAULT_SCRYPT. */
  scrypt?: ScryptParams;
}

/** A failure to report as one line on stderr, exit code 1. */
class UsageFailure extends Error {}

export async function runUsersCommand(
  argv: readonly string[],
  io: UsersIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const say = (text: string): void => void io.stderr.write(`${text}\n`);
  const program = new Command('ioe-server users')
    .description('Edit the accounts file (--users) of ioe-server.')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => void io.stdout.write(text),
      writeErr: (text) => void io.stderr.write(text),
    })
    .showHelpAfterError();
  const fileOption = ['--file <file>', 'the accounts file', DEFAULT_USERS_FILE] as const;

  program
    .command('add')
    .description('add an account, or change its password (asked twice, never echoed)')
    .argument('<name>', 'account name: 1-64 of A-Z a-z 0-9 . _ -, or anonymous')
    .option('--rules <rules>', `e.g. r=/,rw=/uploads (default for a new account: ${DEFAULT_RULES})`)
    .option(...fileOption)
    .action(async (name: string, options: { rules?: string; file: string }) => {
      checkName(name);
      const accounts = await readAccounts(options.file, true);
      const existing = accounts.accounts.find((account) => account.name === name);
      if (name === ANONYMOUS && !existing && options.rules === undefined) {
        // The default (access.md) lets everyone read everything: say so, loudly.
        say(
          `warning: anonymous gets the default rules ${DEFAULT_RULES}: every client, signed in ` +
            'or not, may read the whole library (narrow it with --rules, e.g. r=/public)',
        );
      }
      const rules = options.rules ?? (existing ? formatRules(existing.rules) : DEFAULT_RULES);
      let credential: string | undefined;
      if (name !== ANONYMOUS) {
        checkRules(rules); // before asking for a password
        const password = await readPassword(io, name);
        credential = await hashPassword(password, io.scrypt ?? DEFAULT_SCRYPT);
      }
      const account = makeAccount(name, credential, rules);
      await writeAccounts(options.file, accounts.withAccount(account));
      say(
        `${existing ? 'updated' : 'added'} ${name} (${rules || 'no rules'}) in ${options.file}; ` +
          'a running server reads it on SIGHUP',
      );
    });

  program
    .command('token')
    .description('create or replace an account whose password is a random token, shown once')
    .argument('<name>', 'account name: 1-64 of A-Z a-z 0-9 . _ -')
    .option('--rules <rules>', `e.g. r=/music (default for a new account: ${DEFAULT_RULES})`)
    .option(...fileOption)
    .action(async (name: string, options: { rules?: string; file: string }) => {
      checkName(name);
      if (name === ANONYMOUS) throw new UsageFailure('anonymous has no password or token');
      const accounts = await readAccounts(options.file, true);
      const existing = accounts.accounts.find((account) => account.name === name);
      const rules = options.rules ?? (existing ? formatRules(existing.rules) : DEFAULT_RULES);
      checkRules(rules);
      const token = randomBytes(TOKEN_BYTES).toString('base64url');
      const credential = await hashPassword(token, io.scrypt ?? DEFAULT_SCRYPT);
      await writeAccounts(options.file, accounts.withAccount(makeAccount(name, credential, rules)));
      io.stdout.write(`${token}\n`);
      say(
        `${existing ? 'replaced the token of' : 'added'} ${name} (${rules || 'no rules'}) in ` +
          `${options.file}; the token above is shown only this once`,
      );
    });

  program
    .command('remove')
    .description('remove an account')
    .argument('<name>', 'account name')
    .option(...fileOption)
    .action(async (name: string, options: { file: string }) => {
      const accounts = await readAccounts(options.file, false);
      if (!accounts.accounts.some((account) => account.name === name)) {
        throw new UsageFailure(`there is no ${name} in ${options.file}`);
      }
      await writeAccounts(options.file, accounts.without(name));
      say(`removed ${name} from ${options.file}; a running server forgets it on SIGHUP`);
    });

  program
    .command('list')
    .description('account names and their rules (never credentials)')
    .option(...fileOption)
    .action(async (options: { file: string }) => {
      const accounts = await readAccounts(options.file, false);
      for (const account of accounts.accounts) {
        io.stdout.write(`${account.name}\t${formatRules(account.rules) || '(no rules)'}\n`);
      }
    });

  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof UsageFailure || error instanceof AccountsFileError) {
      say(`ioe-server users: ${error.message}`);
      return 1;
    }
    if (error instanceof Cancelled) return 130;
    say(`ioe-server users: ${(error as Error).message}`);
    return 1;
  }
}

function checkRules(rules: string): void {
  try {
    parseRules(rules);
  } catch (error) {
    throw new UsageFailure(`--rules: ${(error as Error).message}`);
  }
}

function checkName(name: string): void {
  if (!isValidAccountName(name)) {
    throw new UsageFailure('a name is 1 to 64 of A-Z a-z 0-9 . _ -');
  }
}

/** The file's accounts; a missing file is an empty one when `create` (add, token). */
async function readAccounts(file: string, create: boolean): Promise<Accounts> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      if (create) return Accounts.empty();
      throw new UsageFailure(`${file} does not exist`);
    }
    throw new UsageFailure(`cannot read ${file}: ${(error as Error).message}`);
  }
  try {
    return Accounts.parse(text);
  } catch (error) {
    if (error instanceof AccountsFileError) {
      throw new UsageFailure(`${file}: ${error.message}; fix it by hand first`);
    }
    throw error;
  }
}

/**
 * Writes the whole file atomically: a temporary file in the same folder with mode 0600 (and
 * the old file's owner, when this process may set it), fsync, rename over the file (through a
 * symbolic link, to its target), fsync of the folder.
 */
async function writeAccounts(file: string, accounts: Accounts): Promise<void> {
  let target = file;
  let owner: { uid: number; gid: number } | undefined;
  try {
    target = await realpath(file);
    const stats = await stat(target);
    owner = { uid: stats.uid, gid: stats.gid };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const folder = dirname(target);
  const temp = join(folder, `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await handle.chmod(0o600);
    if (owner && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.())) {
      // root editing the server's file: keep it the server's (else it could not read it).
      await handle.chown(owner.uid, owner.gid).catch(() => undefined);
    }
    await handle.writeFile(accounts.toText());
    await handle.sync();
    await handle.close();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
  await rename(temp, target);
  const dir = await open(folder, constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Twice without echo on a terminal; else one line of stdin. Never an argument. */
async function readPassword(io: UsersIo, name: string): Promise<string> {
  const { stdin } = io;
  if (stdin.isTTY && stdin.setRawMode) {
    const reader = new HiddenLineReader(stdin, io.stderr);
    try {
      const first = await reader.next(`password for ${name}: `);
      if (first === '') throw new UsageFailure('the password is empty');
      const second = await reader.next('again: ');
      if (first !== second) throw new UsageFailure('the two passwords differ; nothing changed');
      return first;
    } finally {
      reader.close();
    }
  }
  const line = await readOneLine(stdin);
  if (line === undefined) throw new UsageFailure('no password on stdin');
  if (line === '') throw new UsageFailure('the password on stdin is empty');
  return line;
}
