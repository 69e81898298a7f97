#!/usr/bin/env node
/**
 * The IOE benchmark (issue 4): the server against its baselines (raw-node, the Python
 * reference, nginx), interleaved round by round on the loopback. Prints the machine, a table of
 * medians, min–max and ratios on stdout, the targets it checks, and writes every sample as JSON
 * and a chart as SVG under --out.
 *
 *   npm run bench                   # full run
 *   npm run bench -- --quick        # smoke run, under 2.5 minutes
 *   npm run bench -- --only read,write --rounds 7
 *   npm run bench -- --only small,http-small --load-seconds 10
 *   npm run bench -- --node /path/to/node24   # IOE and raw-node on another Node
 *
 * Progress goes to stderr. Fixtures live under --dir (default /tmp/ioe-bench), never in the repo.
 */
import { arch, cpus, loadavg, platform, release, totalmem } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { renderChart } from './bench/chart.js';
import {
  GiB,
  MiB,
  ensureFile,
  ensureFiles,
  listName,
  smallName,
  warmPageCache,
} from './bench/fixtures.js';
import { benchProgram, type BenchOptions } from './bench/options.js';
import {
  PYTHON_REFERENCE,
  findExecutable,
  findPython,
  nginxVersion,
  nodeBinary,
  openFilesLimit,
  pythonVersion,
  wrkVersion,
} from './bench/proc.js';
import {
  SCENARIOS as LOCAL_SCENARIOS,
  fixturesNeeded,
  IOE_TWO,
  paths,
  type BenchConfig,
  type Context,
} from './bench/scenarios.js';
import { reusePortSupported } from '../pipelines/listeners.js';
import {
  S3_ALIAS,
  S3_GET_PIPE,
  S3_LIST_COUNT,
  S3_SCENARIOS,
  S3_SDK_UPLOAD,
  S3_SIZES,
  expandS3Alias,
  s3StoreFromEnv,
  withoutStore,
} from './bench/s3-scenarios.js';
import {
  atLeast,
  below,
  fileTimestamp,
  formatSummaryTable,
  formatTargets,
  median,
  parseOnly,
  series,
  summaryRows,
  type Sample,
  type TargetCheck,
} from './bench/stats.js';

/** The S3 scenarios run only where a store is configured (see withoutStore). */
const SCENARIOS = [...LOCAL_SCENARIOS, ...S3_SCENARIOS];
const program = benchProgram([...SCENARIOS.map((s) => s.id), S3_ALIAS]);
program.parse();
const opts = program.opts<BenchOptions>();

/** The Node binary of the servers (--node), checked before anything runs. */
function serverNode(): { path: string; version: string } {
  try {
    return nodeBinary(opts.node ?? process.execPath);
  } catch (error) {
    return program.error((error as Error).message, { exitCode: 2 });
  }
}

function configFor(node: { path: string; version: string }): BenchConfig {
  const nginx = opts.nginx ? findExecutable('nginx') : undefined;
  const wrk = opts.wrk ? findExecutable('wrk') : undefined;
  const python = opts.python ? findPython() : undefined;
  const common = {
    dir: resolve(opts.dir),
    node: node.path,
    threads: reusePortSupported(node.version),
    python,
    nginx,
    wrk,
    wrkThreads: 2,
    loadWorkers: opts.loadWorkers,
    smallBytes: 64 * 1024,
  };
  const slowThrottle = { every: 64 * 1024, pauseMs: 10 };
  if (opts.quick) {
    return {
      ...common,
      quick: true,
      rounds: opts.rounds ?? 3,
      bigBytes: 128 * MiB,
      smallClients: 50,
      smallReads: 10,
      loadSeconds: opts.loadSeconds ?? 1,
      listCount: 10_000,
      listRepeats: 3,
      slowClients: 20,
      slowBytes: 32 * MiB,
      slowSeconds: 2,
      slowThrottle,
      connHeld: 200,
      connActive: 20,
      connBytes: 16 * MiB,
      rssSafetyMib: 4000,
    };
  }
  return {
    ...common,
    quick: false,
    rounds: opts.rounds ?? 5,
    bigBytes: GiB,
    smallClients: 200,
    smallReads: 20,
    loadSeconds: opts.loadSeconds ?? 5,
    listCount: 100_000,
    listRepeats: 5,
    slowClients: 100,
    slowBytes: 256 * MiB,
    slowSeconds: 20,
    slowThrottle,
    connHeld: 1000,
    connActive: 100,
    connBytes: 64 * MiB,
    rssSafetyMib: 8000,
  };
}

