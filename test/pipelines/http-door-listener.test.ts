/**
 * The HTTP door's contract (spec/http.md), "Listener": the door on its own port next to the TCP
 * door, a port that cannot be bound, the default port taken, `--no-http`, and the `web on` line.
 * In process first; then the ioe-server executable (the compiled dist/scripts/server.js:
 * `npm test` builds it first; these tests are skipped when it is missing).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaServer } from '../../pipelines/server.js';
import { RawClient } from '../helpers/raw-client.js';
import { request, within } from '../helpers/http-client.js';
import { built } from '../helpers/paths.js';

const SERVER = built('scripts/server.js');

/** Holds a port (a free one, or `port`) until the test ends; undefined if it is taken. */
async function holdPort(port = 0): Promise<{ server: Server; port: number } | undefined> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}

t.test('in process: both doors listen, and share one catalog', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'ioe-http-'));
  const server = await MediaServer.create({ root, host: '127.0.0.1', port: 0, httpPort: 0 });
  t.teardown(async () => {
    await server.forceQuit();
    await rm(root, { recursive: true, force: true });
  });
  const { port } = await server.listen();
  const httpPort = server.httpAddress!.port;
  t.not(httpPort, port, 'two ports');
  t.equal((await request(httpPort, { target: '/api/list' })).status, 200, 'HTTP answers');
  const tcp = await RawClient.connect(port);
  t.teardown(() => tcp.destroy());
  await tcp.send('LIST\n');
  t.equal(await tcp.readLine(), 'OK 0', 'TCP answers');
});

t.test('in process: an HTTP port that cannot be bound stops the server', async (t) => {
  const held = await holdPort();
  t.ok(held);
  t.teardown(() => held!.server.close());
  const root = await mkdtemp(join(tmpdir(), 'ioe-http-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const server = await MediaServer.create({
    root,
    host: '127.0.0.1',
    port: 0,
    httpPort: held!.port,
  });
  t.teardown(() => server.forceQuit());
  await t.rejects(server.listen(), { code: 'EADDRINUSE' }, 'listen fails');
});

const serverBuilt = existsSync(SERVER);
t.test(
  'the executable: `web on` after `listening on`, --http-port, --no-http',
  {
    skip: serverBuilt ? false : 'dist/scripts/server.js is not built (npm run build)',
  },
  async (t) => {
    const launch = (args: string[]) => {
      const child = spawn(process.execPath, [SERVER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', () => undefined);
      child.stdin.on('error', () => undefined);
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      t.teardown(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      const waitOut = async (pattern: RegExp, ms = 30_000): Promise<RegExpExecArray> => {
        const deadline = Date.now() + ms;
        for (;;) {
          const match = pattern.exec(out);
          if (match) return match;
          if (Date.now() > deadline || child.exitCode !== null) {
            throw new Error(`stdout did not match ${pattern}: ${JSON.stringify(out)}`);
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      return { child, exited, waitOut, out: () => out };
    };
    const root = await mkdtemp(join(tmpdir(), 'ioe-http-'));
    t.teardown(() => rm(root, { recursive: true, force: true }));

    const both = launch(['--root', root, '--port', '0', '--http-port', '0']);
    const web = await both.waitOut(/web on http:\/\/127\.0\.0\.1:(\d+)\//);
    const text = both.out();
    t.ok(
      text.indexOf('listening on') >= 0 && text.indexOf('listening on') < text.indexOf('web on'),
      '`web on` comes after `listening on`',
    );
    t.not(web[1], '0', 'the port actually bound');
    t.equal((await request(Number(web[1]), { target: '/api/list' })).status, 200, 'it serves');
    both.child.stdin.write('QUIT\n');
    t.equal(await within(both.exited, 30_000, 'QUIT'), 0, 'QUIT exits 0');

    const held = await holdPort();
    t.teardown(() => held?.server.close());
    const taken = launch(['--root', root, '--port', '0', '--http-port', String(held!.port)]);
    const code = await within(taken.exited, 30_000, 'the server to stop');
    t.not(code, 0, 'an --http-port that cannot be bound stops the server with an error');

    const noHttp = launch(['--root', root, '--port', '0', '--no-http']);
    await noHttp.waitOut(/listening on \S+:\d+/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.notMatch(noHttp.out(), /web on/, '--no-http: no web line');
    noHttp.child.stdin.write('QUIT\n');
    await within(noHttp.exited, 30_000, 'QUIT');

    // The default port taken (by us, or by someone else already): the TCP door runs alone.
    const defaultHeld = await holdPort(10080);
    t.teardown(() => defaultHeld?.server.close());
    const fallback = launch(['--root', root, '--port', '0']);
    const listening = await fallback.waitOut(/listening on \S+:(\d+)/);
    await fallback.waitOut(/web off: port 10080 is in use; use --http-port/);
    t.pass('the default port taken: `web off: port 10080 is in use; use --http-port`');
    const tcp = await RawClient.connect(Number(listening[1]));
    t.teardown(() => tcp.destroy());
    await tcp.send('LIST\n');
    t.match(await tcp.readLine(), /^OK \d+$/, 'and the TCP door serves');
    fallback.child.stdin.write('QUIT\n');
    await within(fallback.exited, 30_000, 'QUIT');
  },
);
