import type { Client } from 'pg';
import type { UsagekitTables } from './tables.js';

export interface OutboxReportRow {
  reportId: string;
  eventType: string;
  periodStartingAt: string;
  createdAt: string;
  ageMs: number;
  attempts: number;
  /** The receiver's answer (or the transport error) to the latest failed attempt. */
  lastError: string | null;
  /** When a reporter may send it next; also the lease of a send in progress. */
  nextAttemptAt: string;
  deliveredAt: string | null;
  /** Set aside as a dead letter after repeated permanent refusals (null: not rejected). */
  rejectedAt: string | null;
  /** Permanent refusals counted towards rejection (0 on a database without dead letters). */
  rejections: number;
}

/**
 * Which reports: `pending` (not delivered, not rejected; oldest first), `delivered` (newest
 * first), `rejected` (dead letters: refused for good by the receiver; oldest first).
 */
export type OutboxState = 'pending' | 'delivered' | 'rejected';

interface ReportRow {
  report_id: string;
  event_type: string;
  period_starting_at: Date;
  created_at: Date;
  age_ms: number;
  attempts: number;
  last_error: string | null;
  next_attempt_at: Date;
  delivered_at: Date | null;
  rejected_at: Date | null;
  rejections: number;
}

export interface ListOptions {
  limit: number;
  state: OutboxState;
  /** Pending reports whose last attempt failed. */
  failingOnly?: boolean;
}

/**
 * Whether this database has dead letters (`rejected_at`, `rejections`: the outbox migration of
 * issue 18). Before it, every undelivered report is pending and none is rejected.
 */
export async function hasDeadLetters(client: Client, tables: UsagekitTables): Promise<boolean> {
  const { rows } = await client.query<{ present: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_schema = $1 AND table_name = 'telemetry_reports'
                       AND column_name = 'rejected_at') AS present`,
    [tables.schema],
  );
  return rows[0]?.present === true;
}

/** `delivered_at IS NULL`, and not rejected where dead letters exist. */
export function pendingCondition(deadLetters: boolean): string {
  return deadLetters ? 'delivered_at IS NULL AND rejected_at IS NULL' : 'delivered_at IS NULL';
}

/** Reads the outbox; never the payloads (they can be large), never a lock. */
export async function listOutbox(
  client: Client,
  tables: UsagekitTables,
  options: ListOptions,
  deadLetters: boolean,
): Promise<OutboxReportRow[]> {
  if (options.state === 'rejected' && !deadLetters) return [];
  const where =
    options.state === 'delivered'
      ? 'delivered_at IS NOT NULL'
      : options.state === 'rejected'
        ? 'rejected_at IS NOT NULL AND delivered_at IS NULL'
        : `${pendingCondition(deadLetters)}${options.failingOnly ? ' AND last_error IS NOT NULL' : ''}`;
  const order = options.state === 'delivered' ? 'delivered_at DESC' : 'created_at, report_id';
  const deadLetterColumns = deadLetters
    ? 'rejected_at, rejections'
    : 'NULL::timestamptz AS rejected_at, 0 AS rejections';
  const { rows } = await client.query<ReportRow>(
    `SELECT report_id::text AS report_id, event_type, period_starting_at, created_at,
            extract(epoch FROM now() - created_at) * 1000 AS age_ms,
            attempts, last_error, next_attempt_at, delivered_at, ${deadLetterColumns}
       FROM ${tables.telemetryReports} WHERE ${where} ORDER BY ${order} LIMIT $1`,
    [options.limit],
  );
  return rows.map((row) => ({
    reportId: row.report_id,
    eventType: row.event_type,
    periodStartingAt: row.period_starting_at.toISOString(),
    createdAt: row.created_at.toISOString(),
    ageMs: Math.round(Number(row.age_ms)),
    attempts: row.attempts,
    lastError: row.last_error,
    nextAttemptAt: row.next_attempt_at.toISOString(),
    deliveredAt: row.delivered_at?.toISOString() ?? null,
    rejectedAt: row.rejected_at?.toISOString() ?? null,
    rejections: Number(row.rejections),
  }));
}

export interface RetryResult {
  /** Pending reports made due now: the next delivery pass of any reporter sends them. */
  due: string[];
  /** Rejected reports (dead letters) made pending again, due now, refusals reset. */
  revived: string[];
  /** Named ids that are neither pending nor rejected (unknown, or already delivered). */
  notPending: string[];
}

export type RetryTarget = { reportIds: string[] } | { allPending: true } | { allRejected: true };

/**
 * Makes pending reports due now, the documented way to skip the backoff after a receiver
 * comes back (`next_attempt_at = least(next_attempt_at, now())`: a report already due keeps
 * its time). A report being sent right now has its lease in next_attempt_at too; moving it
 * lets a second reporter send it as well, which the receiver drops by its Idempotency-Key (the
 * report id). One statement, locking only the rows it updates. Rejected reports are not
 * touched here: `reviveRejected` (main.ts) sends them again through @usagekit/telemetry.
 */
export async function makePendingDue(
  client: Client,
  tables: UsagekitTables,
  reportIds: string[] | null,
  deadLetters: boolean,
): Promise<string[]> {
  const byId = reportIds === null ? '' : 'AND report_id = ANY($1::uuid[])';
  const { rows } = await client.query<{ report_id: string }>(
    `UPDATE ${tables.telemetryReports}
        SET next_attempt_at = least(next_attempt_at, now())
      WHERE ${pendingCondition(deadLetters)} ${byId}
      RETURNING report_id::text AS report_id`,
    reportIds === null ? [] : [reportIds],
  );
  return rows.map((row) => row.report_id);
}
