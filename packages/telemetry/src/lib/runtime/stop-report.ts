import { jsonInteger } from '@usagekit/boundary-usage';
import type { StopStepName } from './stop-budget.js';

/** One step of stop(), as it went. */
export interface StopStep {
  step: StopStepName;
  /** The time the step was given (derived from what was left of the budget when it started). */
  allowanceMs: number;
  elapsedMs: number;
  /**
   * 'done'; 'failed' (an error, with `code` and `error`); 'timed-out' (its allowance ran out;
   * the work it started is left to its own deadline); 'skipped' (no time left for it).
   */
  outcome: 'done' | 'failed' | 'timed-out' | 'skipped';
  code?: string;
  error?: string;
}

/**
 * What stop() did and where the replica's usage is now. Every count is a bigint; `toJSON()`
 * (used by JSON.stringify) writes them as numbers, or decimal strings past 2^53 − 1.
 */
export interface StopReport {
  budgetMs: number;
  /** From the stop() call to its return; within budgetMs plus timer slack. */
  elapsedMs: number;
  steps: StopStep[];
  /**
   * Usage tracked and never confirmed in the database: **lost when the process exits**
   * (the final flush failed or ran out of time). Zero on a clean stop.
   */
  inMemory: { allowedRequests: bigint; deniedRequests: bigint };
  /**
   * This replica id's flushed usage still in `boundary_usage_stats`: safe, **waiting for the
   * next period's collection** by another replica's reporter (or the deployment's next
   * start). Zero after a final collection that reported. `null`: the database did not answer
   * the read (then it is wherever the last successful flush put it, still safe).
   */
  awaitingCollection: { allowedRequests: bigint; deniedRequests: bigint } | null;
  /**
   * Reports of the whole deployment still in the outbox waiting for delivery (pending, not
   * rejected): safe, **delivered later by any replica's reporter**. `null`: the database did
   * not answer the read.
   */
  undeliveredReports: number | null;
  /**
   * Reports of the whole deployment the receiver refused permanently (dead letters): kept in
   * the outbox, **never sent again by a reporter**; an operator sends them again
   * (`usagekit outbox retry`) once the receiver is fixed. `null`: the database did not answer.
   */
  rejectedReports: number | null;
  /**
   * 'not-requested'; 'reported' (the period in progress was cut over into the outbox:
   * `finalReportId`, delivered if `undeliveredReports` is 0); 'already-claimed' (another final
   * collection had the period; the rows wait for the next one); 'failed' or 'timed-out' (the
   * rows wait in the table; a collection that timed out may still commit, all or nothing);
   * 'skipped' (no time left).
   */
  finalCollection:
    'not-requested' | 'reported' | 'already-claimed' | 'failed' | 'timed-out' | 'skipped';
  finalReportId?: string;
  /** How usagekit's client was closed (see disconnectWithin in @usagekit/db). */
  disconnect: 'disconnected' | 'forced' | 'abandoned' | 'skipped';
  toJSON(): unknown;
}

export function stopReportJson(report: Omit<StopReport, 'toJSON'>): unknown {
  // A copy without the report's own (non-enumerable) toJSON, which calls this.
  return JSON.parse(
    JSON.stringify({ ...report }, (_key, value: unknown) =>
      typeof value === 'bigint' ? jsonInteger(value) : value,
    ),
  );
}
