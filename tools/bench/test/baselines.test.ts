/**
 * The new baselines do what they claim, on a real database: coder's protocol (contenders k
 * and l) has coder's upsert semantics and prepares its statements as pgx does, and the
 * cutover's lock hold can be timed through the public API.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import type { Pool } from 'pg';
import { createRawPool } from '../src/index';
import { coderFlush, type CoderFlushValues } from '../src/lib/coder';
import { exclusiveLockHoldMs, timeQueries } from '../src/lib/wire-timing';

interface StatsRow {
  unique_workspaces_count: string;
  unique_users_count: string;
  allowed_requests: string;
  denied_requests: string;
}

describe('baselines on a real database', () => {
  let db: TestDatabase;
  let prisma: PrismaClient;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    prisma = createPrismaClient({ databaseUrl: db.databaseUrl, maxConnections: 2 });
    pool = createRawPool(db.databaseUrl, 2);
  });

  afterAll(async () => {
    await prisma?.$disconnect();
    await pool?.end();
    await db?.drop();
  });

  beforeEach(async () => {
    await pool.query(
      'TRUNCATE usagekit.boundary_usage_stats, usagekit.boundary_usage_ids, usagekit.boundary_usage_flush_sequences',
    );
  });

  async function row(replicaId: string): Promise<StatsRow> {
    const { rows } = await pool.query<StatsRow>(
      `SELECT unique_workspaces_count::text, unique_users_count::text, allowed_requests::text,
              denied_requests::text
         FROM usagekit.boundary_usage_stats WHERE replica_id = $1`,
      [replicaId],
    );
    expect(rows).toHaveLength(1);
    return rows[0]!;
  }

  it.each(['exclusive', 'shared'] as const)(
    "coder's protocol (%s): the INSERT writes deltas, the UPDATE replaces uniques and adds requests",
    async (lock) => {
      const replicaId =
        lock === 'shared'
          ? '66666666-6666-4666-8666-000000000001'
          : '66666666-6666-4666-8666-000000000002';
      const flush = (v: Omit<CoderFlushValues, 'replicaId'>) =>
        coderFlush(pool, lock, { replicaId, ...v });
      // coder's own test (#21805): deltas 5/3 with counts 999 → INSERT stores 5/3.
      const first = await flush({
        uniqueWorkspacesDelta: 5n,
        uniqueUsersDelta: 3n,
        uniqueWorkspacesCount: 999n,
        uniqueUsersCount: 999n,
        allowedRequests: 100n,
        deniedRequests: 10n,
      });
      expect(first.new_period).toBe(true);
      expect(await row(replicaId)).toEqual({
        unique_workspaces_count: '5',
        unique_users_count: '3',
        allowed_requests: '100',
        denied_requests: '10',
      });
      const second = await flush({
        uniqueWorkspacesDelta: 1n,
        uniqueUsersDelta: 1n,
        uniqueWorkspacesCount: 8n,
        uniqueUsersCount: 5n,
        allowedRequests: 200n,
        deniedRequests: 20n,
      });
      expect(second.new_period).toBe(false);
      expect(await row(replicaId)).toEqual({
        unique_workspaces_count: '8',
        unique_users_count: '5',
        allowed_requests: '300',
        denied_requests: '30',
      });
    },
  );

  it("coder's protocol sends the lock and the upsert as named prepared statements, as pgx does", async () => {
    const single = createRawPool(db.databaseUrl, 1);
    try {
      const values = {
        replicaId: '66666666-6666-4666-8666-000000000003',
        uniqueWorkspacesDelta: 1n,
        uniqueUsersDelta: 1n,
        uniqueWorkspacesCount: 1n,
        uniqueUsersCount: 1n,
        allowedRequests: 1n,
        deniedRequests: 0n,
      };
      await coderFlush(single, 'shared', values);
      await coderFlush(single, 'shared', values);
      const { rows } = await single.query<{ name: string }>(
        'SELECT name FROM pg_prepared_statements WHERE NOT from_sql ORDER BY name',
      );
      expect(rows.map((r) => r.name)).toEqual([
        'coder_acquire_lock_shared',
        'coder_upsert_boundary_usage_stats',
      ]);
    } finally {
      await single.end();
    }
  });

  it("times the cutover's exclusive lock hold through the public API", async () => {
    const store = new BoundaryUsageStore(prisma);
    const { result, statements } = await timeQueries(() =>
      store.getAndResetSummary({ maxStalenessMs: 60_000 }),
    );
    expect(result.replicas).toBe(0);
    const hold = exclusiveLockHoldMs(statements);
    expect(hold).toBeDefined();
    expect(hold!).toBeGreaterThanOrEqual(0);
  });
});
