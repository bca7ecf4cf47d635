/**
 * collectSnapshot against a real PostgreSQL with a fake clock: coder's TestTelemetry_
 * BoundaryUsageSummary cases, the period arithmetic at bucket edges, the snapshot JSON and
 * the all-or-nothing transaction (claim, cutover, outbox row).
 */
import { BoundaryUsageStore, emptySummary } from '@usagekit/boundary-usage';
import { DatabaseError, type PrismaClient } from '@usagekit/db';
import {
  BOUNDARY_USAGE_EVENT_TYPE,
  parseJsonInteger,
  reportIdFor,
  serializeSnapshot,
  snapshotToJson,
  type SnapshotJson,
} from '../src/index.js';
import {
  clearTables,
  CollectingSink,
  FakeClock,
  flush,
  FREQUENCY_MS,
  lockRows,
  MINUTE_MS,
  outbox,
  reporter,
  statsTotals,
  useDatabase,
  uuid,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
/** Aligned to the 30-minute grid, as coder's test clock is. */
const ALIGNED = '2026-02-03T12:00:00.000Z';

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

describe("coder's TestTelemetry_BoundaryUsageSummary", () => {
  // Tracks (ws1,u1,10,2), (ws2,u1,5,1), (ws2,u2,3,0) on one replica → {2, 2, 18, 3}.
  test('IncludedInSnapshot: {2, 2, 18, 3}, period_start = now − 30 min, period_duration_ms = 1,800,000', async () => {
    const [ws1, ws2, u1, u2] = [uuid(), uuid(), uuid(), uuid()];
    await store.upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 2,
        uniqueUsersDelta: 2,
        uniqueWorkspacesCount: 2,
        uniqueUsersCount: 2,
        allowedRequests: 18,
        deniedRequests: 3,
        workspaceIds: [ws1, ws2],
        userIds: [u1, u2],
      }),
    );
    const clock = new FakeClock(ALIGNED);
    const snapshot = await reporter(prisma, clock, new CollectingSink()).collectSnapshot();

    const summary = snapshot.boundaryUsageSummary!;
    expect([
      summary.uniqueWorkspaces,
      summary.uniqueUsers,
      summary.allowedRequests,
      summary.deniedRequests,
    ]).toEqual([2n, 2n, 18n, 3n]);
    expect(summary.periodStart).toEqual(new Date(clock.now().getTime() - FREQUENCY_MS));
    expect(summary.periodDurationMs).toBe(1_800_000);

    const json = snapshotToJson(snapshot);
    expect(json.boundary_usage_summary).toMatchObject({
      unique_workspaces: 2,
      unique_users: 2,
      allowed_requests: 18,
      denied_requests: 3,
      period_start: '2026-02-03T11:30:00.000Z',
      period_duration_ms: 1_800_000,
      unique_workspaces_replica_sum: 2,
      unique_users_replica_sum: 2,
      replicas: 1,
      stale_replicas: 0,
    });
    expect(json.report_id).toBe(
      reportIdFor('test-deployment', BOUNDARY_USAGE_EVENT_TYPE, new Date(ALIGNED)),
    );
    expect(json.deployment_id).toBe('test-deployment');

    // The outbox holds exactly this JSON, for the period that ends where the claim starts.
    const rows = await outbox(prisma);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.report_id).toBe(snapshot.reportId);
    expect(JSON.parse(rows[0]!.payload)).toEqual(JSON.parse(serializeSnapshot(snapshot)));
    expect(rows[0]!.period_starting_at.toISOString()).toBe('2026-02-03T11:30:00.000Z');
    expect(rows[0]!.period_duration_ms).toBe(1_800_000n);
    expect(rows[0]!.delivered_at).toBeNull();
    expect(await lockRows(prisma)).toEqual([new Date(ALIGNED)]);
  });

  test('ResetAfterCollection: first summary allowed 5; clock +30 min; second summary allowed 0', async () => {
    await store.upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        allowedRequests: 5,
        deniedRequests: 1,
      }),
    );
    const clock = new FakeClock(ALIGNED);
    const telemetry = reporter(prisma, clock, new CollectingSink());
    const first = await telemetry.collectSnapshot();
    expect(first.boundaryUsageSummary!.allowedRequests).toBe(5n);

    clock.advance(FREQUENCY_MS);
    const second = await telemetry.collectSnapshot();
    // Non-null and zero, as coder sends every period; no rows also means no window.
    expect(second.boundaryUsageSummary).toMatchObject({
      ...emptySummary(),
      periodDurationMs: FREQUENCY_MS,
    });
    expect(second.reportId).not.toBe(first.reportId);
    expect(await outbox(prisma)).toHaveLength(2);
  });

  test('OnlyOneReplicaCollects: one summary with 30 allowed; the other has none and deleted nothing', async () => {
    const prismaB = db.client();
    const [replicaA, replicaB] = [uuid(), uuid()];
    await store.upsertStats(
      flush(replicaA, { uniqueWorkspacesDelta: 1, uniqueUsersDelta: 1, allowedRequests: 15 }),
    );
    await new BoundaryUsageStore(prismaB).upsertStats(
      flush(replicaB, { uniqueWorkspacesDelta: 1, uniqueUsersDelta: 1, allowedRequests: 15 }),
    );
    const clock = new FakeClock(ALIGNED);
    const first = await reporter(prisma, clock, new CollectingSink()).collectSnapshot();
    expect(first.boundaryUsageSummary!.allowedRequests).toBe(30n);
    expect(first.boundaryUsageSummary!.replicas).toBe(2);

    // Usage flushed after the cutover belongs to the next period; the loser must not touch it.
    await store.upsertStats(
      flush(replicaA, { uniqueWorkspacesDelta: 1, uniqueUsersDelta: 1, allowedRequests: 7 }),
    );
    clock.advance(29 * MINUTE_MS); // later, but inside the same bucket
    const second = await reporter(prismaB, clock, new CollectingSink()).collectSnapshot();
    expect(second.boundaryUsageSummary).toBeUndefined();
    expect(second.reportId).toBeUndefined();
    expect(snapshotToJson(second)).not.toHaveProperty('boundary_usage_summary');
    expect(await statsTotals(prisma)).toEqual({ rows: 1n, allowed: 7n, denied: 0n });
    expect(await outbox(prisma)).toHaveLength(1);
  });
});

