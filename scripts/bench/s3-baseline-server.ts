#!/usr/bin/env node
/**
 * The S3 READ baseline of the benchmark: a bare Node program that, on each connection, sends a
 * GetObject of one key and pipes its Body to the socket, then closes. What an IOE replica on
 * the same gateway must approach. Prints `listening on HOST:PORT`.
 *
 *   --endpoint URL --bucket B --key K   the object (credentials from AWS_* in the environment)
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { createServer, type AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { Command } from 'commander';
import { createS3Client } from '../../lib/s3-client.js';

const program = new Command('s3-baseline-server')
  .requiredOption('--endpoint <url>', 'the S3 gateway')
  .requiredOption('--bucket <bucket>', 'the bucket')
  .requiredOption('--key <key>', 'the object sent to every connection')
  .option('--host <host>', 'address to bind', '127.0.0.1')
  .option('--port <port>', 'port; 0 picks a free one', '0');
program.parse();
const opts = program.opts<{
  endpoint: string;
  bucket: string;
  key: string;
  host: string;
  port: string;
}>();

const client = createS3Client({ endpoint: opts.endpoint, pathStyle: true });

const server = createServer((socket) => {
  socket.on('error', () => undefined);
  client
    .send(new GetObjectCommand({ Bucket: opts.bucket, Key: opts.key }))
    .then((reply) => pipeline(reply.Body as Readable, socket))
    .catch((error: unknown) => {
      process.stderr.write(`GetObject ${opts.key}: ${String(error)}\n`);
      socket.destroy();
    });
});
server.listen(Number(opts.port), opts.host, () => {
  const address = server.address() as AddressInfo;
  console.log(`listening on ${address.address}:${address.port}`);
});
process.on('SIGTERM', () => process.exit(0));
