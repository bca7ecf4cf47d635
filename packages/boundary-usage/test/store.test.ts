import { LockIds, type PrismaClient } from '@usagekit/db';
import { BoundaryUsageStore, InvalidInputError, type UpsertStatsParams } from '../src/index.js';
import {
  clearTables,
  gate,
  holdCutoverLock,
  someoneWaitsForAdvisoryLock,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const HOUR_MS = 3_600_000;

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

function flush(replicaId: string, counts: Partial<UpsertStatsParams> = {}): UpsertStatsParams {
  return {
    replicaId,
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 0,
    uniqueWorkspacesCount: 0,
    uniqueUsersCount: 0,
    allowedRequests: 0,
    deniedRequests: 0,
    ...counts,
  };
}

async function row(replicaId: string) {
  const rows = await prisma.$queryRaw<
    {
      unique_workspaces_count: bigint;
      unique_users_count: bigint;
      allowed_requests: bigint;
      denied_requests: bigint;
      window_start: Date;
      updated_at: Date;
    }[]
  >`SELECT * FROM usagekit.boundary_usage_stats WHERE replica_id = ${replicaId}::uuid`;
  return rows[0];
}

describe.each(['single-statement', 'interactive'] as const)('upsertStats (%s)', (flushMode) => {
  let modeStore: BoundaryUsageStore;
  beforeAll(() => {
    modeStore = new BoundaryUsageStore(prisma, { flushMode });
  });

  // coder UpsertBoundaryUsageStats_Insert (#21805): INSERT stores the deltas, not the counts.
  test('insert writes the unique deltas (5/3 with counts 999 gives 5/3) and reports a new period', async () => {
    const replicaId = uuid();
    const result = await modeStore.upsertStats(
      flush(replicaId, {
        uniqueWorkspacesDelta: 5,
        uniqueUsersDelta: 3,
        uniqueWorkspacesCount: 999,
        uniqueUsersCount: 999,
        allowedRequests: 100,
        deniedRequests: 10,
      }),
    );
    expect(result).toEqual({ newPeriod: true, applied: true });
    const stored = await row(replicaId);
    expect([stored?.unique_workspaces_count, stored?.unique_users_count]).toEqual([5n, 3n]);
    expect([stored?.allowed_requests, stored?.denied_requests]).toEqual([100n, 10n]);
  });

  // coder UpsertBoundaryUsageStats_Update: uniques replaced {8, 5}, requests added.
  test('update replaces uniques with the cumulative counts and adds request deltas', async () => {
    const replicaId = uuid();
    await modeStore.upsertStats(
      flush(replicaId, {
        uniqueWorkspacesDelta: 5,
        uniqueUsersDelta: 3,
        allowedRequests: 100,
        deniedRequests: 10,
      }),
    );
    const first = await row(replicaId);
    const result = await modeStore.upsertStats(
      flush(replicaId, {
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        uniqueWorkspacesCount: 8,
        uniqueUsersCount: 5,
        allowedRequests: 200,
        deniedRequests: 20,
      }),
    );
    expect(result).toEqual({ newPeriod: false, applied: true });
    const second = await row(replicaId);
    expect([second?.unique_workspaces_count, second?.unique_users_count]).toEqual([8n, 5n]);
    expect([second?.allowed_requests, second?.denied_requests]).toEqual([300n, 30n]);
    // window_start is set by the insert only; updated_at moves.
    expect(second?.window_start.getTime()).toBe(first?.window_start.getTime());
    expect(second!.updated_at.getTime()).toBeGreaterThanOrEqual(first!.updated_at.getTime());
  });

  test('a sequence already applied is skipped, also after a cutover', async () => {
    const replicaId = uuid();
    const params = flush(replicaId, {
      uniqueWorkspacesDelta: 1,
      allowedRequests: 7,
      sequence: 100n,
      workspaceIds: [uuid()],
    });
    expect(await modeStore.upsertStats(params)).toEqual({ newPeriod: true, applied: true });
    // The duplicate learns that its applied copy started the period (first_sequence).
    expect(await modeStore.upsertStats(params)).toEqual({
      newPeriod: true,
      applied: false,
      storedSequence: 100n,
    });
    expect(await modeStore.upsertStats({ ...params, sequence: 101n })).toEqual({
      newPeriod: false,
      applied: true,
    });
    expect(await modeStore.upsertStats({ ...params, sequence: 101n })).toEqual({
      newPeriod: false,
      applied: false,
      storedSequence: 101n,
    });
    const summary = await modeStore.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(summary.allowedRequests).toBe(14n);
    // After the cutover the row is gone: a duplicate no longer started anything.
    expect(await modeStore.upsertStats(params)).toEqual({
      newPeriod: false,
      applied: false,
      storedSequence: 101n,
    });
    expect(await row(replicaId)).toBeUndefined();
    expect(await modeStore.upsertStats({ ...params, sequence: 102n })).toEqual({
      newPeriod: true,
      applied: true,
    });
  });
});

describe('getAndResetSummary', () => {
  test('an empty table gives zeros, never "no row"', async () => {
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(summary).toMatchObject({
      uniqueWorkspaces: 0n,
      uniqueUsers: 0n,
      allowedRequests: 0n,
      deniedRequests: 0n,
      uniqueWorkspacesReplicaSum: 0n,
      uniqueUsersReplicaSum: 0n,
      replicas: 0,
      staleReplicas: 0,
      windowStart: null,
      windowEnd: null,
    });
  });

  // coder GetBoundaryUsageSummary_MultipleReplicas: {45, 25, 450, 45} summed over 3 replicas.
  test('sums every replica (coder: 45/25/450/45), then the table is empty', async () => {
    for (const [ws, users, allowed, denied] of [
      [10, 5, 100, 10],
      [15, 8, 150, 15],
      [20, 12, 200, 20],
    ]) {
      await store.upsertStats(
        flush(uuid(), {
          uniqueWorkspacesDelta: ws,
          uniqueUsersDelta: users,
          allowedRequests: allowed,
          deniedRequests: denied,
        }),
      );
    }
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([
      summary.uniqueWorkspacesReplicaSum,
      summary.uniqueUsersReplicaSum,
      summary.allowedRequests,
      summary.deniedRequests,
    ]).toEqual([45n, 25n, 450n, 45n]);
    expect(summary.replicas).toBe(3);
    const again = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([again.allowedRequests, again.replicas]).toEqual([0n, 0]);
  });

  test("exact uniques: one user seen by three replicas counts once; replica sums keep coder's 3", async () => {
    const user = uuid();
    const workspaces = [uuid(), uuid(), uuid()];
    for (const workspace of workspaces) {
      await store.upsertStats(
        flush(uuid(), {
          uniqueWorkspacesDelta: 1,
          uniqueUsersDelta: 1,
          allowedRequests: 1,
          workspaceIds: [workspace],
          userIds: [user],
        }),
      );
    }
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([summary.uniqueUsers, summary.uniqueUsersReplicaSum]).toEqual([1n, 3n]);
    expect([summary.uniqueWorkspaces, summary.uniqueWorkspacesReplicaSum]).toEqual([3n, 3n]);
  });

  test('ids of the previous period are not counted in the next', async () => {
    const user = uuid();
    await store.upsertStats(flush(uuid(), { uniqueUsersDelta: 1, userIds: [user] }));
    expect((await store.getAndResetSummary({ maxStalenessMs: HOUR_MS })).uniqueUsers).toBe(1n);
    await store.upsertStats(flush(uuid(), { allowedRequests: 1 }));
    expect((await store.getAndResetSummary({ maxStalenessMs: HOUR_MS })).uniqueUsers).toBe(0n);
  });

  test('staleness: fresh counted, stale reported apart, the bound itself is fresh', async () => {
    const [fresh, stale, boundary] = [uuid(), uuid(), uuid()];
    for (const [replicaId, allowed] of [
      [fresh, 1],
      [stale, 10],
      [boundary, 100],
    ] as const) {
      await store.upsertStats(
        flush(replicaId, { allowedRequests: allowed, deniedRequests: 1, uniqueWorkspacesDelta: 1 }),
      );
    }
    // now() is the cutover transaction's start; a row exactly maxStaleness older is fresh (>=).
    const maxStalenessMs = 60_000;
    await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`UPDATE usagekit.boundary_usage_stats SET window_start = now() - interval '2 hours' WHERE replica_id = ${stale}::uuid`;
      await tx.$executeRaw`UPDATE usagekit.boundary_usage_stats SET window_start = now() - interval '60 seconds' WHERE replica_id = ${boundary}::uuid`;
      const summary = await store.getAndResetSummaryInTransaction(tx, { maxStalenessMs });
      expect(summary.allowedRequests).toBe(101n);
      expect(summary.replicas).toBe(2);
      expect(summary.staleReplicas).toBe(1);
      expect(summary.stale).toEqual({
        uniqueWorkspacesReplicaSum: 1n,
        uniqueUsersReplicaSum: 0n,
        allowedRequests: 10n,
        deniedRequests: 1n,
      });
    });
    expect(await row(stale)).toBeUndefined();
  });

  test('reports the real window: first window_start and last updated_at of counted rows', async () => {
    const a = uuid();
    await store.upsertStats(flush(a, { allowedRequests: 1 }));
    await store.upsertStats(flush(uuid(), { allowedRequests: 1 }));
    await store.upsertStats(flush(a, { allowedRequests: 1 }));
    const rows = await prisma.$queryRaw<
      { first: Date; last: Date }[]
    >`SELECT min(window_start) AS first, max(updated_at) AS last FROM usagekit.boundary_usage_stats`;
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(summary.windowStart?.getTime()).toBe(rows[0]!.first.getTime());
    expect(summary.windowEnd?.getTime()).toBe(rows[0]!.last.getTime());
  });

  test('sums past 2^63 - 1 are exact instead of failing every later cutover', async () => {
    const big = 9_223_372_036_854_775_000n;
    await store.upsertStats(flush(uuid(), { allowedRequests: big }));
    await store.upsertStats(flush(uuid(), { allowedRequests: big }));
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(summary.allowedRequests).toBe(big * 2n);
  });
});

