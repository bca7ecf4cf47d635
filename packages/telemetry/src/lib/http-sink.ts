import { InvalidInputError } from '@usagekit/boundary-usage';
import { SinkError, type OutboxReport, type Sink } from './sink.js';

export interface HttpSinkOptions {
  /** The receiver: an http:// or https:// URL that accepts a POST of the snapshot JSON. */
  url: string | URL;
  /** Per request, connection and response body included. Default 10 s. */
  timeoutMs?: number;
  /** Extra request headers (authorization, say). Content-Type and Idempotency-Key are ours. */
  headers?: Record<string, string>;
}

export const DEFAULT_HTTP_SINK_TIMEOUT_MS = 10_000;

/**
 * POSTs each report as JSON with an `Idempotency-Key: <report id>` header. Any 2xx is
 * delivered; everything else (another status, a refused connection, a timeout) rejects with a
 * {@link SinkError} and the reporter retries later with the same key. Node's built-in fetch,
 * so no HTTP client dependency.
 */
export class HttpSink implements Sink {
  readonly url: URL;
  readonly timeoutMs: number;
  private readonly headers: Record<string, string>;

  constructor(options: HttpSinkOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidInputError('sink options', options, 'an object with a url');
    }
    this.url = parseReceiverUrl(options.url);
    const timeoutMs = options.timeoutMs ?? DEFAULT_HTTP_SINK_TIMEOUT_MS;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
      throw new InvalidInputError(
        'sink timeoutMs',
        timeoutMs,
        'a positive integer number of milliseconds',
      );
    }
    this.timeoutMs = timeoutMs;
    this.headers = { ...(options.headers ?? {}) };
  }

  async send(report: OutboxReport): Promise<void> {
    let response: Response;
    try {
      response = await fetch(this.url, {
        method: 'POST',
        headers: {
          ...this.headers,
          'content-type': 'application/json',
          'idempotency-key': report.reportId,
        },
        body: JSON.stringify(report.payload),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      if ((error as { name?: unknown })?.name === 'TimeoutError') {
        throw new SinkError(
          'SINK_TIMEOUT',
          `POST ${this.where()} timed out after ${this.timeoutMs} ms`,
          {
            cause: error,
          },
        );
      }
      throw new SinkError(
        'SINK_UNREACHABLE',
        `POST ${this.where()} failed: ${networkReason(error)}`,
        {
          cause: error,
        },
      );
    }
    // Read the body either way so the connection can be reused; on a 2xx the status already
    // says the receiver has the report, so a body that fails to arrive changes nothing.
    const body = await response.text().catch(() => '');
    if (!response.ok) {
      const excerpt = body.trim().slice(0, 200);
      throw new SinkError(
        'SINK_REJECTED',
        `POST ${this.where()} answered ${response.status}${excerpt ? `: ${excerpt}` : ''}`,
        { status: response.status },
      );
    }
  }

  /** The URL without credentials or query, for messages that end up in last_error and logs. */
  private where(): string {
    return `${this.url.origin}${this.url.pathname}`;
  }
}

function parseReceiverUrl(value: unknown): URL {
  let url: URL | undefined;
  if (value instanceof URL) url = new URL(value.href);
  else if (typeof value === 'string') {
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new InvalidInputError('sink url', value, 'an absolute http:// or https:// URL');
  }
  return url;
}

/** undici reports "fetch failed" with the socket error as its cause: name the errno. */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } })?.cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return error instanceof Error ? error.message : String(error);
}