const log = (message: string): void => {
  process.stderr.write(message + '\n');
};

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

function commandLine(): { command: string; npm?: string } {
  const node = [process.execPath, ...process.argv.slice(1)].map(shellQuote).join(' ');
  const viaNpm = process.env.npm_lifecycle_event === 'bench';
  const args = process.argv.slice(2).map(shellQuote).join(' ');
  return { command: node, npm: viaNpm ? `npm run bench${args ? ` -- ${args}` : ''}` : undefined };
}

function machine() {
  const list = cpus();
  return {
    node: process.version,
    platform: `${platform()} ${release()} ${arch()}`,
    cpus: list.length,
    cpuModel: list[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / GiB) * 10) / 10,
  };
}

async function prepare(ctx: Context, ids: string[]): Promise<void> {
  const { config, paths: p } = ctx;
  const need = fixturesNeeded(ids);
  await mkdir(p.logs, { recursive: true });
  await mkdir(p.rawUploads, { recursive: true });
  await mkdir(p.pythonUploads, { recursive: true });
  const made = (what: string, fresh: boolean) => log(`  ${what}: ${fresh ? 'made' : 'reused'}`);
  if (need.big) {
    made(`${p.bigName} (${config.bigBytes / MiB} MiB)`, await ensureFile(p.big, config.bigBytes));
    await warmPageCache(p.big);
  }
  if (need.slow) {
    const path = join(p.media, p.slowName);
    made(`${p.slowName} (${config.slowBytes / MiB} MiB)`, await ensureFile(path, config.slowBytes));
    await warmPageCache(path);
  }
  if (need.conn) {
    const path = join(p.media, p.connName);
    made(`${p.connName} (${config.connBytes / MiB} MiB)`, await ensureFile(path, config.connBytes));
    await warmPageCache(path);
  }
  if (need.small) {
    const count = config.smallClients * config.smallReads;
    const fresh = await ensureFiles(p.smallDir, count, config.smallBytes, smallName);
    made(`small/ (${count} × ${config.smallBytes / 1024} KiB)`, fresh > 0);
  }
  if (need.list) {
    let last = 0;
    const fresh = await ensureFiles(p.listRoot, config.listCount, 200, listName, (done) => {
      if (done - last >= 20_000) {
        last = done;
        log(`    list fixture: ${done}/${config.listCount}`);
      }
    });
    made(`${p.listRoot} (${config.listCount} .jpg files)`, fresh > 0);
  }
}

