/**
 * The benchmark's helpers: the pure ones of scripts/bench/stats.ts (order statistics, ratios,
 * summaries of interleaved rounds, target checks and the table); the many-small load
 * generator's reply parsers and merge, wrk's output, the servers' `listening` lines and the
 * /proc memory and CPU figures; a short run of the load generator and of wrk against tiny
 * servers; the peers' own servers on small files (raw-node's small mode, the Python
 * reference); and the command line (--node).
 */
import t, { type Test } from 'tap';
import {
  atLeast,
  below,
  fileTimestamp,
  formatNumber,
  formatRatio,
  formatSummaryTable,
  formatTable,
  formatTargets,
  kibToMib,
  mbPerSecond,
  mean,
  median,
  pairedRatios,
  parseOnly,
  parseStatusKb,
  percentile,
  ratio,
  series,
  summarize,
  summaryRows,
  type Sample,
  type ScenarioInfo,
} from '../../scripts/bench/stats.js';
import { spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { httpHeadEnd, lineEnd, parseHttpHead, parseIoeHead } from '../../scripts/bench/heads.js';
import { dealClients, mergeResults, requestFor, runLoad } from '../../scripts/bench/load.js';
import { benchProgram, parseBenchOptions } from '../../scripts/bench/options.js';
import {
  PYTHON_REFERENCE,
  RAW_NODE_JS,
  SERVER_JS,
  SERVER_ENV,
  SERVER_NODE_FLAGS,
  cpuSeconds,
  findExecutable,
  findPython,
  memoryOf,
  nodeBinary,
  packageRoot,
  parseListening,
  parseStatTicks,
  processTree,
  pythonVersion,
  resetPeak,
  startPython,
  startRawNode,
  type Running,
} from '../../scripts/bench/proc.js';
import { Payload, Wire, ioeRead, ioeWrite } from '../../scripts/bench/wire.js';
import { parseWrkOutput, parseWrkTime, rotateScript, runWrk } from '../../scripts/bench/wrk.js';
import { built } from '../helpers/paths.js';

t.test('median of odd and even counts, unsorted input, non-finite values dropped', async (t) => {
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([5]), 5);
  t.equal(median([1, NaN, 3, Infinity]), 2);
  t.ok(Number.isNaN(median([])));
  const input = [3, 1, 2];
  median(input);
  t.same(input, [3, 1, 2], 'does not sort the caller’s array');
});

t.test('percentile interpolates between closest ranks', async (t) => {
  const xs = [1, 2, 3, 4];
  t.equal(percentile(xs, 0), 1);
  t.equal(percentile(xs, 100), 4);
  t.equal(percentile(xs, 50), 2.5);
  t.equal(percentile(xs, 25), 1.75);
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(percentile(hundred, 99), 99.01);
  t.equal(percentile(hundred, 50), 50.5);
  t.throws(() => percentile(xs, 101), RangeError);
  t.throws(() => percentile(xs, -1), RangeError);
  t.ok(Number.isNaN(percentile([], 50)));
});

t.test('mean and summarize', async (t) => {
  t.equal(mean([1, 2, 3, 6]), 3);
  t.same(summarize([5, 1, 3]), { n: 3, median: 3, min: 1, max: 5, mean: 3 });
  const empty = summarize([]);
  t.equal(empty.n, 0);
  t.ok(Number.isNaN(empty.median) && Number.isNaN(empty.min) && Number.isNaN(empty.max));
});

t.test('ratio and paired ratios', async (t) => {
  t.equal(ratio(9, 10), 0.9);
  t.ok(Number.isNaN(ratio(1, 0)));
  t.ok(Number.isNaN(ratio(NaN, 1)));
  t.same(pairedRatios([1, 4, 9], [2, 2, 3, 7]), [0.5, 2, 3], 'as long as the shorter series');
});

t.test('units', async (t) => {
  t.equal(mbPerSecond(2e6, 1000), 2);
  t.equal(mbPerSecond(1e6, 500), 2);
  t.ok(Number.isNaN(mbPerSecond(1, 0)));
  t.equal(kibToMib(1536), 1.5);
  const status = 'Name:\tnode\nVmPeak:\t  999 kB\nVmHWM:\t   61234 kB\nVmRSS:\t   51234 kB\n';
  t.equal(parseStatusKb(status, 'VmRSS'), 51234);
  t.equal(parseStatusKb(status, 'VmHWM'), 61234);
  t.ok(Number.isNaN(parseStatusKb('Name:\tzombie\n', 'VmRSS')));
});

