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
}

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
}

export interface ListOptions {
  limit: number;
  /** Recently delivered reports (newest first) instead of pending ones (oldest first). */
  delivered: boolean;
  /** Pending reports whose last attempt failed. */
  failingOnly?: boolean;
}

/** Reads the outbox; never the payloads (they can be large), never a lock. */
export async function listOutbox(
  client: Client,
  tables: UsagekitTables,
  options: ListOptions,
): Promise<OutboxReportRow[]> {
  const where = options.delivered
    ? 'delivered_at IS NOT NULL'
    : `delivered_at IS NULL${options.failingOnly ? ' AND last_error IS NOT NULL' : ''}`;
  const order = options.delivered ? 'delivered_at DESC' : 'created_at, report_id';
  const { rows } = await client.query<ReportRow>(
    `SELECT report_id::text AS report_id, event_type, period_starting_at, created_at,
            extract(epoch FROM now() - created_at) * 1000 AS age_ms,
            attempts, last_error, next_attempt_at, delivered_at
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
  }));
}

export interface RetryResult {
  /** Reports made due now: the next delivery pass of any reporter sends them. */
  due: string[];
  /** Named ids that are not pending reports (unknown, or already delivered). */
  notPending: string[];
}

/**
 * Makes pending reports due now (`next_attempt_at = now()`), the documented way to skip the
 * backoff after a receiver comes back. A report already due keeps its time (least), so a
 * retry never delays anything. A report whose send is in flight has its lease in next_attempt_at
 * too; moving it lets a second reporter send it as well, which the receiver drops by its
 * Idempotency-Key (the report id). Locks the updated rows for the statement.
 */
export async function retryReports(
  client: Client,
  tables: UsagekitTables,
  target: { reportIds: string[] } | { allPending: true },
): Promise<RetryResult> {
  const byId = 'reportIds' in target;
  const { rows } = await client.query<{ report_id: string }>(
    `UPDATE ${tables.telemetryReports}
        SET next_attempt_at = least(next_attempt_at, now())
      WHERE delivered_at IS NULL ${byId ? 'AND report_id = ANY($1::uuid[])' : ''}
      RETURNING report_id::text AS report_id`,
    byId ? [target.reportIds] : [],
  );
  const due = rows.map((row) => row.report_id);
  const found = new Set(due);
  return { due, notPending: byId ? target.reportIds.filter((id) => !found.has(id)) : [] };
}
