import { toDatabaseError } from '@usagekit/db';
import { retryDelayMs } from './backoff.js';
import { throwIfExpired } from './deadline.js';
import { describeError, StandbyLagError } from './errors.js';
import type { ResolvedReporterOptions } from './options.js';
import { SinkError, type OutboxReport, type Sink } from './sink.js';
import * as sql from './sql.js';
import { waitForStandbyFlush, type StandbyWait } from './standby-flush.js';
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
  const tried: string[] = [];
  let perReportMs = deliveryTimeoutMs;
  for (let leased = 0; leased < deliveryBatchSize; leased++) {
    throwIfExpired(signal);
    const elapsedMs = performance.now() - startedAt;
    if (leased > 0 && elapsedMs + perReportMs + slackMs > deliveryPassTimeoutMs) break;
    let rows: sql.LeasedReportRow[];
    const leaseRequestedAt = performance.now();
    try {
      [rows] = (await inReadCommitted(settings, (prisma) => [
        prisma.$queryRaw<sql.LeasedReportRow[]>(
          sql.leaseNextReport(settings.tables, deliveryLeaseMs, tried),
        ),
      ])) as [sql.LeasedReportRow[]];
    } catch (error) {
      throw toDatabaseError(error);
    }
    const row = rows[0];
    if (!row) break;
    tried.push(row.report_id);
    const outcome = await deliverOne(settings, row, leaseRequestedAt, signal);
    if (outcome === 'delivered') result.delivered++;
    else result.failed++;
    // The standbys are behind for every report alike: the next one would only wait again.
    if (outcome === 'standby_lag') break;
    if (row.standbys > 0) perReportMs = deliveryTimeoutMs + settings.standbyFlushTimeoutMs;
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
      rejectedReports: Number(backlog?.rejected ?? 0n),
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

/**
 * The send is aborted at the latest this long before its lease ends (measured from before the
 * lease statement was sent, so the statement's round trip only makes us stop earlier): when
 * someone else may lease the row, our request is closed.
 */
const LEASE_SAFETY_MS = 1_000;

async function deliverOne(
  settings: ResolvedReporterOptions,
  row: sql.LeasedReportRow,
  leaseRequestedAt: number,
  signal: AbortSignal | undefined,
): Promise<'delivered' | 'failed' | 'standby_lag'> {
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
    // Not before the standbys have the cutover: see waitForStandbyFlush and issue 18, item 5.
    if (row.standbys > 0 && settings.standbyFlushTimeoutMs > 0) {
      await waitForStandbys(settings, row, signal);
    }
    const budgetMs = Math.min(
      settings.deliveryTimeoutMs,
      leaseRequestedAt + settings.deliveryLeaseMs - LEASE_SAFETY_MS - performance.now(),
    );
    await sendCancellable(sink, report, budgetMs, signal);
  } catch (error) {
    failure = error ?? new Error('sink.send rejected without a reason');
  }
  const durationMs = performance.now() - startedAt;
  const delivered = failure === undefined;
  let rejected = false;
  try {
    if (delivered) {
      await inReadCommitted(settings, (prisma) => [
        prisma.$executeRaw(sql.markDelivered(settings.tables, report.reportId)),
      ]);
    } else {
      const refusal = failure instanceof SinkError ? failure : undefined;
      const backoffMs = retryDelayMs(report.attempt, retryBackoff);
      // The receiver's Retry-After is a floor under the delay (capped: a receiver cannot park
      // a report for a week), never a shortcut under our backoff.
      const retryAfterMs =
        refusal?.retryAfterMs === undefined
          ? 0
          : Math.min(refusal.retryAfterMs, settings.maxRetryAfterMs);
      const delayMs = Math.max(backoffMs, retryAfterMs);
      const reason = describeError(failure);
      const [rows] = (await inReadCommitted(settings, (prisma) => [
        prisma.$queryRaw<sql.FailedReportRow[]>(
          sql.markFailed(settings.tables, {
            reportId: report.reportId,
            attempts: report.attempt,
            error: reason.slice(0, 1_000),
            retryDelayMs: delayMs,
            permanent: refusal?.permanent === true,
            rejectAfterRefusals: settings.rejectAfterRefusals,
          }),
        ),
      ])) as [sql.FailedReportRow[]];
      rejected = rows[0]?.rejected === true;
      if (rejected) {
        logger.error(
          'telemetry: the receiver refused the report permanently; it is set aside as rejected until an operator sends it again (retryRejectedReports)',
          {
            reportId: report.reportId,
            attempt: report.attempt,
            refusals: rows[0]!.rejections,
            error: reason,
          },
        );
      } else {
        logger.warn('telemetry: delivery failed; will retry', {
          reportId: report.reportId,
          attempt: report.attempt,
          retryInMs: delayMs,
          ...(refusal?.permanent ? { refusals: rows[0]?.rejections } : {}),
          error: reason,
        });
      }
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
      ...(delivered ? {} : { error: failure, rejected }),
      durationMs,
    });
  } catch (error) {
    logger.warn('telemetry: observer.onDelivery threw', { error: describeError(error) });
  }
  if (delivered) return 'delivered';
  return failure instanceof StandbyLagError ? 'standby_lag' : 'failed';
}

