/**
 * The benchmark's S3 scenarios without a store: which scenarios `s3` names, how the store is
 * read from the environment, and that the bench refuses `--only s3` without one (and says how
 * to start one) while a default run would leave them out. Measuring needs a cluster: see
 * scripts/bench/s3-scenarios.ts.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  S3_SCENARIOS,
  expandS3Alias,
  s3StoreFromEnv,
  withoutStore,
} from '../../scripts/bench/s3-scenarios.js';
import { built } from '../helpers/paths.js';

const BENCH_JS = built('scripts/bench.js');
const S3_IDS = S3_SCENARIOS.map((s) => s.id);

t.test('the alias s3 names every S3 scenario, in place', async (t) => {
  t.same(S3_IDS, ['s3-read', 's3-write', 's3-list', 's3-list-100k', 's3-replicas']);
  t.equal(expandS3Alias('s3'), S3_IDS.join(','));
  t.equal(expandS3Alias('read, s3 ,list'), ['read', ...S3_IDS, 'list'].join(','));
  t.equal(expandS3Alias('s3-list'), 's3-list');
  t.equal(expandS3Alias(undefined), undefined);
});

t.test('the store comes from IOE_S3_ENDPOINTS and IOE_S3_BUCKET', async (t) => {
  t.equal(s3StoreFromEnv({}), undefined);
  t.equal(s3StoreFromEnv({ IOE_S3_ENDPOINTS: ' , ' }), undefined);
  t.same(s3StoreFromEnv({ IOE_S3_ENDPOINTS: 'http://a:1, http://b:2' }), {
    endpoints: ['http://a:1', 'http://b:2'],
    bucket: 'ioe',
  });
  t.same(s3StoreFromEnv({ IOE_S3_ENDPOINTS: 'http://a:1', IOE_S3_BUCKET: 'media' }), {
    endpoints: ['http://a:1'],
    bucket: 'media',
  });
});

t.test('without a store: a default run skips the S3 scenarios, --only refuses', async (t) => {
  const skipped = withoutStore(['read', ...S3_IDS], false);
  t.same(skipped.ids, ['read']);
  t.match(skipped.skipped, /^s3: skipped, no S3 store configured \(IOE_S3_ENDPOINTS unset\)/);
  t.equal(skipped.error, undefined);
  const refused = withoutStore(['s3-list'], true);
  t.match(refused.error, /s3-list: .*scripts\/ceph-rgw\.sh up.*\. \$CEPH_BASE\/s3\.env/);
  t.same(withoutStore(['read'], true), { ids: ['read'] });
});

t.test(
  '`bench --only s3` without IOE_S3_ENDPOINTS exits 2 and says how to start a store',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ioe-bench-s3-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const env = { ...process.env };
    delete env.IOE_S3_ENDPOINTS;
    const child = spawn(process.execPath, [BENCH_JS, '--only', 's3', '--dir', dir, '--out', dir], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (err += text));
    child.stdout.resume();
    t.equal(await new Promise((resolve) => child.once('close', resolve)), 2);
    t.match(err, /IOE_S3_ENDPOINTS is not set/);
    t.match(err, /`scripts\/ceph-rgw\.sh up`, then `set -a; \. \$CEPH_BASE\/s3\.env; set \+a`/);
    t.same(await readdir(dir), [], 'nothing made or written');
  },
);
