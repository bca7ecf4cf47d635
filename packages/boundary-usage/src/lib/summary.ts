import type { CutoverRow } from './sql.js';

/** Totals of the rows the cutover left out of the summary because they were stale. */
export interface StaleTotals {
  uniqueWorkspacesReplicaSum: bigint;
  uniqueUsersReplicaSum: bigint;
  allowedRequests: bigint;
  deniedRequests: bigint;
}

/** What one cutover read and deleted. Every counter is a bigint, end to end. */
export interface BoundaryUsageSummary {
  /** Distinct workspaces seen by any replica since the last cutover (exact, across replicas). */
  uniqueWorkspaces: bigint;
  /** Distinct users seen by any replica since the last cutover (exact, across replicas). */
  uniqueUsers: bigint;
  /** coder's number: the sum over replicas of each replica's distinct workspaces. */
  uniqueWorkspacesReplicaSum: bigint;
  /** coder's number: the sum over replicas of each replica's distinct users. */
  uniqueUsersReplicaSum: bigint;
  allowedRequests: bigint;
  deniedRequests: bigint;
  /** Replica rows counted (fresh rows). */
  replicas: number;
  /** Earliest window_start of the counted rows: when the data really starts. Null if none. */
  windowStart: Date | null;
  /** Latest updated_at of the counted rows: the last flush included. Null if none. */
  windowEnd: Date | null;
  /** Rows deleted but not counted because their window started before the staleness bound. */
  staleReplicas: number;
  stale: StaleTotals;
}

export function emptySummary(): BoundaryUsageSummary {
  return {
    uniqueWorkspaces: 0n,
    uniqueUsers: 0n,
    uniqueWorkspacesReplicaSum: 0n,
    uniqueUsersReplicaSum: 0n,
    allowedRequests: 0n,
    deniedRequests: 0n,
    replicas: 0,
    windowStart: null,
    windowEnd: null,
    staleReplicas: 0,
    stale: {
      uniqueWorkspacesReplicaSum: 0n,
      uniqueUsersReplicaSum: 0n,
      allowedRequests: 0n,
      deniedRequests: 0n,
    },
  };
}

/** Checks and converts the cutover's row ($queryRaw's row type is an unchecked cast). */
export function summaryFromRow(row: CutoverRow | undefined): BoundaryUsageSummary {
  if (!row)
    throw new Error('getAndResetSummary: the cutover returned no row (it always returns one)');
  return {
    uniqueWorkspaces: toBigInt('unique_workspaces', row.unique_workspaces),
    uniqueUsers: toBigInt('unique_users', row.unique_users),
    uniqueWorkspacesReplicaSum: toBigInt(
      'unique_workspaces_replica_sum',
      row.unique_workspaces_replica_sum,
    ),
    uniqueUsersReplicaSum: toBigInt('unique_users_replica_sum', row.unique_users_replica_sum),
    allowedRequests: toBigInt('allowed_requests', row.allowed_requests),
    deniedRequests: toBigInt('denied_requests', row.denied_requests),
    replicas: Number(toBigInt('replicas', row.replicas)),
    windowStart: row.window_start,
    windowEnd: row.window_end,
    staleReplicas: Number(toBigInt('stale_replicas', row.stale_replicas)),
    stale: {
      uniqueWorkspacesReplicaSum: toBigInt(
        'stale_unique_workspaces_replica_sum',
        row.stale_unique_workspaces_replica_sum,
      ),
      uniqueUsersReplicaSum: toBigInt(
        'stale_unique_users_replica_sum',
        row.stale_unique_users_replica_sum,
      ),
      allowedRequests: toBigInt('stale_allowed_requests', row.stale_allowed_requests),
      deniedRequests: toBigInt('stale_denied_requests', row.stale_denied_requests),
    },
  };
}

function toBigInt(column: string, value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  throw new Error(`getAndResetSummary: column ${column} has unexpected value ${String(value)}`);
}
