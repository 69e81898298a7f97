/**
 * The command router: frames in (from the frame splitter), reply bytes out. It parses each
 * line into a request and forks it to one branch, one request at a time, in order:
 *   LIST  → the catalog formatter,
 *   READ  → the size header, then the download stage (paced chunks of the open file),
 *   WRITE → the upload intake (checks, then the upload sink or a drain), fed the payload frames,
 *   HASH, BYE → a single reply line.
 * Branch output is forwarded with backpressure: the next frame is not taken until the reply
 * before it has been handed on, so a slow reader holds only about one chunk in memory.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { ProtocolError, shuttingDown } from '../lib/errors.js';
import { ChunkPacer, type ChunkBudget } from '../lib/chunk-pacer.js';
import type { ChunkPool } from '../lib/chunk-pool.js';
import { checkName } from '../lib/media-names.js';
import { okLine, parseRequest, type Request } from '../lib/protocol.js';
import type { HashCache } from '../lib/hash-cache.js';
import type { Storage } from '../lib/storage.js';
import {
  AUTH_FAILURES_PER_CONNECTION,
  type Access,
  type Peer,
  type Principal,
} from '../lib/access.js';
import { isValidAccountName } from '../lib/accounts.js';
import type { Frame, LineFrame } from './frame-splitter.js';
import { catalogFormatter } from './catalog-formatter.js';
import { writeThen } from '../lib/backpressure.js';
import { download } from './download.js';
import { uploadIntake, type UploadIntake } from './upload-intake.js';

/** One finished command, for the server's log (never a password: AUTH logs the account). */
export interface CommandRecord {
  verb: string;
  name?: string;
  /** The account the command ran as (undefined: anonymous, or no accounts). */
  account?: string;
  bytes: number;
  ms: number;
  result: string;
}

export interface CommandRouterOptions {
  storage: Storage;
  hashes: HashCache;
  /** Shared by every connection's downloads, to bound the memory their chunks hold. */
  chunkBudget?: ChunkBudget;
  /**
   * The connection's chunk memory: the door frees each chunk from the socket's write callback
   * (see chunk-pool.ts). Without it, each chunk is a new buffer.
   */
  pool?: ChunkPool;
  readOnly?: boolean;
  maxUpload?: number;
  /** Every finished command. */
  onCommand?: (record: CommandRecord) => void;
  /** A fault answered with INTERNAL. */
  onFault?: (error: Error) => void;
  /** Progress: a complete line, or payload bytes received or sent. Resets the idle timer. */
  onProgress?: () => void;
  /** Accounts, rules and AUTH (lib/access.ts); without it everyone may do everything. */
  access?: Access;
  /** The client, for AUTH (TLS_REQUIRED, the rate limit by address) and the log. */
  peer?: Peer;
  /**
   * Payload frames are cut from socket reads that nothing else keeps (the TCP door): an
   * upload gives each one's memory back once stored (UploadSinkOptions.consumesChunks).
   */
  consumesPayload?: boolean;
}

/** The WRITE whose payload is arriving. Without an intake, its bytes are dropped. */
interface Inbound {
  name?: string;
  left: number;
  received: number;
  started: number;
  intake?: UploadIntake;
  /** The reply code; set once an ERR has been sent for this WRITE. */
  result: string;
  answered: boolean;
}

const VERBS = new Set(['LIST', 'READ', 'WRITE', 'HASH', 'BYE', 'AUTH', 'WHOAMI']);

/**
 * An HTTP request line (`GET / HTTP/1.1`): a web page making a browser talk to this door. The
 * first such line closes the connection without a reply (access.md, cross-protocol defence).
 */
const HTTP_REQUEST_LINE = /^[A-Za-z]+ \S+ HTTP\/1\.\d\r?$/;

function verbForLog(line: Buffer): string {
  const verb = line.subarray(0, Math.min(line.length, 16)).toString('latin1').split(',')[0];
  const upper = verb.toUpperCase().trim();
  return VERBS.has(upper) ? upper : '?';
}

export class CommandRouter extends Transform {
  /** A request is in progress (including a WRITE's payload). */
  busy = false;
  /** The router has ended its output; the connection is closing. */
  closing = false;
  private shuttingDown = false;
  private inbound?: Inbound;
  /** A READ's bytes are being sent: an ERR now would break the framing. */
  private sendingPayload = false;
  private demandWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  private readonly options: CommandRouterOptions;
  /** Chunk sizes for this connection's downloads, following its reader's pace. */
  private readonly pacer: ChunkPacer;
  /** Who this connection authenticated as (AUTH); undefined is anonymous. */
  private principal?: Principal;
  private authFailures = 0;
  /** A non-empty line has come: the cross-protocol check is behind us. */
  private sawLine = false;