function targets(config: BenchConfig, samples: Sample[]): TargetCheck[] {
  const value = (scenario: string, peer: string, metric: string) =>
    median(series(samples, scenario, peer, metric));
  const worst = (scenario: string, peer: string, metric: string) => {
    const values = series(samples, scenario, peer, metric);
    return values.length ? Math.max(...values) : NaN;
  };
  const total = (scenario: string, peer: string, metric: string) => {
    const measured = samples.filter((s) => s.scenario === scenario && s.peer === peer && !s.warmup);
    return measured.length ? measured.reduce((sum, s) => sum + (s.metrics[metric] ?? 0), 0) : NaN;
  };
  const ratioOf = (scenario: string, metric: string, peer = 'raw-node', subject = 'ioe') =>
    value(scenario, subject, metric) / value(scenario, peer, metric);
  const ran = (id: string, peer = 'ioe') =>
    samples.some((s) => s.scenario === id && s.peer === peer);
  const checks: TargetCheck[] = [];
  const clients = `${config.smallClients} clients`;
  /** The instrument: the load generator against nginx, as fast as wrk on the same files. */
  const instrument = (scenario: string) => {
    if (ran(scenario, 'nginx') && ran(scenario, 'nginx/wrk')) {
      checks.push(
        atLeast(
          `${scenario}: load generator ÷ wrk, both against nginx`,
          ratioOf(scenario, 'ops_s', 'nginx/wrk', 'nginx'),
          1,
        ),
      );
    }
  };
  /** Faster than the Python reference (a thread per connection), where it ran. */
  const python = (scenario: string, metric: string, label: string) => {
    if (ran(scenario, 'python')) {
      checks.push(atLeast(`${label} vs python`, ratioOf(scenario, metric, 'python'), 1));
    }
  };
  if (ran('read')) {
    checks.push(atLeast('READ MB/s vs raw-node', ratioOf('read', 'mb_s'), 0.9));
    python('read', 'mb_s', 'READ MB/s');
  }
  if (ran('write')) {
    checks.push(atLeast('WRITE MB/s vs raw-node', ratioOf('write', 'mb_s'), 0.9));
    python('write', 'mb_s', 'WRITE MB/s');
  }
  /** Many small reads served by `subject`: against nginx, p99 and errors. */
  const manySmall = (subject: string, label: string) => {
    if (ran('small', 'nginx')) {
      const ratio = ratioOf('small', 'ops_s', 'nginx', subject);
      checks.push(atLeast(`${label} ops/s vs nginx`, ratio, 0.5));
    }
    checks.push(below(`${label} p99 (median round)`, value('small', subject, 'p99_ms'), 50, 'ms'));
    checks.push(below(`${label} errors (all rounds)`, total('small', subject, 'errors'), 1, ''));
  };
  if (ran('small')) {
    instrument('small');
    checks.push(atLeast('many-small ops/s vs raw-node', ratioOf('small', 'ops_s'), 0.8));
    manySmall('ioe', 'many-small');
    python('small', 'ops_s', 'many-small ops/s');
    if (ran('small', IOE_TWO)) manySmall(IOE_TWO, `many-small ${IOE_TWO}`);
  }
  if (ran('list')) {
    const n = config.listCount;
    checks.push(
      below(`LIST ${n} first call (median)`, value('list', 'ioe', 'first_ms'), 2000, 'ms'),
    );
    checks.push(
      below(`LIST ${n} repeated (median)`, value('list', 'ioe', 'repeated_ms'), 500, 'ms'),
    );
  }
  if (ran('slow')) {
    const label = `peak RSS (VmHWM), ${config.slowClients} slow readers (worst round)`;
    checks.push(below(label, worst('slow', 'ioe', 'peak_rss_mib'), 120, 'MiB'));
  }
  if (ran('conns')) {
    const label = `peak RSS (VmHWM), ${config.connHeld} connections (worst round)`;
    checks.push(below(label, worst('conns', 'ioe', 'peak_rss_mib'), 300, 'MiB'));
    checks.push(
      below(`errors, ${config.connHeld} connections`, total('conns', 'ioe', 'errors'), 1, ''),
    );
  }
  if (ran('http-read')) {
    checks.push(
      atLeast('HTTP GET big file MB/s vs nginx', ratioOf('http-read', 'mb_s', 'nginx'), 0.8),
    );
  }
  if (ran('http-small')) {
    instrument('http-small');
    checks.push(
      atLeast(`HTTP ${clients} ops/s vs nginx`, ratioOf('http-small', 'ops_s', 'nginx'), 0.5),
    );
    checks.push(
      below(`HTTP ${clients} p99 (median round)`, value('http-small', 'ioe', 'p99_ms'), 50, 'ms'),
    );
    checks.push(
      below(`HTTP ${clients} errors (all rounds)`, total('http-small', 'ioe', 'errors'), 1, ''),
    );
  }
  if (ran('http-slow')) {
    const label = `peak RSS (VmHWM), ${config.slowClients} slow HTTP readers (worst round)`;
    checks.push(below(label, worst('http-slow', 'ioe', 'peak_rss_mib'), 150, 'MiB'));
  }
  if (ran('s3-read')) {
    const label = 'S3 READ MB/s vs GetObject piped to a socket';
    checks.push(atLeast(label, ratioOf('s3-read', 'mb_s', S3_GET_PIPE), 0.8));
  }
  if (ran('s3-write')) {
    const label = 'S3 WRITE MB/s vs lib-storage Upload';
    checks.push(atLeast(label, ratioOf('s3-write', 'mb_s', S3_SDK_UPLOAD), 0.8));
  }
  if (ran('s3-list')) {
    const label = `S3 LIST ${S3_LIST_COUNT} first call (median)`;
    checks.push(below(label, value('s3-list', 'ioe', 'first_ms'), 2000, 'ms'));
  }
  return checks;
}

