/**
 * Pure helpers of the benchmark: order statistics, ratios, summaries of interleaved rounds,
 * target checks and the plain-text table. No I/O and no clock here, so the tests can pin them.
 */

/** The values sorted ascending, as a new array (NaN and infinities dropped). */
export function sorted(values: readonly number[]): number[] {
  return values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
}

/**
 * The p-th percentile (0 ≤ p ≤ 100) with linear interpolation between the closest ranks
 * (numpy's default): percentile([1, 2, 3, 4], 50) is 2.5. NaN for no values.
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be 0-100, got ${p}`);
  const xs = sorted(values);
  if (xs.length === 0) return NaN;
  const rank = (p / 100) * (xs.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return xs[low] + (xs[high] - xs[low]) * (rank - low);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export function mean(values: readonly number[]): number {
  const xs = sorted(values);
  return xs.length === 0 ? NaN : xs.reduce((sum, x) => sum + x, 0) / xs.length;
}

/** a / b, or NaN when either is not a finite number or b is 0. */
export function ratio(a: number, b: number): number {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}

/** Round-by-round ratios a[i] / b[i] of two interleaved series (as long as the shorter). */
export function pairedRatios(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.min(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(ratio(a[i], b[i]));
  return out;
}

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  mean: number;
}

export function summarize(values: readonly number[]): Summary {
  const xs = sorted(values);
  return {
    n: xs.length,
    median: median(xs),
    min: xs.length ? xs[0] : NaN,
    max: xs.length ? xs[xs.length - 1] : NaN,
    mean: mean(xs),
  };
}

/** Throughput in MB/s (10^6 bytes per second). */
export function mbPerSecond(bytes: number, ms: number): number {
  return ms > 0 ? bytes / 1e6 / (ms / 1000) : NaN;
}

/** kB as /proc reports VmRSS and VmHWM (units of 1024 bytes) to MiB (2^20 bytes), the targets' unit. */
export function kibToMib(kib: number): number {
  return kib / 1024;
}

/** One `Field:  N kB` line of /proc/PID/status (VmRSS, VmHWM, …); the value in kB, or NaN. */
export function parseStatusKb(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
  return match ? Number(match[1]) : NaN;
}

