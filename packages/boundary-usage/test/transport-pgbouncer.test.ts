/**
 * Behind PgBouncer 1.18 in transaction mode with no configuration: createPrismaClient detects
 * the pooler (it refuses startup options), so there are no session settings and no prepared
 * statements, and the store's default flush runs as a read-committed transaction that bounds
 * its own lock waits. Skipped where pgbouncer is not installed (`apt-get install -y pgbouncer`).
 */
import { Client } from 'pg';
import { connectionProfile, LockTimeoutError, type PrismaClient } from '@usagekit/db';
import { usePgBouncer } from '@usagekit/test-support';
import { PGBOUNCER_INSTALL_HINT, requireProgram } from '@usagekit/testing';
import { BoundaryUsageStore } from '../src/index.js';
import { useDatabase, uuid } from './helpers.js';

// Skipped, with one printed line, where pgbouncer is not installed; CI sets
// USAGEKIT_REQUIRE_PROGRAMS=1, which turns the skip into a failure.
const describeWithPgBouncer = requireProgram('pgbouncer', PGBOUNCER_INSTALL_HINT)
  ? describe
  : describe.skip;

const db = useDatabase();

function flushOf(replicaId: string, sequence: bigint) {
  return {
    replicaId,
    sequence,
    uniqueWorkspacesDelta: 1,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    allowedRequests: 2,
    deniedRequests: 1,
    workspaceIds: [uuid()],
    userIds: [uuid()],
  };
}

describeWithPgBouncer('through PgBouncer in transaction mode', () => {
  const pgbouncer = usePgBouncer(db, { serverConnections: 2 });
  let prisma: PrismaClient;
  beforeAll(() => {
    prisma = pgbouncer.client(4);
  });

  test('the default flush works with no configuration: pooler detected, counts exact', async () => {
    expect(await connectionProfile(prisma)).toEqual({
      via: 'pooler',
      sessionSettings: false,
      preparedStatements: false,
    });
    const store = new BoundaryUsageStore(prisma);
    const replicas = [uuid(), uuid(), uuid()];
    await Promise.all(
      replicas.map(async (replicaId) => {
        for (let i = 1; i <= 5; i++) await store.upsertStats(flushOf(replicaId, BigInt(i)));
      }),
    );
    const summary = await store.getAndResetSummary({ maxStalenessMs: 3_600_000 });
    expect([summary.allowedRequests, summary.deniedRequests, summary.replicas]).toEqual([
      30n,
      15n,
      3,
    ]);
  });

  test('a held LOCK TABLE fails the flush with LOCK_TIMEOUT instead of waiting for the holder', async () => {
    const store = new BoundaryUsageStore(prisma, { lockTimeoutMs: 300 });
    const holder = new Client({ connectionString: db.database().databaseUrl });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE usagekit.boundary_usage_stats IN SHARE MODE');
    try {
      await expect(store.upsertStats(flushOf(uuid(), 1n))).rejects.toBeInstanceOf(LockTimeoutError);
    } finally {
      await holder.query('ROLLBACK');
      await holder.end();
    }
  });
});
