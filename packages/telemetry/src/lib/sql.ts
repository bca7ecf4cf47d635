/**
 * Every SQL statement of @usagekit/telemetry. Each one says what it locks, for how long, and
 * why. Values are bound parameters (tagged `Prisma.sql`); nothing is spliced into the text.
 *
 * Times: the election, the outbox and its retention use the reporter's clock (passed in as
 * ISO strings and cast to timestamptz, so the session's TimeZone cannot shift them; adapter-pg
 * would format a Date without an offset). That keeps one notion of time for everything the
 * reporter itself writes, and makes a fake clock drive tests end to end. The only exception is
 * boundary_usage_flush_sequences, whose updated_at is written by the flushing replica with the
 * database's now(); its retention compares against the database's now() too.
 */
import { Prisma } from '@usagekit/db';

function timestamp(value: Date): Prisma.Sql {
  return Prisma.sql`${value.toISOString()}::timestamptz`;
}

/**
 * Transaction-local lock_timeout (SET LOCAL through set_config, which takes parameters).
 * Bounds both waits of the collection: the claim waiting for a rival's uncommitted claim of
 * the same period, and the cutover waiting for the exclusive boundary-usage lock. Without it a
 * wait outlives Prisma's transaction timer, which does not cancel it.
 */
export function setLockTimeout(lockTimeoutMs: number): Prisma.Sql {
  return Prisma.sql`SELECT set_config('lock_timeout', ${`${lockTimeoutMs}ms`}, true)`;
}

export interface ClaimRow {
  claimed: boolean;
}

/**
 * The election (coder's telemetry_locks row): whoever inserts (event type, period) first
 * reports that period. ON CONFLICT DO NOTHING instead of catching the unique violation,
 * because an error would abort the whole transaction; a lost claim simply returns no row.
 *
 * Locks: the new primary-key entry, until our transaction ends. A rival claiming the same
 * period concurrently blocks on it (speculative insertion waits for our transaction) and then
 * sees the conflict once we commit, or inserts if we roll back. So the loser cannot return
 * before the winner's cutover and outbox row are committed, and a failed winner frees the
 * period for the next attempt. The claim is taken before the exclusive boundary-usage lock
 * (in the cutover), always in that order, so two collections cannot wait on each other in a
 * cycle.
 */
export function claimPeriod(eventType: string, periodEndingAt: Date): Prisma.Sql {
  return Prisma.sql`INSERT INTO telemetry_locks (event_type, period_ending_at)
    VALUES (${eventType}, ${timestamp(periodEndingAt)})
    ON CONFLICT (event_type, period_ending_at) DO NOTHING
    RETURNING true AS claimed`;
}

export interface InsertReportParams {
  reportId: string;
  eventType: string;
  periodStartingAt: Date;
  periodDurationMs: number;
  /** The payload, already serialized (never JSON.stringify a BigInt: see snapshot.ts). */
  payloadJson: string;
  createdAt: Date;
}

/**
 * The outbox row, in the same transaction as the claim and the cutover: either all three
 * commit or none does. A plain INSERT on purpose: if a report for this period somehow exists
 * already (the lock row was purged while the report was still pending and a reporter's clock
 * went back a day), the unique key fails the transaction and the cutover rolls back with it,
 * so the rows it read stay in the table instead of vanishing into a report nobody writes.
 * Locks: only the new row's key entries.
 */
export function insertReport(params: InsertReportParams): Prisma.Sql {
  return Prisma.sql`INSERT INTO telemetry_reports
      (report_id, event_type, period_starting_at, period_duration_ms, payload, created_at, next_attempt_at)
    VALUES (${params.reportId}::uuid, ${params.eventType}, ${timestamp(params.periodStartingAt)},
            ${params.periodDurationMs}::bigint, ${params.payloadJson}::jsonb,
            ${timestamp(params.createdAt)}, ${timestamp(params.createdAt)})`;
}

export interface LeasedReportRow {
  report_id: string;
  event_type: string;
  payload: string;
  attempts: number;
}

/**
 * Takes the oldest due report for delivery: one statement, committed on its own.
 *
 * Locks: FOR UPDATE SKIP LOCKED on the one row, for this statement only. A second reporter
 * running the same statement at the same moment skips the row instead of waiting and takes the
 * next one. The row lock ends with the statement; what keeps others away during the send is
 * the lease written here: next_attempt_at moves to `leaseUntil`, so the row is not due again
 * until the send had time to finish (or the sender crashed: then someone else retries it after
 * the lease, with the same Idempotency-Key). attempts is counted here, before the send, so a
 * crash mid-send still counts as an attempt; its new value is the lease's token.
 */
