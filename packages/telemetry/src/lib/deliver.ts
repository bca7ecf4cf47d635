import { toDatabaseError } from '@usagekit/db';
import { retryDelayMs } from './backoff.js';
import { throwIfExpired } from './deadline.js';
import { describeError } from './errors.js';
import type { ResolvedReporterOptions } from './options.js';
import { SinkError, type OutboxReport } from './sink.js';
import * as sql from './sql.js';
import { inReadCommitted } from './transaction.js';

/**
 * Room a pass keeps for the database around a send (at most this, at most half of what the
 * pass has beyond one send): it leases no report when less time is left.
 */
const PASS_DATABASE_SLACK_MS = 2_000;

export interface DeliveryResult {
  /** Reports the sink accepted in this pass. */
  delivered: number;
  /** Reports whose send failed in this pass; each is retried after its backoff. */
  failed: number;
}

/**
 * One pass of the drainer: lease the oldest due report, send it, record the outcome; again,
 * up to deliveryBatchSize reports. A failed report gets its backoff and the pass moves on, so
 * one report the receiver keeps refusing cannot block the others. Database errors end the pass.
 *
 * The pass fits its deadline (deliveryPassTimeoutMs, enforced by the caller through `signal`):
 * it leases another report only while a whole send (deliveryTimeoutMs) and the database work
 * around it still fit; what it leaves is due for the next pass.
 */
export async function deliverDue(
  settings: ResolvedReporterOptions,
  signal?: AbortSignal,
): Promise<DeliveryResult> {
  const { deliveryBatchSize, deliveryLeaseMs, deliveryTimeoutMs, deliveryPassTimeoutMs } = settings;
  const result: DeliveryResult = { delivered: 0, failed: 0 };
  const startedAt = performance.now();
  const slackMs = Math.min(PASS_DATABASE_SLACK_MS, (deliveryPassTimeoutMs - deliveryTimeoutMs) / 2);
  for (let leased = 0; leased < deliveryBatchSize; leased++) {
    throwIfExpired(signal);
    const elapsedMs = performance.now() - startedAt;
    if (leased > 0 && elapsedMs + deliveryTimeoutMs + slackMs > deliveryPassTimeoutMs) break;
    let rows: sql.LeasedReportRow[];
    try {
      [rows] = (await inReadCommitted(settings, (prisma) => [
        prisma.$queryRaw<sql.LeasedReportRow[]>(
          sql.leaseNextReport(settings.tables, deliveryLeaseMs),
        ),
      ])) as [sql.LeasedReportRow[]];
    } catch (error) {
      throw toDatabaseError(error);
    }
    const row = rows[0];
    if (!row) break;
    if (await deliverOne(settings, row)) result.delivered++;
    else result.failed++;
  }
  if (settings.observer.onDeliveryPass && !signal?.aborted) {
    await reportPass(settings, result, startedAt);
  }
  return result;
}

/**
 * Tells observer.onDeliveryPass what the pass did and how much is still waiting. The backlog
 * is read only for this hook; if that read fails the pass still succeeded, so it is logged
 * and the hook skipped (a gauge keeps its last value) rather than failing the pass.
 */
async function reportPass(
  settings: ResolvedReporterOptions,
  result: DeliveryResult,
  startedAt: number,
): Promise<void> {
  const { prisma, logger, observer } = settings;
  let backlog: sql.OutboxBacklogRow | undefined;
  try {
    [backlog] = await prisma.$queryRaw<sql.OutboxBacklogRow[]>(sql.outboxBacklog(settings.tables));
  } catch (error) {
    logger.warn('telemetry: could not read the outbox backlog for observer.onDeliveryPass', {
      code: toDatabaseError(error).code,
      error: describeError(error),
    });
    return;
  }
  try {
    observer.onDeliveryPass?.({
      ...result,
      pendingReports: Number(backlog?.pending ?? 0n),
      oldestPendingAgeMs: backlog?.oldest_age_ms ?? null,
      durationMs: performance.now() - startedAt,
    });
  } catch (error) {
    logger.warn('telemetry: observer.onDeliveryPass threw', { error: describeError(error) });
  }
}

/**
 * How long until the earliest pending report is due (its backoff or lease ends), measured on
 * the database's clock, or null if none is pending.
 */
export async function nextPendingAttemptDelayMs(
  settings: ResolvedReporterOptions,
): Promise<number | null> {
  try {
    const rows = await settings.prisma.$queryRaw<sql.NextAttemptRow[]>(
      sql.nextPendingAttempt(settings.tables),
    );
    return rows[0]?.due_in_ms ?? null;
  } catch (error) {
    throw toDatabaseError(error);
  }
}

async function deliverOne(
  settings: ResolvedReporterOptions,
  row: sql.LeasedReportRow,
): Promise<boolean> {
  const { sink, logger, observer, retryBackoff } = settings;
  const report: OutboxReport = {
    reportId: row.report_id,
    eventType: row.event_type,
    attempt: row.attempts,
    payload: JSON.parse(row.payload) as unknown,
  };
  const startedAt = performance.now();
  let failure: unknown;
  try {
    await withTimeout(sink.send(report), settings.deliveryTimeoutMs);
  } catch (error) {
    failure = error ?? new Error('sink.send rejected without a reason');
  }
  const durationMs = performance.now() - startedAt;
  const delivered = failure === undefined;
  try {
    if (delivered) {
      await inReadCommitted(settings, (prisma) => [
        prisma.$executeRaw(sql.markDelivered(settings.tables, report.reportId)),
      ]);
    } else {
      const delayMs = retryDelayMs(report.attempt, retryBackoff);
      const reason = describeError(failure);
      await inReadCommitted(settings, (prisma) => [
        prisma.$executeRaw(
          sql.markFailed(
            settings.tables,
            report.reportId,
            report.attempt,
            reason.slice(0, 1_000),
            delayMs,
          ),
        ),
      ]);
      logger.warn('telemetry: delivery failed; will retry', {
        reportId: report.reportId,
        attempt: report.attempt,
        retryInMs: delayMs,
        error: reason,
      });
    }
  } catch (error) {
    // The outcome was not recorded: the lease runs out and the report is sent again, with the
    // same Idempotency-Key, so the receiver can drop the duplicate.
    throw toDatabaseError(error);
  }
  try {
    observer.onDelivery?.({
      reportId: report.reportId,
      attempt: report.attempt,
      delivered,
      ...(delivered ? {} : { error: failure }),
      durationMs,
    });
  } catch (error) {
    logger.warn('telemetry: observer.onDelivery threw', { error: describeError(error) });
  }
  return delivered;
}

/** A sink that never settles must not hold the reporter, or stop(), forever. */
async function withTimeout(send: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new SinkError('SINK_TIMEOUT', `sink.send did not settle within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    await Promise.race([send, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
