/**
 * A MediaServer in process on a fresh temporary root and a free port, torn down with the test:
 * every client it connected destroyed, the server force-quit, the root deleted.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaServer, type ServerOptions } from '../../pipelines/server.js';
import { RawClient } from './raw-client.js';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface Harness {
  root: string;
  server: MediaServer;
  port: number;
  /** A raw client, destroyed at teardown; `localAddress` picks its source (127.x.y.z). */
  connect(localAddress?: string): Promise<RawClient>;
}

export async function startServer(
  t: Teardown,
  options: Partial<ServerOptions> = {},
): Promise<Harness> {
  const root = await mkdtemp(join(tmpdir(), 'ioe-server-test-'));
  const server = await MediaServer.create({ root, host: '127.0.0.1', port: 0, ...options });
  const { port } = await server.listen();
  const clients: RawClient[] = [];
  t.teardown(async () => {
    for (const client of clients) client.destroy();
    await server.forceQuit();
    await rm(root, { recursive: true, force: true });
  });
  return {
    root,
    server,
    port,
    async connect(localAddress?: string) {
      const client = await RawClient.connect(port, '127.0.0.1', localAddress);
      clients.push(client);
      return client;
    },
  };
}
