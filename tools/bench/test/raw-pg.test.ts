/**
 * The baseline is only a baseline if it does what the store does. Against a real database:
 * the raw node-postgres flushes leave exactly the rows the store leaves, return the same
 * answers, and send byte-identical SQL with identical parameters.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import type { Pool } from 'pg';
import {
  checkBaselineSql,
  createRawPool,
  rawCutover,
  rawFlushInteractive,
  rawFlushSingleStatement,
} from '../src/index';
import type { FlushValues } from '../src/lib/raw-sql';

const W1 = '11111111-1111-4111-8111-111111111111';
const W2 = '22222222-2222-4222-8222-222222222222';
const U1 = '33333333-3333-4333-8333-333333333333';

interface StatsRow {
  unique_workspaces_count: string;
  unique_users_count: string;
  allowed_requests: string;
  denied_requests: string;
  window_start_is_first_insert: boolean;
  last_sequence: string;
}

describe('raw node-postgres baseline', () => {
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
      'TRUNCATE boundary_usage_stats, boundary_usage_ids, boundary_usage_flush_sequences',
    );
  });

  async function row(replicaId: string): Promise<StatsRow> {
    const { rows } = await pool.query<StatsRow>(
      `SELECT b.unique_workspaces_count::text, b.unique_users_count::text, b.allowed_requests::text,
              b.denied_requests::text, b.window_start < b.updated_at OR b.window_start = b.updated_at AS window_start_is_first_insert,
              s.last_sequence::text
         FROM boundary_usage_stats b JOIN boundary_usage_flush_sequences s USING (replica_id)
        WHERE replica_id = $1`,
      [replicaId],
    );
    expect(rows).toHaveLength(1);
    return rows[0]!;
  }

  /** Three flushes: a period's first (insert), a later one (update), and a duplicate (skipped). */
  const flushes = (replicaId: string): FlushValues[] => [
    {
      replicaId,
      sequence: 10n,
      uniqueWorkspacesDelta: 1n,
      uniqueUsersDelta: 1n,
      uniqueWorkspacesCount: 1n,
      uniqueUsersCount: 1n,
      allowedRequests: 5n,
      deniedRequests: 2n,
      workspaceIds: [W1],
      userIds: [U1],
    },
    {
      replicaId,
      sequence: 11n,
      uniqueWorkspacesDelta: 1n,
      uniqueUsersDelta: 0n,
      uniqueWorkspacesCount: 2n,
      uniqueUsersCount: 1n,
      allowedRequests: 7n,
      deniedRequests: 0n,
      workspaceIds: [W2],
      userIds: [],
    },
    {
      replicaId,
      sequence: 11n,
      uniqueWorkspacesDelta: 9n,
      uniqueUsersDelta: 9n,
      uniqueWorkspacesCount: 9n,
      uniqueUsersCount: 9n,
      allowedRequests: 1000n,
      deniedRequests: 1000n,
      workspaceIds: [],
      userIds: [],
    },
  ];

  it.each([
    ['interactive (contender d)', rawFlushInteractive, 'interactive'],
    ['single statement (contender f)', rawFlushSingleStatement, 'single-statement'],
  ] as const)(
    '%s leaves the same row as the store and answers the same',
    async (_name, rawFlush, flushMode) => {
      const store = new BoundaryUsageStore(prisma, { flushMode });
      const ours = '44444444-4444-4444-8444-000000000001';
      const raw = '44444444-4444-4444-8444-000000000002';

      const storeAnswers = [];
      for (const v of flushes(ours)) {
        // The store answers a duplicate with its stored sequence too (a separate read).
        const { applied, newPeriod } = await store.upsertStats({ ...v, sequence: v.sequence });
        storeAnswers.push({ applied, newPeriod });
      }
      const rawAnswers = [];
      for (const v of flushes(raw)) {
        const r = await rawFlush(pool, v);
        rawAnswers.push({ applied: r.applied, newPeriod: r.applied && r.new_period === true });
      }

      expect(storeAnswers).toEqual([
        { applied: true, newPeriod: true },
        { applied: true, newPeriod: false },
        { applied: false, newPeriod: false },
      ]);
      expect(rawAnswers).toEqual(storeAnswers);
      expect(await row(raw)).toEqual(await row(ours));
      expect(await row(ours)).toMatchObject({
        unique_workspaces_count: '2',
        unique_users_count: '1',
        allowed_requests: '12',
        denied_requests: '2',
        last_sequence: '11',
      });
      const { rows: ids } = await pool.query<{ kind: string; id: string }>(
        'SELECT kind, id::text FROM boundary_usage_ids ORDER BY kind, id',
      );
      expect(ids).toEqual([
        { kind: 'user', id: U1 },
        { kind: 'workspace', id: W1 },
        { kind: 'workspace', id: W2 },
      ]);
    },
  );

  it('the raw cutover sums and empties the table exactly like getAndResetSummary', async () => {
    const store = new BoundaryUsageStore(prisma);
    const fill = async () => {
      for (const [i, v] of flushes('55555555-5555-4555-8555-000000000001').slice(0, 2).entries()) {
        await rawFlushSingleStatement(pool, { ...v, sequence: BigInt(100 + i) });
      }
      await rawFlushSingleStatement(pool, {
        ...flushes('55555555-5555-4555-8555-000000000002')[0]!,
        sequence: 1n,
      });
    };
    await fill();
    const ours = await store.getAndResetSummary({ maxStalenessMs: 60_000 });
    await pool.query('TRUNCATE boundary_usage_flush_sequences');
    await fill();
    const raw = await rawCutover(pool, 60_000);
    expect({
      unique_workspaces: raw.unique_workspaces,
      unique_users: raw.unique_users,
      allowed_requests: raw.allowed_requests,
      denied_requests: raw.denied_requests,
      replicas: raw.replicas,
    }).toEqual({
      unique_workspaces: String(ours.uniqueWorkspaces),
      unique_users: String(ours.uniqueUsers),
      allowed_requests: String(ours.allowedRequests),
      denied_requests: String(ours.deniedRequests),
      replicas: String(ours.replicas),
    });
    expect(ours).toMatchObject({
      uniqueWorkspaces: 2n,
      uniqueUsers: 1n,
      allowedRequests: 17n,
      replicas: 2,
    });
    const { rows } = await pool.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM boundary_usage_stats',
    );
    expect(rows[0]!.n).toBe('0');
  });

  it('sends byte-identical statements and parameters (checked on the wire)', async () => {
    const report = await checkBaselineSql(db.databaseUrl);
    if (!report.matches) {
      throw new Error(
        `tools/bench/src/lib/raw-sql.ts no longer matches packages/boundary-usage/src/lib/sql.ts; copy the new SQL:\n${report.mismatches.join('\n')}`,
      );
    }
    expect(report.mismatches).toEqual([]);
  });
});
