/**
 * One process of the load generator (forked by load.ts; never run by hand). It holds its share
 * of the clients, each a raw keep-alive TCP connection with exactly one request in flight (no
 * pipelining, like the real clients), and drives them as fast as the server answers. As real
 * clients (and wrk) do, each client sends its first request as soon as it is connected: the
 * clock starts when the clients start connecting, so a server slow to take on new connections
 * under load shows in the figures.
 *
 *   - requests are built once, as Buffers, before the clock starts;
 *   - every socket reads into one shared receive buffer (Node's `onread`), and bodies are
 *     counted there, never copied; only a head split across two reads is copied (into the
 *     connection's own small buffer);
 *   - heads are parsed with byte scans (heads.ts);
 *   - the next request is written from inside the read callback that completed the previous
 *     one; latencies go into a preallocated Float64Array; one interval timer watches every
 *     connection for a stalled request.
 *
 * Messages (IPC, advanced serialization): in `{ type: 'start', job }`, then `{ type: 'go' }`;
 * out `{ type: 'ready' }`, then `{ type: 'done', result }`.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { httpHeadEnd, lineEnd, parseHttpHead, parseIoeHead, type Head } from './heads.js';

/** What the server speaks: IOE's `READ,name`, HTTP GET, or raw-node's named mode. */
export type LoadKind = 'ioe' | 'http' | 'raw';

export interface WorkerJob {
  port: number;
  host: string;
  kind: LoadKind;
  /** One request per name, as bytes; connection c of this worker uses requests[c * perClient …]. */
  requests: string[];
  clients: number;
  perClient: number;
  /** The body size every reply must have. */
  size: number;
  /** Each client sends its perClient requests once; or, with durationMs, cycles through them. */
  durationMs?: number;
  timeoutMs: number;
}

export interface WorkerResult {
  completed: number;
  errors: number;
  notes: string[];
  /** Latency of each completed request, ms (only the first `completed` entries are used). */
  latencies: Float64Array;
  /** performance.timeOrigin + now() at 'go' and after the last reply (epoch ms). */
  startedAt: number;
  endedAt: number;
  /** From 'go' until every connection of this worker was open, ms. */
  connectMs: number;
  /** The slowest first reply on a connection (from its first request), ms. */
  firstMaxMs: number;
  reconnects: number;
}

const RECEIVE = Buffer.allocUnsafe(1024 * 1024);
const HEAD_MAX = 8 * 1024;

const now = () => performance.now();

class Client {
  socket?: Socket;
  /** Next request to send, relative to this client's first. */
  next = 0;
  /** Requests sent (count mode stops at perClient). */
  sent = 0;
  inFlight = false;
  sentAt = 0;
  /** Body bytes still expected; -1 while reading the head. */
  remaining = -1;
  ok = true;
  /** The server closes after this reply: go on with a new connection. */
  closeAfter = false;
  headBuf = Buffer.allocUnsafe(HEAD_MAX);
  headLen = 0;
  finished = false;

  constructor(
    readonly run: Run,
    readonly index: number,
  ) {}

  open(): Promise<void> {
    const run = this.run;
    return new Promise((resolve, reject) => {
      const socket = connect({
        port: run.job.port,
        host: run.job.host,
        noDelay: true,
        onread: { buffer: RECEIVE, callback: (n: number) => this.onData(n) },
      });
      this.socket = socket;
      const early = (error: Error) => reject(error);
      socket.once('error', early);
      socket.once('connect', () => {
        socket.off('error', early);
        socket.on('error', (error) => this.lost(socket, error.message));
        socket.on('close', () => this.lost(socket, 'connection closed by the server'));
        resolve();
      });
    });
  }

  /** Sends the next request, or marks this client finished. */
  send(): void {
    const run = this.run;
    const job = run.job;
    if (run.stopping || (job.durationMs === undefined && this.sent >= job.perClient)) {
      this.finished = true;
      run.clientDone();
      return;
    }
    const request = run.requests[this.index * job.perClient + this.next];
    this.next = this.next + 1 === job.perClient ? 0 : this.next + 1;
    this.sent++;
    this.inFlight = true;
    this.remaining = -1;
    this.headLen = 0;
    this.ok = true;
    this.closeAfter = false;
    this.sentAt = now();
    this.socket!.write(request);
  }

