/**
 * Fills the tables fast, with one INSERT … SELECT generate_series each, then VACUUM ANALYZE so
 * the cutover meets settled tables (hint bits set, visibility map current), as it does after
 * a period of flushes and autovacuum, instead of paying for the fill's first-touch costs.
 */
import { schemaTables } from '@usagekit/db';
import type { BenchDatabase } from './database.js';

/** The bench migrates with the default schema (usagekit). */
const tables = schemaTables().text;

/** Rows for `count` replicas, all inside the staleness bound the sections use. */
export async function fillStats(db: BenchDatabase, count: number): Promise<void> {
  await db.query(
    `INSERT INTO ${tables.boundary_usage_stats}
       (replica_id, unique_workspaces_count, unique_users_count, allowed_requests, denied_requests, window_start, updated_at)
     SELECT md5('replica-' || g)::uuid, g % 97, g % 31, g, g % 7, now() - interval '10 minutes', now()
       FROM generate_series(1, $1::int) AS g`,
    [count],
  );
  await db.query(`VACUUM (ANALYZE) ${tables.boundary_usage_stats}`);
}

/** `count` distinct ids, half workspaces and half users. */
export async function fillIds(db: BenchDatabase, count: number): Promise<void> {
  await db.query(
    `INSERT INTO ${tables.boundary_usage_ids} (kind, id)
     SELECT CASE WHEN g % 2 = 0 THEN 'workspace' ELSE 'user' END, md5('id-' || g)::uuid
       FROM generate_series(1, $1::int) AS g`,
    [count],
  );
  await db.query(`VACUUM (ANALYZE) ${tables.boundary_usage_ids}`);
}

/** The staleness bound every cutover in the bench uses: all filled rows count as fresh. */
export const MAX_STALENESS_MS = 3_600_000;
