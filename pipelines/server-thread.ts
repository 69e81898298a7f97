/**
 * One more thread of the server (`--threads`, threads.ts): a MediaServer with the TCP door
 * only, on the port the main thread holds, over the same root and the shared counts. It tells
 * the main thread when it listens, when a connection closes during a QUIT, and when it has
 * closed; it quits or force-quits when told.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Access } from '../lib/access.js';
import { createLogger } from '../lib/log.js';
import { MediaServer } from './server.js';
import type { ThreadSetup } from './threads.js';

const setup = workerData as ThreadSetup;
const port = parentPort!;

async function main(): Promise<void> {
  const logger = createLogger(setup.logLevel).child({ thread: setup.shared.index });
  const access = await Access.create({
    bindHost: setup.host,
    readOnly: setup.readOnly,
    public: setup.public,
  });
  const server = await MediaServer.create({
    root: setup.root,
    host: setup.host,
    port: setup.port,
    maxConnections: setup.maxConnections,
    maxConnectionsPerIp: setup.maxConnectionsPerIp,
    maxUpload: setup.maxUpload,
    idleTimeoutSeconds: setup.idleTimeoutSeconds,
    readOnly: setup.readOnly,
    overwrite: setup.overwrite,
    logger,
    access,
    joining: setup.shared,
  });
  await server.join();
  server.on('connections', () => port.postMessage({ type: 'connections' }));
  // Its last lines written first: the main thread may exit the process as soon as it hears.
  const closed = (): void =>
    logger.flush(() => {
      port.postMessage({ type: 'closed' });
      port.close(); // nothing else keeps the thread: it ends
    });
  port.on('message', (message: { type: string }) => {
    if (message.type === 'quit') void server.quit().then(closed, closed);
    else if (message.type === 'forcequit') void server.forceQuit().then(closed, closed);
  });
  port.postMessage({ type: 'ready' });
}

main().catch((error: unknown) => {
  port.postMessage({
    type: 'failed',
    message: error instanceof Error ? error.message : String(error),
  });
  port.close();
});
