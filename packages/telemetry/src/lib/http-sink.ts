import { InvalidInputError } from '@usagekit/boundary-usage';
import { parseRetryAfter } from './retry-after.js';
import { SinkError, type OutboxReport, type Sink, type SinkSendOptions } from './sink.js';

export interface HttpSinkOptions {
  /**
   * The receiver: an http:// or https:// URL that accepts a POST of the snapshot JSON.
   * Credentials in it (`https://user:pass@host/path`) are sent as HTTP Basic authentication
   * (`Authorization: Basic …`), never as part of the URL, and never appear in an error.
   */
  url: string | URL;
  /**
   * Per request, until the status line. Default 10 s. Under a TelemetryReporter the
   * reporter's deliveryTimeoutMs bounds every send as well (through the send's signal), so
   * this can only make a send shorter; a sink given to the reporter as a URL string gets
   * deliveryTimeoutMs here.
   */
  timeoutMs?: number;
  /** Extra request headers (authorization, say). Content-Type and Idempotency-Key are ours. */
  headers?: Record<string, string>;
}

export const DEFAULT_HTTP_SINK_TIMEOUT_MS = 10_000;

/**
 * Statuses that refuse the report itself: sending the same bytes again cannot succeed until
 * someone changes the receiver or our configuration (bad request, credentials, wrong path,
 * gone, too large, unsupported or unprocessable body). A report refused with one of these
 * rejectAfterRefusals times is set aside as rejected (a dead letter an operator can send
 * again). Everything else (408, 409, 425, 429, 5xx, 3xx, network errors) is transient.
 */
export const PERMANENT_REFUSAL_STATUSES: ReadonlySet<number> = new Set([
  400, 401, 403, 404, 405, 410, 411, 413, 414, 415, 422,
]);

/** Statuses whose Retry-After is honoured (RFC 9110 §10.2.3: 503; RFC 6585: 429). */
const RETRY_AFTER_STATUSES: ReadonlySet<number> = new Set([429, 503]);

/** How long a refusal's body may take to give its first bytes for the error message. */
const ERROR_EXCERPT_TIMEOUT_MS = 500;
const ERROR_EXCERPT_CHARS = 200;

/** Header values at least this long are treated as secrets and redacted from messages. */
const MIN_SECRET_LENGTH = 6;

/**
 * POSTs each report as JSON with an `Idempotency-Key: <report id>` header. A 2xx status line
 * is delivered (the body is not awaited); everything else rejects with a {@link SinkError}
 * and the reporter retries later with the same key:
 *
 * - **No redirect is followed** (`redirect: 'manual'`), for any 3xx, 307 and 308 included. A
 *   301/302/303 would be replayed as a GET without body (an auth proxy's login page then
 *   answers 200, and the report would count as delivered); a 307/308 would re-send the report
 *   to an origin we were not configured with (with its Authorization header, if the origin is
 *   the same). A 3xx is a failed attempt, `SINK_REDIRECTED`, naming the status and Location:
 *   point the sink at the final URL.
 * - **Retry-After** (delta-seconds or an HTTP date) on 429 and 503 becomes the error's
 *   `retryAfterMs`, the minimum delay before the report's next attempt.
 * - **Permanent refusals** (PERMANENT_REFUSAL_STATUSES) are marked `permanent`.
 * - **Cancellable:** the send's `signal` (the reporter abandoning it) and `timeoutMs` abort the
 *   request and close its connection, so an abandoned send is not still open at the receiver.
 * - **Secrets:** credentials from the URL and header values are redacted from every message.
 *
 * Node's built-in fetch, so no HTTP client dependency.
 */
export class HttpSink implements Sink {
  /** The receiver URL, without credentials. */
  readonly url: URL;
  readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private readonly secrets: string[];