t.test('number, ratio and timestamp formatting', async (t) => {
  t.equal(formatNumber(1234.56), '1235');
  t.equal(formatNumber(123.456), '123.5');
  t.equal(formatNumber(12.345), '12.35');
  t.equal(formatNumber(1.5), '1.50');
  t.equal(formatNumber(0.01234), '0.012');
  t.equal(formatNumber(0), '0');
  t.equal(formatNumber(7), '7');
  t.equal(formatNumber(NaN), '—');
  t.equal(formatNumber(Infinity), '∞');
  t.equal(formatRatio(0.8234), '0.82×');
  t.equal(formatRatio(NaN), '—');
  t.equal(fileTimestamp(new Date('2026-11-24T09:30:05.123Z')), '2026-11-24T09-30-05Z');
});

t.test('formatTable pads columns and aligns right where asked', async (t) => {
  const text = formatTable(
    ['name', 'n'],
    [
      ['a', '1'],
      ['long name', '100'],
    ],
    ['left', 'right'],
  );
  t.equal(
    text,
    ['name         n', '---------  ---', 'a            1', 'long name  100'].join('\n'),
  );
  t.equal(
    formatTable(['x', 'y'], [['1']]),
    'x  y\n-  -\n1',
    'missing cells are empty, no trailing space',
  );
  t.equal(formatTable(['ratio'], [['0.5×']]), 'ratio\n-----\n0.5×', 'width counts characters');
});

const info: ScenarioInfo = {
  id: 'read',
  title: 'READ',
  subject: 'ioe',
  peers: ['ioe', 'raw-node'],
  metrics: [{ key: 'mb_s', label: 'MB/s', better: 'higher' }],
};

function sample(peer: string, round: number, mbS: number): Sample {
  return { scenario: 'read', peer, round, warmup: round === 0, metrics: { mb_s: mbS } };
}

const samples: Sample[] = [
  sample('ioe', 0, 1), // warm-up: ignored
  sample('raw-node', 0, 1000),
  sample('ioe', 1, 900),
  sample('raw-node', 1, 1000),
  sample('ioe', 2, 800),
  sample('raw-node', 2, 1000),
  sample('ioe', 3, 1000),
  sample('raw-node', 3, 1250),
];

t.test('series keeps measured rounds in round order', async (t) => {
  t.same(series(samples, 'read', 'ioe', 'mb_s'), [900, 800, 1000]);
  t.same(series(samples, 'read', 'nginx', 'mb_s'), []);
  t.same(series(samples, 'read', 'ioe', 'missing'), []);
});

t.test('summaryRows: medians, ratio of medians and the range of per-round ratios', async (t) => {
  const rows = summaryRows(info, samples);
  t.equal(rows.length, 2);
  const [own, raw] = rows;
  t.equal(own.peer, 'ioe');
  t.ok(own.isSubject);
  t.equal(own.summary.median, 900);
  t.ok(Number.isNaN(own.ratio));
  t.equal(raw.summary.median, 1000);
  t.equal(raw.ratio, 0.9);
  t.equal(raw.pairedMin, 0.8);
  t.equal(raw.pairedMax, 0.9);
  t.notOk(raw.isSubject);
});

t.test('formatSummaryTable shows each scenario and metric once', async (t) => {
  const text = formatSummaryTable(summaryRows(info, samples));
  const lines = text.split('\n');
  t.equal(lines.length, 4);
  t.match(
    lines[0],
    /^scenario\s+metric\s+peer\s+median\s+min–max\s+n\s+ioe ÷ peer\s+per-round ratio$/,
  );
  t.match(lines[2], /^read\s+MB\/s\s+ioe\s+900\s+800–1000\s+3$/);
  t.match(lines[3], /^\s+raw-node\s+1000\s+1000–1250\s+3\s+0\.90×\s+0\.80–0\.90××?$/);
});

