/**
 * The frame splitter alone: bytes in, line / payload / overflow frames out, whatever the
 * chunk boundaries. Payload bytes must come through untouched (every byte value) and uncopied.
 */
import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import {
  frameSplitter,
  type Frame,
  type FrameSplitterOptions,
} from '../../pipelines/frame-splitter.js';
import { payloadLength } from '../../lib/protocol.js';

const NL = 0x0a;

/** Writes the chunks into a fresh splitter and collects every frame it emits. */
async function run(
  chunks: Buffer[],
  options: FrameSplitterOptions = { payloadLength },
): Promise<Frame[]> {
  const splitter = frameSplitter(options);
  const collected = splitter.toArray() as Promise<Frame[]>;
  for (const chunk of chunks) splitter.write(chunk);
  splitter.end();
  return collected;
}

/** Frames with consecutive payload pieces merged, so that different chunkings compare equal. */
type Merged =
  | { kind: 'line'; line: Buffer; payload: number }
  | { kind: 'payload'; bytes: Buffer }
  | { kind: 'overflow' };

function merge(frames: Frame[]): Merged[] {
  const out: Merged[] = [];
  for (const frame of frames) {
    if (frame.kind === 'payload') {
      const last = out[out.length - 1];
      if (last?.kind === 'payload') last.bytes = Buffer.concat([last.bytes, frame.chunk]);
      else out.push({ kind: 'payload', bytes: Buffer.from(frame.chunk) });
    } else if (frame.kind === 'line') {
      out.push({ kind: 'line', line: Buffer.from(frame.line), payload: frame.payload });
    } else {
      out.push({ kind: 'overflow' });
    }
  }
  return out;
}

/** An independent model of the contract's framing, on the whole input at once. */
function model(input: Buffer, maxLineBytes: number, lengthOf: (line: Buffer) => number): Merged[] {
  const out: Merged[] = [];
  let pos = 0;
  while (pos < input.length) {
    const newline = input.indexOf(NL, pos);
    const lineBytes = newline < 0 ? input.length - pos : newline - pos;
    if (lineBytes >= maxLineBytes) {
      out.push({ kind: 'overflow' });
      break;
    }
    if (newline < 0) break; // an unfinished line at the end: nothing to emit
    const line = input.subarray(pos, newline);
    const payload = lengthOf(line);
    out.push({ kind: 'line', line: Buffer.from(line), payload });
    pos = newline + 1;
    const end = Math.min(input.length, pos + payload);
    if (end > pos) out.push({ kind: 'payload', bytes: Buffer.from(input.subarray(pos, end)) });
    pos = end;
  }
  return out;
}

/** Compares merged frames byte for byte (Buffer.equals), with a readable diagnostic. */
function sameFrames(actual: Merged[], expected: Merged[]): string | undefined {
  if (actual.length !== expected.length) {
    return `${actual.length} frames, expected ${expected.length}`;
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (a.kind !== e.kind) return `frame ${i}: ${a.kind}, expected ${e.kind}`;
    if (a.kind === 'line' && e.kind === 'line') {
      if (!a.line.equals(e.line))
        return `frame ${i}: line ${a.line.toString('hex')} != ${e.line.toString('hex')}`;
      if (a.payload !== e.payload) return `frame ${i}: payload ${a.payload} != ${e.payload}`;
    }
    if (a.kind === 'payload' && e.kind === 'payload' && !a.bytes.equals(e.bytes)) {
      return `frame ${i}: payload bytes differ (${a.bytes.length} vs ${e.bytes.length} bytes)`;
    }
  }
  return undefined;
}

/** Splits `input` at the given sorted offsets. */
function cut(input: Buffer, offsets: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let start = 0;
  for (const offset of offsets) {
    chunks.push(input.subarray(start, offset));
    start = offset;
  }
  chunks.push(input.subarray(start));
  return chunks;
}

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

/** `WRITE,<name>,<size>\n` + payload + `next` commands, and the frames it must give. */
function writeStream(
  name: string,
  payload: Buffer,
  next: string,
): { input: Buffer; expected: Merged[] } {
  const header = Buffer.from(`WRITE,${name},${payload.length}`);
  const input = Buffer.concat([header, Buffer.from('\n'), payload, Buffer.from(next)]);
  const expected: Merged[] = [{ kind: 'line', line: header, payload: payload.length }];
  if (payload.length > 0) expected.push({ kind: 'payload', bytes: payload });
  for (const line of next.split('\n').slice(0, -1)) {
    expected.push({ kind: 'line', line: Buffer.from(line), payload: 0 });
  }
  return { input, expected };
}

