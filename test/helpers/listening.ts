/**
 * Waits for a spawned server (the IOE executable or the bench's raw-node) to print
 * `listening on HOST:PORT` and resolves with the port; rejects, with what it printed, if it
 * exits first or takes longer than `ms`.
 */
import type { ChildProcess } from 'node:child_process';

export function listeningPort(child: ChildProcess, ms = 10_000): Promise<number> {
  return new Promise((resolve, reject) => {
    let out = '';
    const done = (): void => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
    };
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      const match = /listening on \S+:(\d+)/.exec(out);
      if (match) {
        done();
        resolve(Number(match[1]));
      }
    };
    const onExit = (code: number | null): void => {
      done();
      reject(new Error(`the server exited (${code}) before listening: ${out}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no "listening" line within ${ms} ms: ${out}`));
    }, ms);
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
  });
}
