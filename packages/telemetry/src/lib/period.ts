/**
 * Period arithmetic on epoch milliseconds, UTC by construction (no calendar involved).
 *
 * coder's `now.Truncate(SnapshotFrequency)` is the floor of the current bucket, stored as
 * telemetry_locks.period_ending_at: the period a report covers ends there and started one
 * frequency earlier (coder's test: PeriodStart = now − frequency with an aligned clock).
 * Buckets are multiples of the frequency since the Unix epoch; Go's Truncate counts from
 * year 1, which gives the same edges for every frequency that divides a day (30 min does).
 */
export interface Period {
  /** The bucket claimed in telemetry_locks: now floored to the frequency. */
  periodEndingAt: Date;
  /** The nominal start of the period reported: periodEndingAt − frequency. */
  periodStart: Date;
  periodDurationMs: number;
}

export function floorToFrequency(time: Date, frequencyMs: number): Date {
  const ms = time.getTime();
  return new Date(ms - mod(ms, frequencyMs));
}

/** The first bucket edge strictly after `time`. */
export function nextBucketEdge(time: Date, frequencyMs: number): Date {
  return new Date(floorToFrequency(time, frequencyMs).getTime() + frequencyMs);
}

export function periodAt(time: Date, frequencyMs: number): Period {
  const periodEndingAt = floorToFrequency(time, frequencyMs);
  return {
    periodEndingAt,
    periodStart: new Date(periodEndingAt.getTime() - frequencyMs),
    periodDurationMs: frequencyMs,
  };
}

// % keeps the dividend's sign; times before 1970 still floor downwards.
function mod(value: number, divisor: number): number {
  return ((value % divisor) + divisor) % divisor;
}
