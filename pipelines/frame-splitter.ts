/**
 * The connection's splitter: bytes in, frames out. It cuts command lines at `\n` and, when a
 * line announces a payload, hands on exactly that many raw bytes as `subarray`s of the input
 * (never decoded, never copied) before it goes back to lines. Header, payload and the next
 * command may share one chunk, or be split at any byte.
 *
 * split2 cannot do this job: it decodes every byte as UTF-8, which destroys binary payloads.
 */
import { Transform } from 'node:stream';

/** A complete command line, without its `\n`; `payload` raw bytes follow it. */
export interface LineFrame {
  kind: 'line';
  line: Buffer;
  payload: number;
}

/** A piece of the payload announced by the last line. */
export interface PayloadFrame {
  kind: 'payload';
  chunk: Buffer;
}

/** The line reached `maxLineBytes` with no `\n`; the splitter emits nothing after this. */
export interface OverflowFrame {
  kind: 'overflow';
}

export type Frame = LineFrame | PayloadFrame | OverflowFrame;

export interface FrameSplitterOptions {
  /** Longest line in bytes, counting its `\n`. Default 4096. */
  maxLineBytes?: number;
  /** How many raw bytes follow a line. Called once per line, in order. Default: none. */
  payloadLength?: (line: Buffer) => number;
}

const NEWLINE = 0x0a;

export function frameSplitter(options: FrameSplitterOptions = {}): Transform {
  const maxLineBytes = options.maxLineBytes ?? 4096;
  const payloadLength = options.payloadLength ?? (() => 0);
  let pieces: Buffer[] = []; // the unfinished line so far
  let pieceBytes = 0;
  let payloadLeft = 0;
  let overflowed = false;

  function overflow(stream: Transform): void {
    overflowed = true;
    pieces = [];
    stream.push({ kind: 'overflow' } satisfies OverflowFrame);
  }

  return new Transform({
    readableObjectMode: true,
    transform(chunk: Buffer, _encoding, callback) {
      let pos = 0;
      while (pos < chunk.length && !overflowed) {
        if (payloadLeft > 0) {
          const end = Math.min(chunk.length, pos + payloadLeft);
          this.push({ kind: 'payload', chunk: chunk.subarray(pos, end) } satisfies PayloadFrame);
          payloadLeft -= end - pos;
          pos = end;
          continue;
        }
        const newline = chunk.indexOf(NEWLINE, pos);
        if (newline < 0) {
          pieceBytes += chunk.length - pos;
          if (pieceBytes >= maxLineBytes) overflow(this);
          else pieces.push(chunk.subarray(pos));
          break;
        }
        // A line may hold maxLineBytes - 1 bytes before its `\n`.
        if (pieceBytes + (newline - pos) >= maxLineBytes) {
          overflow(this);
          break;
        }
        const tail = chunk.subarray(pos, newline);
        const line = pieces.length === 0 ? tail : Buffer.concat([...pieces, tail]);
        pieces = [];
        pieceBytes = 0;
        pos = newline + 1;
        payloadLeft = payloadLength(line);
        this.push({ kind: 'line', line, payload: payloadLeft } satisfies LineFrame);
      }
      callback();
    },
  });
}
