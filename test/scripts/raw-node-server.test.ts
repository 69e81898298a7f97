/**
 * The benchmark's raw-node baseline in upload mode (the compiled script, as the benchmark runs
 * it): it stores every byte, and with --sha256 its receipt carries the right hash, so the
 * WRITE comparison is against a baseline that really does that work.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listeningPort } from '../helpers/listening.js';
import { built } from '../helpers/paths.js';

const RAW = built('scripts/bench/raw-node-server.js');

async function upload(extra: string[], payload: Buffer): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-raw-'));
  const child = spawn(process.execPath, [RAW, '--mode', 'upload', '--dir', dir, ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await listeningPort(child);
    const socket = connect(port, '127.0.0.1');
    socket.end(payload);
    let reply = '';
    for await (const chunk of socket) reply += (chunk as Buffer).toString();
    return reply;
  } finally {
    child.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

const payload = randomBytes(3 * 1024 * 1024 + 7);

t.test('upload: OK <bytes>', async (t) => {
  t.equal(await upload([], payload), `OK ${payload.length}\n`);
});

t.test('upload --sha256: OK <bytes> <sha256 of the bytes>', async (t) => {
  const sha256 = createHash('sha256').update(payload).digest('hex');
  t.equal(await upload(['--sha256'], payload), `OK ${payload.length} ${sha256}\n`);
});
