/**
 * Every SQL statement of @usagekit/telemetry. Each one says what it locks, for how long, and
 * why. Values are bound parameters (tagged `Prisma.sql`); nothing is spliced into the text.
 *
 * Times: everything that decides what may be deleted or sent when (retention cut-offs,
 * delivery leases and backoffs, created_at, delivered_at, ages) is the database's now(), one
 * clock for the whole fleet: a reporter whose clock is a day off can then neither purge live
 * rows nor hold a lease wrongly. The only reporter-clock value is the period bucket claimed in
 * telemetry_locks (an election key, like coder's), passed in as an ISO string cast to
 * timestamptz (the session's TimeZone cannot shift it; adapter-pg would format a Date without
 * an offset), and the claim refuses a bucket outside a window around now() (claimPeriod).
 *
 * Tables are named schema-qualified through the store's `SchemaTables` (never through the
 * session's search_path, which PgBouncer in transaction mode cannot carry).
 */
import { Prisma, type SchemaTables } from '@usagekit/db';

function timestamp(value: Date): Prisma.Sql {
  return Prisma.sql`${value.toISOString()}::timestamptz`;
}

function milliseconds(ms: number): Prisma.Sql {
  return Prisma.sql`(${Math.round(ms)}::bigint * interval '1 millisecond')`;
}

/**
 * Transaction-local bounds (SET LOCAL through set_config, which takes parameters), the first
 * statement of every reporter transaction, before it takes any lock:
 * - lock_timeout bounds each lock wait: the claim waiting for a rival's uncommitted claim of
 *   the same period, the cutover waiting for the exclusive boundary-usage lock, a row lock.
 *   Without it a wait outlives Prisma's transaction timer, which does not cancel it.
 * - idle_in_transaction_session_timeout ends the session if the client goes silent between
 *   statements (a partition, a frozen VM, a NAT that dropped the flow): PostgreSQL then
 *   terminates the backend, the transaction rolls back and its locks, the exclusive
 *   boundary-usage lock included, are released within this bound instead of the ~2 h 11 min
 *   of default TCP keepalive, during which every writer of the fleet would fail.
 *   The server arms it each time the backend goes idle inside the transaction, so the local
 *   value applies from the next statement on.
 */
export function setTransactionBounds(bounds: {
  lockTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
}): Prisma.Sql {
  return Prisma.sql`SELECT set_config('lock_timeout', ${`${bounds.lockTimeoutMs}ms`}, true),
    set_config('idle_in_transaction_session_timeout', ${`${bounds.idleInTransactionTimeoutMs}ms`}, true)`;
}

export interface ClaimRow {
  /** The database's now() (transaction start), which the bucket was checked against. */
  database_time: Date;
  /** The bucket lies inside the window around database_time; if not, nothing was inserted. */
  in_window: boolean;
  /** We inserted the row: this reporter won the period. */
  claimed: boolean;
}

export interface ClaimWindow {
  /** The oldest bucket accepted: now() minus this. */
  maxPastMs: number;
  /** The newest bucket accepted: now() plus this. */
  maxFutureMs: number;
}

/**
 * The election (coder's telemetry_locks row): whoever inserts (event type, period) first
 * reports that period. ON CONFLICT DO NOTHING instead of catching the unique violation,
 * because an error would abort the whole transaction; a lost claim simply inserts nothing.
 *
 * Locks: the new primary-key entry, until our transaction ends. A rival claiming the same
 * period concurrently blocks on it (speculative insertion waits for our transaction) and then
 * sees the conflict once we commit, or inserts if we roll back. So the loser cannot return
 * before the winner's cutover and outbox row are committed, and a failed winner frees the
 * period for the next attempt. The claim is taken before the exclusive boundary-usage lock
 * (in the cutover), always in that order, so two collections cannot wait on each other in a
 * cycle. The loser's "no row" is `claimed: false`.
 *
 * The skew guard, in the same statement: the bucket comes from the reporter's clock, so the
 * row is inserted only if the bucket lies within [now() − maxPastMs, now() + maxFutureMs].
 * Lock rows are purged once their bucket is older than the retention (by now()), and
 * maxPastMs is the retention minus a margin, so a period whose row may be gone (or go while
 * this transaction runs) can never be claimed again: no second report under the same id. A
 * reporter far ahead cannot claim (and cut over into) tomorrow's buckets either.
 */
