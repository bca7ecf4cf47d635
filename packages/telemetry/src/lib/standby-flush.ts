import { setTimeout as sleep } from 'node:timers/promises';
import { toDatabaseError } from '@usagekit/db';
import { StandbyLagError } from './errors.js';
import type { ResolvedReporterOptions } from './options.js';
import * as sql from './sql.js';

/** What waiting for the standbys gave, for observer.onStandbyWait. */
export interface StandbyWait {
  reportId: string;
  /** Physical standbys streaming from the primary. */
  standbys: number;
  /** Of them, those whose position this role cannot read (no pg_monitor / pg_read_all_stats). */
  hidden: number;
  /**
   * `flushed`: every standby has the report's cutover; `unverified`: the visible ones have it
   * (if any) but some positions could not be read, so the report was sent without proof;
   * `timed_out`: not flushed within standbyFlushTimeoutMs, not sent (StandbyLagError).
   */
  outcome: 'flushed' | 'unverified' | 'timed_out';
  waitedMs: number;
}

const FIRST_POLL_MS = 5;
const MAX_POLL_MS = 200;

/**
 * Waits, at most standbyFlushTimeoutMs, until every physical standby has flushed `lsn` (the
 * WAL position at the report's lease, past its cutover's commit record). Resolves with the
 * outcome; rejects with StandbyLagError when the time is up, or with the signal's reason.
 */
export async function waitForStandbyFlush(
  settings: ResolvedReporterOptions,
  reportId: string,
  lsn: string,
  signal: AbortSignal | undefined,
): Promise<StandbyWait> {
  const startedAt = performance.now();
  let pollMs = FIRST_POLL_MS;
  for (;;) {
    let state: sql.StandbyFlushRow | undefined;
    try {
      [state] = await settings.prisma.$queryRaw<sql.StandbyFlushRow[]>(sql.standbyFlushState(lsn));
    } catch (error) {
      throw toDatabaseError(error);
    }
    const waitedMs = performance.now() - startedAt;
    const standbys = state?.standbys ?? 0;
    const hidden = state?.hidden ?? 0;
    const behind = state?.behind ?? 0;
    if (behind === 0) {
      return {
        reportId,
        standbys,
        hidden,
        outcome: hidden > 0 ? 'unverified' : 'flushed',
        waitedMs,
      };
    }
    const remainingMs = settings.standbyFlushTimeoutMs - waitedMs;
    if (remainingMs <= 0) throw new StandbyLagError(lsn, behind, waitedMs);
    // The last poll lands on the deadline, so the wait is never cut short.
    await sleep(Math.min(pollMs, remainingMs), undefined, { signal });
    pollMs = Math.min(pollMs * 2, MAX_POLL_MS);
  }
}
