/**
 * The baseline contenders' SQL: the text the store sends (packages/boundary-usage/src/lib/sql.ts,
 * as Prisma renders it, with $n placeholders), copied here so raw node-postgres and pgbench run
 * exactly the same statements with the same parameters. Copied rather than imported because
 * sql.ts is internal to @usagekit/boundary-usage (one barrel per package).
 *
 * A copy can drift: {@link ./sql-drift.ts} captures what the store really sends and compares
 * it with these texts on every bench run (and in the bench's tests), so a stale baseline is
 * reported instead of silently measuring something else.
 */
import { DEFAULT_STORE_OPTIONS, NIL_WRITER_ID } from '@usagekit/boundary-usage';
import { LockIds } from '@usagekit/db';

export const LOCK_KEY = LockIds.boundaryUsageStats.toString();
export const LOCK_TIMEOUT = `${DEFAULT_STORE_OPTIONS.lockTimeoutMs}ms`;

/** sql.ts setLockTimeout(): transaction-local lock_timeout. Params: $1 lock timeout. */
export const SET_LOCK_TIMEOUT = `SELECT set_config('lock_timeout', $1, true)`;

/** sql.ts takeWriterLock('shared'): the writers' lock, held until COMMIT. Params: $1 key. */
export const TAKE_SHARED_LOCK = `SELECT pg_advisory_xact_lock_shared($1::bigint)`;

/** sql.ts takeCutoverLock(): the cutover's exclusive lock. Params: $1 key. */
export const TAKE_EXCLUSIVE_LOCK = `SELECT pg_advisory_xact_lock($1::bigint)`;

/**
 * sql.ts flushAfterLock() with a sequence, ids and no writer id (the nil writer): the flush
 * for a transaction that already holds the writer lock. Params: $1 replica, $2 writer, $3
 * sequence, $4 workspace ids, $5 user ids, $6 replica, $7/$8 unique deltas, $9 allowed, $10
 * denied, $11 writer (first_writer_id), $12/$13 cumulative unique counts.
 */
export const FLUSH_AFTER_LOCK = `WITH gate AS (SELECT 1), sequence AS (
          INSERT INTO boundary_usage_flush_sequences AS s (replica_id, writer_id, last_sequence, updated_at)
          SELECT $1::uuid, $2::uuid, $3::bigint, now() FROM gate
          ON CONFLICT (replica_id, writer_id) DO UPDATE
            SET last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
            WHERE s.last_sequence < EXCLUDED.last_sequence
          RETURNING s.last_sequence AS number
        ),
    ids AS (
      INSERT INTO boundary_usage_ids (kind, id)
      SELECT kind, id FROM (
        SELECT 'workspace' AS kind, w AS id FROM unnest($4::uuid[]) AS w
        UNION ALL
        SELECT 'user', u FROM unnest($5::uuid[]) AS u
      ) carried
       WHERE EXISTS (SELECT 1 FROM sequence)
       ORDER BY kind, id
      ON CONFLICT DO NOTHING
    ),
    stats AS (
      INSERT INTO boundary_usage_stats AS b (
        replica_id, unique_workspaces_count, unique_users_count,
        allowed_requests, denied_requests, window_start, updated_at, first_sequence, first_writer_id)
      SELECT $6::uuid, $7::bigint,
             $8::bigint, $9::bigint,
             $10::bigint, now(), now(), sequence.number, $11::uuid
        FROM sequence
      ON CONFLICT (replica_id) DO UPDATE SET
        unique_workspaces_count = $12::bigint,
        unique_users_count = $13::bigint,
        allowed_requests = b.allowed_requests + EXCLUDED.allowed_requests,
        denied_requests = b.denied_requests + EXCLUDED.denied_requests,
        updated_at = EXCLUDED.updated_at
      RETURNING (xmax = 0) AS new_period, NULL::text AS period
    )
    SELECT EXISTS (SELECT 1 FROM sequence) AS applied, (SELECT new_period FROM stats) AS new_period,
      (SELECT period FROM stats) AS period`;

/**
 * sql.ts flushWithLock(…, 'shared', …) with a sequence: lock_timeout, the shared lock and the
 * flush in ONE statement (the store's default flush). Params: $1 lock timeout, $2 key, then
 * the flush's parameters shifted by two ($3 replica … $15 cumulative unique users).
 */
