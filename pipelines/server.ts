/**
 * The media server's lifecycle: create → listen (ready) → quit (graceful) or forceQuit.
 * Each accepted socket gets its own connection pipeline; this module owns what is shared
 * between them: the storage, the hash cache, the limits, the idle timers and the log.
 */
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { ProtocolError } from '../lib/errors.js';
import { HashCache } from '../lib/hash-cache.js';
import { ConnectionLimiter, IdleTimer } from '../lib/limits.js';
import { LocalStorage } from '../lib/local-storage.js';
import { silentLogger, type Logger } from '../lib/log.js';
import type { Storage } from '../lib/storage.js';
import { connectionPipeline } from './connection.js';
import { ChunkBudget } from '../lib/chunk-pacer.js';
import type { CommandRouter } from './command-router.js';

export interface ServerOptions {
  root: string;
  host: string;
  port: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** Largest WRITE in bytes; undefined for no limit but free disk. */
  maxUpload?: number;
  /** 0 turns the idle timeout off. */
  idleTimeoutSeconds: number;
  readOnly: boolean;
  overwrite: boolean;
  logger: Logger;
  /** Use this storage instead of the local directory at `root`. */
  storage?: Storage;
}

export const DEFAULT_OPTIONS: Omit<ServerOptions, 'logger'> = {
  root: './media',
  host: '127.0.0.1',
  port: 10000,
  maxConnections: 512,
  maxConnectionsPerIp: 0,
  maxUpload: undefined,
  idleTimeoutSeconds: 120,
  readOnly: false,
  overwrite: false,
};

/** After the last reply, how long a closing connection may still send before it is cut. */
const LINGER_MS = 2000;

interface Connection {
  socket: Socket;
  router: CommandRouter;
}

/**
 * Events: 'connections' (count) whenever a connection closes while quitting.
 */
export class MediaServer extends EventEmitter {
  readonly options: ServerOptions;
  readonly storage: Storage;
  private readonly server: Server;
  private readonly hashes = new HashCache();
  /** The memory every download's chunks share (see chunk-pacer.ts). */
  private readonly chunkBudget = new ChunkBudget();
  private readonly limiter: ConnectionLimiter;
  private readonly connections = new Set<Connection>();
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;
  private quitting?: Promise<void>;

  private constructor(options: ServerOptions, storage: Storage) {
    super();
    this.options = options;
    this.storage = storage;
    this.log = options.logger;
    this.limiter = new ConnectionLimiter(options.maxConnections, options.maxConnectionsPerIp);
    // allowHalfOpen: a client that sends its commands and then shuts its side still gets
    // every reply before we close ours.
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) =>
      this.accept(socket),
    );
  }

  /** Opens the storage (creating the root, removing crash left-overs). */
  static async create(options: Partial<ServerOptions> = {}): Promise<MediaServer> {
    const full: ServerOptions = { ...DEFAULT_OPTIONS, logger: silentLogger(), ...options };
    const storage =
      full.storage ?? (await LocalStorage.open(full.root, { overwrite: full.overwrite }));
    return new MediaServer(full, storage);
  }

  /** Starts accepting connections; resolves with the bound address once ready. */
  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        this.server.on('error', (error) => this.log.error({ err: error }, 'listener error'));
        resolve(this.address);
      });
    });
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Connections being served (not counting those refused with BUSY). */
  get connectionCount(): number {
    return this.connections.size;
  }

  get isQuitting(): boolean {
    return this.quitting !== undefined;
  }

  /**
   * QUIT: stop accepting, let commands in flight finish, then close every connection with
   * SHUTTING_DOWN (idle ones at once). Resolves when the last connection has closed.
   */
  quit(): Promise<void> {
    this.quitting ??= (async () => {
      const listenerClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const connection of this.connections) connection.router.shutdown();
      await Promise.all([listenerClosed, this.allClosed()]);
      await this.storage.close();
    })();
    return this.quitting;
  }

  /** FORCEQUIT: drop every connection now and delete partial uploads. */
  async forceQuit(): Promise<void> {
    this.quitting ??= Promise.resolve();
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
    await this.storage.close();
  }

  private allClosed(): Promise<void> {
    if (this.sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.sockets.size > 0) return;
        this.off('socket-closed', check);
        resolve();
      };
      this.on('socket-closed', check);
    });
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.emit('socket-closed');
      if (this.quitting) this.emit('connections', this.sockets.size);
    });
  }

  /** Ends our side after the last reply, then cuts a client that keeps sending. */
  private linger(socket: Socket): void {
    socket.resume(); // read and drop whatever else comes, so closing sends FIN, not RST
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  private accept(socket: Socket): void {
    this.track(socket);
    socket.on('error', (error) => this.log.debug({ err: error }, 'socket error'));
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const release = this.limiter.acquire(socket.remoteAddress ?? '');
    if (!release || this.quitting) {
      const error = this.quitting
        ? new ProtocolError('SHUTTING_DOWN', 'the server is shutting down')
        : new ProtocolError('BUSY', 'too many connections; try again later');
      this.log.info({ peer, result: error.code }, 'connection refused');
      socket.end(error.toReply());
      this.linger(socket);
      return;
    }
    const opened = Date.now();
    let commands = 0;
    const log = this.log.child({ peer });
    const idle = new IdleTimer({
      timeoutMs: this.options.idleTimeoutSeconds * 1000,
      sentBytes: () => socket.bytesWritten - socket.writableLength,
      onTimeout: () => {
        log.info('idle timeout');
        router.timeout();
      },
    });
    const { stream, router } = connectionPipeline({
      storage: this.storage,
      hashes: this.hashes,
      chunkBudget: this.chunkBudget,
      // Everything the socket sends is this pipeline's output (BUSY is answered without one).
      outputSent: () => socket.bytesWritten - socket.writableLength,
      readOnly: this.options.readOnly,
      maxUpload: this.options.maxUpload,
      onProgress: () => idle.touch(),
      onCommand: (record) => {
        commands++;
        log.info(record, 'command');
      },
      onFault: (error) => log.error({ err: error }, 'internal fault'),
    });
    const connection: Connection = { socket, router };
    this.connections.add(connection);
    log.info('connection opened');

    socket.pipe(stream).pipe(socket);
    stream.on('end', () => this.linger(socket));
    stream.on('error', (error) => {
      log.warn({ err: error }, 'connection aborted');
      socket.destroy();
    });
    socket.once('close', () => {
      idle.stop();
      release();
      stream.destroy();
      this.connections.delete(connection);
      log.info({ ms: Date.now() - opened, commands }, 'connection closed');
    });
  }
}
