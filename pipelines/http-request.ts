/**
 * The HTTP door's request handler (http.md): what the command router is to the TCP door. It
 * checks the request (Host, Origin, method), then forks it to the same stages as the router:
 *   GET/HEAD /media/<name> → the download stage (paced chunks of the open file), with ranges,
 *                            validators and conditional requests;
 *   PUT /media/<name>      → the upload intake (the WRITE checks, the upload sink or a drain);
 *   GET /api/list          → the JSON catalog formatter, or the M3U one;
 *   GET /, /assets/…       → the web page, from memory.
 * Every error is a JSON body with the protocol's code and the status of http.md's table.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeExtended } from 'content-disposition';
import { ChunkPacer } from '../lib/chunk-pacer.js';
import { ChunkPool } from '../lib/chunk-pool.js';
import { ProtocolError } from '../lib/errors.js';
import {
  contentDigestSha256,
  evaluatePreconditions,
  evaluateRange,
  sha256Digest,
  strongEtag,
  validatorHeaders,
  type Validators,
} from '../lib/http-conditions.js';
import { errorBody, httpStatus, type HttpErrorCode } from '../lib/http-errors.js';
import {
  decodeMediaPath,
  mediaHref,
  MEDIA_PREFIX,
  splitTarget,
  targetAuthority,
} from '../lib/http-paths.js';
import { checkName, contentTypeOf, parseMediaType } from '../lib/media-names.js';
import { parseDecimal } from '../lib/protocol.js';
import type { StoredFile } from '../lib/storage.js';
import type { WebAssets } from '../lib/web-assets.js';
import { AccessError, WWW_AUTHENTICATE, type Principal } from '../lib/access.js';
import { catalogJson } from './catalog-json.js';
import { catalogM3u } from './catalog-m3u.js';
import { download } from './download.js';
import { LINGER_MS, type DoorContext } from './door.js';
import { uploadIntake, type UploadIntake } from './upload-intake.js';

/** An error the door answers with a status and a JSON body. */
export class HttpError extends Error {
  readonly code: HttpErrorCode;
  readonly headers: Record<string, string>;
  /** The status, when not the code's own (EXISTS is 412 under `If-None-Match: *`). */
  readonly status: number;

  constructor(
    code: HttpErrorCode,
    message: string,
    headers: Record<string, string> = {},
    status = httpStatus(code),
  ) {
    super(message);
    this.name = 'HttpError';
    this.code = code;
    this.headers = headers;
    this.status = status;
  }
}

export interface HttpRequestOptions {
  context: DoorContext;
  /** The page and its files; without them `/` is 404. */
  assets?: WebAssets;
  /**
   * The `Host` values a request may carry (lower case), when the door is bound to loopback:
   * anything else is a DNS-rebinding attempt. Undefined: any Host.
   */
  allowedHosts?: ReadonlySet<string>;
  /** `http` or `https`: the scheme of our own origin. */
  scheme?: string;
  /** A request finished or was cut: the door's log line. */
  onRequest?: (record: HttpRequestRecord) => void;
  /** A fault answered with 500. */
  onFault?: (error: Error) => void;
  /** A store fault answered with 503. */
  onStoreFault?: (error: Error) => void;
}

/** One request, for the log. */
export interface HttpRequestRecord {
  method: string;
  name?: string;
  /** The account the request ran as; undefined for anonymous. */
  account?: string;
  status: number;
  /** Body bytes sent (GET) or received (PUT). */
  bytes: number;
  ms: number;
  peer: string;
}

/** Per response: who asked, and what the log line needs. */
interface Exchange {
  /** The host the request names (`hostOf`), lower case. */
  host?: string;
  name?: string;
  bytes: number;
  /** The account of the request's Basic credentials; undefined is anonymous. */
  principal?: Principal;
}

/** Retry-After of a 503 for a store that is not answering. */
const STORE_RETRY_SECONDS = 5;

const MEDIA_METHODS = 'GET, HEAD, PUT';
const READ_METHODS = 'GET, HEAD';

