/**
 * The media server: two front doors on one process. The TCP door (tcp-door.ts) and the HTTP
 * door (http-door.ts) share everything behind them: one storage (and so one lock set and one
 * catalog cache), one hash cache, one download chunk budget, one connection limiter, one log.
 * Lifecycle: create → listen (ready) → quit (graceful) or forceQuit, for both doors at once.
 */
import { EventEmitter } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { ChunkBudget } from '../lib/chunk-pacer.js';
import { BufferShelf } from '../lib/chunk-pool.js';
import { HashCache } from '../lib/hash-cache.js';
import { ConnectionLimiter } from '../lib/limits.js';
import { LocalStorage } from '../lib/local-storage.js';
import { silentLogger, type Logger } from '../lib/log.js';
import type { Storage } from '../lib/storage.js';
import type { WebAssets } from '../lib/web-assets.js';
import { Access } from '../lib/access.js';
import type { TlsSetup } from '../lib/tls.js';
import type { DoorContext } from './door.js';
import { HttpDoor } from './http-door.js';
import { TcpDoor } from './tcp-door.js';
import { reusePortSupported } from './listeners.js';
import {
  attachSharedState,
  createSharedState,
  DoorThreads,
  type SharedServer,
  type SharedServerState,
  type ThreadSetup,
} from './threads.js';

export interface ServerOptions {
  root: string;
  host: string;
  port: number;
  /**
   * The HTTP door's port (0 picks a free one); undefined: no HTTP door. The server script
   * opens it on 10080 by default.
   */
  httpPort?: number;
  /**
   * The HTTP port was not asked for: if it is taken, run the TCP door alone (`httpOff` says
   * why) instead of failing to start.
   */
  httpPortOptional?: boolean;
  /** The web page's files; without them the HTTP door serves no page at `/`. */
  webAssets?: WebAssets;
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
  /** Accounts and rules (`--users`, `--public`, ...); default: everyone may do everything. */
  access?: Access;
  /** TLS on both doors (`--tls-cert`/`--tls-key` or `--tls-self-signed`). */
  tls?: TlsSetup;
  /**
   * Threads that serve the TCP door (`--threads`, threads.ts); default 1. More need Node
   * 22.12 or later, a local root, no accounts and no TLS.
   */
  threads?: number;
  /** This server is another thread of one that runs already (server-thread.ts). */
  joining?: SharedServerState;
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

/** The HTTP door's port when the server script is not told otherwise. */
export const DEFAULT_HTTP_PORT = 10080;

/**
 * Events: 'connections' (count) whenever a connection closes while quitting; 'error' when
 * another thread of the server failed (an uncaught fault, as one in this thread would be).
 */
export class MediaServer extends EventEmitter {
  readonly options: ServerOptions;
  readonly storage: Storage;
  private readonly tcp: TcpDoor;
  private readonly http?: HttpDoor;
  private tcpAddress?: AddressInfo;
  /** Where the HTTP door listens, once it does. */
  httpAddress?: AddressInfo;
  /** Why the HTTP door is off although it was asked for (its default port was taken). */
  httpOff?: string;
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;
  private quitting?: Promise<void>;
  private readonly access: Access;
  /** The counts every thread shares, with `--threads` (and in each other thread). */
  private readonly shared?: SharedServer;
  private threads?: DoorThreads;

  private constructor(
    options: ServerOptions,
    storage: Storage,
    access: Access,
    shared: SharedServer | undefined,
  ) {
    super();
    this.options = options;
    this.storage = storage;
    this.log = options.logger;
    this.access = access;
    this.shared = shared;
    const context: DoorContext = {
      storage,
      hashes: new HashCache(),
      // The memory every download's chunks share, over both doors (see chunk-pacer.ts).
      chunkBudget: new ChunkBudget(),
      shelf: new BufferShelf(),
      limiter: new ConnectionLimiter(
        options.maxConnections,
        options.maxConnectionsPerIp,
        shared?.tally,
      ),
      log: options.logger,
      readOnly: options.readOnly,
      maxUpload: options.maxUpload,
      idleTimeoutSeconds: options.idleTimeoutSeconds,
      access,
      tls: options.tls,
      // Another thread's QUIT counts from the moment it began, before its message arrives.
      isQuitting: () => this.quitting !== undefined || (shared?.stats.quitting ?? false),
      track: (socket) => this.track(socket),
    };
    this.tcp = new TcpDoor(context);
    if (options.httpPort !== undefined) {
      this.http = new HttpDoor({ context, assets: options.webAssets });
    }
  }

  /** Opens the storage (creating the root, removing crash left-overs). */
  static async create(options: Partial<ServerOptions> = {}): Promise<MediaServer> {
    const full: ServerOptions = { ...DEFAULT_OPTIONS, logger: silentLogger(), ...options };
    // No accounts file: everyone may do everything (protected mode aside, on a non-loopback
    // bind: the server script decides with --public).
    const access =
      full.access ??
      (await Access.create({ bindHost: full.host, readOnly: full.readOnly, public: true }));
    const threads = full.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1) {
      throw new Error('--threads: a whole number ≥ 1');
    }
    if (threads > 1) checkThreads(full, access);
    const state =
      full.joining ?? (threads > 1 ? createSharedState(threads, full.maxConnections) : undefined);
    const shared = state && attachSharedState(state);
    const storage =
      full.storage ??
      (await LocalStorage.open(full.root, {
        overwrite: full.overwrite,
        locks: shared?.tally,
        reservations: shared?.reservations,
        // A joining thread: the temporary files are the other threads' uploads in progress.
        removeLeftovers: full.joining === undefined,
      }));
    return new MediaServer(full, storage, access, shared);
  }

