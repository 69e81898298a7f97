/**
 * What the two front doors share: one storage, one hash cache, one download chunk budget, one
 * connection limiter and one set of open sockets, owned by MediaServer (server.ts). A door
 * is a listener that turns sockets into requests over these; it knows nothing of the other.
 */
import type { AddressInfo, Socket } from 'node:net';
import type { ChunkBudget } from '../lib/chunk-pacer.js';
import type { BufferShelf } from '../lib/chunk-pool.js';
import type { HashCache } from '../lib/hash-cache.js';
import type { ConnectionLimiter } from '../lib/limits.js';
import type { Logger } from '../lib/log.js';
import type { Storage } from '../lib/storage.js';
import type { Access } from '../lib/access.js';
import type { TlsSetup } from '../lib/tls.js';

export interface DoorContext {
  storage: Storage;
  hashes: HashCache;
  chunkBudget: ChunkBudget;
  /** Chunk memory the downloads of both doors are done with, for the next ones. */
  shelf: BufferShelf;
  limiter: ConnectionLimiter;
  log: Logger;
  readOnly: boolean;
  /** Largest upload in bytes; undefined for no limit but free space. */
  maxUpload?: number;
  /** 0 turns the idle timeout off. */
  idleTimeoutSeconds: number;
  /** Accounts, rules, protected mode (lib/access.ts): one for both doors. */
  access: Access;
  /** Both doors speak TLS only when set. */
  tls?: TlsSetup;
  /** QUIT has begun: new requests are refused with SHUTTING_DOWN. */
  isQuitting(): boolean;
  /** Every accepted socket, so that QUIT can wait for it and FORCEQUIT destroy it. */
  track(socket: Socket): void;
}

export interface Door {
  listen(port: number, host: string): Promise<AddressInfo>;
  /** QUIT: stop accepting; requests in flight finish, idle connections close now. */
  shutdown(): Promise<void>;
  /** FORCEQUIT: stop accepting (the server destroys every socket itself). */
  stop(): void;
  /** Connections being served (not counting those refused). */
  readonly connectionCount: number;
}

/** After the last reply, how long a closing connection may still send before it is cut. */
export const LINGER_MS = 2000;

/** Ends our side after the last reply, then cuts a client that keeps sending. */
export function linger(socket: Socket): void {
  socket.resume(); // read and drop whatever else comes, so closing sends FIN, not RST
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Cuts a connection that is still open `ms` from now (HTTP sockets: Node's parser reads them). */
export function cutAfter(socket: Socket, ms = LINGER_MS): void {
  const timer = setTimeout(() => socket.destroy(), ms);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
