/**
 * The S3 client the store talks through, configured from the ecosystem's standard variables
 * (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_REGION), with the settings Ceph RGW 16.2 needs, and what the store needs to read from
 * its errors and answers.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

/** Only what the store calls: the real S3Client, or the tests' fake. */
export interface S3Sender {
  // The commands' own types are checked where they are built.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  send(command: any, options?: { abortSignal?: AbortSignal }): Promise<any>;
}

export interface S3ClientOptions {
  /** Path-style addressing (`http://host/bucket/key`): RGW on an IP address needs it. */
  pathStyle?: boolean;
  /** Overrides the endpoint of the environment. */
  endpoint?: string;
  /** Sockets per gateway at once (the SDK's default, 50, is low for a media server). */
  maxSockets?: number;
  /** Attempts per request, retries of faults (5xx, resets, refusals) included. */
  maxAttempts?: number;
}

/** The endpoint from the environment, if any (the SDK's default is AWS itself). */
export function endpointFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
}

export function createS3Client(options: S3ClientOptions = {}): S3Client {
  // The SDK warns on every start under Node 20 that its releases of 2027 will need Node 22;
  // this project supports 20 (package.json engines), so the warning is noise on stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const maxSockets = options.maxSockets ?? 512;
  return new S3Client({
    endpoint: options.endpoint ?? endpointFromEnv(),
    region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
    forcePathStyle: options.pathStyle ?? false,
    // The SDK's default CRC32 trailers are refused by RGW 16 (411 or a SHA-256 mismatch).
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: {
      connectionTimeout: 5_000,
      // No byte for this long on a socket: the request fails (and a download resumes).
      requestTimeout: 30_000,
      httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
  });
}

/** The HTTP status of an S3 error, when it got that far. */
export function statusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
}

function nameOf(error: unknown): string | undefined {
  return (error as { name?: string; Code?: string } | undefined)?.name;
}

export function isPreconditionFailed(error: unknown): boolean {
  return statusOf(error) === 412 || nameOf(error) === 'PreconditionFailed';
}

export function isNotFound(error: unknown): boolean {
  const name = nameOf(error);
  return (
    statusOf(error) === 404 ||
    name === 'NoSuchKey' ||
    name === 'NotFound' ||
    name === 'NoSuchUpload'
  );
}

/** A store that is full: RGW's and S3's quota errors. */
export function isQuotaExceeded(error: unknown): boolean {
  const name = nameOf(error);
  return name === 'QuotaExceeded' || name === 'UserQuotaExceeded' || name === 'BucketQuotaExceeded';
}

/** Network failures on the way to the store (Node's codes, and the SDK's timeout). */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * The store could not be reached, or failed on its side (5xx, throttling): what may work once
 * it is back, unlike a refusal (4xx) or a bug. Looks through `cause` chains.
 */
export function isStoreUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const status = statusOf(e);
    // 429 and 503 are throttling; 501 (not implemented) will not change by waiting.
    if (status === 429 || (status !== undefined && status >= 500 && status !== 501)) return true;
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined && UNREACHABLE.has(code)) return true;
    if (nameOf(e) === 'TimeoutError') return true;
  }
  return false;
}

/** An S3 error as one line: `NoSuchBucket (HTTP 404)`, `connect ECONNREFUSED …`. */
export function describeS3Error(error: unknown): string {
  const status = statusOf(error);
  const name = nameOf(error);
  const message = error instanceof Error ? error.message : String(error);
  if (status !== undefined) {
    const detail = message && message !== name && message !== 'UnknownError' ? `: ${message}` : '';
    return `${name ?? 'error'} (HTTP ${status})${detail}`;
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/**
 * Sends a command and also returns the answer's `Date` header: the store's own clock, which
 * lease ages are measured with, so that no replica's clock matters.
 */
export async function sendWithDate<T>(
  client: S3Sender,
  command: object,
): Promise<{ output: T; date?: Date }> {
  let date: Date | undefined;
  const capture = (next: (args: unknown) => Promise<unknown>) => async (args: unknown) => {
    const result = (await next(args)) as { response?: { headers?: Record<string, string> } };
    const header = result.response?.headers?.date;
    if (header) date = new Date(header);
    return result;
  };
  // Every SDK command has a middleware stack; the tests' fake commands do too.
  const stack = (command as { middlewareStack?: { add(m: unknown, o: unknown): void } })
    .middlewareStack;
  stack?.add(capture, { step: 'deserialize', name: 'ioeCaptureDate' });
  const output = (await client.send(command)) as T & { $date?: Date };
  // A client without HTTP (the tests' fake) hands its clock over in the output.
  return { output, date: date ?? output.$date };
}

/** Runs `task` over `items`, at most `limit` at a time; results in the items' order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
