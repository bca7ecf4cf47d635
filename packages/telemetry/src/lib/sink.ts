/** One outbox row on its way out. */
export interface OutboxReport {
  /** Stable per (deployment, event type, period); send it as the idempotency key. */
  reportId: string;
  eventType: string;
  /** 1 on the first attempt; counts attempts by every reporter, crashes included. */
  attempt: number;
  /** The snapshot JSON (a SnapshotJson for boundary_usage_summary), as stored. */
  payload: unknown;
}

/** What the reporter passes with every send. */
export interface SinkSendOptions {
  /**
   * Aborted when the reporter abandons the send: its deliveryTimeoutMs ran out, the delivery
   * pass hit its deadline, or stop() gave up. A sink must stop sending when it fires (HttpSink
   * cancels the request and closes its connection): the row's lease ends soon after, and
   * another reporter may then send the same report. A manual `usagekit outbox retry` makes a
   * leased row due at once, so a second send of a report may start while this one is open:
   * deduplicate by `reportId`.
   */
  signal: AbortSignal;
}

/**
 * Where reports go. `send` resolves once the receiver has the report and rejects otherwise;
 * a rejected send is retried later with the same report (same id). Delivery is at least once,
 * so a receiver deduplicates by `reportId`. Throw a {@link SinkError} to tell the reporter
 * more: `permanent` (the receiver refuses this report for good: after rejectAfterRefusals such
 * refusals the report is set aside as rejected) and `retryAfterMs` (the receiver's minimum
 * delay before the next attempt).
 */
export interface Sink {
  send(report: OutboxReport, options: SinkSendOptions): Promise<void>;
}

export type SinkErrorCode =
  'SINK_REJECTED' | 'SINK_REDIRECTED' | 'SINK_UNREACHABLE' | 'SINK_TIMEOUT' | 'SINK_ABORTED';

export interface SinkErrorOptions {
  /** The HTTP status, when the receiver answered. */
  status?: number;
  /** The receiver refuses this report for good (retrying the same bytes cannot succeed). */
  permanent?: boolean;
  /** The receiver asked us to wait at least this long (Retry-After). */
  retryAfterMs?: number;
  cause?: unknown;
}

/**
 * A failed delivery. `status` is the HTTP status when the receiver answered; `permanent`
 * marks a refusal no retry can fix (see PERMANENT_REFUSAL_STATUSES); `retryAfterMs` is the
 * receiver's Retry-After, the minimum delay before this report's next attempt.
 */
export class SinkError extends Error {
  override readonly name = 'SinkError';
  readonly status: number | undefined;
  readonly permanent: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(
    readonly code: SinkErrorCode,
    message: string,
    options: SinkErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.status = options.status;
    this.permanent = options.permanent ?? false;
    this.retryAfterMs = options.retryAfterMs;
  }
}
