/**
 * The command router: frames in (from the frame splitter), reply bytes out. It parses each
 * line into a request and forks it to one branch, one request at a time, in order:
 *   LIST  → the catalog formatter,
 *   READ  → the size header, then the stored file's ReadStream,
 *   WRITE → the length-limited upload sink, fed by the payload frames that follow,
 *   HASH, BYE → a single reply line.
 * Branch output is forwarded with backpressure: the next frame is not taken until the reply
 * before it has been handed on, so a slow reader holds only about one chunk in memory.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { finished } from 'node:stream/promises';
import { performance } from 'node:perf_hooks';
import { ProtocolError } from '../lib/errors.js';
import { ChunkPacer, type ChunkBudget } from '../lib/chunk-pacer.js';
import { ChunkPool } from '../lib/chunk-pool.js';
import { checkName } from '../lib/media-names.js';
import { okLine, parseRequest, type Request } from '../lib/protocol.js';
import type { HashCache } from '../lib/hash-cache.js';
import type { Storage } from '../lib/storage.js';
import type { Frame, LineFrame } from './frame-splitter.js';
import { catalogFormatter } from './catalog-formatter.js';
import { uploadSink, type UploadSink } from './upload-sink.js';

/** One finished command, for the server's log. */
export interface CommandRecord {
  verb: string;
  name?: string;
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
   * Bytes of this router's output the socket has finished sending. With it, download chunk
   * buffers are reused once sent (see chunk-pool.ts); without it, each chunk is a new buffer.
   */
  outputSent?: () => number;
  readOnly?: boolean;
  maxUpload?: number;
  /** Every finished command. */
  onCommand?: (record: CommandRecord) => void;
  /** A fault answered with INTERNAL. */
  onFault?: (error: Error) => void;
  /** Progress: a complete line, or payload bytes received or sent. Resets the idle timer. */
  onProgress?: () => void;
}

/** The WRITE whose payload is arriving. Without a sink, its bytes are drained. */
interface Inbound {
  name?: string;
  left: number;
  received: number;
  started: number;
  sink?: UploadSink;
  ending: boolean;
  result: string;
}