export function leaseNextReport(now: Date, leaseUntil: Date): Prisma.Sql {
  return Prisma.sql`UPDATE telemetry_reports r
       SET attempts = r.attempts + 1, next_attempt_at = ${timestamp(leaseUntil)}
     WHERE r.report_id = (
       SELECT report_id FROM telemetry_reports
        WHERE delivered_at IS NULL AND next_attempt_at <= ${timestamp(now)}
        ORDER BY created_at, report_id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING r.report_id::text AS report_id, r.event_type, r.payload::text AS payload, r.attempts`;
}

/**
 * The receiver acknowledged the report. No lease check: delivered is delivered, whoever sent
 * it. `delivered_at IS NULL` keeps the first acknowledgement's time. Locks the one row.
 */
export function markDelivered(reportId: string, deliveredAt: Date): Prisma.Sql {
  return Prisma.sql`UPDATE telemetry_reports
       SET delivered_at = ${timestamp(deliveredAt)}, last_error = NULL
     WHERE report_id = ${reportId}::uuid AND delivered_at IS NULL`;
}

/**
 * The send failed: record why and when to try again. Applies only while our lease is the
 * latest (attempts unchanged), so a sender whose lease ran out cannot push back the retry of
 * whoever leased the row after it. Locks the one row.
 */
export function markFailed(
  reportId: string,
  attempts: number,
  error: string,
  nextAttemptAt: Date,
): Prisma.Sql {
  return Prisma.sql`UPDATE telemetry_reports
       SET last_error = ${error}, next_attempt_at = ${timestamp(nextAttemptAt)}
     WHERE report_id = ${reportId}::uuid AND delivered_at IS NULL AND attempts = ${attempts}::int`;
}

export interface NextAttemptRow {
  next_attempt_at: Date | null;
}

/** When the earliest pending report is due (to schedule the next delivery). Takes no locks. */
export function nextPendingAttempt(): Prisma.Sql {
  return Prisma.sql`SELECT min(next_attempt_at) AS next_attempt_at
    FROM telemetry_reports WHERE delivered_at IS NULL`;
}

export interface OutboxBacklogRow {
  pending: bigint;
  oldest_created_at: Date | null;
}

/**
 * The undelivered reports and the oldest one's created_at, for the backlog metrics. Reads the
 * pending-reports index (delivered_at, created_at); takes no locks.
 */
export function outboxBacklog(): Prisma.Sql {
  return Prisma.sql`SELECT count(*) AS pending, min(created_at) AS oldest_created_at
    FROM telemetry_reports WHERE delivered_at IS NULL`;
}

/**
 * Retention of the outbox: delivered reports older than the cutoff. Pending reports are never
 * deleted, however old. Locks the deleted rows; a row leased for delivery is pending, so this
 * never touches it.
 */
export function deleteDeliveredReports(deliveredBefore: Date): Prisma.Sql {
  return Prisma.sql`DELETE FROM telemetry_reports
     WHERE delivered_at IS NOT NULL AND delivered_at < ${timestamp(deliveredBefore)}`;
}

/**
 * Retention of the election (coder's dbpurge: 24 h). A purged period could be claimed again
 * only by a reporter whose clock is a day behind, and its report would carry the same
 * deterministic id. Locks the deleted rows; current periods are far from the cutoff.
 */
export function deleteExpiredLocks(periodEndingBefore: Date): Prisma.Sql {
  return Prisma.sql`DELETE FROM telemetry_locks WHERE period_ending_at < ${timestamp(periodEndingBefore)}`;
}

/**
 * Retention of the flush sequences of replicas gone quiet. Compared with the database's now()
 * because flushes stamp updated_at with it. Takes no advisory lock: a replica that flushes
 * while this runs updates the row first (its DELETE then re-checks updated_at on the new row
 * version under READ COMMITTED and skips it) or finds it deleted and inserts a new one. Only a
 * flush retried after a week of silence could be applied twice, which no retry loop does.
 */
export function deleteIdleFlushSequences(idleMs: number): Prisma.Sql {
  return Prisma.sql`DELETE FROM boundary_usage_flush_sequences
     WHERE updated_at < now() - ${idleMs}::bigint * interval '1 millisecond'`;
}