async function main(): Promise<void> {
  const started = new Date();
  const node = serverNode();
  const config = configFor(node);
  const selected = parseOnly(
    expandS3Alias(opts.only),
    SCENARIOS.map((s) => s.id),
  );
  const store = s3StoreFromEnv();
  const s3 = store ? { ids: selected } : withoutStore(selected, opts.only !== undefined);
  if (s3.error) {
    // Not a usage error: no help after it, just what to do.
    console.error(`error: ${s3.error}`);
    process.exit(2);
  }
  const ids = s3.ids;
  const ctx: Context = { config, paths: paths(config), samples: [], log };
  const cmd = commandLine();
  const info = machine();
  const limit = openFilesLimit();
  const fdNeed = 2 * config.connHeld + 200;

  const head: string[] = ['IOE media server benchmark'];
  if (cmd.npm) head.push(`command: ${cmd.npm}`);
  head.push(`${cmd.npm ? '  which runs: ' : 'command: '}${cmd.command}`);
  head.push(
    `node ${info.node}, ${info.platform}, ${info.cpus} × ${info.cpuModel}, ${info.memoryGiB} GiB RAM`,
  );
  head.push(
    `servers' node (ioe, raw-node): ${node.version} (${node.path})` +
      (opts.node ? ' from --node' : ', the bench’s own') +
      `; the bench and its load generator: ${info.node}`,
  );
  const load = loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
  head.push(
    `load average (1/5/15 min): ${load}` +
      (loadavg()[0] > info.cpus / 2
        ? ' — other processes are busy: expect noisy numbers (interleaving keeps ratios fair)'
        : ''),
  );
  if (config.nginx) head.push(`nginx: ${nginxVersion(config.nginx)} (${config.nginx})`);
  else if (!opts.nginx) head.push('nginx: skipped (--no-nginx)');
  else
    head.push('nginx: not found, its baseline is skipped; install it with: apt-get install nginx');
  if (config.python) {
    head.push(
      `python: ${pythonVersion(config.python)} (${config.python}), the thread-per-connection ` +
        `reference ${PYTHON_REFERENCE}`,
    );
  } else if (!opts.python) head.push('python: skipped (--no-python)');
  else head.push('python: python3 not found, the Python reference is skipped');
  if (config.wrk)
    head.push(`wrk: ${wrkVersion(config.wrk)} (${config.wrk}), ${config.wrkThreads} threads`);
  else if (!opts.wrk) head.push('wrk: skipped (--no-wrk)');
  else head.push('wrk: not found, the load generator is not cross-checked; apt-get install wrk');
  head.push(
    `many-small load: ${config.smallClients} keep-alive connections, one request in flight on ` +
      `each, cycling over ${config.smallClients * config.smallReads} distinct files for ` +
      `${config.loadSeconds} s; load generator: ${config.loadWorkers} processes`,
  );
  head.push(
    `ulimit -n: ${limit}` +
      (limit < fdNeed
        ? ` — TOO LOW: the connections scenario needs about ${fdNeed} (bench + server); run \`ulimit -n 65536\` first`
        : ' (enough)'),
  );
  head.push(
    `mode: ${config.quick ? 'quick' : 'full'}; ${config.rounds} measured rounds after 1 warm-up, ` +
      `peers interleaved each round; scenarios: ${ids.join(', ')}`,
  );
  if (s3.skipped) head.push(s3.skipped);
  else if (store && ids.some((id) => id.startsWith('s3-'))) {
    head.push(`s3: bucket ${store.bucket} on ${store.endpoints.join(', ')}`);
  }
  head.push(`bench dir: ${config.dir}; results: ${resolve(opts.out)}`);
  console.log(head.join('\n') + '\n');

  log('fixtures:');
  await prepare(ctx, ids);

  for (const scenario of SCENARIOS.filter((s) => ids.includes(s.id))) {
    const t = Date.now();
    log(`\n${scenario.id}: ${scenario.title}`);
    await scenario.run(ctx);
    log(`  (${((Date.now() - t) / 1000).toFixed(1)} s)`);
  }

  const ran = SCENARIOS.filter((s) => ids.includes(s.id));
  const rows = ran.flatMap((s) => summaryRows(s, ctx.samples));
  const checks = targets(config, ctx.samples);
  const sizes =
    `read/write ${config.bigBytes / MiB} MiB; small ${config.smallClients} clients × ${config.smallReads} ` +
    `distinct files of ${config.smallBytes / 1024} KiB, cycled for ${config.loadSeconds} s; ` +
    `list ${config.listCount} entries; slow ${config.slowClients} ` +
    `clients × ${config.slowBytes / MiB} MiB for at most ${config.slowSeconds} s; conns ${config.connHeld} ` +
    `held, ${config.connActive} of them downloading ${config.connBytes / MiB} MiB` +
    (ids.some((id) => id.startsWith('s3-')) ? `; ${S3_SIZES}` : '');
  console.log(`results (${sizes}):\n`);
  console.log(formatSummaryTable(rows));
  console.log('\ntargets:\n');
  console.log(formatTargets(checks));
  const withNotes = ctx.samples.filter((s) => s.notes?.length);
  if (withNotes.length) {
    console.log('\nnotes:');
    for (const s of withNotes)
      console.log(`  ${s.scenario} ${s.peer} round ${s.round}: ${s.notes!.join('; ')}`);
  }

  const out = resolve(opts.out);
  await mkdir(out, { recursive: true });
  const stamp = fileTimestamp(started);
  const jsonPath = join(out, `bench-${stamp}.json`);
  const svgPath = join(out, `bench-${stamp}.svg`);
  const finished = new Date();
  await writeFile(
    jsonPath,
    JSON.stringify(
      {
        command: cmd,
        startedAt: started.toISOString(),
        finishedAt: finished.toISOString(),
        machine: {
          ...info,
          serverNode: node,
          openFilesLimit: limit,
          nginx: config.nginx && nginxVersion(config.nginx),
          python: config.python && pythonVersion(config.python),
        },
        config,
        scenarios: ran.map(({ id, title, subject, peers, metrics }) => ({
          id,
          title,
          subject,
          peers,
          metrics,
        })),
        samples: ctx.samples,
        summary: rows,
        targets: checks,
      },
      (_key, value: unknown) =>
        typeof value === 'number' && !Number.isFinite(value) ? null : value,
      2,
    ) + '\n',
  );
  const title = `IOE benchmark ${started.toISOString()} (${config.quick ? 'quick' : 'full'}, ${config.rounds} rounds) — servers on node ${node.version}, ${info.cpus} CPUs`;
  await writeFile(svgPath, await renderChart(ran, ctx.samples, title));
  console.log(`\nsamples: ${jsonPath}\nchart:   ${svgPath}`);
  console.log(
    `load average at the end: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  console.log(`took ${((finished.getTime() - started.getTime()) / 1000).toFixed(0)} s`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exit(1);
});