export function claimPeriod(
  tables: SchemaTables,
  eventType: string,
  periodEndingAt: Date,
  window: ClaimWindow,
): Prisma.Sql {
  const bucket = timestamp(periodEndingAt);
  return Prisma.sql`WITH guard AS (
      SELECT now() AS database_time,
             ${bucket} BETWEEN now() - ${milliseconds(window.maxPastMs)}
                           AND now() + ${milliseconds(window.maxFutureMs)} AS in_window
    ), claim AS (
      INSERT INTO ${tables.sql.telemetry_locks} (event_type, period_ending_at)
      SELECT ${eventType}, ${bucket} FROM guard WHERE guard.in_window
      ON CONFLICT (event_type, period_ending_at) DO NOTHING
      RETURNING true AS claimed
    )
    SELECT guard.database_time, guard.in_window, EXISTS (SELECT 1 FROM claim) AS claimed FROM guard`;
}

export interface InsertReportParams {
  reportId: string;
  eventType: string;
  periodStartingAt: Date;
  periodDurationMs: number;
  /** The payload, already serialized (never JSON.stringify a BigInt: see snapshot.ts). */
  payloadJson: string;
}

/**
 * The outbox row, in the same transaction as the claim and the cutover: either all three
 * commit or none does. A plain INSERT on purpose: if a report for this period somehow exists
 * already (the lock row was purged while the report was still pending and a reporter's clock
 * went back a day), the unique key fails the transaction and the cutover rolls back with it,
 * so the rows it read stay in the table instead of vanishing into a report nobody writes.
 * created_at and next_attempt_at are the database's now(): due at once, aged by one clock.
 * Locks: only the new row's key entries.
 */
export function insertReport(tables: SchemaTables, params: InsertReportParams): Prisma.Sql {
  return Prisma.sql`INSERT INTO ${tables.sql.telemetry_reports}
      (report_id, event_type, period_starting_at, period_duration_ms, payload, created_at, next_attempt_at)
    VALUES (${params.reportId}::uuid, ${params.eventType}, ${timestamp(params.periodStartingAt)},
            ${params.periodDurationMs}::bigint, ${params.payloadJson}::jsonb,
            now(), now())`;
}