describe('periods at bucket edges (fake clock)', () => {
  test('just before an edge claims the old bucket, just after it the new one, later in it nothing', async () => {
    const clock = new FakeClock('2026-02-03T12:29:59.999Z');
    const telemetry = reporter(prisma, clock, new CollectingSink());

    const before = await telemetry.collectSnapshot();
    expect(before.periodEndingAt.toISOString()).toBe('2026-02-03T12:00:00.000Z');
    expect(before.boundaryUsageSummary!.periodStart.toISOString()).toBe('2026-02-03T11:30:00.000Z');

    clock.set('2026-02-03T12:30:00.000Z');
    const after = await telemetry.collectSnapshot();
    expect(after.periodEndingAt.toISOString()).toBe('2026-02-03T12:30:00.000Z');
    expect(after.boundaryUsageSummary!.periodStart.toISOString()).toBe('2026-02-03T12:00:00.000Z');

    clock.set('2026-02-03T12:59:59.999Z');
    const sameBucket = await telemetry.collectSnapshot();
    expect(sameBucket.periodEndingAt.toISOString()).toBe('2026-02-03T12:30:00.000Z');
    expect(sameBucket.boundaryUsageSummary).toBeUndefined();

    expect(await lockRows(prisma)).toEqual([
      new Date('2026-02-03T12:00:00.000Z'),
      new Date('2026-02-03T12:30:00.000Z'),
    ]);
    const rows = await outbox(prisma);
    expect(rows.map((row) => row.report_id)).toEqual([before.reportId, after.reportId]);
  });

  test('another frequency: 5-minute periods', async () => {
    const clock = new FakeClock('2026-02-03T12:07:30.000Z');
    const snapshot = await reporter(prisma, clock, new CollectingSink(), {
      snapshotFrequencyMs: 5 * MINUTE_MS,
    }).collectSnapshot();
    expect(snapshot.periodEndingAt.toISOString()).toBe('2026-02-03T12:05:00.000Z');
    expect(snapshotToJson(snapshot).boundary_usage_summary).toMatchObject({
      period_start: '2026-02-03T12:00:00.000Z',
      period_duration_ms: 300_000,
    });
  });
});