  private onData(n: number): boolean {
    if (!this.inFlight) {
      this.fail('bytes with no request in flight');
      return false;
    }
    let at = 0;
    if (this.remaining < 0) {
      at = this.readHead(0, n);
      if (at < 0) return false; // failed
      if (this.remaining < 0) return true; // head incomplete
    }
    const take = Math.min(this.remaining, n - at);
    this.remaining -= take;
    at += take;
    if (this.remaining > 0) return true;
    if (at < n) {
      // One request in flight: nothing may follow its reply.
      this.fail(`${n - at} bytes after a whole reply`);
      return false;
    }
    this.complete();
    return true;
  }

  /** Consumes head bytes from RECEIVE[at, n); returns the new offset, or -1 after a failure. */
  private readHead(at: number, n: number): number {
    const kind = this.run.job.kind;
    let head: Head | undefined;
    let end: number;
    if (kind === 'raw') {
      this.remaining = this.run.job.size;
      return at;
    }
    if (this.headLen === 0) {
      end = kind === 'http' ? httpHeadEnd(RECEIVE, at, n) : lineEnd(RECEIVE, at, n);
      if (end >= 0) {
        head = kind === 'http' ? parseHttpHead(RECEIVE, at, end) : parseIoeHead(RECEIVE, at, end);
        return this.startBody(head, end, RECEIVE, at);
      }
    }
    // The head is split across reads: gather it in this client's buffer.
    const take = Math.min(n - at, HEAD_MAX - this.headLen);
    RECEIVE.copy(this.headBuf, this.headLen, at, at + take);
    const before = this.headLen;
    this.headLen += take;
    const from = Math.max(0, before - 3);
    end =
      kind === 'http'
        ? httpHeadEnd(this.headBuf, from, this.headLen)
        : lineEnd(this.headBuf, from, this.headLen);
    if (end < 0) {
      if (this.headLen === HEAD_MAX) {
        this.fail('reply head too long');
        return -1;
      }
      return n;
    }
    head =
      kind === 'http' ? parseHttpHead(this.headBuf, 0, end) : parseIoeHead(this.headBuf, 0, end);
    // Bytes of this read past the head's end belong to the body.
    return this.startBody(head, at + (end - before), this.headBuf, 0);
  }

  private startBody(head: Head | undefined, bodyAt: number, buf: Buffer, headAt: number): number {
    if (!head || head.length < 0) {
      const text = buf.toString('latin1', headAt, Math.min(headAt + 80, buf.length));
      this.fail(`unexpected reply: ${text.split(/\r?\n/)[0]}`);
      return -1;
    }
    if (head.status !== 200) {
      this.ok = false;
      this.run.note(
        `reply ${buf.toString('latin1', headAt, Math.min(headAt + 80, buf.length)).split(/\r?\n/)[0]}`,
      );
    } else if (head.length !== this.run.job.size) {
      this.ok = false;
      this.run.note(`body of ${head.length} bytes, expected ${this.run.job.size}`);
    }
    if (head.close) {
      this.ok = false;
      this.closeAfter = true;
      this.run.note('the server closes the connection after a reply');
    }
    this.remaining = head.length;
    return bodyAt;
  }

  private complete(): void {
    const run = this.run;
    this.inFlight = false;
    if (this.ok) {
      const t = now();
      if (run.deadline === 0 || t <= run.deadline) run.record(t - this.sentAt, t, this.sent === 1);
    } else {
      run.errors++;
    }
    if (this.closeAfter) this.reconnect();
    else this.send();
  }

  private fail(message: string): void {
    this.run.note(message);
    if (this.inFlight) {
      this.inFlight = false;
      this.run.errors++;
    }
    this.reconnect();
  }

  /** The socket ended or failed under us. */
  private lost(socket: Socket, message: string): void {
    if (socket !== this.socket || this.finished || this.run.closing) return;
    this.fail(message);
  }