/** A number with about four significant digits, thousands kept whole: 1234.5 → "1235". */
export function formatNumber(value: number): string {
  if (Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '-∞';
  const abs = Math.abs(value);
  if (abs >= 1000 || Number.isInteger(value)) return Math.round(value).toString();
  if (abs >= 100) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

export function formatRange(min: number, max: number): string {
  return `${formatNumber(min)}–${formatNumber(max)}`;
}

export function formatRatio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : '—';
}

export type Align = 'left' | 'right';

/**
 * A plain-text table: a header row, a rule, then the rows; columns padded to their widest
 * cell, separated by two spaces. Right-aligned columns are named in `align` (default left).
 * Trailing spaces are trimmed from every line.
 */
export function formatTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly Align[] = [],
): string {
  const width = header.map((cell, i) =>
    Math.max([...cell].length, ...rows.map((row) => [...(row[i] ?? '')].length)),
  );
  const line = (cells: readonly string[]): string =>
    header
      .map((_, i) => {
        const cell = cells[i] ?? '';
        const pad = ' '.repeat(width[i] - [...cell].length);
        return align[i] === 'right' ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  const rule = width.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/** One measured value of one round. */
export interface Sample {
  scenario: string;
  peer: string;
  /** 0 is the warm-up; measured rounds are 1..N. */
  round: number;
  warmup: boolean;
  metrics: Record<string, number>;
  /** What went wrong in this round (each error counted once in metrics.errors if the scenario has it). */
  notes?: string[];
}

export interface MetricDef {
  key: string;
  label: string;
  /** Which direction is better, for reading the ratio. */
  better: 'higher' | 'lower';
  /** Draw it in the chart. */
  chart?: boolean;
}

export interface ScenarioInfo {
  id: string;
  title: string;
  /** The project's peer name (the numerator of every ratio). */
  subject: string;
  peers: string[];
  metrics: MetricDef[];
}

export interface SummaryRow {
  scenario: string;
  metric: string;
  label: string;
  peer: string;
  /** This row is the project's own (no ratio). */
  isSubject: boolean;
  summary: Summary;
  /** subject median / this peer's median; NaN on the subject's own row. */
  ratio: number;
  /** Range of the round-by-round ratios subject[i] / peer[i]. */
  pairedMin: number;
  pairedMax: number;
}

/** The measured (not warm-up) values of one metric of one peer, in round order. */
export function series(
  samples: readonly Sample[],
  scenario: string,
  peer: string,
  metric: string,
): number[] {
  return samples
    .filter((s) => s.scenario === scenario && s.peer === peer && !s.warmup)
    .sort((a, b) => a.round - b.round)
    .map((s) => s.metrics[metric])
    .filter((v): v is number => typeof v === 'number');
}

export function summaryRows(info: ScenarioInfo, samples: readonly Sample[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  for (const metric of info.metrics) {
    const subject = series(samples, info.id, info.subject, metric.key);
    for (const peer of info.peers) {
      const values = series(samples, info.id, peer, metric.key);
      if (values.length === 0) continue;
      const summary = summarize(values);
      const own = peer === info.subject;
      const paired = own ? [] : sorted(pairedRatios(subject, values));
      rows.push({
        scenario: info.id,
        metric: metric.key,
        label: metric.label,
        peer,
        isSubject: own,
        summary,
        ratio: own ? NaN : ratio(median(subject), summary.median),
        pairedMin: paired.length ? paired[0] : NaN,
        pairedMax: paired.length ? paired[paired.length - 1] : NaN,
      });
    }
  }
  return rows;
}

/** The results table: one line per scenario × metric × peer. */
export function formatSummaryTable(rows: readonly SummaryRow[], subject = 'ioe'): string {
  let lastScenario = '';
  let lastMetric = '';
  const cells = rows.map((row) => {
    const newScenario = row.scenario !== lastScenario;
    const newMetric = newScenario || row.metric !== lastMetric;
    lastScenario = row.scenario;
    lastMetric = row.metric;
    const own = row.isSubject;
    return [
      newScenario ? row.scenario : '',
      newMetric ? row.label : '',
      row.peer,
      formatNumber(row.summary.median),
      formatRange(row.summary.min, row.summary.max),
      String(row.summary.n),
      own ? '' : formatRatio(row.ratio),
      own || Number.isNaN(row.pairedMin) ? '' : formatRange(row.pairedMin, row.pairedMax) + '×',
    ];
  });
  return formatTable(
    [
      'scenario',
      'metric',
      'peer',
      'median',
      'min–max',
      'n',
      `${subject} ÷ peer`,
      'per-round ratio',
    ],
    cells,
    ['left', 'left', 'left', 'right', 'right', 'right', 'right', 'right'],
  );
}

export interface TargetCheck {
  label: string;
  /** The measured value compared (a ratio or an absolute number). */
  value: number;
  /** How the value is shown. */
  shown: string;
  limit: string;
  pass: boolean;
}

/** value ≥ limit (e.g. a throughput ratio). NaN (not measured) never passes. */
export function atLeast(label: string, value: number, limit: number, unit = '×'): TargetCheck {
  const show = (x: number) => (unit === '×' ? formatRatio(x) : `${formatNumber(x)} ${unit}`);
  return {
    label,
    value,
    shown: show(value),
    limit: `≥ ${unit === '×' ? formatRatio(limit) : `${formatNumber(limit)} ${unit}`}`,
    pass: Number.isFinite(value) && value >= limit,
  };
}

/** value < limit (e.g. a time or a memory peak). NaN (not measured) never passes. */
export function below(label: string, value: number, limit: number, unit: string): TargetCheck {
  return {
    label,
    value,
    shown: `${formatNumber(value)} ${unit}`,
    limit: `< ${formatNumber(limit)} ${unit}`,
    pass: Number.isFinite(value) && value < limit,
  };
}

export function formatTargets(checks: readonly TargetCheck[]): string {
  return formatTable(
    ['target', 'measured', 'limit', 'result'],
    checks.map((c) => [c.label, c.shown, c.limit, c.pass ? 'ok' : 'MISS']),
    ['left', 'right', 'right', 'left'],
  );
}

/** A compact timestamp for file names: 2026-11-24T09-30-00Z. */
export function fileTimestamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/:/g, '-');
}

/** Parses "a,b" (from --only) into scenario ids, rejecting unknown ones. */
export function parseOnly(value: string | undefined, known: readonly string[]): string[] {
  if (value === undefined || value.trim() === '') return [...known];
  const wanted = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = wanted.filter((id) => !known.includes(id));
  if (unknown.length) {
    throw new Error(`unknown scenario(s): ${unknown.join(', ')}; known: ${known.join(', ')}`);
  }
  return known.filter((id) => wanted.includes(id));
}
