/**
 * More threads for the TCP door (`--threads N`): the main thread runs the server as always
 * (both doors, the console); each other thread runs a TCP door of its own, on the same port
 * (SO_REUSEPORT, Node 22.12 and later), so the kernel spreads new connections over every
 * thread and a busy library's small READs use every core.
 *
 * What the contract needs to be one server lives in shared memory (lib/shared-counts.ts) and
 * on disk: the names of uploads in progress (LOCKED), the bytes they reserve (NO_SPACE), the
 * open connections (BUSY, in all and per address); no clobber is the filesystem's link; LIST
 * is never stale because every thread's catalog cache hears every change through inotify and
 * syncs with it before it answers (catalog-cache.ts); the hash cache is keyed by a file's
 * version. QUIT and FORCEQUIT go to every thread, and resolve when the last one has closed.
 *
 * Each thread is a MediaServer of its own (server-thread.ts) built from a ThreadSetup.
 */
import { Worker } from 'node:worker_threads';
import { SharedReservations, SharedTally } from '../lib/shared-counts.js';
import type { ServerOptions } from './server.js';

/** What every thread maps: created by the main thread, attached by the others. */
export interface SharedServerState {
  tally: SharedArrayBuffer;
  reservations: SharedArrayBuffer;
  /** Per thread: connections accepted, connections open now; then the QUIT flag. */
  stats: SharedArrayBuffer;
  /** This thread's place in `stats` (0: the main thread). */
  index: number;
}

/** The shared state, attached: what a MediaServer uses of it. */
export interface SharedServer {
  state: SharedServerState;
  tally: SharedTally;
  reservations: SharedReservations;
  stats: ThreadStats;
}

/** The options a thread's server is made with: plain data, copied to the thread. */
export type ThreadSetup = Pick<
  ServerOptions,
  | 'root'
  | 'host'
  | 'port'
  | 'maxConnections'
  | 'maxConnectionsPerIp'
  | 'maxUpload'
  | 'idleTimeoutSeconds'
  | 'readOnly'
  | 'overwrite'
> & {
  logLevel: string;
  /** Access for a server with no accounts: false keeps protected mode. */
  public: boolean;
  shared: SharedServerState;
};

/** Every connection counted, by thread, and whether the server is quitting. */
export class ThreadStats {
  private readonly counts: Int32Array;
  private readonly index: number;
  private readonly quitFlag: number;

  constructor(buffer: SharedArrayBuffer, index: number) {
    this.counts = new Int32Array(buffer);
    this.index = index;
    this.quitFlag = this.counts.length - 1;
  }

  /**
   * QUIT began (set by the main thread before it tells the others): a connection another
   * thread accepts from now on gets SHUTTING_DOWN, even before that thread hears of it.
   */
  get quitting(): boolean {
    return Atomics.load(this.counts, this.quitFlag) === 1;
  }

  quit(): void {
    Atomics.store(this.counts, this.quitFlag, 1);
  }

  opened(): void {
    Atomics.add(this.counts, 2 * this.index, 1);
    Atomics.add(this.counts, 2 * this.index + 1, 1);
  }

  closed(): void {
    Atomics.sub(this.counts, 2 * this.index + 1, 1);
  }

  /** Connections accepted and open now, for each thread (0: the main thread). */
  get threads(): { accepted: number; open: number }[] {
    const all = [];
    for (let i = 0; i < this.quitFlag / 2; i++) {
      all.push({
        accepted: Atomics.load(this.counts, 2 * i),
        open: Atomics.load(this.counts, 2 * i + 1),
      });
    }
    return all;
  }
}

/** The shared state for `threads` threads whose servers allow `maxConnections` at once. */
export function createSharedState(threads: number, maxConnections: number): SharedServerState {
  return {
    // One key counts every connection; each adds at most its address and one upload's name
    // (an upload's may outlive its connection by the unlink of an abort): room to spare.
    tally: SharedTally.create(4 * maxConnections + 64).buffer,
    reservations: new SharedReservations().buffer,
    stats: new SharedArrayBuffer((2 * threads + 1) * Int32Array.BYTES_PER_ELEMENT),
    index: 0,
  };
}

export function attachSharedState(state: SharedServerState): SharedServer {
  return {
    state,
    tally: new SharedTally(state.tally),
    reservations: new SharedReservations(state.reservations),
    stats: new ThreadStats(state.stats, state.index),
  };
}

type ThreadMessage =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'connections' }
  | { type: 'closed' };

/** How long a server that failed to start waits for its other threads to end. */
const STOP_MS = 5000;

interface Thread {
  worker: Worker;
  /** Listening; rejects if the thread failed or ended first. */
  ready: Promise<void>;
  /** Closed after QUIT or FORCEQUIT, or ended. */
  closed: Promise<void>;
}

/** The other threads of a server, seen from its main thread. */
export class DoorThreads {
  private readonly threads: Thread[];
  /** Every thread listens: from now on a thread's fault or end is the server's fault. */
  private started = false;
  private ending = false;

  /** Every listener is on from the start, so no event falls between two of them. */
  private constructor(
    setups: ThreadSetup[],
    onConnections: () => void,
    onError: (error: Error) => void,
  ) {
    this.threads = setups.map((setup) => {
      const worker = new Worker(new URL('./server-thread.js', import.meta.url), {
        workerData: setup,
      });
      let listening!: () => void;
      let failed!: (error: Error) => void;
      const ready = new Promise<void>((resolve, reject) => {
        listening = resolve;
        failed = reject;
      });
      ready.catch(() => undefined); // start() reports it
      let faulted = false; // an uncaught error, then the exit it causes: reported once
      const fault = (error: Error): void => {
        if (!this.started || this.ending) failed(error);
        else if (!faulted) onError(error);
        faulted = true;
      };
      const closed = new Promise<void>((resolve) => {
        worker.on('message', (message: ThreadMessage) => {
          if (message.type === 'ready') listening();
          else if (message.type === 'failed') failed(new Error(message.message));
          else if (message.type === 'connections') onConnections();
          else resolve();
        });
        worker.on('error', fault);
        worker.once('exit', (code) => {
          fault(new Error(`a server thread ended (exit code ${code})`));
          resolve();
        });
      });
      return { worker, ready, closed };
    });
  }

  /**
   * Starts `setups.length` threads and resolves once each listens. If one cannot, the others
   * drop what they accepted and end, and it rejects.
   */
  static async start(
    setups: ThreadSetup[],
    onConnections: () => void,
    onError: (error: Error) => void,
  ): Promise<DoorThreads> {
    const threads = new DoorThreads(setups, onConnections, onError);
    try {
      await Promise.all(threads.threads.map((thread) => thread.ready));
    } catch (error) {
      // Told, not terminated: a thread stopped mid-step could leave the shared table locked.
      const stopped = threads.forceQuit();
      await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, STOP_MS))]);
      await Promise.all(threads.threads.map((thread) => thread.worker.terminate()));
      throw error;
    }
    threads.started = true;
    return threads;
  }

  /** QUIT on every thread; resolves when each has closed its last connection. */
  quit(): Promise<void> {
    return this.tell('quit');
  }

  /** FORCEQUIT on every thread; resolves when each has dropped its connections. */
  forceQuit(): Promise<void> {
    return this.tell('forcequit');
  }

  private async tell(type: 'quit' | 'forcequit'): Promise<void> {
    this.ending = true;
    for (const thread of this.threads) thread.worker.postMessage({ type });
    await Promise.all(this.threads.map((thread) => thread.closed));
  }
}