t.test('targets: at least, below, and not measured never passes', async (t) => {
  t.equal(atLeast('READ', 0.9, 0.9).pass, true);
  t.equal(atLeast('READ', 0.89, 0.9).pass, false);
  t.equal(atLeast('READ', NaN, 0.9).pass, false);
  t.equal(below('LIST', 1999, 2000, 'ms').pass, true);
  t.equal(below('LIST', 2000, 2000, 'ms').pass, false);
  t.equal(below('RSS', NaN, 150, 'MB').pass, false);
  const text = formatTargets([atLeast('READ', 0.95, 0.9), below('RSS', 200, 150, 'MB')]);
  t.match(text, /READ\s+0\.95×\s+≥ 0\.90×\s+ok/);
  t.match(text, /RSS\s+200 MB\s+< 150 MB\s+MISS/);
});

t.test('parseOnly', async (t) => {
  const known = ['read', 'write', 'list'];
  t.same(parseOnly(undefined, known), known);
  t.same(parseOnly('list, read', known), ['read', 'list'], 'in the run order');
  t.throws(() => parseOnly('read,nope', known), /unknown scenario\(s\): nope/);
});

// ---------------------------------------------------------------------------------------------
// The load generator (heads.ts, load.ts, loadgen.ts), wrk (wrk.ts) and /proc memory (proc.ts).

const bytes = (text: string) => Buffer.from(text, 'latin1');

t.test(
  'HTTP reply heads: end, status, Content-Length in any case, Connection: close',
  async (t) => {
    const nginx = bytes(
      'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: image/jpeg\r\nContent-Length: 65536\r\n' +
        'Connection: keep-alive\r\n\r\nBODY',
    );
    const end = httpHeadEnd(nginx, 0, nginx.length);
    t.equal(nginx.toString('latin1', end), 'BODY');
    t.same(parseHttpHead(nginx, 0, end), { status: 200, length: 65536, close: false });
    const node = bytes(
      'HTTP/1.1 404 Not Found\r\ncontent-length:  12\r\nConnection: close\r\n\r\n',
    );
    t.same(parseHttpHead(node, 0, node.length), { status: 404, length: 12, close: true });
    const none = bytes('HTTP/1.0 200 OK\r\nX: y\r\n\r\n');
    t.same(parseHttpHead(none, 0, none.length), { status: 200, length: -1, close: false });
    t.equal(parseHttpHead(bytes('SSH-2.0-x\r\n\r\n'), 0, 13), undefined);
    t.equal(httpHeadEnd(bytes('HTTP/1.1 200 OK\r\n\r'), 0, 18), -1, 'incomplete');
    const offset = bytes('xxHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n');
    t.equal(httpHeadEnd(offset, 2, offset.length), offset.length);
    t.same(parseHttpHead(offset, 2, offset.length), { status: 200, length: 3, close: false });
  },
);

t.test('IOE reply heads: OK <size>, OK <size> <sha256>, ERR', async (t) => {
  const ok = bytes('OK 65536\nbody');
  t.equal(lineEnd(ok, 0, ok.length), 9);
  t.same(parseIoeHead(ok, 0, 9), { status: 200, length: 65536, close: false });
  const hashed = bytes(`OK 5 ${'a'.repeat(64)}\n`);
  t.same(parseIoeHead(hashed, 0, hashed.length), { status: 200, length: 5, close: false });
  const err = bytes('ERR NOT_FOUND no such file\n');
  t.equal(parseIoeHead(err, 0, err.length)?.status, 0);
  t.equal(parseIoeHead(bytes('OK x\n'), 0, 5), undefined);
  t.equal(parseIoeHead(bytes('what\n'), 0, 5), undefined);
  t.equal(lineEnd(bytes('OK 1'), 0, 4), -1);
});