/** Reporters already warned that the standbys' positions cannot be read (once each). */
const warnedUnverified = new WeakSet<object>();

async function waitForStandbys(
  settings: ResolvedReporterOptions,
  row: sql.LeasedReportRow,
  signal: AbortSignal | undefined,
): Promise<void> {
  const { logger } = settings;
  let wait: StandbyWait;
  try {
    wait = await waitForStandbyFlush(settings, row.report_id, row.wal_lsn, signal);
  } catch (error) {
    if (error instanceof StandbyLagError) {
      notifyStandbyWait(settings, {
        reportId: row.report_id,
        standbys: row.standbys,
        hidden: 0,
        outcome: 'timed_out',
        waitedMs: error.waitedMs,
      });
    }
    throw error;
  }
  notifyStandbyWait(settings, wait);
  if (wait.outcome === 'unverified' && !warnedUnverified.has(settings)) {
    warnedUnverified.add(settings);
    logger.warn(
      "telemetry: cannot read the standbys' flush positions (pg_stat_replication needs pg_monitor or pg_read_all_stats); reports are delivered without waiting for them, so an asynchronous failover may count a period twice",
      { standbys: wait.standbys, hidden: wait.hidden },
    );
  }
}

function notifyStandbyWait(settings: ResolvedReporterOptions, wait: StandbyWait): void {
  try {
    settings.observer.onStandbyWait?.(wait);
  } catch (error) {
    settings.logger.warn('telemetry: observer.onStandbyWait threw', {
      error: describeError(error),
    });
  }
}

/**
 * Sends with a signal that is aborted when the reporter abandons the send: after `budgetMs`
 * (deliveryTimeoutMs, or less when the lease is nearer), or when the pass is abandoned
 * (`passSignal`). The abort is what cancels the request; the race only makes sure that a sink
 * which ignores its signal cannot hold the reporter, or stop(), forever.
 */
async function sendCancellable(
  sink: Sink,
  report: OutboxReport,
  budgetMs: number,
  passSignal: AbortSignal | undefined,
): Promise<void> {
  if (budgetMs <= 0) {
    throw new SinkError('SINK_TIMEOUT', 'the lease ran out before the send could start');
  }
  const controller = new AbortController();
  const signal = passSignal ? AbortSignal.any([controller.signal, passSignal]) : controller.signal;
  let timer: NodeJS.Timeout | undefined;
  const abandoned = new Promise<never>((_, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  abandoned.catch(() => undefined);
  timer = setTimeout(
    () =>
      controller.abort(
        new SinkError('SINK_TIMEOUT', `sink.send did not settle within ${Math.round(budgetMs)} ms`),
      ),
    budgetMs,
  );
  try {
    const sending = sink.send(report, { signal });
    // A send that fails after it was abandoned has nobody listening.
    sending.catch(() => undefined);
    await Promise.race([sending, abandoned]);
  } finally {
    clearTimeout(timer);
    timer = undefined;
    // Whatever happened, nothing of this send may stay open past this point.
    if (!controller.signal.aborted) controller.abort(new Error('the send is over'));
  }
}