t.test('lines: cut at \\n, \\r kept for the parser, empty lines emitted', async (t) => {
  const frames = await run([Buffer.from('LIST\nREAD,a.mp3\r\n\nBYE\n')]);
  t.same(
    frames.map((f) => (f.kind === 'line' ? [f.line.toString('latin1'), f.payload] : f.kind)),
    [
      ['LIST', 0],
      ['READ,a.mp3\r', 0],
      ['', 0],
      ['BYE', 0],
    ],
  );
});

t.test('an unfinished line at the end emits nothing', async (t) => {
  t.same(await run([Buffer.from('LIST')]), []);
  t.same(await run([Buffer.from('LIST\nBY'), Buffer.from('E')]), [
    { kind: 'line', line: Buffer.from('LIST'), payload: 0 },
  ]);
});

t.test(
  'a payload holding every byte value 0..255 comes through intact, at every split',
  async (t) => {
    const { input, expected } = writeStream('bytes.mp3', ALL_BYTES, 'LIST\nHASH,bytes.mp3\n');
    // One chunk.
    t.equal(sameFrames(merge(await run([input])), expected), undefined, 'one chunk');
    // Two chunks, split at every index.
    let failures = 0;
    for (let i = 0; i <= input.length; i++) {
      const problem = sameFrames(merge(await run(cut(input, [i]))), expected);
      if (problem) {
        failures++;
        t.fail(`split at ${i}: ${problem}`);
      }
    }
    t.equal(failures, 0, `all ${input.length + 1} two-chunk splits`);
    // Byte by byte.
    const bytes = Array.from(input, (_, i) => input.subarray(i, i + 1));
    t.equal(sameFrames(merge(await run(bytes)), expected), undefined, 'byte by byte');
  },
);

t.test('payload bytes that look like commands are not lines', async (t) => {
  const payload = Buffer.from('LIST\nBYE\nWRITE,x.mp3,5\n\r\n\n');
  const { input, expected } = writeStream('x.mp3', payload, 'BYE\n');
  for (let i = 0; i <= input.length; i++) {
    const problem = sameFrames(merge(await run(cut(input, [i]))), expected);
    if (problem) t.fail(`split at ${i}: ${problem}`);
  }
  // Three chunks: every pair of split points.
  let checked = 0;
  for (let i = 0; i <= input.length; i++) {
    for (let j = i; j <= input.length; j++) {
      const problem = sameFrames(merge(await run(cut(input, [i, j]))), expected);
      if (problem) t.fail(`split at ${i},${j}: ${problem}`);
      checked++;
    }
  }
  t.ok(checked > 1000, `${checked} three-chunk splits agree`);
});

t.test('random binary payloads, random chunkings', async (t) => {
  for (const size of [1, 2, 255, 4096, 65537]) {
    const payload = randomBytes(size);
    const { input, expected } = writeStream('r.mov', payload, 'READ,r.mov,1,2\nBYE\n');
    const offsets = Array.from({ length: 20 }, () =>
      Math.floor(Math.random() * (input.length + 1)),
    ).sort((a, b) => a - b);
    const problem = sameFrames(merge(await run(cut(input, offsets))), expected);
    t.equal(problem, undefined, `${size} bytes, 21 random chunks`);
    t.equal(sameFrames(merge(await run([input])), expected), undefined, `${size} bytes, one chunk`);
  }
  // Every split of a smaller random payload, byte by byte too.
  const small = randomBytes(300);
  const { input, expected } = writeStream('s.wav', small, 'LIST,music\n');
  for (let i = 0; i <= input.length; i++) {
    const problem = sameFrames(merge(await run(cut(input, [i]))), expected);
    if (problem) t.fail(`split at ${i}: ${problem}`);
  }
  const bytes = Array.from(input, (_, i) => input.subarray(i, i + 1));
  t.equal(sameFrames(merge(await run(bytes)), expected), undefined, 'byte by byte');
});

