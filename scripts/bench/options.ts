/**
 * The benchmark's command line (scripts/bench.ts), built by a function so that the tests can
 * parse arguments without running a benchmark.
 */
import { Command, InvalidArgumentError } from 'commander';

export interface BenchOptions {
  quick: boolean;
  rounds?: number;
  out: string;
  dir: string;
  only?: string;
  /** The Node binary that runs the IOE server and raw-node; the bench's own when not given. */
  node?: string;
  nginx: boolean;
  wrk: boolean;
  python: boolean;
  loadSeconds?: number;
  loadWorkers: number;
}

/** Commander's parser of a positive whole number (also raw-node-server's --processes). */
export function positive(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value)) throw new InvalidArgumentError('not a positive whole number');
  return Number(value);
}

function nonEmpty(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('an empty path');
  return value;
}

/** The `bench` command; `scenarioIds` are listed in the help of --only. */
export function benchProgram(scenarioIds: readonly string[]): Command {
  return new Command('bench')
    .description(
      'Benchmark the IOE server against raw-node, the Python reference and nginx on 127.0.0.1.',
    )
    .option('--quick', 'smoke run: small files, 3 rounds, fewer clients (under 2.5 minutes)', false)
    .option(
      '--rounds <n>',
      'measured rounds after the warm-up (default 5; 3 with --quick)',
      positive,
    )
    .option('--out <dir>', 'where the JSON samples and the SVG chart go', 'bench-results')
    .option('--dir <dir>', 'bench dir for fixtures, logs and scratch files', '/tmp/ioe-bench')
    .option('--only <ids>', `scenarios to run, comma-separated: ${scenarioIds.join(',')}`)
    .option(
      '--node <path>',
      'the Node binary that runs the IOE server and raw-node (default: the one running the ' +
        'bench; the load generator always runs on that one)',
      nonEmpty,
    )
    .option('--no-nginx', 'skip the nginx baseline even if nginx is installed')
    .option('--no-wrk', 'skip the wrk cross-check of the many-small load generator')
    .option('--no-python', 'skip the Python reference even if python3 is installed')
    .option(
      '--load-seconds <n>',
      'seconds each many-small measurement runs (default 5; 1 with --quick)',
      positive,
    )
    .option('--load-workers <n>', 'processes of the many-small load generator', positive, 2)
    .showHelpAfterError();
}

/** Parses `args` (the user's arguments, without node and the script). */
export function parseBenchOptions(
  args: readonly string[],
  scenarioIds: readonly string[],
  program = benchProgram(scenarioIds),
): BenchOptions {
  program.parse([...args], { from: 'user' });
  return program.opts<BenchOptions>();
}