t.test('requests, client shares and merged results', async (t) => {
  t.equal(requestFor('ioe', 'small/a b.jpg'), 'READ,small/a b.jpg\n');
  t.equal(requestFor('raw', 'small/a.jpg'), 'small/a.jpg\n');
  t.equal(
    requestFor('http', 'small/a b.jpg', '/media/', '127.0.0.1:8080'),
    'GET /media/small/a%20b.jpg HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n',
  );
  t.same(dealClients(5, 2), [
    [0, 3],
    [3, 2],
  ]);
  t.same(dealClients(1, 3), [[0, 1]], 'no empty worker');
  const worker = (latencies: number[], startedAt: number, endedAt: number) => ({
    completed: latencies.length,
    errors: 1,
    notes: ['x'],
    latencies: Float64Array.from(latencies),
    startedAt,
    endedAt,
    connectMs: 5,
    firstMaxMs: startedAt / 100,
    reconnects: 0,
  });
  const count = mergeResults([worker([1, 2, 3], 1000, 1500), worker([4], 1100, 2000)]);
  t.equal(count.completed, 4);
  t.equal(count.errors, 2);
  t.equal(count.seconds, 1, 'first request to last reply');
  t.equal(count.opsPerSecond, 4);
  t.equal(count.p50Ms, 2.5);
  t.equal(count.maxMs, 4);
  t.same(count.notes, ['x']);
  t.equal(count.firstMaxMs, 11, 'the slowest first reply of any worker');
  const timed = mergeResults([worker([1, 2], 0, 0), worker([3, 4], 0, 0)], 2000);
  t.equal(timed.opsPerSecond, 2, 'completed / duration');
});

const WRK_TEXT = `Running 5s test @ http://127.0.0.1:41505/
  2 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.80ms    3.32ms  70.78ms   94.47%
    Req/Sec    17.86k     2.57k   29.17k    91.00%
  Latency Distribution
     50%    5.48ms
     75%    5.83ms
     90%    6.25ms
     99%   22.82ms
  178442 requests in 5.05s, 10.93GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  35331.80
Transfer/sec:      2.16GB
`;