export interface LeasedReportRow {
  report_id: string;
  event_type: string;
  payload: string;
  attempts: number;
  /**
   * pg_current_wal_insert_lsn() when the row was leased: at or past the end of the commit
   * record of the cutover that wrote the report (see standbyFlushState).
   */
  wal_lsn: string;
  /** Physical standbys streaming from this server (pg_stat_replication, state streaming or unreadable). */
  standbys: number;
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
 * crash mid-send still counts as an attempt; its new value is the lease's token. "Due" and the
 * lease are the database's now(): two reporters whose clocks disagree still see one lease.
 * Rejected reports (dead letters, rejected_at set) are never due: an operator sends them again
 * (retryRejectedReports). `skip`: reports this pass already tried; a pass sends each report at
 * most once, whatever its backoff, so a short backoff never becomes a loop within one pass.
 */
export function leaseNextReport(
  tables: SchemaTables,
  leaseMs: number,
  skip: string[] = [],
): Prisma.Sql {
  const notTried =
    skip.length === 0 ? Prisma.sql`` : Prisma.sql`AND report_id <> ALL(${skip}::uuid[])`;
  return Prisma.sql`UPDATE ${tables.sql.telemetry_reports} r
       SET attempts = r.attempts + 1, next_attempt_at = now() + ${milliseconds(leaseMs)}
     WHERE r.report_id = (
       SELECT report_id FROM ${tables.sql.telemetry_reports}
        WHERE delivered_at IS NULL AND rejected_at IS NULL AND next_attempt_at <= now() ${notTried}
        ORDER BY created_at, report_id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING r.report_id::text AS report_id, r.event_type, r.payload::text AS payload, r.attempts,
              pg_current_wal_insert_lsn()::text AS wal_lsn,
              (SELECT count(*)::int FROM pg_stat_replication w
                WHERE ${physicalStandby(Prisma.sql`w`)}) AS standbys`;
}

/**
 * A walsender that feeds a streaming physical standby: not a logical replication slot's (a CDC
 * consumer confirming late says nothing about failover), not a base backup's, and not one still
 * in startup or catchup: a node that cannot follow the timeline (an old primary brought back
 * after a failover without pg_rewind) reconnects every few hundred ms and never streams, and
 * waiting for it would stop delivery for good; a standby catching up lacks far more than one
 * report. A row whose state the role cannot see (NULL: no pg_read_all_stats) counts: it may be
 * a standby, and makes the delivery unverified.
 */
function physicalStandby(w: Prisma.Sql): Prisma.Sql {
  return Prisma.sql`(${w}.state = 'streaming' OR ${w}.state IS NULL)
    AND NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                     WHERE s.active_pid = ${w}.pid AND s.slot_type = 'logical')`;
}

export interface StandbyFlushRow {
  standbys: number;
  /** Standbys whose position this role cannot read (no pg_monitor / pg_read_all_stats). */
  hidden: number;
  /** Visible standbys that have not flushed `lsn` yet. */
  behind: number;
}

/**
 * Have the standbys flushed WAL up to `lsn`? Delivery asks this before sending a report
 * (issue 18, item 5): with asynchronous replication a failover can lose a commit the old
 * primary acknowledged, and a report delivered from such a cutover would be counted again
 * after the failover (the new primary still has the rows). `lsn` is the insert position read
 * when the report was leased, after the cutover's commit record (a committed row is visible
 * only once its commit record is in the WAL), so a standby that flushed it has the report and
 * the cutover. Why not an LSN read inside the cutover's transaction: that comes before the
 * commit record, and a standby may have it and still lack the commit. Takes no locks.
 */
export function standbyFlushState(lsn: string): Prisma.Sql {
  return Prisma.sql`SELECT count(*)::int AS standbys,
      count(*) FILTER (WHERE w.state IS NULL)::int AS hidden,
      count(*) FILTER (WHERE w.state IS NOT NULL
                         AND (w.flush_lsn IS NULL OR w.flush_lsn < ${lsn}::pg_lsn))::int AS behind
    FROM pg_stat_replication w
   WHERE ${physicalStandby(Prisma.sql`w`)}`;
}

/**
 * The receiver acknowledged the report. No lease check: delivered is delivered, whoever sent
 * it. `delivered_at IS NULL` keeps the first acknowledgement's time. Locks the one row.
 */
export function markDelivered(tables: SchemaTables, reportId: string): Prisma.Sql {
  return Prisma.sql`UPDATE ${tables.sql.telemetry_reports}
       SET delivered_at = now(), last_error = NULL
     WHERE report_id = ${reportId}::uuid AND delivered_at IS NULL`;
}

export interface FailedReportRow {
  /** The refusal was the rejectAfterRefusals-th: the report is now rejected (a dead letter). */
  rejected: boolean;
  rejections: number;
}

export interface MarkFailedParams {
  reportId: string;
  /** The lease's token (attempts as leased). */
  attempts: number;
  error: string;
  retryDelayMs: number;
  /** The receiver refused this report for good (a permanent status). */
  permanent: boolean;
  /** Permanent refusals after which the report is rejected. */
  rejectAfterRefusals: number;
}

/**
 * The send failed: record why and when to try again. A permanent refusal also counts in
 * `rejections`, and the rejectAfterRefusals-th moves the report to the rejected state
 * (rejected_at = now()): kept, never purged, never due again until an operator retries it.
 * Applies only while our lease is the latest (attempts unchanged), so a sender whose lease ran
 * out cannot push back the retry of whoever leased the row after it. Locks the one row.
 * Returns no row when the lease was no longer ours.
 */
export function markFailed(tables: SchemaTables, params: MarkFailedParams): Prisma.Sql {
  const refusal = params.permanent ? 1 : 0;
  return Prisma.sql`UPDATE ${tables.sql.telemetry_reports}
       SET last_error = ${params.error},
           next_attempt_at = now() + ${milliseconds(params.retryDelayMs)},
           rejections = rejections + ${refusal}::int,
           rejected_at = CASE WHEN rejections + ${refusal}::int >= ${params.rejectAfterRefusals}::int
                              THEN now() END
     WHERE report_id = ${params.reportId}::uuid AND delivered_at IS NULL
       AND rejected_at IS NULL AND attempts = ${params.attempts}::int
    RETURNING rejected_at IS NOT NULL AS rejected, rejections`;
}

export interface RejectedReportRow {
  report_id: string;
  event_type: string;
  period_starting_at: Date;
  created_at: Date;
  attempts: number;
  rejections: number;
  last_error: string | null;
  rejected_at: Date;
}

/** The rejected reports (dead letters), oldest first, for operators. Takes no locks. */
export function listRejectedReports(tables: SchemaTables, limit: number): Prisma.Sql {
  return Prisma.sql`SELECT report_id::text AS report_id, event_type, period_starting_at, created_at,
           attempts, rejections, last_error, rejected_at
      FROM ${tables.sql.telemetry_reports}
     WHERE rejected_at IS NOT NULL AND delivered_at IS NULL
     ORDER BY created_at, report_id
     LIMIT ${limit}::int`;
}

/**
 * An operator sends rejected reports again: they become pending and due now, with their
 * refusal count reset (attempts, the lease token, keeps counting). `reportIds` null: every
 * rejected report. Locks the rows it updates; a rejected row holds no lease, so nothing waits.
 */
export function retryRejectedReports(tables: SchemaTables, reportIds: string[] | null): Prisma.Sql {
  const which =
    reportIds === null ? Prisma.sql`TRUE` : Prisma.sql`report_id = ANY(${reportIds}::uuid[])`;
  return Prisma.sql`UPDATE ${tables.sql.telemetry_reports}
       SET rejected_at = NULL, rejections = 0, next_attempt_at = now()
     WHERE rejected_at IS NOT NULL AND delivered_at IS NULL AND ${which}
    RETURNING report_id::text AS report_id`;
}

export interface NextAttemptRow {
  /** Milliseconds from the database's now() until the earliest pending report is due (≥ 0). */
  due_in_ms: number | null;
}

/**
 * How long until the earliest pending report is due (to schedule the next delivery), as a
 * duration on the database's clock, so the reporter's clock never has to agree with it.
 * Takes no locks.
 */
export function nextPendingAttempt(tables: SchemaTables): Prisma.Sql {
  return Prisma.sql`SELECT greatest(0, extract(epoch FROM min(next_attempt_at) - now()) * 1000)::float8 AS due_in_ms
    FROM ${tables.sql.telemetry_reports} WHERE delivered_at IS NULL AND rejected_at IS NULL`;
}

export interface OutboxBacklogRow {
  pending: bigint;
  /** Rejected reports (dead letters), waiting for an operator. */
  rejected: bigint;
  /** Age of the oldest pending report on the database's clock, null when none. */
  oldest_age_ms: number | null;
}

/**
 * The undelivered reports (pending and rejected apart) and the oldest pending one's age, for
 * the backlog metrics. Reads the pending-reports index (delivered_at, created_at); takes no
 * locks.
 */
export function outboxBacklog(tables: SchemaTables): Prisma.Sql {
  return Prisma.sql`SELECT count(*) FILTER (WHERE rejected_at IS NULL) AS pending,
      count(*) FILTER (WHERE rejected_at IS NOT NULL) AS rejected,
      greatest(0, extract(epoch FROM now() - min(created_at) FILTER (WHERE rejected_at IS NULL)) * 1000)::float8 AS oldest_age_ms
    FROM ${tables.sql.telemetry_reports} WHERE delivered_at IS NULL`;
}

/**
 * Retention of the outbox: reports delivered longer ago than retentionMs, by the database's
 * clock (a reporter a day ahead cannot purge anything early). Pending and rejected reports are
 * never deleted, however old (a rejected report has no delivered_at). Locks the deleted rows; a row leased for delivery is pending, so this
 * never touches it.
 */
export function deleteDeliveredReports(tables: SchemaTables, retentionMs: number): Prisma.Sql {
  return Prisma.sql`DELETE FROM ${tables.sql.telemetry_reports}
     WHERE delivered_at IS NOT NULL AND delivered_at < now() - ${milliseconds(retentionMs)}`;
}

/**
 * Retention of the election (coder's dbpurge: 24 h), by the database's clock. A purged period
 * cannot be claimed again: the claim refuses buckets older than the retention minus a margin
 * (claimPeriod), so its report id is never written twice. Locks the deleted rows; current
 * periods are far from the cutoff.
 */
export function deleteExpiredLocks(tables: SchemaTables, retentionMs: number): Prisma.Sql {
  return Prisma.sql`DELETE FROM ${tables.sql.telemetry_locks} WHERE period_ending_at < now() - ${milliseconds(retentionMs)}`;
}

/**
 * Retention of the flush sequences of replicas gone quiet. Compared with the database's now()
 * because flushes stamp updated_at with it. Takes no advisory lock: a replica that flushes
 * while this runs updates the row first (its DELETE then re-checks updated_at on the new row
 * version under READ COMMITTED and skips it) or finds it deleted and inserts a new one. Only a
 * flush retried after a week of silence could be applied twice, which no retry loop does.
 */
export function deleteIdleFlushSequences(tables: SchemaTables, idleMs: number): Prisma.Sql {
  return Prisma.sql`DELETE FROM ${tables.sql.boundary_usage_flush_sequences}
     WHERE updated_at < now() - ${milliseconds(idleMs)}`;
}

export interface ShutdownAccountRow {
  /** This replica id's flushed usage still in boundary_usage_stats (not yet cut over). */
  allowed_requests: bigint;
  denied_requests: bigint;
  /** Reports of the whole deployment waiting for delivery (not delivered, not rejected). */
  undelivered_reports: number;
  /** Dead letters: refused permanently, kept until an operator sends them again. */
  rejected_reports: number;
}

/**
 * Where a stopping replica's usage is (the runtime's stop report): what its row still holds,
 * waiting for the next period's cutover, and how many reports wait in the outbox. Plain reads,
 * no lock: a flush or a cutover running at the same moment makes it a moment's picture, which
 * is all a shutdown report needs.
 */
export function shutdownAccount(tables: SchemaTables, replicaId: string): Prisma.Sql {
  return Prisma.sql`SELECT
      (SELECT coalesce(sum(allowed_requests), 0)::bigint FROM ${tables.sql.boundary_usage_stats}
        WHERE replica_id = ${replicaId}::uuid) AS allowed_requests,
      (SELECT coalesce(sum(denied_requests), 0)::bigint FROM ${tables.sql.boundary_usage_stats}
        WHERE replica_id = ${replicaId}::uuid) AS denied_requests,
      (SELECT count(*)::int FROM ${tables.sql.telemetry_reports}
        WHERE delivered_at IS NULL AND rejected_at IS NULL) AS undelivered_reports,
      (SELECT count(*)::int FROM ${tables.sql.telemetry_reports}
        WHERE delivered_at IS NULL AND rejected_at IS NOT NULL) AS rejected_reports`;
}
