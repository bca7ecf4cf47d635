/**
 * The raw baselines are only baselines if they do what the store does. Against a real
 * database: replaying the store's recorded statements (contenders d, f, h and the raw
 * cutover) leaves exactly the rows the store leaves and gives the same answers.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import type { Pool } from 'pg';
import {
  captureBaselines,
  createRawPool,
  defaultFlushParams,
  rawCutover,
  rawDefaultFlush,
  rawInteractiveFlush,
  type Baselines,
} from '../src/index';

interface StatsRow {
  unique_workspaces_count: string;
  unique_users_count: string;
  allowed_requests: string;
  denied_requests: string;
}

const WRITER = '44444444-4444-4444-8444-0000000000ff';

describe('raw node-postgres baselines, replayed from the wire', () => {
  let db: TestDatabase;
  let prisma: PrismaClient;
  let pool: Pool;
  let baselines: Baselines;

  beforeAll(async () => {
    db = await createTestDatabase();
    prisma = createPrismaClient({ databaseUrl: db.databaseUrl, maxConnections: 2 });
    pool = createRawPool(db.databaseUrl, 2);
    baselines = await captureBaselines(db.databaseUrl);
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

  it('records every call without problems', () => {
    expect(baselines.problems).toEqual([]);
    expect(baselines.defaultFlush.call.statements.length).toBeGreaterThan(0);
    expect(baselines.interactiveFlush.call.transaction).toBe(true);
    expect(baselines.cutover.transaction).toBe(true);
  });

  it.each([
    ['interactive (contender d)', 'interactive', 'd'],
    ['default, unnamed (contender f)', 'single-statement', 'f'],
    ['default, prepared (contender h)', 'single-statement', 'h'],
  ] as const)(
    '%s leaves the same row as the store and applies a sequence once',
    async (_name, flushMode, contender) => {
      const store = new BoundaryUsageStore(prisma, { flushMode });
      const ours = '44444444-4444-4444-8444-000000000001';
      const raw = '44444444-4444-4444-8444-000000000002';
      const rawFlush = (sequence: bigint) =>
        contender === 'd'
          ? rawInteractiveFlush(pool, baselines, raw, sequence)
          : rawDefaultFlush(pool, baselines, raw, sequence, contender === 'h');

      const storeApplied: boolean[] = [];
      const rawApplied: unknown[] = [];
      // A period's first flush (insert), a later one (update), and a repeat (refused).
      for (const sequence of [10n, 11n, 11n]) {
        storeApplied.push(
          (await store.upsertStats(defaultFlushParams(ours, sequence, WRITER))).applied,
        );
        rawApplied.push((await rawFlush(sequence))?.['applied']);
      }
      expect(storeApplied).toEqual([true, true, false]);
      expect(rawApplied).toEqual(storeApplied);
      expect(await row(raw)).toEqual(await row(ours));
      expect(await row(ours)).toMatchObject({ allowed_requests: '6', denied_requests: '2' });
    },
  );

  it('the raw cutover sums and empties the table exactly like getAndResetSummary', async () => {
    const store = new BoundaryUsageStore(prisma);
    const fill = async () => {
      for (const [i, replica] of [
        '55555555-5555-4555-8555-000000000001',
        '55555555-5555-4555-8555-000000000002',
      ].entries()) {
        await store.upsertStats(defaultFlushParams(replica, BigInt(100 + i), WRITER));
      }
    };
    await fill();
    const ours = await store.getAndResetSummary({ maxStalenessMs: 3_600_000 });
    await pool.query('TRUNCATE usagekit.boundary_usage_flush_sequences');
    await fill();
    const raw = await rawCutover(pool, baselines);
    expect({
      allowed_requests: String(raw.allowed_requests),
      denied_requests: String(raw.denied_requests),
      replicas: String(raw.replicas),
    }).toEqual({
      allowed_requests: String(ours.allowedRequests),
      denied_requests: String(ours.deniedRequests),
      replicas: String(ours.replicas),
    });
    expect(ours).toMatchObject({ allowedRequests: 6n, deniedRequests: 2n, replicas: 2 });
    const { rows } = await pool.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM usagekit.boundary_usage_stats',
    );
    expect(rows[0]!.n).toBe('0');
  });
});
