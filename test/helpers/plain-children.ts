/**
 * Loaded into every test process before its file (tap's `node-arg` in package.json): the
 * children a test starts run without tap's process-info hook.
 *
 * tap puts that hook (`--import=…/@tapjs/processinfo/…`) into the NODE_OPTIONS of every child
 * process, again on each spawn, so that it can map coverage and `tap --changed` to the processes
 * behind a test. This project turns coverage off, and the hook triples a child Node's start-up
 * (330 ms against 110 on a two-core machine); the suite starts hundreds of them: CLI runs,
 * servers, benchmark workers. This listener runs after tap's and takes the hook back out,
 * leaving anything else in NODE_OPTIONS as it was. A child started with execArgv (`fork()`,
 * a Worker) inherits the test's own `--import`s instead; no test starts one that way.
 */
import processOnSpawn from 'process-on-spawn';

/** An option tap's process-info hook adds: its --import, or the --loader of older Nodes. */
const TAP_HOOK = /^"?--(import|loader|experimental-loader)=[^ ]*@tapjs\/processinfo\/[^ ]*$/;

processOnSpawn.addListener((options) => {
  const nodeOptions = options.env.NODE_OPTIONS;
  if (nodeOptions === undefined) return;
  // Quoted by tap one option a word; a URL has no spaces (they are %20).
  const kept = nodeOptions
    .split(' ')
    .filter((word) => !TAP_HOOK.test(word))
    .join(' ');
  const env = { ...options.env };
  if (kept.trim() === '') delete env.NODE_OPTIONS;
  else env.NODE_OPTIONS = kept;
  options.env = env;
});
