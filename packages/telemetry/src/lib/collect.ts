import { setTimeout as sleep } from 'node:timers/promises';
import { Prisma, toDatabaseError, type DatabaseError } from '@usagekit/db';
import { retryDelayMs } from './backoff.js';
import { readClock } from './clock.js';
import { throwIfExpired } from './deadline.js';
import { ClockSkewError, describeError } from './errors.js';
import type { ResolvedReporterOptions } from './options.js';
import { periodAt, type Period } from './period.js';
import { reportIdFor } from './report-id.js';
import { BOUNDARY_USAGE_EVENT_TYPE, serializeSnapshot, type Snapshot } from './snapshot.js';
import * as sql from './sql.js';

/** Between attempts of one collection after a deadlock, lock timeout or lost connection. */
const COLLECT_RETRY_BACKOFF = { baseDelayMs: 100, maxDelayMs: 2_000 };

/**
 * One collection: reads the clock once (so every attempt claims the same period) and retries
 * what the database calls retryable, up to collectAttempts. A retry after an ambiguous commit
 * (connection lost during COMMIT) finds the period claimed and returns no summary; the report,
 * if it was committed, is in the outbox all the same, under the same deterministic id.
 *
 * `signal` is the caller's deadline: once it fired no new attempt starts. An attempt in flight
 * commits or rolls back as a whole, so a collection abandoned mid-way loses nothing: the
 * report is in the outbox, or the rows are still in the table for the next period.
 */
export async function collectSnapshot(
  settings: ResolvedReporterOptions,
  signal?: AbortSignal,
): Promise<Snapshot> {
  const { collectAttempts, logger, observer } = settings;
  const collectedAt = readClock(settings.clock);
  const period = periodAt(collectedAt, settings.snapshotFrequencyMs);
  const startedAt = performance.now();
  for (let attempt = 1; ; attempt++) {
    throwIfExpired(signal);
    try {
      const snapshot = await collectOnce(settings, collectedAt, period);
      const durationMs = performance.now() - startedAt;
      try {
        observer.onSnapshot?.(snapshot, durationMs);
      } catch (error) {
        logger.warn('telemetry: observer.onSnapshot threw', { error: describeError(error) });
      }
      return snapshot;
    } catch (error) {
      const retryable = (error as Partial<DatabaseError>)?.retryable === true;
      if (!retryable || attempt >= collectAttempts || signal?.aborted) throw error;
      logger.warn('telemetry: collection failed, retrying', {
        attempt,
        code: (error as DatabaseError).code,
        error: describeError(error),
      });
      await sleep(retryDelayMs(attempt, COLLECT_RETRY_BACKOFF), undefined, { signal }).catch(() =>
        throwIfExpired(signal),
      );
    }
  }
}

/**
 * Claim, cutover and outbox row in ONE transaction. The claim comes first: a reporter that
 * lost it must not delete anything. The cutover (the store's, under the exclusive boundary-
 * usage lock) and the report row commit together, so no summary can be deleted without being
 * written down, and none written without being deleted. Any error rolls back all three.
 *
 * READ COMMITTED is pinned, whatever the database's default_transaction_isolation: under
 * REPEATABLE READ or SERIALIZABLE the snapshot is taken at the first statement, before the
 * cutover waits for the exclusive lock, and the DELETE of rows that flushes updated meanwhile
 * fails with 40001. Under READ COMMITTED the cutover statement sees every flush committed
 * before it got the lock. The bounds (lock_timeout, idle_in_transaction_session_timeout) are
 * set before the first lock is taken.
 */
async function collectOnce(
  settings: ResolvedReporterOptions,
  collectedAt: Date,
  period: Period,
): Promise<Snapshot> {
  const { prisma, store, deploymentId, maxStalenessMs, lockTimeoutMs, logger, observer } = settings;
  const eventType = BOUNDARY_USAGE_EVENT_TYPE;
  const unclaimed: Snapshot = { deploymentId, collectedAt, periodEndingAt: period.periodEndingAt };
  let snapshot: Snapshot;
  try {
    snapshot = await prisma.$transaction(
      async (tx) => {
        await tx.$executeRaw(
          sql.setTransactionBounds({
            lockTimeoutMs,
            idleInTransactionTimeoutMs: settings.idleInTransactionTimeoutMs,
          }),
        );
        const reporterTime = readClock(settings.clock);
        const [claim] = await tx.$queryRaw<sql.ClaimRow[]>(
          sql.claimPeriod(settings.tables, eventType, period.periodEndingAt, settings.claimWindow),
        );
        if (!claim) throw new Error('telemetry: the claim statement returned no row');
        const skewMs = reporterTime.getTime() - claim.database_time.getTime();
        try {
          observer.onClockSkew?.({ skewMs, refused: !claim.in_window });
        } catch (error) {
          logger.warn('telemetry: observer.onClockSkew threw', { error: describeError(error) });
        }
        if (!claim.in_window) {
          throw new ClockSkewError({
            reporterTime,
            databaseTime: claim.database_time,
            periodEndingAt: period.periodEndingAt,
            ...settings.claimWindow,
          });
        }
        if (!claim.claimed) return unclaimed;
        const summary = await store.getAndResetSummaryInTransaction(tx, { maxStalenessMs });
        const reportId = reportIdFor(deploymentId, eventType, period.periodEndingAt);
        const claimed: Snapshot = {
          ...unclaimed,
          reportId,
          boundaryUsageSummary: {
            ...summary,
            periodStart: period.periodStart,
            periodDurationMs: period.periodDurationMs,
          },
        };
        await tx.$executeRaw(
          sql.insertReport(settings.tables, {
            reportId,
            eventType,
            periodStartingAt: period.periodStart,
            periodDurationMs: period.periodDurationMs,
            payloadJson: serializeSnapshot(claimed),
          }),
        );
        return claimed;
      },
      {
        isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted,
        maxWait: settings.maxWaitMs,
        timeout: settings.transactionTimeoutMs,
      },
    );
  } catch (error) {
    if (error instanceof ClockSkewError) {
      logger.error('telemetry: clock skew; refused to claim the period', {
        code: error.code,
        reporterTime: error.reporterTime.toISOString(),
        databaseTime: error.databaseTime.toISOString(),
        skewMs: error.skewMs,
      });
      throw error;
    }
    throw toDatabaseError(error);
  }
  const summary = snapshot.boundaryUsageSummary;
  if (summary) {
    logger.info('telemetry: period written to the outbox', {
      reportId: snapshot.reportId,
      periodStart: summary.periodStart.toISOString(),
      allowedRequests: summary.allowedRequests.toString(),
      deniedRequests: summary.deniedRequests.toString(),
      replicas: summary.replicas,
      staleReplicas: summary.staleReplicas,
    });
  } else {
    // coder logs this at debug: another replica reporting the period is the normal case.
    logger.debug('telemetry: period already claimed by another replica', {
      periodEndingAt: period.periodEndingAt.toISOString(),
    });
  }
  return snapshot;
}