describe('bad input', () => {
  const good = () => flush(uuid(), { allowedRequests: 1 });
  test.each([
    ['replicaId', { replicaId: 'not-a-uuid' }],
    ['replicaId', { replicaId: "'); DROP TABLE usagekit.boundary_usage_stats; --" }],
    ['allowedRequests', { allowedRequests: -1 }],
    ['allowedRequests', { allowedRequests: 1.5 }],
    ['deniedRequests', { deniedRequests: Number.MAX_SAFE_INTEGER + 1 }],
    ['deniedRequests', { deniedRequests: 2n ** 63n }],
    ['uniqueWorkspacesDelta', { uniqueWorkspacesDelta: Number.NaN }],
    ['uniqueUsersCount', { uniqueUsersCount: '3' as unknown as number }],
    ['workspaceIds[1]', { workspaceIds: [uuid(), 'x'] }],
    ['sequence', { sequence: 0n }],
  ])('%s: %p is rejected with a typed error and writes nothing', async (field, override) => {
    const error = await store.upsertStats({ ...good(), ...override }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field });
    const count = await prisma.$queryRaw<
      { n: bigint }[]
    >`SELECT count(*) AS n FROM usagekit.boundary_usage_stats`;
    expect(count[0]!.n).toBe(0n);
  });

  test('maxStalenessMs must be positive', async () => {
    await expect(store.getAndResetSummary({ maxStalenessMs: 0 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'maxStalenessMs',
    });
  });

  test('options: lock timeout must be shorter than the transaction timeout', () => {
    expect(
      () => new BoundaryUsageStore(prisma, { lockTimeoutMs: 5_000, transactionTimeoutMs: 5_000 }),
    ).toThrow(/lockTimeoutMs/);
    expect(() => new BoundaryUsageStore(prisma, { lockMode: 'none' as 'shared' })).toThrow(
      InvalidInputError,
    );
  });

  test('a flush that would overflow int8 fails for that flush only; the row and cutovers still work', async () => {
    const replicaId = uuid();
    await store.upsertStats(flush(replicaId, { allowedRequests: 2n ** 63n - 10n }));
    await expect(
      store.upsertStats(flush(replicaId, { allowedRequests: 100 })),
    ).rejects.toMatchObject({ code: 'NUMERIC_OVERFLOW', sqlState: '22003' });
    await store.upsertStats(flush(uuid(), { allowedRequests: 5 }));
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(summary.allowedRequests).toBe(2n ** 63n - 10n + 5n);
    expect(await store.upsertStats(flush(replicaId, { allowedRequests: 100 }))).toEqual({
      newPeriod: true,
      applied: true,
    });
  });
});