/** The page may load nothing from elsewhere (http.md: no external resources). */
const PAGE_SECURITY = {
  'Content-Security-Policy':
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; style-src 'self'; " +
    "script-src 'self'; worker-src 'self'; connect-src 'self'; frame-ancestors 'none'; " +
    "base-uri 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};

/** A printable-ASCII stand-in for a file name, for clients that ignore `filename*`. */
function asciiFallback(name: string): string {
  // Quotes, backslashes and `%` too: the result goes between quotes as it is.
  return name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
}

/**
 * `inline` or `attachment`, with the name as `filename*` (UTF-8, the library's RFC 8187
 * encoding) and an ASCII `filename="…"`. Both parameters always, and the fallback always
 * quoted, as http.md writes it: the library's `format` leaves a token unquoted and `create`
 * drops `filename*` for a plain ASCII name.
 */
function dispositionOf(name: string, type: 'inline' | 'attachment'): string {
  const segment = name.slice(name.lastIndexOf('/') + 1);
  return `${type}; filename="${asciiFallback(segment)}"; filename*=${encodeExtended(segment)}`;
}

/** A stored file's validators: the strong ETag of its version, and its mtime. */
function validatorsOf(file: StoredFile): Validators {
  return { etag: strongEtag(file.version), lastModified: file.mtime };
}

export class HttpRequestHandler {
  private readonly options: HttpRequestOptions;
  private readonly context: DoorContext;
  /** Each connection's downloads follow its reader's pace, as on the TCP door. */
  private readonly pacers = new WeakMap<Socket, ChunkPacer>();
  /** Each connection's chunk memory, on the server's shelf. */
  private readonly pools = new WeakMap<Socket, ChunkPool>();

  constructor(options: HttpRequestOptions) {
    this.options = options;
    this.context = options.context;
  }

  /** The 'request' and 'checkContinue' events: `expectsContinue` for the latter. */
  handle(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    const started = performance.now();
    const exchange: Exchange = { bytes: 0 };
    res.once('close', () => {
      this.options.onRequest?.({
        method: req.method ?? '?',
        name: exchange.name,
        account: this.context.access.account(exchange.principal),
        status: res.statusCode,
        bytes: exchange.bytes,
        ms: Math.round((performance.now() - started) * 1000) / 1000,
        peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      });
    });
    this.route(req, res, exchange, expectsContinue).catch((error: unknown) =>
      this.fail(res, error),
    );
  }

  /** Answers an error: the JSON body, or a cut connection once the body has begun. */
  fail(res: ServerResponse, error: unknown, extraHeaders: Record<string, string> = {}): void {
    if (res.headersSent) {
      res.destroy(); // fewer bytes than announced must never look like a whole reply
      return;
    }
    let answer: HttpError;
    if (error instanceof HttpError) {
      answer = error;
    } else if (error instanceof ProtocolError) {
      const headers: Record<string, string> = {};
      // A login might help: the browser (or curl, VLC, mpv) is asked for Basic credentials.
      if (error.code === 'AUTH_REQUIRED' || error.code === 'AUTH_FAILED') {
        headers['WWW-Authenticate'] = WWW_AUTHENTICATE;
      }
      if (error instanceof AccessError && error.retryAfterSeconds !== undefined) {
        headers['Retry-After'] = String(error.retryAfterSeconds);
      }
      if (error.closes) headers.Connection = 'close';
      answer = new HttpError(error.code, error.message, headers);
    } else {
      const fault = error instanceof Error ? error : new Error(String(error));
      if (this.context.storage.unavailable?.(fault)) {
        // The store is down or failing: INTERNAL, as on TCP, with 503 (scale-out.md), since
        // the same request may work once the store is back.
        this.options.onStoreFault?.(fault);
        answer = new HttpError(
          'INTERNAL',
          'the store is not answering; try again later',
          { 'Retry-After': String(STORE_RETRY_SECONDS) },
          503,
        );
      } else {
        this.options.onFault?.(fault);
        answer = new HttpError('INTERNAL', 'the server hit an unexpected fault');
      }
    }
    const body = errorBody(answer.code, answer.message);
    res.writeHead(answer.status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...answer.headers,
      ...extraHeaders,
    });
    res.end(req(res).method === 'HEAD' ? undefined : body);
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    exchange: Exchange,
    expectsContinue: boolean,
  ): Promise<void> {
    const method = req.method ?? '';
    if (this.context.isQuitting()) {
      throw new HttpError('SHUTTING_DOWN', 'the server is shutting down', {
        Connection: 'close',
      });
    }
    exchange.host = this.hostOf(req);
    this.checkHost(exchange.host);
    const access = this.context.access;
    access.admit(req.socket.remoteAddress);
    const { path, query } = splitTarget(req.url ?? '/');
    // The page and its files hold nothing of the library: they load whatever the credentials
    // (wrong ones included), so that the page can say what is wrong.
    const asset = this.options.assets?.get(path);
    if (asset) {
      if (method !== 'GET' && method !== 'HEAD') throw this.methodNotAllowed(READ_METHODS);
      const headers = {
        'Content-Type': asset.contentType,
        'Content-Length': String(asset.body.length),
        ETag: asset.etag,
        'Cache-Control': 'no-cache',
        ...PAGE_SECURITY,
      };
      const fresh =
        evaluatePreconditions(method, req.headers, {
          etag: asset.etag,
          lastModified: new Date(0),
        }) === 'not-modified';
      res.writeHead(fresh ? 304 : 200, headers);
      res.end(fresh || method === 'HEAD' ? undefined : asset.body);
      return;
    }
    exchange.principal = await access.authenticateBasic(req.headers.authorization, {
      address: req.socket.remoteAddress,
      port: req.socket.remotePort,
      secure: this.options.scheme === 'https',
      door: 'http',
    });
    if (path.startsWith(MEDIA_PREFIX)) {
      if (method === 'GET' || method === 'HEAD') {
        await this.getMedia(req, res, path, query, exchange);
      } else if (method === 'PUT') {
        await this.putMedia(req, res, path, exchange, expectsContinue);
      } else {
        throw this.methodNotAllowed(MEDIA_METHODS);
      }
      return;
    }
    if (path === '/api/list') {
      if (method !== 'GET' && method !== 'HEAD') throw this.methodNotAllowed(READ_METHODS);
      await this.list(req, res, query, exchange);
      return;
    }
    if (path === '/api/whoami' || path === '/api/login') {
      if (method !== 'GET' && method !== 'HEAD') throw this.methodNotAllowed(READ_METHODS);
      this.whoami(req, res, path === '/api/login', exchange);
      return;
    }
    throw new HttpError('NOT_FOUND', 'no such page');
  }

  private methodNotAllowed(allow: string): HttpError {
    return new HttpError('METHOD_NOT_ALLOWED', `this path takes ${allow}`, { Allow: allow });
  }

  /**
   * `/api/whoami`: `{"name", "accounts"}`, who the request's credentials are (`anonymous`
   * without any) and whether the server has accounts at all. `/api/login`: the same once
   * signed in (a 303 back to the page); anonymous, a 401 that makes the browser ask for a name
   * and password (the page's "Sign in" link).
   */
  private whoami(
    req: IncomingMessage,
    res: ServerResponse,
    login: boolean,
    exchange: Exchange,
  ): void {
    const access = this.context.access;
    const name = access.whoami(exchange.principal);
    if (login && access.account(exchange.principal) === undefined) {
      throw new ProtocolError('AUTH_REQUIRED', 'sign in with an account of this server');
    }
    if (login) {
      res.writeHead(303, { Location: '/', 'Cache-Control': 'no-store', 'Content-Length': '0' });
      res.end();
      return;
    }
    const body = `${JSON.stringify({ name, accounts: access.accounts.configured })}\n`;
    res.writeHead(200, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Cache-Control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  /**
   * The host a request names (lower case): an absolute-form target's authority, else its one
   * Host header (RFC 9112 §3.2). A request with two Host headers, or an HTTP/1.1 request with
   * none, is malformed.
   */
  private hostOf(req: IncomingMessage): string {
    // Counted in the raw fields (Node keeps only the first Host), not `headersDistinct`, which
    // would build a second copy of every header for each request.
    let hosts = 0;
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') hosts++;
    }
    if (hosts > 1) throw new HttpError('BAD_REQUEST', 'a request has one Host header');
    const host = targetAuthority(req.url ?? '') ?? req.headers.host ?? '';
    // HTTP/1.0 may leave it out; an HTTP/1.1 request names one, even in absolute form.
    if (req.httpVersion !== '1.0' && (hosts === 0 || host === '')) {
      throw new HttpError('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header');
    }
    return host.toLowerCase();
  }

  /** DNS rebinding: on a loopback bind, only our own host names may be asked for. */
  private checkHost(host: string): void {
    const allowed = this.options.allowedHosts;
    if (allowed && !allowed.has(host)) {
      throw new HttpError('FORBIDDEN', `the Host ${JSON.stringify(host)} is not this server`);
    }
  }

  /** This server's origin as a request names it: `http://host:port` (lower case). */
  private originOf(exchange: Exchange): string {
    return `${this.options.scheme ?? 'http'}://${exchange.host ?? ''}`;
  }

  /** A state-changing request from a page of another origin is refused (no CORS, ever). */
  private checkOrigin(req: IncomingMessage, exchange: Exchange): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    if (origin.toLowerCase() !== this.originOf(exchange)) {
      throw new HttpError('FORBIDDEN', `requests from ${origin} may not change anything here`);
    }
  }

  /** The name of a `/media/` path, checked (BAD_NAME, UNSUPPORTED_TYPE). */
  private mediaName(path: string): string {
    const { name, slashInSegment } = decodeMediaPath(path.slice(MEDIA_PREFIX.length));
    if (slashInSegment) throw new ProtocolError('BAD_NAME', 'a path segment holds an encoded /');
    checkName(name);
    return name;
  }

  private async getMedia(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: URLSearchParams,
    exchange: Exchange,
  ): Promise<void> {
    const name = this.mediaName(path);
    exchange.name = name;
    // Before the store is asked: a refusal says nothing about whether the name exists.
    this.context.access.checkRead(exchange.principal, name);
    const file = await this.context.storage.open(name);
    let streaming = false;
    try {
      const validators = validatorsOf(file);
      const headers: Record<string, string> = {
        ...validatorHeaders(validators),
        'Accept-Ranges': 'bytes',
        'Cache-Control': 'no-cache',
      };
      const precondition = evaluatePreconditions(req.method ?? 'GET', req.headers, validators);
      if (precondition === 'failed') {
        throw new HttpError('PRECONDITION_FAILED', 'the file does not match the precondition');
      }
      if (precondition === 'not-modified') {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      const range = evaluateRange(req.headers, file.size, validators);
      if (range.kind === 'unsatisfiable') {
        throw new HttpError('BAD_RANGE', `no range starts inside the file (${file.size} bytes)`, {
          'Content-Range': `bytes */${file.size}`,
          ...headers,
        });
      }
      // Several ranges are answered with the whole file (http.md allows it): one stream, one
      // Content-Length, and no multipart for a player to get wrong.
      const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, file.size - 1];
      const length = file.size === 0 ? 0 : end - start + 1;
      Object.assign(headers, {
        'Content-Type': contentTypeOf(name),
        'Content-Length': String(length),
        'Content-Disposition': dispositionOf(name, query.has('download') ? 'attachment' : 'inline'),
        'X-Content-Type-Options': 'nosniff',
      });
      if (range.kind === 'partial') {
        headers['Content-Range'] = `bytes ${start}-${end}/${file.size}`;
      }
      res.writeHead(range.kind === 'partial' ? 206 : 200, headers);
      if (req.method === 'HEAD' || length === 0) {
        res.end();
        return;
      }
      streaming = true;
      await this.send(req.socket, res, file, start, length, exchange);
    } finally {
      if (!streaming) await file.close();
    }
  }

  /** The body of a GET, from the download stage, with backpressure. */
  private async send(
    socket: Socket,
    res: ServerResponse,
    file: StoredFile,
    offset: number,
    length: number,
    exchange: Exchange,
  ): Promise<void> {
    let pacer = this.pacers.get(socket);
    if (!pacer) {
      pacer = new ChunkPacer({ budget: this.context.chunkBudget });
      this.pacers.set(socket, pacer);
    }
    let pool = this.pools.get(socket);
    if (!pool) {
      pool = new ChunkPool(this.context.shelf);
      this.pools.set(socket, pool);
    }
    const chunks = download(file, {
      offset,
      length,
      pacer,
      budget: this.context.chunkBudget,
      pool,
    });
    for await (const chunk of chunks) {
      if (res.destroyed) break;
      exchange.bytes += chunk.length;
      // The write callback fires once the socket has sent the chunk: its buffer is free.
      const more = res.write(chunk, (error) => {
        if (!error) pool.free(chunk);
      });
      if (!more && !(await drained(res))) break;
    }
    res.end();
  }

  private async putMedia(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    exchange: Exchange,
    expectsContinue: boolean,
  ): Promise<void> {
    let continued = false;
    const createOnly = singleHeader(req.headers['if-none-match'])?.trim() === '*';
    // A refused upload is answered at once, and the client may stop sending. The body is then
    // read and dropped (closing with unread bytes would send a reset that can destroy the
    // answer before the client reads it), for LINGER_MS at most.
    const refuse = (error: unknown): void => {
      const answer =
        error instanceof ProtocolError && error.code === 'EXISTS' && createOnly
          ? new HttpError('EXISTS', error.message, {}, 412)
          : error;
      // Refused before `100 Continue`: the client holds the body back, so the connection must
      // close rather than wait for bytes that will not come.
      const close: Record<string, string> =
        expectsContinue && !continued ? { Connection: 'close' } : {};
      this.fail(res, answer, close);
      lingerWhileIncomplete(req, res);
    };
    let intake: UploadIntake;
    try {
      intake = await this.openUpload(req, path, exchange, createOnly);
    } catch (error) {
      refuse(error);
      return;
    }
    if (intake.refusal) {
      intake.destroy();
      refuse(intake.refusal);
      return;
    }
    intake.on('refused', refuse);
    // Once an answer has gone out (a refusal, a 408), Node no longer tracks this request: a
    // connection closed afterwards would leave the body's pipeline, and the upload, hanging.
    const socket = req.socket;
    const cut = (): void => {
      if (!req.complete) req.destroy(new Error('the connection closed mid-body'));
    };
    socket.once('close', cut);
    req.once('end', () => socket.off('close', cut));
    if (expectsContinue) {
      continued = true;
      res.writeContinue();
    }
    try {
      await pipeline(req, intake);
    } catch {
      // The body was cut short or the client went away: the intake aborted the upload; its
      // result says why.
    }
    exchange.bytes = intake.received;
    let receipt;
    try {
      receipt = await intake.result;
    } catch (error) {
      if (intake.refusal) return; // answered when it came
      if (!req.complete) {
        res.destroy(); // the body never came whole: the client is gone, or was cut
        return;
      }
      refuse(error); // at publish: EXISTS, DIGEST_MISMATCH, a fault
      return;
    }
    const name = exchange.name!;
    const body = `${JSON.stringify({ name, size: receipt.size, sha256: receipt.sha256 })}\n`;
    res.writeHead(receipt.published.replaced ? 200 : 201, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      Location: mediaHref(name),
      ETag: strongEtag(receipt.published.version),
      'Repr-Digest': sha256Digest(receipt.sha256),
      'Cache-Control': 'no-store',
    });
    res.end(body);
  }

  /**
   * The WRITE checks, in the WRITE order: size, limit, name bytes, READ_ONLY, name rules, then
   * the store's LOCKED, EXISTS, NO_SPACE (in the intake). Throws what comes before the intake.
   */
  private async openUpload(
    req: IncomingMessage,
    path: string,
    exchange: Exchange,
    createOnly: boolean,
  ): Promise<UploadIntake> {
    this.checkOrigin(req, exchange);
    const length = req.headers['content-length'];
    if (req.headers['transfer-encoding'] !== undefined || length === undefined) {
      throw new HttpError('LENGTH_REQUIRED', 'a PUT needs a Content-Length (no chunked bodies)');
    }
    const size = parseDecimal(length);
    if (size === undefined) throw new HttpError('BAD_REQUEST', 'Content-Length is malformed');
    const { maxUpload, readOnly } = this.context;
    if (maxUpload !== undefined && size > maxUpload) {
      throw new HttpError('TOO_LARGE', `the upload limit is ${maxUpload} bytes`);
    }
    const digest = contentDigestSha256(singleHeader(req.headers['content-digest']));
    if (digest === 'malformed') {
      throw new HttpError('BAD_REQUEST', 'Content-Digest has a malformed sha-256 member');
    }
    const { name, slashInSegment } = decodeMediaPath(path.slice(MEDIA_PREFIX.length));
    exchange.name = name;
    const access = this.context.access;
    const principal = exchange.principal;
    const guard = {
      account: (name: string) => access.checkWriteAccount(principal, name),
      write: (name: string) => access.checkWrite(principal, name),
    };
    guard.account(name); // AUTH_REQUIRED comes before READ_ONLY
    if (readOnly) throw new ProtocolError('READ_ONLY', 'the server is read-only');
    if (slashInSegment) throw new ProtocolError('BAD_NAME', 'a path segment holds an encoded /');
    return uploadIntake({
      guard,
      precondition: () => this.putPrecondition(req, name),
      storage: this.context.storage,
      hashes: this.context.hashes,
      name,
      size,
      readOnly,
      expectedSha256: digest,
      createOnly,
      consumesChunks: true, // the body's chunks: Node's own copy of each, read by us alone
    });
  }

  /**
   * `If-Match` and `If-Unmodified-Since` on a PUT (RFC 9110 §13.1.1, §13.1.4), against the file
   * the PUT would replace: `412` when they fail, and `If-Match` fails when there is none.
   */
  private async putPrecondition(req: IncomingMessage, name: string): Promise<void> {
    const { 'if-match': ifMatch, 'if-unmodified-since': ifUnmodified } = req.headers;
    if (ifMatch === undefined && ifUnmodified === undefined) return;
    let file: StoredFile | undefined;
    try {
      file = await this.context.storage.open(name);
    } catch (error) {
      if (!(error instanceof ProtocolError && error.code === 'NOT_FOUND')) throw error;
    }
    if (!file) {
      if (ifMatch !== undefined) {
        throw new HttpError('PRECONDITION_FAILED', 'If-Match: there is no file of that name');
      }
      return;
    }
    try {
      const validators = validatorsOf(file);
      // Only these two: If-None-Match on a PUT is `*`, which the create-only publish answers.
      const headers = { 'if-match': ifMatch, 'if-unmodified-since': ifUnmodified };
      if (evaluatePreconditions('PUT', headers, validators) === 'failed') {
        throw new HttpError('PRECONDITION_FAILED', 'the file does not match the precondition');
      }
    } finally {
      await file.close();
    }
  }

  private async list(
    req: IncomingMessage,
    res: ServerResponse,
    query: URLSearchParams,
    exchange: Exchange,
  ): Promise<void> {
    const typeParam = query.get('type');
    const type = typeParam === null ? undefined : parseMediaType(typeParam);
    if (typeParam !== null && type === undefined) {
      throw new HttpError('BAD_REQUEST', 'type must be video, music or picture');
    }
    const format = query.get('format') ?? 'json';
    if (format !== 'json' && format !== 'm3u') {
      throw new HttpError('BAD_REQUEST', 'format must be json or m3u');
    }
    const readable = this.context.access.listFilter(exchange.principal);
    const all = await this.context.storage.list();
    const entries = all.filter((entry) => (!type || entry.type === type) && readable(entry.name));
    const m3u = format === 'm3u';
    const formatter = m3u
      ? catalogM3u({ origin: this.originOf(exchange) })
      : catalogJson({ count: entries.length });
    res.writeHead(200, {
      'Content-Type': m3u ? 'audio/x-mpegurl; charset=utf-8' : 'application/json; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...(m3u ? { 'Content-Disposition': `inline; filename="${type ?? 'library'}.m3u"` } : {}),
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    formatter.on('data', (chunk: Buffer) => (exchange.bytes += chunk.length));
    await pipeline(Readable.from(entries), formatter, res);
  }
}

/**
 * After an answer sent before the request's body was read: keep reading (and dropping) it for
 * LINGER_MS at most, then cut the connection.
 */
function lingerWhileIncomplete(req: IncomingMessage, res: ServerResponse): void {
  res.once('finish', () => {
    if (req.complete) return;
    const timer = setTimeout(() => req.socket.destroy(), LINGER_MS);
    timer.unref();
    req.once('end', () => clearTimeout(timer));
    req.socket.once('close', () => clearTimeout(timer));
  });
}

function singleHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The request a response answers. */
function req(res: ServerResponse): IncomingMessage {
  return res.req;
}

/** Resolves true on 'drain', false if the response is closed first. */
function drained(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (value: boolean) => () => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(value);
    };
    const onDrain = done(true);
    const onClose = done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
