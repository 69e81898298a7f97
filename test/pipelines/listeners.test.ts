// The listening sockets of one door (pipelines/listeners.ts): on a Node that shares a port,
// port 0 gives each set a port of its own, never one another set (or process) holds. The race
// this guards against (a port released between a probe and the set's bind, given to another
// server meanwhile) is too rare to reproduce on demand; the tests state the behaviour. On a Node
// without shared ports (20) they check the one-socket path.
import t from 'tap';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { Listeners, LISTENERS_PER_DOOR, reusePortSupported } from '../../pipelines/listeners.js';

const sharing = reusePortSupported();

function exclusiveListen(port: number): Promise<string> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    server.listen({ port, host: '127.0.0.1' }, () => server.close(() => resolve('bound')));
  });
}

t.test(
  'port 0: sets started at once each get their own port, all their sockets on it',
  async (t) => {
    const sets = Array.from({ length: 60 }, () => new Listeners<Server>(() => createServer()));
    t.teardown(() => Promise.all(sets.map((set) => set.close())));
    const addresses = await Promise.all(sets.map((set) => set.listen(0, '127.0.0.1')));
    const ports = addresses.map((address) => address.port);
    t.equal(new Set(ports).size, sets.length, 'no port given to two sets');
    for (const [i, set] of sets.entries()) {
      const own = set.servers.map((server) => (server.address() as AddressInfo).port);
      t.same(
        own,
        Array(sharing ? LISTENERS_PER_DOOR : 1).fill(ports[i]),
        `set ${i}: every socket on its port`,
      );
    }
    t.equal(await exclusiveListen(ports[0]!), 'EADDRINUSE', 'another server cannot take the port');
  },
);

t.test('a port held by another server is refused, as one listen would be', async (t) => {
  const other = createServer();
  await new Promise<void>((resolve) => other.listen({ port: 0, host: '127.0.0.1' }, resolve));
  t.teardown(() => new Promise<void>((resolve) => other.close(() => resolve())));
  const taken = (other.address() as AddressInfo).port;
  const set = new Listeners<Server>(() => createServer());
  t.teardown(() => set.close());
  await t.rejects(set.listen(taken, '127.0.0.1'), { code: 'EADDRINUSE' });
  t.same(set.servers, [], 'nothing of the set is left bound');
});

t.test('a set that cannot bind all its sockets closes the ones it bound', async (t) => {
  let made = 0;
  const set = new Listeners<Server>(() => {
    const server = createServer();
    // The third socket's listen fails, as EMFILE would.
    if (++made === 3)
      server.listen = () => (
        queueMicrotask(() =>
          server.emit('error', Object.assign(new Error('no'), { code: 'EMFILE' })),
        ),
        server
      );
    return server;
  }, 4);
  // Node 20 ignores reusePort: its second socket already fails (EADDRINUSE).
  await t.rejects(set.listen(0, '127.0.0.1'), { code: sharing ? 'EMFILE' : 'EADDRINUSE' });
  t.same(set.servers, [], 'no socket of the set is left listening');
});
