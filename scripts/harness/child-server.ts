/**
 * The IOE server as a child process, for the soak and the live fuzz: started on port 0 from the
 * compiled `dist/scripts/server.js`, stopped with QUIT on its console, never left running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ChildServer {
  host: string;
  port: number;
  child: ChildProcess;
  /** Resolves with `exit code N` or `signal S` when the process ends. */
  exited: Promise<string>;
  /** The last 20 lines it wrote on stderr. */
  stderrTail: string[];
}

const SERVER_JS = fileURLToPath(new URL('../server.js', import.meta.url));
const START_TIMEOUT_MS = 10_000;
const QUIT_TIMEOUT_MS = 15_000;

/** Starts `ioe-server --port 0 ...args` and resolves once it prints `listening on`. */
export async function startChildServer(args: string[]): Promise<ChildServer> {
  const child = spawn(process.execPath, [SERVER_JS, '--port', '0', '--http-port', '0', ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // If this script dies or is interrupted, its server must not outlive it (end of stdin is not
  // a command to the server).
  const killChild = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.on('exit', killChild);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killChild();
      process.exit(130);
    });
  }
  child.stdin!.on('error', () => undefined);
  const stderrTail: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    stderrTail.push(...text.split('\n').filter(Boolean));
    stderrTail.splice(0, Math.max(0, stderrTail.length - 20));
  });
  const exited = new Promise<string>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `exit code ${code}`)),
  );
  const address = await new Promise<{ host: string; port: number }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`the server did not start in ${START_TIMEOUT_MS / 1000} s`)),
      START_TIMEOUT_MS,
    );
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      out += text;
      const match = /listening on (\S+):([0-9]+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ host: match[1], port: Number(match[2]) });
      }
    });
    void exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`the server ${how}: ${stderrTail.join('\n')}`));
    });
  });
  return { ...address, child, exited, stderrTail };
}

/** QUIT on the console; resolves with how it ended (`exit code 0` when all went well). */
export async function quitChildServer(server: ChildServer): Promise<string> {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return `already ${await server.exited}`;
  child.stdin!.write('QUIT\n');
  const timeout = new Promise<undefined>((resolve) =>
    setTimeout(() => resolve(undefined), QUIT_TIMEOUT_MS).unref(),
  );
  const how = await Promise.race([server.exited, timeout]);
  if (how !== undefined) return how;
  child.kill('SIGKILL');
  return `did not exit within ${QUIT_TIMEOUT_MS / 1000} s of QUIT (killed)`;
}

/** Kills the server if it still runs (after a failure), and waits for it to be gone. */
export async function killChildServer(server: ChildServer): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  server.child.kill('SIGKILL');
  await server.exited;
}
