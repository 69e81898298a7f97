/**
 * A full disk (SECURITY.md, "Faults"): the server runs on a small filesystem of its own (an
 * 8 MiB tmpfs; else a loop-mounted image; else faults injected into the fs calls it makes).
 * A WRITE that cannot fit is refused up front, uploads in progress cannot overcommit, and a
 * disk that fills mid-upload is answered NO_SPACE at once; the connection stays in step and
 * no temporary file is left.
 */
import t, { type Test } from 'tap';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  statfsSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaServer } from '../../pipelines/server.js';
import { RawClient } from '../helpers/raw-client.js';

const WAIT_MS = 10_000;
/** "Promptly": how long a NO_SPACE may take once the disk is full. */
const PROMPT_MS = 2000;
const DISK_BYTES = 8 * 1024 * 1024;

interface SmallDisk {
  how: string;
  /** The media root, on the small disk. */
  root: string;
  free(): number;
  /** Fills the disk with a plain file (not through the server). */
  fill(): void;
  cleanup(): void;
}

function tryRun(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Fault injection: the server's fs calls see an 8 MiB disk, whatever the real one is. */
async function injectedDisk(dir: string): Promise<Omit<SmallDisk, 'root'>> {
  let used = 0;
  const probe = await fsp.open(dir, 'r');
  const proto = Object.getPrototypeOf(probe) as {
    writev: (buffers: Buffer[], position?: number) => Promise<unknown>;
  };
  await probe.close();
  const originalWritev = proto.writev;
  const originalStatfs = fsp.statfs;
  proto.writev = function (this: unknown, buffers: Buffer[], position?: number) {
    const total = buffers.reduce((sum, buffer) => sum + buffer.length, 0);
    if (used + total > DISK_BYTES) {
      return Promise.reject(
        Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }),
      );
    }
    used += total;
    return originalWritev.call(this, buffers, position);
  };
  (fsp as { statfs: unknown }).statfs = async (path: string) => {
    const real = await originalStatfs(path);
    return { ...real, bsize: 4096, bavail: Math.floor((DISK_BYTES - used) / 4096) };
  };
  syncBuiltinESMExports();
  return {
    how: 'fault injection (statfs and FileHandle.writev patched)',
    free: () => DISK_BYTES - used,
    fill: () => void (used = DISK_BYTES),
    cleanup: () => {
      proto.writev = originalWritev;
      (fsp as { statfs: unknown }).statfs = originalStatfs;
      syncBuiltinESMExports();
    },
  };
}

async function smallDisk(t: Test): Promise<SmallDisk> {
  const base = mkdtempSync(join(tmpdir(), 'ioe-disk-'));
  const mount = join(base, 'mnt');
  mkdirSync(mount);
  // IOE_TEST_DISK=loop or =inject skips the earlier ways (to exercise the fallbacks).
  const forced = process.env.IOE_TEST_DISK;
  let how: string | undefined;
  if (
    forced !== 'loop' &&
    forced !== 'inject' &&
    tryRun('mount', ['-t', 'tmpfs', '-o', `size=${DISK_BYTES}`, 'tmpfs', mount])
  ) {
    how = 'an 8 MiB tmpfs';
  } else {
    const image = join(base, 'disk.img');
    if (
      forced !== 'inject' &&
      tryRun('truncate', ['-s', String(DISK_BYTES), image]) &&
      tryRun('mkfs.ext4', ['-q', '-F', image]) &&
      tryRun('mount', ['-o', 'loop', image, mount])
    ) {
      how = 'an 8 MiB loop-mounted ext4 image';
    }
  }
  const root = join(mount, 'media');
  mkdirSync(root);
  let disk: SmallDisk;
  if (how) {
    const filler = join(mount, 'filler.bin');
    disk = {
      how,
      root,
      free: () => {
        const stats = statfsSync(root);
        return stats.bavail * stats.bsize;
      },
      fill: () => {
        const fd = openSync(filler, 'a');
        const chunk = Buffer.alloc(64 * 1024, 1);
        try {
          for (;;) writeSync(fd, chunk);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        } finally {
          closeSync(fd);
        }
      },
      cleanup: () => {
        tryRun('umount', ['-l', mount]);
        rmSync(base, { recursive: true, force: true });
      },
    };
  } else {
    const injected = await injectedDisk(root);
    disk = {
      ...injected,
      root,
      cleanup: () => {
        injected.cleanup();
        rmSync(base, { recursive: true, force: true });
      },
    };
  }
  t.comment(`disk: ${disk.how}`);
  return disk;
}