t.test("wrk's output: the rotate script's JSON line, else its text", async (t) => {
  t.equal(parseWrkTime('5.48ms'), 5.48);
  t.equal(parseWrkTime('731.21us'), 0.73121);
  t.equal(parseWrkTime('1.50s'), 1500);
  t.ok(Number.isNaN(parseWrkTime('fast')));
  const text = parseWrkOutput(WRK_TEXT);
  t.equal(text.requestsPerSecond, 35331.8);
  t.equal(text.requests, 178442);
  t.equal(text.seconds, 5.05);
  t.equal(text.p50Ms, 5.48);
  t.equal(text.p99Ms, 22.82);
  t.equal(text.maxMs, 70.78);
  t.equal(text.errors, 7);
  t.equal(text.statusErrors, 4);
  const json = parseWrkOutput(
    WRK_TEXT +
      'WRK_JSON {"requests":1000,"duration_us":2000000,"bytes":1,"connect":0,"read":1,' +
      '"write":0,"status":2,"timeout":0,"p50_us":1500,"p99_us":9000,"max_us":12000}\n',
  );
  t.same(json, {
    requests: 1000,
    seconds: 2,
    requestsPerSecond: 500,
    errors: 3,
    statusErrors: 2,
    p50Ms: 1.5,
    p99Ms: 9,
    maxMs: 12,
  });
  t.throws(() => parseWrkOutput('unable to connect'), /no Requests\/sec/);
  const lua = rotateScript(['/small/a.jpg', '/media/x"y.jpg'], 2);
  t.match(lua, /"\/small\/a\.jpg",\n {2}"\/media\/x\\"y\.jpg"/);
  t.match(lua, /local threads = 2/);
  t.match(lua, /WRK_JSON/);
});

t.test('the server lines: TCP port, then the HTTP door', async (t) => {
  t.same(parseListening('listening on 127.0.0.1:4000\n', false), { port: 4000 });
  t.equal(parseListening('listening on 127.0.0.1:40', false), undefined, 'line not complete');
  t.equal(parseListening('listening on 127.0.0.1:4000\n', true), undefined, 'web line missing');
  t.same(parseListening('listening on 127.0.0.1:4000\nweb on http://127.0.0.1:4001/\n', true), {
    port: 4000,
    httpPort: 4001,
  });
  t.same(parseListening('listening on ::1:4000\nweb on http://[::1]:4001/\n', true), {
    port: 4000,
    httpPort: 4001,
  });
  t.throws(
    () =>
      parseListening('listening on 127.0.0.1:4000\nweb off: port taken; use --http-port\n', true),
    /HTTP door is off/,
  );
  t.throws(
    () => parseListening('listening on 127.0.0.1:4000\nweb on https://127.0.0.1:4001/\n', true),
    /TLS/,
  );
});

t.test(
  "memory from /proc: VmRSS and VmHWM of a process tree, and clear_refs's reset",
  async (t) => {
    // A child that touches 64 MiB, frees it and waits, with a grandchild of its own.
    const script = `
    const { spawn } = require('node:child_process');
    spawn('sleep', ['30'], { stdio: 'ignore' });
    let ballast = Buffer.alloc(64 * 1024 * 1024, 1);
    ballast = undefined;
    globalThis.gc();
    setTimeout(() => process.stdout.write('ready\\n'), 100);
    setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--expose-gc', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.teardown(() => {
      for (const pid of processTree(child.pid!).reverse()) process.kill(pid, 'SIGKILL');
    });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    const tree = processTree(child.pid!);
    t.equal(tree.length, 2, 'the child and its grandchild');
    t.equal(tree[0], child.pid);
    const before = memoryOf(child.pid!);
    t.equal(before.processes, 2);
    t.ok(before.rssMib > 10, `RSS ${before.rssMib} MiB`);
    t.ok(before.hwmMib > before.rssMib + 50, `the 64 MiB peak stays in VmHWM: ${before.hwmMib}`);
    t.ok(resetPeak(child.pid!), 'clear_refs 5 is writable');
    const after = memoryOf(child.pid!);
    t.ok(after.hwmMib < before.rssMib + 8, `VmHWM reset to about RSS: ${after.hwmMib}`);
    t.ok(Number.isNaN(memoryOf(2 ** 22 + 12345).rssMib), 'a missing process is NaN');
  },
);

/** A tiny HTTP server: /f/<i>.jpg is `size` bytes; /missing.jpg is a 404; /close.jpg closes. */
async function tinyHttp(size: number): Promise<{ port: number; close: () => Promise<void> }> {
  const body = Buffer.alloc(size, 7);
  const server = createHttpServer((req, res) => {
    if (req.url === '/f/missing.jpg') res.writeHead(404, { 'Content-Length': 0 }).end();
    else if (req.url === '/f/close.jpg')
      res.writeHead(200, { 'Content-Length': size, Connection: 'close' }).end(body);
    else res.writeHead(200, { 'Content-Length': size }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A tiny IOE-like TCP server: `READ,name` → `OK size` and the bytes (ERR for missing.jpg); a
 * bare `name` line → the bytes alone, as raw-node's named mode.
 */
async function tinyIoe(size: number): Promise<{ port: number; close: () => Promise<void> }> {
  const body = Buffer.alloc(size, 7);
  const sockets = new Set<import('node:net').Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy()); // the generator resets its sockets at the end
    let pending = '';
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      let at: number;
      while ((at = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 1);
        if (!line.startsWith('READ,')) socket.write(body);
        else if (line.endsWith('missing.jpg')) socket.write('ERR NOT_FOUND no such file\n');
        else {
          // The head split mid-number, a moment apart: the generator must gather it.
          const head = `OK ${size}\n`;
          socket.write(head.slice(0, 4));
          setTimeout(() => socket.write(Buffer.concat([Buffer.from(head.slice(4)), body])), 2);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const BENCH_JS = built('scripts/bench.js');

const tinyNames = (n: number) => Array.from({ length: n }, (_, i) => `f/${i}.jpg`);

t.test('the load generator against a tiny HTTP server: count and duration modes', async (t) => {
  const server = await tinyHttp(5000);
  t.teardown(server.close);
  const common = {
    port: server.port,
    host: '127.0.0.1',
    kind: 'http' as const,
    clients: 4,
    perClient: 5,
    size: 5000,
    workers: 2,
    timeoutMs: 10_000,
  };
  const counted = await runLoad({ ...common, names: tinyNames(20) });
  t.equal(counted.completed, 20, 'each client sends its requests once');
  t.equal(counted.errors, 0);
  t.ok(counted.opsPerSecond > 0 && counted.p99Ms >= counted.p50Ms);
  const timed = await runLoad({ ...common, names: tinyNames(20), durationMs: 300 });
  t.ok(timed.completed > 20, `cycles for the duration: ${timed.completed}`);
  t.equal(timed.errors, 0);
  t.equal(timed.seconds, 0.3);
  const names = tinyNames(20);
  names[3] = 'f/missing.jpg';
  names[7] = 'f/close.jpg';
  const bad = await runLoad({ ...common, names });
  t.equal(bad.errors, 2, 'a 404 and a reply that closes are errors');
  t.equal(bad.completed, 18, 'and the rest goes on');
  t.ok(bad.reconnects >= 1, 'a new connection after Connection: close');
  t.match(bad.notes.join(' '), /404/);
});

t.test('the load generator speaks IOE (head split across reads) and raw-node', async (t) => {
  const server = await tinyIoe(3000);
  t.teardown(server.close);
  const names = tinyNames(12);
  names[5] = 'f/missing.jpg';
  const base = { port: server.port, host: '127.0.0.1', clients: 3, perClient: 4, workers: 1 };
  const ioe = await runLoad({ ...base, kind: 'ioe', names, size: 3000, timeoutMs: 10_000 });
  t.equal(ioe.completed, 11);
  t.equal(ioe.errors, 1, 'ERR is an error');
  t.match(ioe.notes.join(' '), /ERR NOT_FOUND/);
  const wrongSize = await runLoad({
    ...base,
    kind: 'ioe',
    names: tinyNames(12),
    size: 2999,
    timeoutMs: 10_000,
  });
  t.equal(wrongSize.errors, 12, 'a reply of another size is an error');
  const raw = await runLoad({
    ...base,
    kind: 'raw',
    names: tinyNames(12),
    size: 3000,
    durationMs: 2000, // from the worker's start: a loaded machine may take a while to connect
    timeoutMs: 10_000,
  });
  t.ok(raw.completed > 12, `raw-node's named mode: ${raw.completed} replies`);
  t.equal(raw.errors, 0);
});

const WRK = findExecutable('wrk');

t.test(
  'wrk against a tiny HTTP server',
  { skip: WRK ? false : 'wrk is not installed' },
  async (t) => {
    const wrk = WRK!;
    const server = await tinyHttp(1000);
    t.teardown(server.close);
    const dir = await mkdtemp(join(tmpdir(), 'ioe-wrk-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const result = await runWrk({
      wrk,
      port: server.port,
      host: '127.0.0.1',
      names: tinyNames(10),
      prefix: '/',
      connections: 4,
      threads: 2,
      seconds: 1,
      scriptPath: join(dir, 'rotate.lua'),
    });
    t.ok(result.requests > 10, `wrk made ${result.requests} requests`);
    t.equal(result.errors, 0);
    t.match(result.command, /-t2 -c4 -d1s .*-s .*rotate\.lua http:\/\/127\.0\.0\.1:\d+\//);
  },
);

t.test('smoke: `bench --quick --only http-small` against the IOE HTTP door', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-bench-smoke-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const args = ['--quick', '--only', 'http-small', '--rounds', '1', '--no-nginx', '--no-wrk'];
  args.push('--node', process.execPath);
  const child = spawn(process.execPath, [BENCH_JS, ...args, '--dir', dir, '--out', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (out += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (err += text));
  const code = await new Promise((resolve) => child.once('close', resolve));
  t.equal(code, 0, err.slice(-2000));
  t.match(out, /^http-small\s+ops\/s\s+ioe\s+\d+/m, 'a measured ops/s row for the HTTP door');
  t.match(out, /^\s+errors\s+ioe\s+0\s+0–0\s+1$/m, 'no errors');
  t.match(out, /peak RSS MiB \(VmHWM\)\s+ioe\s+\d/);
  t.match(out, /wrk: skipped \(--no-wrk\)/);
  t.ok(
    out.includes(
      `servers' node (ioe, raw-node): ${process.version} (${process.execPath}) from --node`,
    ),
    'the servers’ Node in the header',
  );
});

// ---------------------------------------------------------------------------------------------
// The peers' own servers on small files, CPU time from /proc, and the command line.

t.test('CPU time from /proc/PID/stat: utime + stime, a command name with spaces', async (t) => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)); // field 3 is fields[0]
  fields[0] = 'S';
  fields[11] = '250'; // utime, field 14
  fields[12] = '40'; // stime, field 15
  t.equal(parseStatTicks(`1234 (a (b) c) ${fields.join(' ')}\n`), 290);
  t.ok(Number.isNaN(parseStatTicks('garbage')));
  const own = cpuSeconds(process.pid);
  t.ok(own > 0 && own < 3600, `this process has used ${own} s of CPU`);
  t.ok(Number.isNaN(cpuSeconds(2 ** 22 + 12345)), 'a missing process is NaN');
});