export const FLUSH_WITH_SHARED_LOCK = `WITH
    config AS MATERIALIZED (SELECT set_config('lock_timeout', $1, true) AS v),
    lock AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($2::bigint) IS NULL AS granted FROM config),
    sequence AS (
          INSERT INTO boundary_usage_flush_sequences AS s (replica_id, writer_id, last_sequence, updated_at)
          SELECT $3::uuid, $4::uuid, $5::bigint, now() FROM lock
          ON CONFLICT (replica_id, writer_id) DO UPDATE
            SET last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
            WHERE s.last_sequence < EXCLUDED.last_sequence
          RETURNING s.last_sequence AS number
        ),
    ids AS (
      INSERT INTO boundary_usage_ids (kind, id)
      SELECT kind, id FROM (
        SELECT 'workspace' AS kind, w AS id FROM unnest($6::uuid[]) AS w
        UNION ALL
        SELECT 'user', u FROM unnest($7::uuid[]) AS u
      ) carried
       WHERE EXISTS (SELECT 1 FROM sequence)
       ORDER BY kind, id
      ON CONFLICT DO NOTHING
    ),
    stats AS (
      INSERT INTO boundary_usage_stats AS b (
        replica_id, unique_workspaces_count, unique_users_count,
        allowed_requests, denied_requests, window_start, updated_at, first_sequence, first_writer_id)
      SELECT $8::uuid, $9::bigint,
             $10::bigint, $11::bigint,
             $12::bigint, now(), now(), sequence.number, $13::uuid
        FROM sequence
      ON CONFLICT (replica_id) DO UPDATE SET
        unique_workspaces_count = $14::bigint,
        unique_users_count = $15::bigint,
        allowed_requests = b.allowed_requests + EXCLUDED.allowed_requests,
        denied_requests = b.denied_requests + EXCLUDED.denied_requests,
        updated_at = EXCLUDED.updated_at
      RETURNING (xmax = 0) AS new_period, NULL::text AS period
    )
    SELECT EXISTS (SELECT 1 FROM sequence) AS applied, (SELECT new_period FROM stats) AS new_period,
      (SELECT period FROM stats) AS period`;

/** sql.ts getAndResetSummary(): the cutover, under the exclusive lock. Params: $1 staleness ms. */
export const CUTOVER = `WITH
    deleted AS (DELETE FROM boundary_usage_stats RETURNING *),
    deleted_ids AS (DELETE FROM boundary_usage_ids RETURNING kind),
    marked AS (
      SELECT d.*, d.window_start >= now() - $1::bigint * interval '1 millisecond' AS fresh
        FROM deleted d
    )
    SELECT
      (SELECT count(*) FROM deleted_ids WHERE kind = 'workspace') AS unique_workspaces,
      (SELECT count(*) FROM deleted_ids WHERE kind = 'user') AS unique_users,
      COALESCE(sum(unique_workspaces_count) FILTER (WHERE fresh), 0)::text AS unique_workspaces_replica_sum,
      COALESCE(sum(unique_users_count) FILTER (WHERE fresh), 0)::text AS unique_users_replica_sum,
      COALESCE(sum(allowed_requests) FILTER (WHERE fresh), 0)::text AS allowed_requests,
      COALESCE(sum(denied_requests) FILTER (WHERE fresh), 0)::text AS denied_requests,
      count(*) FILTER (WHERE fresh) AS replicas,
      min(window_start) FILTER (WHERE fresh) AS window_start,
      max(updated_at) FILTER (WHERE fresh) AS window_end,
      count(*) FILTER (WHERE NOT fresh) AS stale_replicas,
      COALESCE(sum(unique_workspaces_count) FILTER (WHERE NOT fresh), 0)::text AS stale_unique_workspaces_replica_sum,
      COALESCE(sum(unique_users_count) FILTER (WHERE NOT fresh), 0)::text AS stale_unique_users_replica_sum,
      COALESCE(sum(allowed_requests) FILTER (WHERE NOT fresh), 0)::text AS stale_allowed_requests,
      COALESCE(sum(denied_requests) FILTER (WHERE NOT fresh), 0)::text AS stale_denied_requests
    FROM marked`;

/** One flush's values, in the store's units (what upsertStats is called with). */
export interface FlushValues {
  replicaId: string;
  sequence: bigint;
  uniqueWorkspacesDelta: bigint;
  uniqueUsersDelta: bigint;
  uniqueWorkspacesCount: bigint;
  uniqueUsersCount: bigint;
  allowedRequests: bigint;
  deniedRequests: bigint;
  workspaceIds: readonly string[];
  userIds: readonly string[];
}

/**
 * {@link FLUSH_AFTER_LOCK}'s parameters, encoded as adapter-pg encodes the store's: bigints
 * as decimal strings, id lists as JS arrays (node-postgres turns them into array literals).
 */
export function flushAfterLockParams(v: FlushValues): unknown[] {
  return [
    v.replicaId,
    NIL_WRITER_ID,
    v.sequence.toString(),
    v.workspaceIds,
    v.userIds,
    v.replicaId,
    v.uniqueWorkspacesDelta.toString(),
    v.uniqueUsersDelta.toString(),
    v.allowedRequests.toString(),
    v.deniedRequests.toString(),
    NIL_WRITER_ID,
    v.uniqueWorkspacesCount.toString(),
    v.uniqueUsersCount.toString(),
  ];
}

/** {@link FLUSH_WITH_SHARED_LOCK}'s parameters. */
export function flushWithLockParams(v: FlushValues): unknown[] {
  return [LOCK_TIMEOUT, LOCK_KEY, ...flushAfterLockParams(v)];
}