  constructor(options: CommandRouterOptions) {
    // No buffering of its own: a chunk is handed on only when the socket side asks, which is
    // also how the pacer learns the reader's pace.
    super({ writableObjectMode: true, readableHighWaterMark: 0 });
    this.options = options;
    this.pacer = new ChunkPacer({ budget: options.chunkBudget });
  }

  /**
   * The request in flight waits on the server (the store, the hash, a publish's fsync), not on
   * the client: no payload bytes owed by it, no reply bytes waiting for it to read them.
   */
  get serverWorking(): boolean {
    if (!this.busy || this.closing) return false;
    // A chunk the store has not yet taken (the intake waits to drain) is the server's time.
    const inbound = this.inbound;
    const awaitingPayload =
      inbound !== undefined && inbound.left > 0 && inbound.intake?.writableNeedDrain !== true;
    return !awaitingPayload && this.demandWaiters.length === 0;
  }

  /** QUIT: finish what is in flight, then answer SHUTTING_DOWN and close. Idle closes now. */
  shutdown(): void {
    this.shuttingDown = true;
    if (!this.busy) this.close(shuttingDown());
  }

  /**
   * The idle timeout: answer TIMEOUT and close, or, mid-READ, just close (an ERR inside the
   * announced bytes would break the framing).
   */
  timeout(): void {
    if (this.sendingPayload) {
      this.destroy(new Error('idle timeout in the middle of a READ'));
      return;
    }
    this.close(new ProtocolError('TIMEOUT', 'no progress for the idle timeout'));
  }

