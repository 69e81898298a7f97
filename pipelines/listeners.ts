/**
 * One door's port, served by several listening sockets where Node can share a port
 * (SO_REUSEPORT, `listen({ reusePort })`, Node 22.12 and later). libuv accepts one connection
 * per listening socket per turn of the event loop, and a turn of a busy server serves every
 * ready connection first: 200 clients connecting at once to a server busy with 200 others
 * waited up to seconds for their turn. With several sockets on the port the kernel spreads new
 * connections over them, and each turn accepts one per socket. On an older Node, one socket.
 *
 * A port another process holds is refused as before (EADDRINUSE): a port given is first bound
 * without SO_REUSEPORT, then released and bound again by the set; only a process of the same
 * user binding it in between, with SO_REUSEPORT itself, could share it. Port 0 has no such gap:
 * the set's first socket binds it with SO_REUSEPORT, and the kernel picks a port no socket
 * holds; a process of the same user could still ask for that port by number with SO_REUSEPORT.
 * A set that fails to bind closes the sockets it had bound.
 */
import type { AddressInfo, Server } from 'node:net';
import { createServer } from 'node:net';

/** Listening sockets per door where the port can be shared. */
export const LISTENERS_PER_DOOR = 4;

/**
 * Node 22.12 and later can bind several sockets to one port (`listen({ reusePort })`);
 * `version` is this Node's by default (`24.1.0` or `v24.1.0`).
 */
export function reusePortSupported(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 12);
}

function listenOnce(
  server: Server,
  options: { port: number; host: string; reusePort?: boolean },
): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

export class Listeners<S extends Server> {
  readonly servers: S[] = [];
  private readonly make: () => S;
  private readonly count: number;

  /** `make` creates one server with every listener the door needs attached. */
  constructor(make: () => S, count = reusePortSupported() ? LISTENERS_PER_DOOR : 1) {
    this.make = make;
    this.count = count;
  }

  /** Binds the port (0: a free one); rejects as a single listen would. */
  async listen(port: number, host: string): Promise<AddressInfo> {
    if (this.count === 1) {
      const server = this.make();
      const address = await listenOnce(server, { port, host });
      this.servers.push(server);
      return address;
    }
    if (port === 0) {
      // The kernel picks a port no socket holds, with SO_REUSEPORT or without (3,000 such
      // binds held at once never got one port twice). A probe released before the set binds
      // left a gap in which another server starting at that moment could be given the same
      // free port and share it (seen once in the test suite: a connection the other took).
      return this.bind(0, host);
    }
    // Claim the port alone first: taken by anyone, it fails here as it would without sharing.
    const probe = createServer();
    const claimed = await listenOnce(probe, { port, host });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return this.join(claimed.port, host);
  }

  /**
   * Binds this set's sockets to a port a set of this process already holds with SO_REUSEPORT
   * (another thread's door, `--threads`): the kernel then spreads new connections over both.
   */
  async join(port: number, host: string): Promise<AddressInfo> {
    return this.bind(port, host);
  }

  /**
   * Binds the set's sockets with SO_REUSEPORT: the first to `port` (0: a free one), the rest to
   * the port it got. On a failure the sockets bound so far are closed before it rejects.
   */
  private async bind(port: number, host: string): Promise<AddressInfo> {
    let address: AddressInfo | undefined;
    try {
      for (let i = 0; i < this.count; i++) {
        const server = this.make();
        address = await listenOnce(server, { port: address?.port ?? port, host, reusePort: true });
        this.servers.push(server);
      }
    } catch (error) {
      await this.close();
      this.servers.length = 0;
      throw error;
    }
    return address!;
  }

  /** Stops accepting on every socket; `closed` when they and their connections are gone. */
  close(): Promise<void> {
    return Promise.all(
      this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    ).then(() => undefined);
  }
}