t.test('header, payload and the next commands pipelined in one chunk', async (t) => {
  const a = Buffer.from([0, 10, 13, 255, 10]);
  const b = Buffer.from('\n\n\n');
  const input = Buffer.concat([
    Buffer.from('WRITE,a.jpg,5\n'),
    a,
    Buffer.from('write,b.jpg,3\r\n'),
    b,
    Buffer.from('WRITE,c.jpg,0\nLIST\n'),
  ]);
  const frames = await run([input]);
  t.same(
    frames.map((f) =>
      f.kind === 'line'
        ? ['line', f.line.toString('latin1'), f.payload]
        : f.kind === 'payload'
          ? ['payload', f.chunk.toString('hex')]
          : [f.kind],
    ),
    [
      ['line', 'WRITE,a.jpg,5', 5],
      ['payload', a.toString('hex')],
      ['line', 'write,b.jpg,3\r', 3],
      ['payload', b.toString('hex')],
      ['line', 'WRITE,c.jpg,0', 0],
      ['line', 'LIST', 0],
    ],
  );
});

t.test('payload frames (and lines) are subarrays of the input, not copies', async (t) => {
  const input = Buffer.concat([Buffer.from('WRITE,a.mp3,256\n'), ALL_BYTES, Buffer.from('LIST\n')]);
  const frames = await run([input]);
  const payloads = frames.filter((f) => f.kind === 'payload');
  t.equal(payloads.length, 1);
  const chunk = payloads[0].chunk;
  t.ok(chunk.equals(ALL_BYTES));
  t.equal(chunk.buffer, input.buffer, 'same ArrayBuffer');
  t.equal(chunk.byteOffset, input.byteOffset + 16, 'at the payload offset');
  const lines = frames.filter((f) => f.kind === 'line');
  t.equal(lines[0].line.buffer, input.buffer, 'a line inside one chunk is a subarray too');
  // Writing into the input shows through the frame: proof that nothing was copied.
  input[16] = 0x7e;
  t.equal(chunk[0], 0x7e);
});

t.test('payloadLength is asked once per line, in order; its answer is honoured', async (t) => {
  const asked: string[] = [];
  const frames = await run([Buffer.from('A\nB\nxyzC\nD\n')], {
    payloadLength: (line) => {
      asked.push(line.toString());
      return line.toString() === 'B' ? 3 : 0;
    },
  });
  t.same(asked, ['A', 'B', 'C', 'D']);
  t.same(merge(frames), [
    { kind: 'line', line: Buffer.from('A'), payload: 0 },
    { kind: 'line', line: Buffer.from('B'), payload: 3 },
    { kind: 'payload', bytes: Buffer.from('xyz') },
    { kind: 'line', line: Buffer.from('C'), payload: 0 },
    { kind: 'line', line: Buffer.from('D'), payload: 0 },
  ]);
  // Without a payloadLength, no line carries a payload.
  const plain = await run([Buffer.from('WRITE,a.mp3,3\nabc\n')], {});
  t.same(
    plain.map((f) => f.kind === 'line' && f.line.toString()),
    ['WRITE,a.mp3,3', 'abc'],
  );
});

t.test(
  'a payload cut off by the end of input: what arrived is emitted, nothing more',
  async (t) => {
    const frames = merge(await run([Buffer.from('WRITE,a.mp3,10\nabc')]));
    t.same(frames, [
      { kind: 'line', line: Buffer.from('WRITE,a.mp3,10'), payload: 10 },
      { kind: 'payload', bytes: Buffer.from('abc') },
    ]);
  },
);

