/**
 * The TCP door (protocol.md): a net listener (a TLS one with --tls-*) whose every socket is
 * piped through its own connection pipeline (connection.ts) and back. BUSY, SHUTTING_DOWN and
 * PROTECTED are answered on connect; a first packet that is a TLS record on the plain door is
 * closed without a reply; the idle timer asks the router to time out.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import {
  createServer as createTlsServer,
  type SecureContextOptions,
  type Server as TlsServer,
  type TLSSocket,
} from 'node:tls';
import { Listeners } from './listeners.js';
import { cutFailedHandshakes } from '../lib/tls.js';
import { ProtocolError, shuttingDown } from '../lib/errors.js';
import { IdleTimer } from '../lib/limits.js';
import { ChunkPool } from '../lib/chunk-pool.js';
import { infoLine } from '../lib/log.js';
import type { CommandRouter } from './command-router.js';
import { connectionPipeline } from './connection.js';
import { linger, type Door, type DoorContext } from './door.js';

export class TcpDoor implements Door {
  private readonly context: DoorContext;
  private readonly listeners: Listeners<Server>;
  private readonly routers = new Set<CommandRouter>();

  constructor(context: DoorContext) {
    this.context = context;
    // allowHalfOpen: a client that sends its commands and then shuts its side still gets
    // every reply before we close ours.
    const options = { allowHalfOpen: true, noDelay: true };
    this.listeners = new Listeners(() => {
      if (!context.tls) return createServer(options, (socket) => this.accept(socket));
      const server = createTlsServer(
        { ...options, ...context.tls.serverOptions('tcp') },
        (socket) => this.accept(socket),
      );
      cutFailedHandshakes(server, (error, socket) =>
        context.log.debug({ door: 'tcp', peer: socket.remoteAddress, err: error }, 'handshake'),
      );
      return server;
    });
  }

  /** SIGHUP: a new certificate for new connections; open ones keep theirs. */
  setSecureContext(options: SecureContextOptions): void {
    for (const server of this.listeners.servers) (server as TlsServer).setSecureContext(options);
  }

  get connectionCount(): number {
    return this.routers.size;
  }

  async listen(port: number, host: string): Promise<AddressInfo> {
    return this.listening(await this.listeners.listen(port, host));
  }

  /** Listens on a port another thread's TCP door holds (`--threads`, threads.ts). */
  async join(port: number, host: string): Promise<AddressInfo> {
    return this.listening(await this.listeners.join(port, host));
  }

  private listening(address: AddressInfo): AddressInfo {
    for (const server of this.listeners.servers) {
      server.on('error', (error) => this.context.log.error({ err: error }, 'listener error'));
    }
    return address;
  }

  /** FORCEQUIT: stop accepting; the server destroys the sockets. */
  stop(): void {
    void this.listeners.close();
  }

  shutdown(): Promise<void> {
    const closed = this.listeners.close();
    for (const router of this.routers) router.shutdown();
    return closed;
  }

  /** Protected mode: a client that is not on this machine, and no accounts to hold it to. */
  private protectedMode(socket: Socket): ProtocolError | undefined {
    try {
      this.context.access.admit(socket.remoteAddress);
      return undefined;
    } catch (error) {
      return error as ProtocolError;
    }
  }

  private accept(socket: Socket | TLSSocket): void {
    const { log: serverLog, limiter } = this.context;
    this.context.track(socket);
    socket.on('error', (error) => serverLog.debug({ err: error }, 'socket error'));
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    const release = limiter.acquire(socket.remoteAddress ?? '');
    const quitting = this.context.isQuitting();
    const refusal = quitting
      ? shuttingDown()
      : !release
        ? new ProtocolError('BUSY', 'too many connections; try again later')
        : this.protectedMode(socket);
    if (refusal || !release) {
      release?.();
      const error = refusal ?? new ProtocolError('BUSY', 'too many connections; try again later');
      serverLog.info({ door: 'tcp', peer, result: error.code }, 'connection refused');
      socket.end(error.toReply());
      linger(socket);
      return;
    }
    const opened = Date.now();
    let commands = 0;
    const log = serverLog.child({ door: 'tcp', peer });
    const idle = new IdleTimer({
      timeoutMs: this.context.idleTimeoutSeconds * 1000,
      sentBytes: () => socket.bytesWritten - socket.writableLength,
      serverWorking: () => router.serverWorking,
      onTimeout: () => {
        log.info('idle timeout');
        router.timeout();
      },
    });
    const secure = this.context.tls !== undefined;
    const pool = new ChunkPool(this.context.shelf);
    const { stream, router } = connectionPipeline({
      access: this.context.access,
      peer: { address: socket.remoteAddress, port: socket.remotePort, secure, door: 'tcp' },
      storage: this.context.storage,
      hashes: this.context.hashes,
      chunkBudget: this.context.chunkBudget,
      pool,
      readOnly: this.context.readOnly,
      maxUpload: this.context.maxUpload,
      consumesPayload: true, // the socket's reads: each is its own memory, read by us alone
      onProgress: () => idle.touch(),
      onCommand: (record) => {
        commands++;
        infoLine(log, record, 'command');
      },
      onFault: (error) => log.error({ err: error }, 'internal fault'),
    });
    this.routers.add(router);
    log.info('connection opened');

    // A TLS record on the plain door: a browser (or a confused client) speaking TLS here. It
    // gets no reply; a listener before the pipe sees the first chunk first.
    if (!secure) {
      socket.once('data', (chunk: Buffer) => {
        if (chunk[0] === 0x16 && (chunk.length < 2 || chunk[1] === 0x03)) {
          log.info({ result: 'FOREIGN_PROTOCOL' }, 'a TLS record on the plain door; closed');
          socket.unpipe(stream);
          socket.destroy();
        }
      });
    }
    socket.pipe(stream);
    // The pipeline's output to the socket, as pipe() would, but each chunk's memory goes back to
    // the pool once the kernel has the bytes: at once when the write completed in place (nothing
    // left buffered), else from its write callback. The callback alone comes a tick later, after
    // a reader that drains its socket has had a burst of new chunks read, each on new memory.
    // Exactly once: freed early, its memory may be lent again before the callback comes.
    stream.on('data', (chunk: Buffer) => {
      let freed = false;
      const more = socket.write(chunk, (error) => error || freed || pool.free(chunk));
      if (socket.writableLength === 0) {
        freed = true;
        pool.free(chunk);
      }
      if (!more) stream.pause();
    });
    socket.on('drain', () => stream.resume());
    stream.on('end', () => {
      socket.end();
      linger(socket);
    });
    stream.on('error', (error) => {
      log.warn({ err: error }, 'connection aborted');
      socket.destroy();
    });
    socket.once('close', () => {
      idle.stop();
      release();
      stream.destroy();
      this.routers.delete(router);
      log.info({ ms: Date.now() - opened, commands }, 'connection closed');
    });
  }
}
