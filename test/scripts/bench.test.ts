/**
 * The benchmark's pure helpers (scripts/bench/stats.ts): order statistics, ratios, summaries of
 * interleaved rounds, target checks and the table. No servers, no timing.
 */
import t from 'tap';
import {
  atLeast,
  below,
  fileTimestamp,
  formatNumber,
  formatRatio,
  formatSummaryTable,
  formatTable,
  formatTargets,
  kibToMb,
  mbPerSecond,
  mean,
  median,
  pairedRatios,
  parseOnly,
  parseVmRss,
  percentile,
  ratio,
  series,
  summarize,
  summaryRows,
  type Sample,
  type ScenarioInfo,
} from '../../scripts/bench/stats.js';

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
  t.equal(kibToMb(1000), 1.024);
  t.equal(parseVmRss('Name:\tnode\nVmPeak:\t  999 kB\nVmRSS:\t   51234 kB\nThreads: 7\n'), 51234);
  t.ok(Number.isNaN(parseVmRss('Name:\tzombie\n')));
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