  override _transform(frame: Frame, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.closing) {
      callback(); // after the last reply, input is drained and dropped
      return;
    }
    switch (frame.kind) {
      case 'overflow':
        this.close(new ProtocolError('LINE_TOO_LONG', 'the command line is over 4096 bytes'));
        callback();
        return;
      case 'payload':
        this.takePayload(frame.chunk, callback);
        return;
      case 'line':
        this.options.onProgress?.();
        if (this.shuttingDown) {
          this.close(shuttingDown());
          callback();
          return;
        }
        this.handleLine(frame).then(() => callback(), callback);
    }
  }

  override _flush(callback: TransformCallback): void {
    // The client closed its side; a WRITE still waiting for bytes can never complete.
    this.inbound?.intake?.destroy();
    callback();
  }

  override _read(size: number): void {
    super._read(size);
    const waiters = this.demandWaiters;
    this.demandWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const waiters = this.demandWaiters;
    this.demandWaiters = [];
    for (const waiter of waiters) waiter.reject(error ?? new Error('connection closed'));
    const intake = this.inbound?.intake;
    this.inbound = undefined;
    if (!intake || intake.closed) {
      callback(error);
      return;
    }
    // Wait for the temporary file to be gone before reporting the stream closed.
    intake.once('close', () => callback(error));
    intake.destroy(new Error('connection closed'));
  }

  /** Replies with the error (INTERNAL for a fault) and closes if its code says so. */
  private replyError(error: unknown): string {
    const protocolError =
      error instanceof ProtocolError
        ? error
        : new ProtocolError('INTERNAL', 'the server hit an unexpected fault');
    if (!(error instanceof ProtocolError)) {
      this.options.onFault?.(error instanceof Error ? error : new Error(String(error)));
    }
    if (protocolError.closes) this.close(protocolError);
    else this.push(protocolError.toReply());
    return protocolError.code;
  }

  /** Sends a last reply and ends the output; any upload still open is aborted. */
  private close(reply?: ProtocolError | string): void {
    if (this.closing) return;
    this.closing = true;
    if (reply !== undefined) this.push(typeof reply === 'string' ? reply : reply.toReply());
    this.push(null);
    this.inbound?.intake?.destroy();
  }

  private record(
    verb: string,
    name: string | undefined,
    bytes: number,
    started: number,
    result: string,
  ): void {
    const account = this.options.access?.account(this.principal);
    this.options.onCommand?.({
      verb,
      name,
      account,
      bytes,
      ms: performance.now() - started,
      result,
    });
  }

  /** A request is over: under QUIT, the connection closes now. */
  private finishRequest(): void {
    this.busy = false;
    if (this.shuttingDown) this.close(shuttingDown());
  }

  private async handleLine(frame: LineFrame): Promise<void> {
    const started = performance.now();
    if (!this.sawLine && frame.line.length > 0 && frame.line[0] !== 0x0d) {
      this.sawLine = true;
      if (HTTP_REQUEST_LINE.test(frame.line.toString('latin1'))) {
        this.record('HTTP', undefined, 0, started, 'FOREIGN_PROTOCOL');
        this.close(); // no reply: the browser must learn nothing
        return;
      }
    }
    let request: Request | undefined;
    try {
      request = parseRequest(frame.line, { maxUpload: this.options.maxUpload });
    } catch (error) {
      const code = this.replyError(error);
      const verb = verbForLog(frame.line);
      if (frame.payload > 0 && !this.closing) {
        this.busy = true; // a WRITE rejected before its name was known: drain its payload
        this.expectPayload({
          left: frame.payload,
          received: 0,
          started,
          result: code,
          answered: true,
        });
      } else {
        this.record(verb, undefined, 0, started, code);
      }
      return;
    }
    if (request === undefined) return; // empty line
    this.busy = true;
    if (request.verb === 'WRITE') {
      await this.beginWrite(request, frame.payload, started);
      return;
    }
    // AUTH logs the account, never a field that may be a password typed in the wrong place.
    const name =
      'name' in request
        ? request.name
        : request.verb === 'AUTH'
          ? isValidAccountName(request.account)
            ? request.account
            : '(not a valid name)'
          : undefined;
    let bytes = 0;
    let result = 'OK';
    try {
      bytes = await this.answer(request);
    } catch (error) {
      if (this.sendingPayload || this.destroyed) throw error; // mid-payload: only closing is left
      result = this.replyError(error);
    }
    this.record(request.verb, name, bytes, started, result);
    this.finishRequest();
  }

  /** AUTH: a new account for the next commands, or a refusal that keeps the current one. */
  private async authenticate(account: string, password: string): Promise<void> {
    const access = this.options.access;
    if (!access) throw new ProtocolError('AUTH_FAILED', 'this server has no accounts');
    try {
      this.principal = await access.authenticate(account, password, {
        address: this.options.peer?.address,
        port: this.options.peer?.port,
        secure: this.options.peer?.secure ?? false,
        door: 'tcp',
      });
    } catch (error) {
      // The third failure on one connection closes it (vsftpd's rule).
      if (error instanceof ProtocolError && error.code === 'AUTH_FAILED') {
        this.authFailures++;
        if (this.authFailures >= AUTH_FAILURES_PER_CONNECTION) {
          throw new ProtocolError('AUTH_FAILED', error.message, { closes: true });
        }
      }
      throw error;
    }
    this.push(okLine('AUTH', access.whoami(this.principal)));
  }

  /** Answers LIST, READ, HASH, BYE, AUTH or WHOAMI; returns the bytes sent. */
  private async answer(request: Exclude<Request, { verb: 'WRITE' }>): Promise<number> {
    const access = this.options.access;
    switch (request.verb) {
      case 'LIST': {
        // Only what this client may read, counted after filtering.
        const readable = access?.listFilter(this.principal);
        const type = request.type;
        const all = await this.options.storage.list();
        const entries =
          type || readable
            ? all.filter(
                (entry) => (!type || entry.type === type) && (!readable || readable(entry.name)),
              )
            : all;
        const formatter = catalogFormatter({ count: entries.length });
        Readable.from(entries).pipe(formatter);
        return this.forward(formatter);
      }
      case 'READ':
        return this.sendFile(request.name, request.offset, request.length);
      case 'HASH': {
        checkName(request.name);
        access?.checkRead(this.principal, request.name); // before the store: existence stays hidden
        const file = await this.options.storage.open(request.name);
        const { sha256, size } = await this.options.hashes.hash(file);
        this.push(okLine(sha256, size));
        return 0;
      }
      case 'BYE':
        this.close(okLine('BYE'));
        return 0;
      case 'AUTH':
        await this.authenticate(request.account, request.password);
        return 0;
      case 'WHOAMI':
        this.push(okLine('WHOAMI', access ? access.whoami(this.principal) : 'anonymous'));
        return 0;
    }
  }

  private async sendFile(
    name: string,
    offset: number,
    length: number | undefined,
  ): Promise<number> {
    checkName(name);
    this.options.access?.checkRead(this.principal, name); // before the store: existence stays hidden
    const file = await this.options.storage.open(name);
    if (offset > file.size) {
      await file.close();
      throw new ProtocolError('BAD_RANGE', `offset ${offset} is past the end (${file.size} bytes)`);
    }
    const count = Math.min(length ?? Infinity, file.size - offset);
    const header = Buffer.from(okLine(count));
    if (count === 0) {
      await file.close();
      this.push(header);
      return 0;
    }
    const chunks = download(file, {
      offset,
      length: count,
      pacer: this.pacer,
      budget: this.options.chunkBudget,
      pool: this.options.pool,
      header, // leaves with the first chunk, in one write
    });
    // A file that shrinks makes the download throw: before the header left, the client gets
    // INTERNAL; mid-send, fewer bytes than announced would break the framing (it closes).
    const sent = await this.forward(chunks, { payload: true });
    this.sendingPayload = false;
    return sent - header.length;
  }

  /** Resolves when the readable side wants more, rejects if the router is destroyed. */
  private demand(): Promise<void> {
    if (this.destroyed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => this.demandWaiters.push({ resolve, reject }));
  }

  /**
   * Hands a branch's output on, with backpressure; returns the bytes taken from `source`.
   * - `payload` (a READ): once its first chunk (which carries the `OK <n>` header) is pushed,
   *   an ERR would break the framing; until then a failing source is answered like any other
   *   error.
   */
  private async forward(
    source: AsyncIterable<Buffer>,
    { payload = false }: { payload?: boolean } = {},
  ): Promise<number> {
    let sent = 0;
    for await (const chunk of source) {
      sent += chunk.length;
      this.options.onProgress?.();
      if (payload) this.sendingPayload = true;
      if (!this.push(chunk)) await this.demand();
    }
    return sent;
  }

  private async beginWrite(
    request: { name: string; size: number },
    payload: number,
    started: number,
  ): Promise<void> {
    const access = this.options.access;
    const principal = this.principal;
    const intake = await uploadIntake({
      storage: this.options.storage,
      hashes: this.options.hashes,
      name: request.name,
      size: request.size,
      readOnly: this.options.readOnly,
      consumesChunks: this.options.consumesPayload,
      guard: access && {
        account: (name) => access.checkWriteAccount(principal, name),
        write: (name) => access.checkWrite(principal, name),
      },
    });
    const inbound: Inbound = {
      name: request.name,
      left: payload,
      received: 0,
      started,
      intake,
      result: 'OK',
      answered: false,
    };
    // A refusal is answered at once, up front or mid-payload; the rest is drained.
    const refuse = (error: Error): void => {
      if (inbound.answered || this.closing) return;
      inbound.answered = true;
      inbound.result = this.replyError(error);
    };
    if (intake.refusal instanceof ProtocolError && intake.refusal.code === 'AUTH_REQUIRED') {
      // A client with no account does not get its payload read: it could hold anything,
      // commands included. The connection closes after the answer.
      intake.destroy();
      inbound.answered = true;
      inbound.result = 'AUTH_REQUIRED';
      this.close(new ProtocolError('AUTH_REQUIRED', intake.refusal.message, { closes: true }));
      this.inbound = undefined;
      this.record('WRITE', request.name, 0, started, inbound.result);
      return;
    }
    if (intake.refusal) refuse(intake.refusal);
    intake.on('refused', refuse);
    this.expectPayload(inbound);
    if (inbound.left === 0) await this.completeWrite(inbound);
  }

  private expectPayload(inbound: Inbound): void {
    this.inbound = inbound;
    if (inbound.left === 0 && !inbound.intake) {
      this.inbound = undefined;
      this.record('WRITE', inbound.name, 0, inbound.started, inbound.result);
      this.finishRequest();
    }
  }

  private takePayload(chunk: Buffer, callback: TransformCallback): void {
    const inbound = this.inbound;
    if (!inbound) {
      callback(); // the payload of a WRITE that closed the connection
      return;
    }
    inbound.left -= chunk.length;
    inbound.received += chunk.length;
    this.options.onProgress?.();
    const next = (): void => {
      if (inbound.left > 0) callback();
      else this.completeWrite(inbound).then(() => callback(), callback);
    };
    if (inbound.intake) writeThen(inbound.intake, chunk, next);
    else next(); // the payload of a WRITE refused before its name was known: dropped
  }

  /** The payload is all here: publish (or finish draining) and reply. */
  private async completeWrite(inbound: Inbound): Promise<void> {
    const intake = inbound.intake;
    if (intake) {
      intake.end();
      try {
        const receipt = await intake.result;
        this.push(okLine(receipt.size, receipt.sha256));
      } catch (error) {
        if (!inbound.answered && !this.closing) {
          inbound.answered = true;
          inbound.result = this.replyError(error);
        }
      }
    }
    this.inbound = undefined;
    this.record('WRITE', inbound.name, inbound.received, inbound.started, inbound.result);
    this.finishRequest();
  }
}

export function commandRouter(options: CommandRouterOptions): CommandRouter {
  return new CommandRouter(options);
}
