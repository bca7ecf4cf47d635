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

/**
 * Where reports go. `send` resolves once the receiver has the report and rejects otherwise;
 * a rejected send is retried later with the same report (same id). Delivery is at least once,
 * so a receiver deduplicates by `reportId`.
 */
export interface Sink {
  send(report: OutboxReport): Promise<void>;
}

export type SinkErrorCode = 'SINK_REJECTED' | 'SINK_UNREACHABLE' | 'SINK_TIMEOUT';

/** A failed delivery. `status` is the HTTP status when the receiver answered. */
export class SinkError extends Error {
  override readonly name = 'SinkError';
  readonly status: number | undefined;

  constructor(
    readonly code: SinkErrorCode,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.status = options.status;
  }
}