t.test('the 4096-byte line limit, exactly', async (t) => {
  const x = (n: number): Buffer => Buffer.alloc(n, 0x78);
  const nl = Buffer.from('\n');
  const crnl = Buffer.from('\r\n');

  // 4095 bytes + \n = 4096 raw bytes: passes, whatever the chunking.
  const ok = Buffer.concat([x(4095), nl]);
  for (const offsets of [[], [1], [2048], [4094], [4095], [4096]]) {
    const frames = await run(cut(ok, offsets));
    t.equal(frames.length, 1, `4095+\\n split at ${offsets.join(',') || 'none'}`);
    t.ok(frames[0].kind === 'line' && frames[0].line.equals(x(4095)));
  }
  const okBytes = await run(Array.from(ok, (_, i) => ok.subarray(i, i + 1)));
  t.ok(
    okBytes.length === 1 && okBytes[0].kind === 'line' && okBytes[0].line.length === 4095,
    'byte by byte',
  );

  // \r\n counts: 4094 + \r\n passes (the \r stays on the line), 4095 + \r\n does not.
  const okCr = await run([Buffer.concat([x(4094), crnl])]);
  t.ok(
    okCr.length === 1 && okCr[0].kind === 'line' && okCr[0].line.length === 4095,
    '4094+\\r\\n passes',
  );
  for (const offsets of [[], [4095], [4096]]) {
    const frames = await run(cut(Buffer.concat([x(4095), crnl]), offsets));
    t.same(
      frames,
      [{ kind: 'overflow' }],
      `4095+\\r\\n overflows (split ${offsets.join(',') || 'none'})`,
    );
  }

  // 4096 bytes and no \n yet: overflow at once, without waiting for more.
  const splitter = frameSplitter({ payloadLength });
  const seen: Frame[] = [];
  splitter.on('data', (frame: Frame) => seen.push(frame));
  await new Promise<void>((resolve) => splitter.write(x(4095), () => resolve()));
  t.same(seen, [], '4095 bytes without \\n: still waiting');
  await new Promise<void>((resolve) => splitter.write(x(1), () => resolve()));
  t.same(seen, [{ kind: 'overflow' }], 'the 4096th byte overflows');
  splitter.end();

  for (const offsets of [[], [1], [4095], [4096]]) {
    t.same(await run(cut(x(4096), offsets)), [{ kind: 'overflow' }], `4096 bytes split ${offsets}`);
    t.same(
      await run(cut(Buffer.concat([x(4096), nl]), offsets)),
      [{ kind: 'overflow' }],
      `4096+\\n split ${offsets}`,
    );
  }
  t.same(await run([x(10000)]), [{ kind: 'overflow' }], 'one frame for a long line');

  // The count restarts at each line, and after each payload.
  const frames = merge(
    await run([
      Buffer.concat([x(4095), nl, x(4095), nl, Buffer.from('WRITE,a.mp3,3\n'), x(3), x(4095), nl]),
    ]),
  );
  t.same(
    frames.map((f) => f.kind),
    ['line', 'line', 'line', 'payload', 'line'],
  );
});

t.test('the limit is configurable', async (t) => {
  t.same(await run([Buffer.from('abc\n')], { maxLineBytes: 4 }), [
    { kind: 'line', line: Buffer.from('abc'), payload: 0 },
  ]);
  t.same(await run([Buffer.from('abcd\n')], { maxLineBytes: 4 }), [{ kind: 'overflow' }]);
  t.same(await run([Buffer.from('ab'), Buffer.from('cd')], { maxLineBytes: 4 }), [
    { kind: 'overflow' },
  ]);
});

t.test('nothing is emitted after an overflow', async (t) => {
  const long = Buffer.alloc(4096, 0x41);
  const tail = Buffer.from('LIST\nWRITE,a.mp3,3\nabcBYE\n');
  const frames = await run([Buffer.from('LIST\n'), long, tail, tail]);
  t.same(merge(frames), [
    { kind: 'line', line: Buffer.from('LIST'), payload: 0 },
    { kind: 'overflow' },
  ]);
  // Same, all in one chunk, and with the valid lines in the overflowing chunk.
  const one = await run([Buffer.concat([Buffer.from('LIST\n'), long, Buffer.from('\n'), tail])]);
  t.same(merge(one), [
    { kind: 'line', line: Buffer.from('LIST'), payload: 0 },
    { kind: 'overflow' },
  ]);
  // The payloadLength callback is not asked about anything after it either.
  let asked = 0;
  await run([long, tail], {
    payloadLength: () => {
      asked++;
      return 0;
    },
  });
  t.equal(asked, 0);
});

t.test('a payload never counts toward the line limit', async (t) => {
  const payload = Buffer.alloc(100000, 0x61); // no \n at all
  const { input, expected } = writeStream('big.mp4', payload, 'BYE\n');
  t.equal(sameFrames(merge(await run([input])), expected), undefined);
  t.equal(sameFrames(merge(await run(cut(input, [10, 5000, 50000, 99999]))), expected), undefined);
});

