/**
 * One connection's pipeline, composed with stream-chain: socket bytes → frame splitter →
 * command router → reply bytes. The caller pipes a socket in and the result back out.
 */
import { chainUnchecked } from 'stream-chain';
import type { Duplex } from 'node:stream';
import { MAX_LINE_BYTES, payloadLength } from '../lib/protocol.js';
import { frameSplitter } from './frame-splitter.js';
import { commandRouter, type CommandRouter, type CommandRouterOptions } from './command-router.js';

export interface ConnectionPipeline {
  /** Bytes in (from the socket), reply bytes out (to the socket). */
  stream: Duplex;
  router: CommandRouter;
}

export function connectionPipeline(options: CommandRouterOptions): ConnectionPipeline {
  const router = commandRouter(options);
  const stream = chainUnchecked(
    [frameSplitter({ maxLineBytes: MAX_LINE_BYTES, payloadLength }), router],
    // Byte streams on both sides; hold at most one chunk between the router and the socket.
    { writableObjectMode: false, readableObjectMode: false, readableHighWaterMark: 0 },
  ) as Duplex;
  return { stream, router };
}
