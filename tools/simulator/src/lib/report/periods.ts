import type { ReceivedReport } from '../collector.js';

/** One reported period, as the collector received it. Counters are bigints. */
export interface PeriodRow {
  reportId: string;
  /** Nominal period (coder's period_start and duration). */
  periodStart: string;
  periodDurationMs: number;
  /** The real window: first window_start and last updated_at of the rows counted. */
  windowStart: string | null;
  windowEnd: string | null;
  /** Replica rows counted, and rows dropped as stale (reported apart). */
  replicas: number;
  staleReplicas: number;
  /** Exact distinct counts across replicas. */
  uniqueWorkspaces: bigint;
  uniqueUsers: bigint;
  /** coder's numbers: the sum of each replica's distinct count. */
  uniqueWorkspacesReplicaSum: bigint;
  uniqueUsersReplicaSum: bigint;
  allowed: bigint;
  denied: bigint;
  staleAllowed: bigint;
  staleDenied: bigint;
  /** Copies the collector received (more than one: a redelivery, deduplicated). */
  copiesReceived: number;
  /** Collected by the simulator itself after the replicas stopped (the last, partial period). */
  finalCollection: boolean;
}

/**
 * Reads the collector's reports into period rows, oldest period first. Reports that are not a
 * boundary usage snapshot are returned apart as problems: the account cannot include them.
 */
export function periodRows(
  received: readonly ReceivedReport[],
  finalReportId: string | undefined,
): { rows: PeriodRow[]; problems: string[] } {
  const rows: PeriodRow[] = [];
  const problems: string[] = [];
  for (const report of received) {
    try {
      rows.push(periodRow(report, finalReportId));
    } catch (error) {
      problems.push(
        `report ${report.idempotencyKey} is not a boundary usage snapshot: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
  }
  rows.sort(
    (a, b) => a.periodStart.localeCompare(b.periodStart) || a.reportId.localeCompare(b.reportId),
  );
  return { rows, problems };
}

function periodRow(report: ReceivedReport, finalReportId: string | undefined): PeriodRow {
  const body = asObject(report.body, 'body');
  const summary = asObject(body['boundary_usage_summary'], 'boundary_usage_summary');
  const reportId =
    typeof body['report_id'] === 'string' ? body['report_id'] : report.idempotencyKey;
  return {
    reportId,
    periodStart: text(summary, 'period_start'),
    periodDurationMs: Number(counter(summary, 'period_duration_ms')),
    windowStart: optionalText(summary, 'window_start'),
    windowEnd: optionalText(summary, 'window_end'),
    replicas: Number(counter(summary, 'replicas')),
    staleReplicas: Number(counter(summary, 'stale_replicas')),
    uniqueWorkspaces: counter(summary, 'unique_workspaces'),
    uniqueUsers: counter(summary, 'unique_users'),
    uniqueWorkspacesReplicaSum: counter(summary, 'unique_workspaces_replica_sum'),
    uniqueUsersReplicaSum: counter(summary, 'unique_users_replica_sum'),
    allowed: counter(summary, 'allowed_requests'),
    denied: counter(summary, 'denied_requests'),
    staleAllowed: counter(summary, 'stale_allowed_requests'),
    staleDenied: counter(summary, 'stale_denied_requests'),
    copiesReceived: report.copies,
    finalCollection: reportId === finalReportId || report.idempotencyKey === finalReportId,
  };
}

function asObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`${what} is missing`);
  return value as Record<string, unknown>;
}

/** A counter as the telemetry JSON writes it: a safe-integer number, or a decimal string. */
function counter(object: Record<string, unknown>, field: string): bigint {
  const value = object[field];
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  throw new Error(`${field} is not an integer (${JSON.stringify(value)})`);
}

function text(object: Record<string, unknown>, field: string): string {
  const value = object[field];
  if (typeof value !== 'string') throw new Error(`${field} is not a string`);
  return value;
}

function optionalText(object: Record<string, unknown>, field: string): string | null {
  const value = object[field];
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') throw new Error(`${field} is not a string`);
  return value;
}
