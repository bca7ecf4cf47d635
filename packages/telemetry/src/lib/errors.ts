/** An error's message for logs and last_error, whatever was thrown. */
export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The claim refused the period because the reporter's clock is too far from the database's:
 * its bucket is older than the retention allows (the period's election row may already be
 * purged, so claiming it could write a second report under the same id) or further ahead
 * than one period plus a margin. Nothing was claimed, deleted or written; the rows wait for
 * a reporter whose clock is right. Not retryable: the same clock gives the same answer. Fix
 * the host's time (NTP); every other replica's reporter keeps reporting meanwhile.
 */
export class ClockSkewError extends Error {
  override readonly name = 'ClockSkewError';
  readonly code = 'CLOCK_SKEW' as const;
  readonly retryable = false;
  /** The reporter's clock when it claimed. */
  readonly reporterTime: Date;
  /** The database's now() in the claim's transaction. */
  readonly databaseTime: Date;
  /** reporterTime − databaseTime: positive when the reporter is ahead. */
  readonly skewMs: number;
  /** The bucket the reporter tried to claim (telemetry_locks.period_ending_at). */
  readonly periodEndingAt: Date;

  constructor(params: {
    reporterTime: Date;
    databaseTime: Date;
    periodEndingAt: Date;
    maxPastMs: number;
    maxFutureMs: number;
  }) {
    const skewMs = params.reporterTime.getTime() - params.databaseTime.getTime();
    super(
      `Refused to claim the telemetry period ending ${params.periodEndingAt.toISOString()}: ` +
        `the reporter's clock reads ${params.reporterTime.toISOString()} but the database's ` +
        `now() is ${params.databaseTime.toISOString()} (${skewMs > 0 ? 'ahead' : 'behind'} by ` +
        `${Math.abs(skewMs)} ms); a claim must lie between ${params.maxPastMs} ms before and ` +
        `${params.maxFutureMs} ms after the database's time. Nothing was claimed or deleted; ` +
        `fix this host's clock (NTP).`,
    );
    this.reporterTime = params.reporterTime;
    this.databaseTime = params.databaseTime;
    this.skewMs = skewMs;
    this.periodEndingAt = params.periodEndingAt;
  }
}

/**
 * A report was not sent because the database's standbys had not flushed its cutover within
 * standbyFlushTimeoutMs: with asynchronous replication a failover now could undo the cutover,
 * and the rows would be reported again under another report id. Nothing was sent; the report
 * is retried after its backoff. Retryable: the standby catches up, or is removed.
 */
export class StandbyLagError extends Error {
  override readonly name = 'StandbyLagError';
  readonly code = 'STANDBY_LAG' as const;
  readonly retryable = true;

  constructor(
    readonly lsn: string,
    readonly behind: number,
    readonly waitedMs: number,
  ) {
    super(
      `${behind} standby(s) had not flushed the report's WAL (up to ${lsn}) after ${Math.round(
        waitedMs,
      )} ms; not sent, so that a failover cannot count its rows twice`,
    );
  }
}