t.test('the scripts the bench starts resolve from the package root', async (t) => {
  const root = packageRoot();
  t.equal(PYTHON_REFERENCE, join(root, 'scripts', 'bench', 'python-reference.py'));
  t.equal(SERVER_JS, join(root, 'dist', 'scripts', 'server.js'));
  t.equal(RAW_NODE_JS, join(root, 'dist', 'scripts', 'bench', 'raw-node-server.js'));
  t.equal(packageRoot(join(root, 'dist', 'scripts', 'bench', 'proc.js')), root, 'from dist/ too');
});

t.test(
  'the bench starts the server with the flags and environment of npm start and ioe-server',
  async (t) => {
    const root = packageRoot();
    const vars = Object.entries(SERVER_ENV).map(([name, value]) => `${name}=${value}`);
    const flags = [...vars, 'node', ...SERVER_NODE_FLAGS].join(' ');
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    t.equal(pkg.scripts.start, `${flags} dist/scripts/server.js`, 'npm start');
    const source = await readFile(join(root, 'scripts', 'server.ts'), 'utf8');
    t.equal(source.split('\n')[0], `#!/usr/bin/env -S ${flags}`, "ioe-server's #! line");
    const built = await readFile(SERVER_JS, 'utf8');
    t.equal(built.split('\n')[0], source.split('\n')[0], 'kept by the build');
  },
);