describe('locking', () => {
  test.each(['single-statement', 'interactive'] as const)(
    '%s: a writer blocked by the exclusive lock fails with LOCK_TIMEOUT (lock_timeout is set before the wait)',
    async (flushMode) => {
      const releaseLock = await holdCutoverLock(db.client(1), db.client(1));
      const writer = new BoundaryUsageStore(db.client(1), { flushMode, lockTimeoutMs: 200 });
      const error = await writer
        .upsertStats(flush(uuid(), { allowedRequests: 1 }))
        .catch((e: unknown) => e);
      await releaseLock();
      expect(error).toMatchObject({ code: 'LOCK_TIMEOUT', sqlState: '55P03', retryable: true });
    },
  );

  test('single-statement: the lock is granted before anything is written', async () => {
    const observer = db.client(1);
    const releaseLock = await holdCutoverLock(db.client(1), observer);
    const writerClient = db.client(1);
    const writer = new BoundaryUsageStore(writerClient, {
      lockTimeoutMs: 30_000,
      transactionTimeoutMs: 60_000,
    });
    const replicaId = uuid();
    const writing = writer.upsertStats(
      flush(replicaId, { allowedRequests: 3, sequence: 1n, workspaceIds: [uuid()] }),
    );
    await waitUntil(() => someoneWaitsForAdvisoryLock(observer), 'the writer waits for the lock');
    // A transaction gets an xid at its first write. The waiting writer has none: its
    // sequence, ids and stats inserts have not run.
    const waiting = await observer.$queryRaw<{ xid: string | null; query: string }[]>`
      SELECT a.backend_xid::text AS xid, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND NOT l.granted
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
    expect(waiting).toHaveLength(1);
    expect(waiting[0]!.query).toContain('pg_advisory_xact_lock_shared');
    expect(waiting[0]!.xid).toBeNull();
    await releaseLock();
    expect(await writing).toEqual({ newPeriod: true, applied: true });
    expect((await row(replicaId))?.allowed_requests).toBe(3n);
  });

  test('writers in shared mode do not wait for each other', async () => {
    // Two writers each hold the shared lock inside an open transaction at the same time.
    const a = db.client(1);
    const b = db.client(1);
    const release = gate();
    const inside: Promise<void>[] = [];
    const both = [a, b].map((client) => {
      const entered = gate();
      inside.push(entered.promise);
      return client.$transaction(async (tx) => {
        await tx.$executeRaw`SELECT pg_advisory_xact_lock_shared(${LockIds.boundaryUsageStats}::bigint)`;
        entered.open();
        await release.promise;
      });
    });
    await Promise.all(inside);
    release.open();
    await Promise.all(both);
  });

  test('a writer that waited behind a cutover lands wholly in the next period', async () => {
    const early = uuid();
    await store.upsertStats(flush(early, { allowedRequests: 10 }));
    const cutoverClient = db.client(1);
    const cutoverStore = new BoundaryUsageStore(cutoverClient);
    const observer = db.client(1);
    const release = gate();
    let firstSummary: Awaited<ReturnType<BoundaryUsageStore['getAndResetSummary']>> | undefined;
    const cutover = cutoverClient.$transaction(
      async (tx) => {
        firstSummary = await cutoverStore.getAndResetSummaryInTransaction(tx, {
          maxStalenessMs: HOUR_MS,
        });
        await release.promise;
      },
      { timeout: 60_000 },
    );
    await waitUntil(async () => firstSummary !== undefined, 'the cutover ran');
    const writer = new BoundaryUsageStore(db.client(1), {
      lockTimeoutMs: 30_000,
      transactionTimeoutMs: 60_000,
    });
    const writing = writer.upsertStats(
      flush(early, { allowedRequests: 5, uniqueWorkspacesDelta: 1, uniqueWorkspacesCount: 42 }),
    );
    await waitUntil(
      () => someoneWaitsForAdvisoryLock(observer),
      'the writer waits behind the cutover',
    );
    release.open();
    await cutover;
    // The row was deleted by the cutover, so the waiting writer INSERTs: a new period, deltas only.
    expect(await writing).toEqual({ newPeriod: true, applied: true });
    expect(firstSummary?.allowedRequests).toBe(10n);
    const next = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([next.allowedRequests, next.uniqueWorkspacesReplicaSum]).toEqual([5n, 1n]);
  });
});