// ---- property tests ----------------------------------------------------------------------

/** A command line: bytes with no \n, never a WRITE (so it announces no payload). */
const commandLine = fc
  .uint8Array({ minLength: 0, maxLength: 60 })
  .map((bytes) => Buffer.from(bytes.map((b) => (b === NL ? 0x20 : b))))
  .filter((line) => payloadLength(line) === 0);

type Message = { line: Buffer; payload?: Buffer };

const message: fc.Arbitrary<Message> = fc.oneof(
  commandLine.map((line) => ({ line })),
  fc
    .tuple(
      fc.stringMatching(/^[a-zA-Z0-9 ,/]{1,20}\.(mp3|jpg|mkv)$/),
      fc.uint8Array({ minLength: 0, maxLength: 300 }),
      fc.boolean(),
    )
    .map(([name, bytes, cr]) => ({
      line: Buffer.from(
        `${['WRITE', 'write', 'Write'][bytes.length % 3]},${name},${bytes.length}${cr ? '\r' : ''}`,
      ),
      payload: Buffer.from(bytes),
    })),
);

/** Turns random numbers into sorted cut offsets within `length`. */
function offsetsFor(cuts: number[], length: number): number[] {
  return cuts.map((c) => c % (length + 1)).sort((a, b) => a - b);
}

t.test('property: random commands and payloads, random chunk boundaries', async (t) => {
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(message, { maxLength: 12 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      async (messages, cuts) => {
        runs++;
        const input = Buffer.concat(
          messages.flatMap((m) => [m.line, Buffer.from('\n'), m.payload ?? Buffer.alloc(0)]),
        );
        const frames = await run(cut(input, offsetsFor(cuts, input.length)));
        // Reassemble: each line frame, then the payload pieces that follow it.
        const got: Message[] = [];
        for (const frame of frames) {
          if (frame.kind === 'line')
            got.push({
              line: Buffer.from(frame.line),
              payload: frame.payload > 0 ? Buffer.alloc(0) : undefined,
            });
          else if (frame.kind === 'payload') {
            const last = got[got.length - 1];
            last.payload = Buffer.concat([last.payload ?? Buffer.alloc(0), frame.chunk]);
          } else throw new Error('unexpected overflow');
        }
        if (got.length !== messages.length)
          throw new Error(`${got.length} messages, expected ${messages.length}`);
        messages.forEach((m, i) => {
          if (!got[i].line.equals(m.line)) throw new Error(`line ${i} differs`);
          const want = m.payload && m.payload.length > 0 ? m.payload : undefined;
          const have = got[i].payload;
          if ((want === undefined) !== (have === undefined))
            throw new Error(`payload ${i} presence differs`);
          if (want && have && !want.equals(have)) throw new Error(`payload ${i} differs`);
        });
      },
    ),
    { numRuns: 300 },
  );
  t.equal(runs >= 300, true, `${runs} runs`);
});

t.test(
  'property: arbitrary bytes and limits match the framing model and never throw',
  async (t) => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 80 }),
            fc
              .constantFrom(
                'WRITE,a.mp3,5\n',
                'WRITE,b.jpg,0\n',
                'write,c.mov,17\r\n',
                'LIST\n',
                '\n',
                'WRITE,x,1\n',
              )
              .map((s) => Buffer.from(s)),
          ),
          { maxLength: 15 },
        ),
        fc.integer({ min: 1, max: 120 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        async (parts, maxLineBytes, cuts) => {
          runs++;
          const input = Buffer.concat(parts.map((p) => Buffer.from(p)));
          const frames = await run(cut(input, offsetsFor(cuts, input.length)), {
            maxLineBytes,
            payloadLength,
          });
          const problem = sameFrames(merge(frames), model(input, maxLineBytes, payloadLength));
          if (problem) throw new Error(problem);
          const overflow = frames.findIndex((f) => f.kind === 'overflow');
          if (overflow >= 0 && overflow !== frames.length - 1)
            throw new Error('frames after an overflow');
          if (frames.some((f) => f.kind === 'payload' && f.chunk.length === 0))
            throw new Error('empty payload frame');
        },
      ),
      { numRuns: 500 },
    );
    t.equal(runs >= 500, true, `${runs} runs`);
  },
);