/** A root with `count` small .jpg files of `size` bytes under small/; returns the dir. */
async function smallRoot(t: Test, count: number, size: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ioe-bench-peer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'small'));
  for (let i = 0; i < count; i++)
    await writeFile(join(dir, 'small', `${i}.jpg`), Buffer.alloc(size, i));
  return dir;
}

const smallNames = (n: number) => Array.from({ length: n }, (_, i) => `small/${i}.jpg`);

/** `clients` clients READ `perClient` files of `size` bytes each, once, from a small root. */
function loadSmall(
  port: number,
  clients: number,
  perClient: number,
  size: number,
  names = smallNames(clients * perClient),
) {
  const options = { port, host: '127.0.0.1', clients, perClient, workers: 1 };
  return runLoad({ ...options, kind: 'ioe', names, size, timeoutMs: 10_000 });
}

async function stopping(t: Test, server: Running): Promise<Running> {
  t.teardown(() => server.stop());
  return server;
}

t.test("raw-node's small mode: `OK <size>` and the file, as IOE answers READ", async (t) => {
  const root = await smallRoot(t, 6, 5000);
  const server = await stopping(
    t,
    await startRawNode(
      process.execPath,
      ['--mode', 'small', '--root', root],
      join(root, 'raw.log'),
    ),
  );
  const load = await loadSmall(server.port, 3, 2, 5000);
  t.equal(load.completed, 6);
  t.equal(load.errors, 0);
  const names = smallNames(6);
  names[4] = 'small/missing.jpg';
  const missing = await loadSmall(server.port, 3, 2, 5000, names);
  t.equal(missing.errors, 1, 'a missing file is ERR');
  const wire = await Wire.connect(server.port);
  t.teardown(() => wire.destroy());
  await wire.write('small/3.jpg\nREAD,small/1.jpg\n');
  t.equal(await wire.line(5000), 'OK 5000', 'a bare name is a READ too');
  await wire.skip(5000, 5000);
  t.equal(await wire.line(5000), 'OK 5000');
});