  constructor(options: HttpSinkOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidInputError('sink options', options, 'an object with a url');
    }
    const url = parseReceiverUrl(options.url);
    const timeoutMs = options.timeoutMs ?? DEFAULT_HTTP_SINK_TIMEOUT_MS;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
      throw new InvalidInputError(
        'sink timeoutMs',
        timeoutMs,
        'a positive integer number of milliseconds',
      );
    }
    this.timeoutMs = timeoutMs;
    const headers = { ...(options.headers ?? {}) };
    const secrets = Object.values(headers)
      .flatMap((value) => (typeof value === 'string' ? [value, credentialOf(value)] : []))
      .filter((value) => value.length >= MIN_SECRET_LENGTH);
    if (url.username !== '' || url.password !== '') {
      // fetch refuses a URL with credentials (and would put them in its error message): send
      // them the way a browser does, as Basic authentication.
      if (Object.keys(headers).some((name) => name.toLowerCase() === 'authorization')) {
        throw new InvalidInputError(
          'sink url',
          redactedUrl(url),
          'credentials in the URL or an Authorization header, not both',
        );
      }
      const username = decodeUserinfo(url.username);
      const password = decodeUserinfo(url.password);
      const token = Buffer.from(`${username}:${password}`, 'utf8').toString('base64');
      headers.authorization = `Basic ${token}`;
      secrets.push(token, `${username}:${password}`, `${url.username}:${url.password}`);
      // A token passed as the username alone (`https://TOKEN@host`) is the whole secret.
      for (const part of [password, url.password, username, url.username]) {
        if (part.length > 0) secrets.push(part);
      }
      url.username = '';
      url.password = '';
    }
    this.url = url;
    this.headers = headers;
    // Longest first, so a secret containing another is replaced whole.
    this.secrets = [...new Set(secrets)].sort((a, b) => b.length - a.length);
  }

  async send(report: OutboxReport, options?: SinkSendOptions): Promise<void> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options?.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
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
        // A redirect answered to a POST is never followed (see the class comment).
        redirect: 'manual',
        signal,
      });
    } catch (error) {
      if (options?.signal?.aborted) {
        throw new SinkError(
          'SINK_ABORTED',
          `POST ${this.where()} abandoned by the reporter: ${this.redact(reasonOf(options.signal))}`,
          { cause: error },
        );
      }
      if (timeout.aborted) {
        throw new SinkError(
          'SINK_TIMEOUT',
          `POST ${this.where()} timed out after ${this.timeoutMs} ms`,
          { cause: error },
        );
      }
      throw new SinkError(
        'SINK_UNREACHABLE',
        `POST ${this.where()} failed: ${this.redact(networkReason(error))}`,
        { cause: error },
      );
    }
    const status = response.status;
    if (status >= 200 && status < 300) {
      // The status line says the receiver has the report: done. A body that trickles in must
      // not hold the send until the reporter's timer fires and the report is sent again.
      response.body?.cancel().catch(() => undefined);
      return;
    }
    if (status >= 300 && status < 400) {
      response.body?.cancel().catch(() => undefined);
      throw new SinkError(
        'SINK_REDIRECTED',
        `POST ${this.where()} answered ${status} redirecting to ${this.describeLocation(
          response.headers.get('location'),
        )}; redirects are not followed for a POST (configure the final URL)`,
        { status },
      );
    }
    const retryAfterMs = RETRY_AFTER_STATUSES.has(status)
      ? parseRetryAfter(response.headers.get('retry-after'), response.headers.get('date'))
      : undefined;
    const excerpt = this.redact(await readExcerpt(response));
    throw new SinkError(
      'SINK_REJECTED',
      `POST ${this.where()} answered ${status}${
        retryAfterMs === undefined ? '' : ` (Retry-After ${retryAfterMs} ms)`
      }${excerpt ? `: ${excerpt}` : ''}`,
      {
        status,
        permanent: PERMANENT_REFUSAL_STATUSES.has(status),
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      },
    );
  }

  /** The URL without credentials or query, for messages that end up in last_error and logs. */
  private where(): string {
    return `${this.url.origin}${this.url.pathname}`;
  }

  /** A Location header, resolved against our URL, without credentials or query. */
  private describeLocation(location: string | null): string {
    if (location === null) return '(no Location header)';
    try {
      const target = new URL(location, this.url);
      return `${target.origin}${target.pathname}${target.search ? '?…' : ''}`;
    } catch {
      return '(an invalid Location header)';
    }
  }

  private redact(text: string): string {
    let redacted = text;
    for (const secret of this.secrets) redacted = redacted.split(secret).join('***');
    return redacted;
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
    const shown = url
      ? redactedUrl(url)
      : typeof value === 'string'
        ? redactUserinfo(value)
        : value;
    throw new InvalidInputError('sink url', shown, 'an absolute http:// or https:// URL');
  }
  return url;
}

/** The URL as text with its password (and user) replaced, for error messages. */
function redactedUrl(url: URL): string {
  const copy = new URL(url.href);
  if (copy.username !== '') copy.username = '***';
  if (copy.password !== '') copy.password = '***';
  return copy.href;
}

/** For text that is not a URL at all: whatever sits between "//" and "@" goes. */
function redactUserinfo(text: string): string {
  return text.replace(/\/\/[^/?#]*@/g, '//***@');
}

/**
 * The credential in a header value without its auth scheme (`Bearer abc` -> `abc`): a receiver
 * that echoes the token it refused echoes it bare, not with the scheme in front.
 */
function credentialOf(value: string): string {
  const match = /^\s*[A-Za-z][\w.+-]*\s+(\S.*?)\s*$/.exec(value);
  return match ? match[1]! : value;
}

function decodeUserinfo(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function reasonOf(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : String(reason);
}

/**
 * The start of a refusal's body, for the error message: at most ERROR_EXCERPT_CHARS, and only
 * what arrives within ERROR_EXCERPT_TIMEOUT_MS. The rest is cancelled, not awaited.
 */
async function readExcerpt(response: Response): Promise<string> {
  const body = response.body;
  if (!body) return '';
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ERROR_EXCERPT_TIMEOUT_MS);
  });
  try {
    while (text.length < ERROR_EXCERPT_CHARS) {
      const chunk = await Promise.race([reader.read(), timedOut]);
      if (chunk === 'timeout' || chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
    }
  } catch {
    // A body that fails to arrive changes nothing: the status is the answer.
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => undefined);
  }
  return text.trim().slice(0, ERROR_EXCERPT_CHARS);
}

/** undici reports "fetch failed" with the socket error as its cause: name the errno. */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } })?.cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return error instanceof Error ? error.message : String(error);
}
