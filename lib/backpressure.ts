/**
 * Writing with backpressure to a Writable that may also close: `then` runs once the chunk is
 * taken, at once when there is room, else on 'drain', or on 'close' (a sink that failed, whose
 * owner learns why elsewhere) so that the writer never waits forever.
 */
import type { Writable } from 'node:stream';

export function writeThen(target: Writable, chunk: Buffer, then: () => void): void {
  if (target.write(chunk)) {
    then();
    return;
  }
  const resume = (): void => {
    target.off('drain', resume);
    target.off('close', resume);
    then();
  };
  target.on('drain', resume);
  target.on('close', resume);
}
