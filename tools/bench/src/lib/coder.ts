/**
 * coder's protocol, written by hand in raw node-postgres: the baseline users compare against
 * (coder/coder after #21805 and #21907; /work/shared/reference/coder-boundary-usage.md §4).
 *
 * Per flush, as coder's Go code runs it through pgx: BEGIN (pgx sends statements without
 * arguments as simple queries); `pg_advisory_xact_lock($1)` (coder's AcquireLock, exclusive),
 * or its shared twin for the variant that gives writers the shared lock; sqlc's
 * UpsertBoundaryUsageStats; COMMIT. pgx's default mode (QueryExecModeCacheStatement) prepares
 * every statement with arguments once per connection and then only binds and executes it, so
 * the lock and the upsert are named prepared statements here too. Four round trips.
 *
 * coder's upsert writes no ids and no sequence: it counts a retried flush twice and sums
 * per-replica unique counts. Ours does more per flush; the goal is that it still costs less.
 */
import { LockIds, schemaTables } from '@usagekit/db';
import type { Pool } from 'pg';
import { inTransaction } from './raw-pg.js';

/** The same advisory lock key as the store's (coder uses its own id 9; the key's value is immaterial). */
export const LOCK_KEY = LockIds.boundaryUsageStats.toString();

/**
 * sqlc's UpsertBoundaryUsageStats (v2/v3) as generated, with its parameters in sqlc's order:
 * $1 replica_id, $2 unique_workspaces_delta, $3 unique_users_delta, $4 allowed_requests,
 * $5 denied_requests, $6 unique_workspaces_count, $7 unique_users_count. The INSERT writes the
 * deltas; the UPDATE replaces the uniques with the cumulative counts and adds request deltas.
 */
export const CODER_UPSERT = `-- name: UpsertBoundaryUsageStats :one
INSERT INTO ${schemaTables().text.boundary_usage_stats} (
    replica_id,
    unique_workspaces_count,
    unique_users_count,
    allowed_requests,
    denied_requests,
    window_start,
    updated_at
) VALUES (
    $1,
    $2,
    $3,
    $4,
    $5,
    NOW(),
    NOW()
) ON CONFLICT (replica_id) DO UPDATE SET
    unique_workspaces_count = $6,
    unique_users_count = $7,
    allowed_requests = boundary_usage_stats.allowed_requests + EXCLUDED.allowed_requests,
    denied_requests = boundary_usage_stats.denied_requests + EXCLUDED.denied_requests,
    updated_at = NOW()
RETURNING (xmax = 0) AS new_period
`;

/** coder's AcquireLock (lock.sql): `pg_advisory_xact_lock($1)`, exclusive, until COMMIT. */
export const CODER_LOCK_EXCLUSIVE = `-- name: AcquireLock :exec
SELECT pg_advisory_xact_lock($1)
`;

/** The same with a shared lock: writers no longer queue behind each other. */
export const CODER_LOCK_SHARED = `-- name: AcquireLockShared :exec
SELECT pg_advisory_xact_lock_shared($1)
`;

export type CoderLock = 'exclusive' | 'shared';

/** One flush's values in coder's shape (the tracker's seven parameters). */
export interface CoderFlushValues {
  replicaId: string;
  uniqueWorkspacesDelta: bigint;
  uniqueUsersDelta: bigint;
  allowedRequests: bigint;
  deniedRequests: bigint;
  uniqueWorkspacesCount: bigint;
  uniqueUsersCount: bigint;
}

export function coderUpsertParams(v: CoderFlushValues): string[] {
  return [
    v.replicaId,
    v.uniqueWorkspacesDelta.toString(),
    v.uniqueUsersDelta.toString(),
    v.allowedRequests.toString(),
    v.deniedRequests.toString(),
    v.uniqueWorkspacesCount.toString(),
    v.uniqueUsersCount.toString(),
  ];
}

/**
 * Contenders k (exclusive) and l (shared): BEGIN; the advisory lock; the upsert; COMMIT. The
 * statement names are fixed, so each pooled connection prepares each statement once (as
 * pgx's statement cache does) and reuses it for every later flush.
 */
export async function coderFlush(
  pool: Pool,
  lock: CoderLock,
  values: CoderFlushValues,
): Promise<{ new_period: boolean }> {
  return inTransaction(pool, async (client) => {
    await client.query({
      name: lock === 'shared' ? 'coder_acquire_lock_shared' : 'coder_acquire_lock',
      text: lock === 'shared' ? CODER_LOCK_SHARED : CODER_LOCK_EXCLUSIVE,
      values: [LOCK_KEY],
    });
    const { rows } = await client.query<{ new_period: boolean }>({
      name: 'coder_upsert_boundary_usage_stats',
      text: CODER_UPSERT,
      values: coderUpsertParams(values),
    });
    return rows[0];
  });
}
