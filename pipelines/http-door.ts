/**
 * The HTTP door (http.md): a node:http listener over the same shared state as the TCP door.
 * It owns what is HTTP's and not the requests': the connection limit on each new socket (the
 * same limiter as TCP's), the timeouts (slow headers, stalled bodies and readers, idle
 * keep-alive), the answers to requests Node's parser refuses, and QUIT's drain. Requests go to
 * the HttpRequestHandler.
 */
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import { errorBody, httpStatus, type HttpErrorCode } from '../lib/http-errors.js';
import { IdleTimer } from '../lib/limits.js';
import { infoLine } from '../lib/log.js';
import type { WebAssets } from '../lib/web-assets.js';
import { cutAfter, type Door, type DoorContext } from './door.js';
import { Listeners } from './listeners.js';
import { HttpError, HttpRequestHandler } from './http-request.js';

/** The response a socket is answering now, if any (Node's own link between the two). */
function responseOf(socket: Socket): ServerResponse | undefined {
  return (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined;
}

/** Headers must be complete within the idle timeout, and never more than this. */
const MAX_HEADERS_MS = 30_000;
/** How often Node checks for slow headers. */
const CHECK_INTERVAL_MS = 1000;

export interface HttpDoorOptions {
  context: DoorContext;
  assets?: WebAssets;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i;

/** Host header values of our own, for a door bound to loopback at `port`. */
function loopbackHosts(port: number): Set<string> {
  const suffix = port === 80 ? ['', ':80'] : [`:${port}`];
  const hosts = new Set<string>();
  for (const name of ['localhost', '127.0.0.1', '[::1]']) {
    for (const end of suffix) hosts.add(`${name}${end}`);
  }
  return hosts;
}

/** A whole response written straight to a socket that has no request object to answer. */
function rawAnswer(code: HttpErrorCode, message: string): string {
  const body = errorBody(code, message);
  const status = httpStatus(code);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

export class HttpDoor implements Door {
  private readonly context: DoorContext;
  private readonly assets?: WebAssets;
  private readonly listeners: Listeners<Server>;
  private handler?: HttpRequestHandler;
  /** Sockets over the connection limit: their first request is answered BUSY. */
  private readonly refused = new WeakSet<Socket>();
  private readonly open = new Set<Socket>();

  constructor({ context, assets }: HttpDoorOptions) {
    this.context = context;
    this.assets = assets;
    const idleMs = context.idleTimeoutSeconds * 1000;
    const options = {
      // Checked every CHECK_INTERVAL_MS rather than Node's 30 s.
      connectionsCheckingInterval: CHECK_INTERVAL_MS,
      headersTimeout: idleMs > 0 ? Math.min(idleMs, MAX_HEADERS_MS) : MAX_HEADERS_MS,
      // A large upload takes as long as it takes; a stalled one is the idle timer's.
      requestTimeout: 0,
      keepAliveTimeout: idleMs,
      noDelay: true,
      // A missing Host is answered by the handler, with a JSON body like every other error.
      requireHostHeader: false,
    };
    // Limits and idle timers count a socket once it speaks HTTP (after TLS, with TLS).
    const connectionEvent = context.tls ? 'secureConnection' : 'connection';
    this.listeners = new Listeners<Server>(() => {
      // With TLS the door speaks HTTPS only (implicit TLS); https.Server cuts failed handshakes.
      const server: Server = context.tls
        ? createHttpsServer({ ...options, ...context.tls.serverOptions('http') })
        : createServer(options);
      // A client that shuts its sending side after its requests still gets every answer, as
      // on the TCP door (the last one then closes the connection); Node's default ends the
      // socket at once, which cut a complete PUT before it was published (an undocumented
      // property of node:http servers, there since Node 0.x, absent from the typings).
      (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
      server.on(connectionEvent, (socket: Socket) => this.accept(socket));
      server.on('request', (req: IncomingMessage, res: ServerResponse) =>
        this.request(req, res, false),
      );
      server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) =>
        this.request(req, res, true),
      );
      server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) =>
        this.clientError(error, socket),
      );
      return server;
    });
  }

  /** Closes the idle keep-alive connections of every listening socket (QUIT). */
  private closeIdleConnections(): void {
    for (const server of this.listeners.servers) server.closeIdleConnections();
  }

  /** SIGHUP: a new certificate for new connections; open ones keep theirs. */
  setSecureContext(options: SecureContextOptions): void {
    for (const server of this.listeners.servers) {
      (server as unknown as import('node:tls').Server).setSecureContext(options);
    }
  }

  get connectionCount(): number {
    return this.open.size;
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    const address = await this.listeners.listen(port, host);
    for (const server of this.listeners.servers) {
      server.on('error', (error) =>
        this.context.log.error({ err: error, door: 'http' }, 'listener error'),
      );
    }
    this.handler = new HttpRequestHandler({
      context: this.context,
      assets: this.assets,
      allowedHosts: LOOPBACK.test(host) ? loopbackHosts(address.port) : undefined,
      scheme: this.context.tls ? 'https' : 'http',
      onRequest: (record) => infoLine(this.context.log, { door: 'http', ...record }, 'request'),
      onFault: (error) => this.context.log.error({ err: error, door: 'http' }, 'internal fault'),
      onStoreFault: (error) => this.context.log.warn({ err: error, door: 'http' }, 'store fault'),
    });
    return address;
  }

  /** QUIT: stop accepting, close idle keep-alive connections; the rest after their response. */
  /** FORCEQUIT: stop accepting; the server destroys the sockets. */
  stop(): void {
    void this.listeners.close();
  }

  shutdown(): Promise<void> {
    const closed = this.listeners.close();
    this.closeIdleConnections();
    return closed;
  }

  private accept(socket: Socket): void {
    this.context.track(socket);
    socket.on('error', (error) => this.context.log.debug({ err: error }, 'socket error'));
    const release = this.context.limiter.acquire(socket.remoteAddress ?? '');
    if (!release) {
      // Answered BUSY on its first request (a reply needs a request to answer); cut soon.
      this.refused.add(socket);
      cutAfter(socket);
      return;
    }
    this.open.add(socket);
    const idle = new IdleTimer({
      timeoutMs: this.context.idleTimeoutSeconds * 1000,
      // Bytes in either direction: a body arriving or a reader reading. Slow headers are
      // Node's headersTimeout; an idle keep-alive connection is its keepAliveTimeout.
      sentBytes: () => socket.bytesRead + socket.bytesWritten - socket.writableLength,
      // A request whose body is all here and whose answer has not begun waits on the server
      // (opening, publishing), not on the client.
      serverWorking: () => {
        const res = responseOf(socket);
        return res !== undefined && res.req.complete && !res.headersSent;
      },
      onTimeout: () => this.timeout(socket),
    });
    socket.once('close', () => {
      idle.stop();
      release();
      this.open.delete(socket);
    });
  }

  /** No progress for the idle timeout: a stalled body gets 408, a stalled reader is cut. */
  private timeout(socket: Socket): void {
    const res = responseOf(socket);
    this.context.log.info({ door: 'http', peer: socket.remoteAddress }, 'idle timeout');
    if (res && !res.headersSent) {
      this.handler?.fail(res, new HttpError('TIMEOUT', 'no progress for the idle timeout'), {
        Connection: 'close',
      });
      cutAfter(socket);
      return;
    }
    socket.destroy();
  }

  /**
   * Pipelined requests run one after another, as TCP commands do: Node parses (and announces)
   * a request while the one before it is still being answered, so a GET sent right behind a
   * PUT would otherwise look for the file before the PUT published it. Node gives a response
   * its socket only once the response before it has finished (and never after one that closes
   * the connection, RFC 9112 §9.6): a request starts then, and costs nothing when it is alone.
   */
  private request(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    if (res.socket) this.answer(req, res, expectsContinue);
    else res.once('socket', () => this.answer(req, res, expectsContinue));
  }

  private answer(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    if (this.refused.has(req.socket) || !this.handler) {
      this.handler?.fail(res, new HttpError('BUSY', 'too many connections; try again later'), {
        Connection: 'close',
      });
      return;
    }
    if (this.context.isQuitting()) {
      // The answer in flight finishes; the connection then closes instead of waiting.
      res.shouldKeepAlive = false;
    }
    res.once('finish', () => {
      if (this.context.isQuitting()) this.closeIdleConnections();
    });
    this.handler.handle(req, res, expectsContinue);
  }

  /** What Node's parser refuses (garbage, huge headers, slow headers) gets a clear status. */
  private clientError(error: NodeJS.ErrnoException, socket: Socket): void {
    // A TLS handshake that failed or ran out of time (https.Server reports those here too):
    // there is no channel to answer on, so cut it now.
    const tlsFailure = /^ERR_(TLS|SSL)_/.test(error.code ?? '');
    if (!socket.writable || error.code === 'ECONNRESET' || tlsFailure) {
      socket.destroy();
      return;
    }
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    // Bytes after a request with `Connection: close` are ignored: its answer goes out whole,
    // then the connection closes.
    if (error.code === 'HPE_CLOSED_CONNECTION' && inFlight) return;
    // Never a raw answer into the middle of a response.
    if (inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    let answer: string;
    if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      answer = rawAnswer('TIMEOUT', 'the request headers did not arrive in time');
    } else if (error.code === 'HPE_HEADER_OVERFLOW') {
      answer = rawAnswer('LINE_TOO_LONG', 'the request headers are too large');
    } else {
      answer = rawAnswer('BAD_REQUEST', 'the request is not valid HTTP/1.1');
    }
    this.context.log.info(
      { door: 'http', peer: socket.remoteAddress, err: error.code },
      'bad request',
    );
    socket.end(answer);
    cutAfter(socket);
  }
}