t.test('raw-node-x2: two processes share the port, and stopping it stops them all', async (t) => {
  const root = await smallRoot(t, 8, 4000);
  const server = await stopping(
    t,
    await startRawNode(
      process.execPath,
      ['--mode', 'small', '--root', root, '--processes', '2'],
      join(root, 'raw-x2.log'),
    ),
  );
  const children = (await readFile(`/proc/${server.pid}/task/${server.pid}/children`, 'utf8'))
    .trim()
    .split(/\s+/)
    .map(Number);
  t.equal(children.length, 2, 'a primary and two workers');
  const load = await loadSmall(server.port, 4, 2, 4000);
  t.equal(load.completed, 8);
  t.equal(load.errors, 0);
  await server.stop();
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 100 && children.some(alive); i++) await sleep(50);
  t.same(children.filter(alive), [], 'no worker is left behind');
});

const PYTHON = findPython();

t.test(
  'the Python reference on small files: READ, WRITE with its SHA-256, EXISTS, the load generator',
  { skip: PYTHON ? false : 'python3 is not installed' },
  async (t) => {
    const root = await smallRoot(t, 8, 3000);
    t.match(pythonVersion(PYTHON!), /^3\.\d+/);
    const server = await stopping(t, await startPython(PYTHON!, root, join(root, 'python.log')));
    t.ok(server.port > 0 && server.pid > 0);
    const wire = await Wire.connect(server.port);
    t.teardown(() => wire.destroy());
    t.equal(await ioeRead(wire, 'small/2.jpg', 5000), 3000);
    // More than its 1 MiB buffer, not a whole number of them.
    const payload = new Payload(randomBytes(1024 * 1024), 2 * 1024 * 1024 + 7);
    await ioeWrite(wire, 'up/new.mp4', payload, 10_000); // throws unless `OK <size> <sha256>`
    const stored = await readFile(join(root, 'up', 'new.mp4'));
    t.equal(createHash('sha256').update(stored).digest('hex'), payload.sha256(), 'stored whole');
    await wire.write(`WRITE,up/new.mp4,3\nabc`);
    t.match(await wire.line(5000), /^ERR EXISTS /, 'no clobbering');
    await wire.write('READ,small/none.jpg\n');
    t.match(await wire.line(5000), /^ERR NOT_FOUND /);
    t.equal(await ioeRead(wire, 'small/0.jpg', 5000), 3000, 'the connection is still in step');
    const load = await runLoad({
      port: server.port,
      host: '127.0.0.1',
      kind: 'ioe',
      names: smallNames(8),
      clients: 4,
      perClient: 2,
      size: 3000,
      workers: 1,
      timeoutMs: 10_000,
    });
    t.equal(load.completed, 8, 'the load generator speaks to it as to IOE');
    t.equal(load.errors, 0);
    t.ok(cpuSeconds(server.pid) > 0, 'its CPU time');
    t.ok(memoryOf(server.pid).hwmMib > 1, 'its memory');
  },
);

t.test('--node: parsed as given, the bench’s own Node by default, checked', async (t) => {
  const ids = ['read', 'write'];
  t.equal(parseBenchOptions(['--node', '/opt/node24/bin/node'], ids).node, '/opt/node24/bin/node');
  const defaults = parseBenchOptions([], ids);
  t.equal(defaults.node, undefined);
  t.equal(defaults.python, true);
  t.equal(parseBenchOptions(['--no-python'], ids).python, false);
  const quiet = benchProgram(ids)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  t.throws(() => parseBenchOptions(['--node', ' '], ids, quiet), /empty path/);
  t.same(nodeBinary(process.execPath), { path: process.execPath, version: process.version });
  t.throws(() => nodeBinary('/nonexistent/node'), /--node \/nonexistent\/node: .*ENOENT/);
  t.throws(() => nodeBinary(findExecutable('sh') ?? '/bin/sh'), /not a Node binary/);
  // The bench refuses a wrong --node before it makes any fixture.
  const dir = await mkdtemp(join(tmpdir(), 'ioe-bench-node-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [BENCH_JS, '--node', '/nonexistent/node', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (err += text));
  t.equal(await new Promise((resolve) => child.once('close', resolve)), 2);
  t.match(err, /--node \/nonexistent\/node/);
});