  /**
   * Starts both doors; resolves with the TCP door's address once both are ready (the HTTP
   * door's is `httpAddress`).
   */
  async listen(): Promise<AddressInfo> {
    const { host, port, httpPort, httpPortOptional } = this.options;
    this.tcpAddress = await this.tcp.listen(port, host);
    if (this.http && httpPort !== undefined) {
      try {
        this.httpAddress = await this.http.listen(httpPort, host);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (!httpPortOptional || code !== 'EADDRINUSE') {
          await this.tcp.shutdown();
          throw error;
        }
        this.httpOff = `port ${httpPort} is in use`;
        this.log.warn({ door: 'http', port: httpPort }, 'web off: the port is in use');
      }
    }
    const threads = this.options.threads ?? 1;
    if (threads > 1) {
      try {
        this.threads = await DoorThreads.start(
          Array.from({ length: threads - 1 }, (_, i) => this.threadSetup(i + 1)),
          () => {
            if (this.quitting) this.emit('connections', this.socketsEverywhere());
          },
          (error) => this.emit('error', error),
        );
      } catch (error) {
        await Promise.all([this.tcp.shutdown(), this.http?.shutdown()]);
        throw error;
      }
    }
    return this.tcpAddress;
  }

  /** Another thread's server (server-thread.ts): the TCP door on the main thread's port. */
  async join(): Promise<AddressInfo> {
    this.tcpAddress = await this.tcp.join(this.options.port, this.options.host);
    return this.tcpAddress;
  }

  /** Connections accepted and open now, per thread (`--threads`; else undefined). */
  get threadStats(): { accepted: number; open: number }[] | undefined {
    return this.shared?.stats.threads;
  }

  private threadSetup(index: number): ThreadSetup {
    const o = this.options;
    return {
      root: (this.storage as LocalStorage).root,
      host: o.host,
      port: this.tcpAddress!.port,
      maxConnections: o.maxConnections,
      maxConnectionsPerIp: o.maxConnectionsPerIp,
      maxUpload: o.maxUpload,
      idleTimeoutSeconds: o.idleTimeoutSeconds,
      readOnly: o.readOnly,
      overwrite: o.overwrite,
      logLevel: o.logger.level,
      public: !this.access.protectedMode,
      shared: { ...this.shared!.state, index },
    };
  }

  get address(): AddressInfo {
    return this.tcpAddress!;
  }

  /** SIGHUP: new TLS options for new connections on both doors. */
  setSecureContext(options: Parameters<TcpDoor['setSecureContext']>[0]): void {
    this.tcp.setSecureContext(options);
    if (this.httpAddress) this.http!.setSecureContext(options);
  }

  /** Connections being served on both doors (not counting those refused with BUSY). */
  get connectionCount(): number {
    return this.tcp.connectionCount + (this.http?.connectionCount ?? 0) + this.openElsewhere();
  }

  get isQuitting(): boolean {
    return this.quitting !== undefined;
  }

  /**
   * QUIT: stop accepting, let requests in flight finish, then close every connection (TCP
   * with SHUTTING_DOWN; HTTP after its response; idle ones at once). Resolves when the last
   * connection has closed.
   */
  quit(): Promise<void> {
    this.quitting ??= (async () => {
      const doors = [this.tcp.shutdown()];
      if (this.httpAddress) doors.push(this.http!.shutdown());
      if (this.threads) {
        this.shared!.stats.quit();
        doors.push(this.threads.quit());
      }
      await Promise.all([...doors, this.allClosed()]);
      await this.storage.close();
    })();
    return this.quitting;
  }

  /** FORCEQUIT: drop every connection now and delete partial uploads. */
  async forceQuit(): Promise<void> {
    this.quitting ??= Promise.resolve();
    this.shared?.stats.quit();
    this.tcp.stop();
    if (this.httpAddress) this.http!.stop();
    for (const socket of this.sockets) socket.destroy();
    // Resolves once every socket has closed (and logged it), here and on the other threads.
    await Promise.all([this.storage.close(), this.threads?.forceQuit(), this.allClosed()]);
  }

  /**
   * Sockets open on every thread, counted as each thread's own `track` counts them (a door's
   * count still holds a socket whose close this very event reports).
   */
  private socketsEverywhere(): number {
    return this.sockets.size + this.openElsewhere();
  }

  /** Connections open on the other threads (`--threads`, on the main thread; else 0). */
  private openElsewhere(): number {
    if (!this.threads) return 0;
    const others = this.shared!.stats.threads.slice(1);
    return others.reduce((sum, thread) => sum + thread.open, 0);
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
    this.shared?.stats.opened();
    socket.once('close', () => {
      this.shared?.stats.closed();
      this.sockets.delete(socket);
      this.emit('socket-closed');
      if (this.quitting) this.emit('connections', this.socketsEverywhere());
    });
  }
}

/** What `--threads` needs, with a clear refusal for the rest. */
function checkThreads(options: ServerOptions, access: Access): void {
  if (options.storage) throw new Error('--threads serves a local --root only, not --storage');
  if (options.tls) throw new Error('--threads does not serve TLS yet: use one thread with --tls-*');
  if (access.accounts.configured) {
    throw new Error('--threads does not serve accounts yet: use one thread with --users');
  }
  if (!reusePortSupported()) {
    throw new Error(
      `--threads needs Node 22.12 or later (SO_REUSEPORT); this is ${process.version}`,
    );
  }
}