describe('the snapshot JSON beyond coder', () => {
  test('exact uniques across replicas beside coder’s per-replica sums, and the real window', async () => {
    const prismaB = db.client();
    const [sharedUser, wsA, wsB] = [uuid(), uuid(), uuid()];
    // The same user on two replicas: coder counts 2, the exact count is 1.
    await store.upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        allowedRequests: 4,
        workspaceIds: [wsA],
        userIds: [sharedUser],
      }),
    );
    await new BoundaryUsageStore(prismaB).upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        allowedRequests: 6,
        workspaceIds: [wsB],
        userIds: [sharedUser],
      }),
    );
    const [rows] = await prisma.$queryRaw<{ first: Date; last: Date }[]>`
      SELECT min(window_start) AS first, max(updated_at) AS last FROM usagekit.boundary_usage_stats`;
    const snapshot = await reporter(
      prisma,
      new FakeClock(ALIGNED),
      new CollectingSink(),
    ).collectSnapshot();
    const json = snapshotToJson(snapshot).boundary_usage_summary!;
    expect(json).toMatchObject({
      unique_workspaces: 2,
      unique_users: 1,
      unique_workspaces_replica_sum: 2,
      unique_users_replica_sum: 2,
      allowed_requests: 10,
      replicas: 2,
      // The real window comes from the rows (database time), not from the nominal period.
      window_start: rows!.first.toISOString(),
      window_end: rows!.last.toISOString(),
    });
  });

  test('stale rows are deleted, not counted, and reported apart with their totals', async () => {
    await store.upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        allowedRequests: 3,
        deniedRequests: 1,
      }),
    );
    // A replica whose row sat through failed collections: its window began 3 h ago (> 2 × 30 min).
    await prisma.$executeRaw`INSERT INTO usagekit.boundary_usage_stats
      (replica_id, unique_workspaces_count, unique_users_count, allowed_requests, denied_requests, window_start, updated_at)
      VALUES (${uuid()}::uuid, 4, 2, 40, 9, now() - interval '3 hours', now() - interval '3 hours')`;
    const snapshot = await reporter(
      prisma,
      new FakeClock(ALIGNED),
      new CollectingSink(),
    ).collectSnapshot();
    expect(snapshotToJson(snapshot).boundary_usage_summary).toMatchObject({
      allowed_requests: 3,
      denied_requests: 1,
      replicas: 1,
      stale_replicas: 1,
      stale_unique_workspaces_replica_sum: 4,
      stale_unique_users_replica_sum: 2,
      stale_allowed_requests: 40,
      stale_denied_requests: 9,
    });
    expect(await statsTotals(prisma)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });
  });

  test('totals past 2^63 − 1 stay exact: decimal strings in the JSON and in the outbox', async () => {
    const prismaB = db.client();
    const big = 2n ** 62n + 1n;
    await store.upsertStats(flush(uuid(), { allowedRequests: big, deniedRequests: 2 }));
    await new BoundaryUsageStore(prismaB).upsertStats(
      flush(uuid(), { allowedRequests: big, deniedRequests: 3 }),
    );
    const snapshot = await reporter(
      prisma,
      new FakeClock(ALIGNED),
      new CollectingSink(),
    ).collectSnapshot();
    expect(snapshot.boundaryUsageSummary!.allowedRequests).toBe(2n ** 63n + 2n);

    const payload = JSON.parse((await outbox(prisma))[0]!.payload) as SnapshotJson;
    expect(payload.boundary_usage_summary!.allowed_requests).toBe('9223372036854775810');
    expect(payload.boundary_usage_summary!.denied_requests).toBe(5);
    expect(parseJsonInteger(payload.boundary_usage_summary!.allowed_requests)).toBe(2n ** 63n + 2n);
  });
});

describe('all or nothing', () => {
  test('a failing outbox write rolls back the claim and the cutover: the rows wait for the next attempt', async () => {
    await store.upsertStats(
      flush(uuid(), {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        allowedRequests: 11,
        deniedRequests: 2,
      }),
    );
    // A report for the same period under another id (as if the election row had been purged):
    // the unique (event_type, period_starting_at) key makes our INSERT fail inside the transaction.
    await prisma.$executeRaw`INSERT INTO usagekit.telemetry_reports (report_id, event_type, period_starting_at, period_duration_ms, payload)
      VALUES (${uuid()}::uuid, 'boundary_usage_summary', '2026-02-03T11:30:00Z', 1800000, '{}')`;
    const clock = new FakeClock(ALIGNED);
    const telemetry = reporter(prisma, clock, new CollectingSink());

    const failure = await telemetry.collectSnapshot().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(DatabaseError);
    expect((failure as DatabaseError).sqlState).toBe('23505');
    expect(await statsTotals(prisma)).toEqual({ rows: 1n, allowed: 11n, denied: 2n });
    expect(await lockRows(prisma)).toEqual([]);

    // Same period, obstacle gone: the same rows are reported, once.
    await prisma.$executeRaw`DELETE FROM usagekit.telemetry_reports`;
    const snapshot = await telemetry.collectSnapshot();
    expect(snapshot.boundaryUsageSummary!.allowedRequests).toBe(11n);
    expect(snapshot.reportId).toBe(
      reportIdFor('test-deployment', BOUNDARY_USAGE_EVENT_TYPE, new Date(ALIGNED)),
    );
    expect(await statsTotals(prisma)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });
  });

  test('a cutover failing after the claim leaves the period unclaimed and the rows in place', async () => {
    await store.upsertStats(
      flush(uuid(), { uniqueWorkspacesDelta: 1, uniqueUsersDelta: 1, allowedRequests: 8 }),
    );
    // A real store whose cutover reads the rows and then fails, as a lost connection would.
    class FailingStore extends BoundaryUsageStore {
      override async getAndResetSummaryInTransaction(
        ...args: Parameters<BoundaryUsageStore['getAndResetSummaryInTransaction']>
      ): ReturnType<BoundaryUsageStore['getAndResetSummaryInTransaction']> {
        await super.getAndResetSummaryInTransaction(...args);
        throw new Error('connection lost after the cutover statement');
      }
    }
    const clock = new FakeClock(ALIGNED);
    const failing = reporter(prisma, clock, new CollectingSink(), {
      store: new FailingStore(prisma),
    });
    await expect(failing.collectSnapshot()).rejects.toThrow(
      /connection lost after the cutover statement/,
    );
    expect(await statsTotals(prisma)).toEqual({ rows: 1n, allowed: 8n, denied: 0n });
    expect(await lockRows(prisma)).toEqual([]);
    expect(await outbox(prisma)).toEqual([]);

    const snapshot = await reporter(prisma, clock, new CollectingSink()).collectSnapshot();
    expect(snapshot.boundaryUsageSummary!.allowedRequests).toBe(8n);
  });
});
