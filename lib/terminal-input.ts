/**
 * Reading a secret from a person or a pipe, for the command-line tools (`ioe --user`,
 * `ioe-server users`): the first line of a stream, or lines typed on a terminal with nothing
 * echoed. Never an argument: a password on the command line is in `ps` and shell histories.
 */
import type { Readable, Writable } from 'node:stream';

/** A terminal, or a pipe (`setRawMode` exists only on a terminal). */
export type TerminalInput = Readable & {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
};

/** Ctrl-C, or Ctrl-D on an empty line, at a prompt. */
export class Cancelled extends Error {}

/** The first line of a stream (without `\n` or `\r\n`), or undefined at once-empty end. */
export function readOneLine(input: Readable): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const finish = (line: string | undefined): void => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      input.pause();
      // A pipe left open by the writer must not keep the process alive.
      (input as { unref?: () => void }).unref?.();
      resolve(line);
    };
    const onData = (chunk: Buffer | string): void => {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      const newline = buffer.indexOf(0x0a);
      if (newline < 0) {
        chunks.push(buffer);
        return;
      }
      chunks.push(buffer.subarray(0, newline));
      finish(Buffer.concat(chunks).toString('utf8').replace(/\r$/, ''));
    };
    const onEnd = (): void => {
      const all = Buffer.concat(chunks);
      finish(all.length === 0 ? undefined : all.toString('utf8').replace(/\r$/, ''));
    };
    const onError = (error: Error): void => reject(error);
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
    input.resume();
  });
}

/**
 * Lines typed on a terminal in raw mode, nothing echoed: Enter ends a line, Backspace erases,
 * Ctrl-U clears, Ctrl-C cancels, Ctrl-D on an empty line cancels. Typed-ahead (pasted) lines
 * are kept for the next prompt.
 */
export class HiddenLineReader {
  private buffer = '';
  private readonly lines: string[] = [];
  private cancelled = false;
  private waiter?: () => void;
  private readonly onData = (chunk: Buffer | string): void => {
    for (const char of chunk.toString()) {
      if (char === '\r' || char === '\n') {
        this.lines.push(this.buffer);
        this.buffer = '';
      } else if (char === '\u0003' || (char === '\u0004' && this.buffer === '')) {
        this.cancelled = true;
      } else if (char === '\u007f' || char === '\b') {
        this.buffer = [...this.buffer].slice(0, -1).join('');
      } else if (char === '\u0015') {
        this.buffer = '';
      } else if (char >= ' ') {
        this.buffer += char;
      }
    }
    this.waiter?.();
  };
  private readonly onEnd = (): void => {
    this.cancelled = true;
    this.waiter?.();
  };

  constructor(
    private readonly input: TerminalInput,
    private readonly output: Writable,
  ) {
    input.setRawMode!(true);
    input.on('data', this.onData);
    input.on('end', this.onEnd);
    input.resume();
  }

  async next(prompt: string): Promise<string> {
    this.output.write(prompt);
    while (this.lines.length === 0 && !this.cancelled) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    this.output.write('\n');
    if (this.cancelled) throw new Cancelled('cancelled');
    return this.lines.shift()!;
  }

  close(): void {
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.setRawMode!(false);
    this.input.pause();
    (this.input as { unref?: () => void }).unref?.();
  }
}
