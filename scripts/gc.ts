/**
 * `ioe-server gc --storage s3://bucket[/prefix] [--s3-path-style]`: one clean-up pass of the S3
 * store (lib/s3-gc.ts), then exit 0: deletes the bytes of failed, aborted and crashed uploads
 * (data objects no record names, multipart uploads whose lease is gone), replaced data once its
 * read grace is over, and stale leases. It never touches an upload in progress on a live
 * replica, nor replaced data a READ under way may still need. Exit 1 with a one-line reason.
 */
import { Command } from 'commander';
import { runGc, s3OptionsFromEnv } from '../lib/s3-storage.js';

export async function gcMain(args: string[]): Promise<never> {
  const program = new Command('ioe-server gc')
    .description('Run one clean-up pass over an S3 store, then exit.')
    .requiredOption('--storage <url>', 'the store: s3://bucket[/prefix]')
    .option('--s3-path-style', 'path-style S3 addressing (RGW on an IP address)', false)
    .showHelpAfterError();
  program.parse(args, { from: 'user' });
  const opts = program.opts<{ storage: string; s3PathStyle: boolean }>();
  try {
    const report = await runGc(opts.storage, {
      ...s3OptionsFromEnv(),
      pathStyle: opts.s3PathStyle,
    });
    process.stdout.write(
      `gc: deleted ${report.deleted} data object(s) (${report.deletedBytes} bytes), ` +
        `aborted ${report.aborted} multipart upload(s), deleted ${report.leases} stale ` +
        `lease(s) and ${report.markers} marker(s); kept ${report.referenced} published, ` +
        `${report.inProgress} in progress, ${report.inGrace} in their read grace\n`,
    );
    process.exit(0);
  } catch (error) {
    process.stderr.write(`ioe-server gc: ${error instanceof Error ? error.message : error}\n`);
    process.exit(1);
  }
}