/** A server on a small disk; one teardown stops it, then unmounts. */
async function serverOnSmallDisk(t: Test): Promise<{ disk: SmallDisk; port: number }> {
  const disk = await smallDisk(t);
  const server = await MediaServer.create({
    root: disk.root,
    port: 0,
    idleTimeoutSeconds: 0,
  }).catch((error: unknown) => {
    disk.cleanup();
    throw error;
  });
  t.teardown(async () => {
    await server.forceQuit();
    disk.cleanup();
  });
  const { port } = await server.listen();
  return { disk, port };
}

const temporaries = (root: string): string[] =>
  readdirSync(root).filter((name) => name.startsWith('.ioe-upload-'));

async function waitFor(what: string, ready: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

t.test('a WRITE larger than the free space is refused up front', async (t) => {
  const { disk, port } = await serverOnSmallDisk(t);
  const raw = await RawClient.connect(port);
  t.teardown(() => raw.socket.destroy());
  const size = disk.free() + 1024 * 1024;
  await raw.send(`WRITE,big.mp4,${size}\n`);
  t.match(await raw.readLine(PROMPT_MS), /^ERR NO_SPACE /, 'NO_SPACE before any payload byte');
  await raw.send(Buffer.alloc(size, 7)); // the announced payload is drained
  await raw.send('LIST\n');
  t.equal(await raw.readLine(WAIT_MS), 'OK 0', 'the connection stays in step and usable');
  t.same(temporaries(disk.root), [], 'no temporary file');
});

t.test('uploads in progress cannot overcommit the free space', async (t) => {
  const { disk, port } = await serverOnSmallDisk(t);
  const size = Math.floor(disk.free() * 0.6);
  const first = await RawClient.connect(port);
  const second = await RawClient.connect(port);
  t.teardown(() => (first.socket.destroy(), second.socket.destroy()));
  const payload = randomBytes(size);
  await first.send(
    Buffer.concat([Buffer.from(`WRITE,one.mp4,${size}\n`), payload.subarray(0, 4096)]),
  );
  await waitFor('the first upload to start', () => temporaries(disk.root).length === 1);

  await second.send(`WRITE,two.mp4,${size}\n`);
  t.match(
    await second.readLine(PROMPT_MS),
    /^ERR NO_SPACE /,
    'the second is refused: the first holds its space',
  );
  await first.send(payload.subarray(4096));
  t.match(
    await first.readLine(WAIT_MS),
    new RegExp(`^OK ${size} [0-9a-f]{64}$`),
    'the first completes',
  );
  await second.send(Buffer.alloc(size));
  await second.send('LIST\n');
  t.equal(await second.readLine(WAIT_MS), 'OK 1', 'the refused connection stays usable');
  t.same(temporaries(disk.root), [], 'no temporary file');
});

t.test('a disk that fills mid-upload: NO_SPACE at once, drained, cleaned up', async (t) => {
  const { disk, port } = await serverOnSmallDisk(t);
  const size = Math.floor(disk.free() / 2);
  const raw = await RawClient.connect(port);
  t.teardown(() => raw.socket.destroy());
  const head = 256 * 1024;
  await raw.send(Buffer.concat([Buffer.from(`WRITE,mid.mp4,${size}\n`), randomBytes(head)]));
  await waitFor('the upload to start', () => temporaries(disk.root).length === 1);

  disk.fill(); // another process takes the rest of the disk after the WRITE was accepted
  const sent = Date.now();
  await raw.send(randomBytes(size - head));
  t.match(await raw.readLine(PROMPT_MS), /^ERR NO_SPACE /, 'NO_SPACE once the disk is full');
  t.comment(`NO_SPACE after ${Date.now() - sent} ms`);
  await waitFor('the temporary file to be deleted', () => temporaries(disk.root).length === 0);
  t.pass('the temporary file is deleted');
  await raw.send('LIST\n');
  t.equal(
    await raw.readLine(WAIT_MS),
    'OK 0',
    'the rest was drained: the connection stays in step',
  );
  await raw.send('LIST\n');
  t.equal(await raw.readLine(WAIT_MS), 'OK 0', 'and stays usable');
});