const VERBS = new Set(['LIST', 'READ', 'WRITE', 'HASH', 'BYE']);

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
  private readonly pool?: ChunkPool;
  /** Bytes pushed to the output so far: where each chunk ends, for the pool. */
  private outputBytes = 0;

  constructor(options: CommandRouterOptions) {
    // No buffering of its own: a chunk is handed on only when the socket side asks, which is
    // also how the pacer learns the reader's pace.
    super({ writableObjectMode: true, readableHighWaterMark: 0 });
    this.options = options;
    this.pacer = new ChunkPacer({ budget: options.chunkBudget });
    if (options.outputSent) this.pool = new ChunkPool(options.outputSent);
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk !== null && chunk !== undefined) {
      this.outputBytes +=
        typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Buffer).length;
    }
    return super.push(chunk, encoding);
  }

  /** QUIT: finish what is in flight, then answer SHUTTING_DOWN and close. Idle closes now. */
  shutdown(): void {
    this.shuttingDown = true;
    if (!this.busy) this.close(new ProtocolError('SHUTTING_DOWN', 'the server is shutting down'));
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
          this.close(new ProtocolError('SHUTTING_DOWN', 'the server is shutting down'));
          callback();
          return;
        }
        this.handleLine(frame).then(() => callback(), callback);
    }
  }

  override _flush(callback: TransformCallback): void {
    // The client closed its side; a WRITE still waiting for bytes can never complete.
    if (this.inbound?.sink) this.inbound.sink.destroy();
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
    const sink = this.inbound?.sink;
    this.inbound = undefined;
    if (!sink || sink.closed) {
      callback(error);
      return;
    }
    // Wait for the temporary file to be gone before reporting the stream closed.
    sink.once('close', () => callback(error));
    sink.destroy(new Error('connection closed'));
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
    this.inbound?.sink?.destroy();
  }

  private record(
    verb: string,
    name: string | undefined,
    bytes: number,
    started: number,
    result: string,
  ): void {
    this.options.onCommand?.({ verb, name, bytes, ms: performance.now() - started, result });
  }

  /** A request is over: under QUIT, the connection closes now. */
  private finishRequest(): void {
    this.busy = false;
    if (this.shuttingDown)
      this.close(new ProtocolError('SHUTTING_DOWN', 'the server is shutting down'));
  }

  private async handleLine(frame: LineFrame): Promise<void> {
    const started = performance.now();
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
          ending: false,
          result: code,
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
    const name = 'name' in request ? request.name : undefined;
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

  /** Answers LIST, READ, HASH or BYE; returns the bytes sent. */
  private async answer(request: Exclude<Request, { verb: 'WRITE' }>): Promise<number> {
    switch (request.verb) {
      case 'LIST': {
        const all = await this.options.storage.list();
        const entries = request.type ? all.filter((entry) => entry.type === request.type) : all;
        const formatter = catalogFormatter({ count: entries.length });
        Readable.from(entries).pipe(formatter);
        return this.forward(formatter);
      }
      case 'READ':
        return this.sendFile(request.name, request.offset, request.length);
      case 'HASH': {
        checkName(request.name);
        const file = await this.options.storage.open(request.name);
        const { sha256, size } = await this.options.hashes.hash(file);
        this.push(okLine(sha256, size));
        return 0;
      }
      case 'BYE':
        this.close(okLine('BYE'));
        return 0;
    }
  }

  private async sendFile(
    name: string,
    offset: number,
    length: number | undefined,
  ): Promise<number> {
    checkName(name);
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
    const pacer = this.pacer;
    const stream = file.stream(offset, count, {
      chunkBytes: () => pacer.size,
      buffers: this.pool,
    });
    const leave = this.options.chunkBudget?.enter();
    let sent: number;
    try {
      sent = await this.forward(stream, { header, pacer, pool: this.pool });
    } finally {
      leave?.();
      this.pool?.release();
    }
    if (sent !== count) {
      // The file shrank: mid-send, fewer bytes than announced would break the framing (the
      // connection closes); before the header left, the client gets INTERNAL.
      throw new Error(`the file shrank while it was sent (${sent} of ${count} bytes)`);
    }
    this.sendingPayload = false;
    return sent;
  }

  /** Resolves when the readable side wants more, rejects if the router is destroyed. */
  private demand(): Promise<void> {
    if (this.destroyed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => this.demandWaiters.push({ resolve, reject }));
  }

  /**
   * Hands a branch's output on, with backpressure; returns the bytes taken from `source`.
   * - `header` (a READ's `OK <n>`) leaves in one write with the first chunk (a small copy: the
   *   pacer starts small); from then on the payload has begun and an ERR would break the
   *   framing, so until then a failing source is answered like any other error.
   * - `pacer` learns how long the reader took each chunk: the time since the one before, any
   *   wait for demand included.
   * - `pool` learns where each of its chunks ends in the output, to reuse it once sent.
   */
  private async forward(
    source: Readable,
    { header, pacer, pool }: { header?: Buffer; pacer?: ChunkPacer; pool?: ChunkPool } = {},
  ): Promise<number> {
    let sent = 0;
    let lead = header;
    let since = performance.now();
    for await (const chunk of source as AsyncIterable<Buffer>) {
      sent += chunk.length;
      this.options.onProgress?.();
      let more: boolean;
      if (lead) {
        this.sendingPayload = true;
        more = this.push(Buffer.concat([lead, chunk])); // a new buffer: not the pool's
        lead = undefined;
      } else {
        more = this.push(chunk);
        pool?.track(chunk, this.outputBytes);
      }
      if (!more) await this.demand();
      if (pacer) {
        const now = performance.now();
        pacer.paced(chunk.length, now - since);
        since = now;
      }
    }
    return sent;
  }

  private async beginWrite(
    request: { name: string; size: number },
    payload: number,
    started: number,
  ): Promise<void> {
    const inbound: Inbound = {
      name: request.name,
      left: payload,
      received: 0,
      started,
      ending: false,
      result: 'OK',
    };
    try {
      if (this.options.readOnly) throw new ProtocolError('READ_ONLY', 'the server is read-only');
      checkName(request.name);
      const upload = await this.options.storage.beginUpload(request.name, request.size);
      const sink = uploadSink({ upload, size: request.size });
      sink.on('error', (error) => {
        if (inbound.ending || this.closing) return; // answered where the sink is ended
        inbound.sink = undefined; // drain the rest of the payload
        inbound.result = this.replyError(error);
      });
      inbound.sink = sink;
    } catch (error) {
      inbound.result = this.replyError(error);
    }
    this.expectPayload(inbound);
    // A rejected WRITE of 0 bytes was finished (and recorded) by expectPayload already.
    if (inbound.left === 0 && this.inbound === inbound) await this.completeWrite(inbound);
  }

  private expectPayload(inbound: Inbound): void {
    this.inbound = inbound;
    if (inbound.left === 0 && !inbound.sink) {
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
    const sink = inbound.sink;
    if (!sink || sink.write(chunk)) {
      next();
      return;
    }
    const resume = (): void => {
      sink.off('drain', resume);
      sink.off('close', resume);
      next();
    };
    sink.on('drain', resume);
    sink.on('close', resume);
  }

  /** The payload is all here: publish (or finish draining) and reply. */
  private async completeWrite(inbound: Inbound): Promise<void> {
    const sink = inbound.sink;
    if (sink) {
      inbound.ending = true;
      sink.end();
      try {
        await finished(sink);
        this.push(okLine(sink.receipt!.size, sink.receipt!.sha256));
      } catch (error) {
        if (!this.closing) inbound.result = this.replyError(error);
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
