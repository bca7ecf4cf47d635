import type { BoundaryUsageSummary } from '@usagekit/boundary-usage';
import { jsonInteger, type JsonInteger } from '@usagekit/boundary-usage';

/** The telemetry_locks / telemetry_reports event type of the boundary usage summary (coder's). */
export const BOUNDARY_USAGE_EVENT_TYPE = 'boundary_usage_summary';

/** A cutover's summary plus the nominal period it is reported for. Counters are bigints. */
export interface BoundaryUsageReport extends BoundaryUsageSummary {
  /** The claimed bucket minus one frequency (coder: PeriodStart = now − frequency, aligned). */
  periodStart: Date;
  /** The snapshot frequency (coder: PeriodDurationMilliseconds). */
  periodDurationMs: number;
}

/** What one collection produced. */
export interface Snapshot {
  deploymentId: string;
  /** The reporter's clock when the collection started. */
  collectedAt: Date;
  /** The bucket this collection claimed or tried to claim: collectedAt floored to the frequency. */
  periodEndingAt: Date;
  /** The outbox row holding this snapshot. Absent when another replica had claimed the period. */
  reportId?: string;
  /** Absent when another replica already reported this period (coder: nil, omitted in JSON). */
  boundaryUsageSummary?: BoundaryUsageReport;
}

/** The wire form of {@link BoundaryUsageReport}: coder's names first, then ours. */
export interface BoundaryUsageSummaryJson {
  /** Exact distinct workspaces across all replicas. */
  unique_workspaces: JsonInteger;
  /** Exact distinct users across all replicas. */
  unique_users: JsonInteger;
  allowed_requests: JsonInteger;
  denied_requests: JsonInteger;
  /** ISO 8601, UTC. */
  period_start: string;
  period_duration_ms: JsonInteger;
  /** coder's unique_workspaces: the sum of each replica's distinct count. */
  unique_workspaces_replica_sum: JsonInteger;
  unique_users_replica_sum: JsonInteger;
  /** The real window: first window_start and last updated_at of the rows counted (null if none). */
  window_start: string | null;
  window_end: string | null;
  /** Replica rows counted. */
  replicas: number;
  /** Rows deleted but not counted because they were older than maxStalenessMs, and their totals. */
  stale_replicas: number;
  stale_unique_workspaces_replica_sum: JsonInteger;
  stale_unique_users_replica_sum: JsonInteger;
  stale_allowed_requests: JsonInteger;
  stale_denied_requests: JsonInteger;
}

/** The wire form of {@link Snapshot}; also the payload stored in the outbox and sent. */
export interface SnapshotJson {
  report_id?: string;
  deployment_id: string;
  collected_at: string;
  boundary_usage_summary?: BoundaryUsageSummaryJson;
}

/**
 * The snapshot as plain JSON values. Counters become numbers while they are safe integers and
 * decimal strings beyond (see json.ts), so `JSON.stringify` of the result never meets a BigInt
 * and never rounds. Optional parts are omitted, not null, as coder's `omitempty` does.
 */
export function snapshotToJson(snapshot: Snapshot): SnapshotJson {
  const json: SnapshotJson = {
    ...(snapshot.reportId === undefined ? {} : { report_id: snapshot.reportId }),
    deployment_id: snapshot.deploymentId,
    collected_at: snapshot.collectedAt.toISOString(),
  };
  const summary = snapshot.boundaryUsageSummary;
  if (summary) json.boundary_usage_summary = summaryToJson(summary);
  return json;
}

/** `JSON.stringify(snapshotToJson(snapshot))`. */
export function serializeSnapshot(snapshot: Snapshot): string {
  return JSON.stringify(snapshotToJson(snapshot));
}

function summaryToJson(summary: BoundaryUsageReport): BoundaryUsageSummaryJson {
  return {
    unique_workspaces: jsonInteger(summary.uniqueWorkspaces),
    unique_users: jsonInteger(summary.uniqueUsers),
    allowed_requests: jsonInteger(summary.allowedRequests),
    denied_requests: jsonInteger(summary.deniedRequests),
    period_start: summary.periodStart.toISOString(),
    period_duration_ms: jsonInteger(summary.periodDurationMs),
    unique_workspaces_replica_sum: jsonInteger(summary.uniqueWorkspacesReplicaSum),
    unique_users_replica_sum: jsonInteger(summary.uniqueUsersReplicaSum),
    window_start: summary.windowStart?.toISOString() ?? null,
    window_end: summary.windowEnd?.toISOString() ?? null,
    replicas: summary.replicas,
    stale_replicas: summary.staleReplicas,
    stale_unique_workspaces_replica_sum: jsonInteger(summary.stale.uniqueWorkspacesReplicaSum),
    stale_unique_users_replica_sum: jsonInteger(summary.stale.uniqueUsersReplicaSum),
    stale_allowed_requests: jsonInteger(summary.stale.allowedRequests),
    stale_denied_requests: jsonInteger(summary.stale.deniedRequests),
  };
}