  /** Drops this connection and goes on with the next request on a new one. */
  reconnect(): void {
    const old = this.socket;
    this.socket = undefined;
    old?.destroy();
    if (this.run.stopping || this.run.closing) {
      if (!this.finished) {
        this.finished = true;
        this.run.clientDone();
      }
      return;
    }
    this.run.reconnects++;
    this.open().then(
      () => this.send(),
      (error: Error) => {
        this.run.note(`reconnect: ${error.message}`);
        this.run.errors++;
        // Count the requests this client can no longer make (count mode) and stop it.
        if (this.run.job.durationMs === undefined) {
          this.run.errors += Math.max(0, this.run.job.perClient - this.sent);
        }
        this.finished = true;
        this.run.clientDone();
      },
    );
  }

  /** Called every second: a request in flight too long fails. */
  check(t: number): void {
    if (this.inFlight && t - this.sentAt > this.run.job.timeoutMs) {
      this.fail(`no reply within ${this.run.job.timeoutMs} ms`);
    }
  }
}

class Run {
  readonly requests: Buffer[];
  readonly clients: Client[];
  errors = 0;
  completed = 0;
  reconnects = 0;
  latencies: Float64Array;
  stopping = false;
  closing = false;
  /** now() after which replies no longer count (duration mode); 0 in count mode. */
  deadline = 0;
  firstMaxMs = 0;
  private readonly notes = new Set<string>();
  private running = 0;
  private last = 0;
  private startedAt = 0;
  private connectMs = NaN;
  private onDone?: () => void;

  constructor(readonly job: WorkerJob) {
    this.requests = job.requests.map((request) => Buffer.from(request, 'latin1'));
    this.clients = Array.from({ length: job.clients }, (_, i) => new Client(this, i));
    this.latencies = new Float64Array(
      job.durationMs === undefined ? job.clients * job.perClient : 1 << 16,
    );
  }

  note(message: string): void {
    if (this.notes.size < 10) this.notes.add(message);
  }

  record(ms: number, t: number, first: boolean): void {
    if (first && ms > this.firstMaxMs) this.firstMaxMs = ms;
    if (this.completed === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.completed++] = ms;
    this.last = t;
  }

  /** Connects every client and lets each go as soon as it is connected. */
  go(): Promise<WorkerResult> {
    return new Promise((resolve) => {
      this.running = this.clients.length;
      const start = now();
      this.startedAt = start;
      this.last = start;
      const watchdog = setInterval(() => {
        const t = now();
        for (const client of this.clients) client.check(t);
      }, 1000);
      let stopTimer: NodeJS.Timeout | undefined;
      if (this.job.durationMs !== undefined) {
        this.deadline = start + this.job.durationMs;
        stopTimer = setTimeout(() => {
          this.stopping = true;
          // Replies after the deadline do not count; do not wait for them.
          this.finish();
        }, this.job.durationMs);
      }
      this.onDone = () => {
        clearInterval(watchdog);
        clearTimeout(stopTimer);
        this.closing = true;
        for (const client of this.clients) client.socket?.destroy();
        const end = this.job.durationMs === undefined ? this.last : this.deadline;
        resolve({
          completed: this.completed,
          errors: this.errors,
          notes: [...this.notes],
          latencies: this.latencies.subarray(0, this.completed),
          startedAt: performance.timeOrigin + this.startedAt,
          endedAt: performance.timeOrigin + end,
          connectMs: this.connectMs,
          firstMaxMs: this.firstMaxMs,
          reconnects: this.reconnects,
        });
      };
      let connecting = this.clients.length;
      const connected = () => {
        if (--connecting === 0) this.connectMs = now() - start;
      };
      for (const client of this.clients) {
        client.open().then(
          () => {
            connected();
            client.send();
          },
          (error: Error) => {
            connected();
            this.note(`connect: ${error.message}`);
            this.errors += this.job.durationMs === undefined ? this.job.perClient : 1;
            client.finished = true;
            this.clientDone();
          },
        );
      }
    });
  }

  clientDone(): void {
    this.running--;
    if (this.running === 0) this.finish();
  }

  private finish(): void {
    const done = this.onDone;
    this.onDone = undefined;
    done?.();
  }
}

let run: Run | undefined;

process.on('message', (message: { type: string; job?: WorkerJob }) => {
  if (message.type === 'start') {
    run = new Run(message.job!);
    process.send!({ type: 'ready' });
  } else if (message.type === 'go') {
    run!.go().then((result) => {
      process.send!({ type: 'done', result }, undefined, {}, () => process.exit(0));
    });
  }
});
process.on('disconnect', () => process.exit(0));
