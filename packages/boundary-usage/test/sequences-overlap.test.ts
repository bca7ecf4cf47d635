/**
 * Issue 11, item 5: the duplicate path must read fresh data. A retry can overlap its original:
 * both copies of one batch wait for the writer lock behind a cutover, the cutover deletes the
 * replica's row, then one copy inserts the new period's row and the other finds its sequence
 * applied. That duplicate must answer `newPeriod: true` (its batch started the period), or the
 * tracker keeps the old period's ids and its per-replica unique sums stay too high for the
 * rest of the period. When the answer was read on the flush statement's own snapshot (taken
 * before the lock wait) it saw the old period's row and said false.
 */
import type { PrismaClient } from '@usagekit/db';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  type BoundaryUsageSummary,
  type UpsertStatsParams,
} from '../src/index.js';
import { clearTables, gate, useDatabase, uuid, waitUntil } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
const HOUR_MS = 3_600_000;
// Both copies wait behind the held cutover; the default 2 s lock_timeout would be close.
const patient = { lockTimeoutMs: 10_000, transactionTimeoutMs: 20_000 };

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));

async function advisoryWaiters(): Promise<number> {
  const [row] = await prisma.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM pg_locks
     WHERE locktype = 'advisory' AND NOT granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
  return Number(row!.n);
}

/**
 * A real cutover (DELETE … RETURNING under the exclusive lock) held open until `commit()`.
 * Resolves once its lock is granted.
 */
async function holdCutover(): Promise<{ commit: () => Promise<BoundaryUsageSummary> }> {
  const client = db.client(1);
  const held = gate();
  const deleted = gate();
  const cutover = client.$transaction(
    async (tx) => {
      const summary = await new BoundaryUsageStore(client).getAndResetSummaryInTransaction(tx, {
        maxStalenessMs: HOUR_MS,
      });
      deleted.open();
      await held.promise;
      return summary;
    },
    { timeout: 60_000 },
  );
  await deleted.promise;
  return {
    commit: async () => {
      held.open();
      return cutover;
    },
  };
}

describe.each(['single-statement', 'interactive'] as const)('%s flush', (flushMode) => {
  test('a retry overlapping its original across a cutover learns that the batch started the period', async () => {
    const original = new BoundaryUsageStore(db.client(1), { ...patient, flushMode });
    const retry = new BoundaryUsageStore(db.client(1), { ...patient, flushMode });
    const replicaId = uuid();
    const writerId = uuid();
    const batch = (sequence: bigint): UpsertStatsParams => ({
      replicaId,
      writerId,
      sequence,
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      uniqueWorkspacesCount: 1,
      uniqueUsersCount: 1,
      allowedRequests: 5,
      deniedRequests: 1,
      workspaceIds: [uuid()],
      userIds: [uuid()],
    });
    // The previous period's row, inserted by sequence 1.
    expect(await original.upsertStats(batch(1n))).toEqual({
      applied: true,
      newPeriod: true,
      period: `${writerId}/1`,
    });

    const cutover = await holdCutover();
    const second = batch(2n);
    const sends = [original.upsertStats(second), retry.upsertStats(second)];
    await waitUntil(async () => (await advisoryWaiters()) >= 2, 'both copies wait for the lock');
    expect((await cutover.commit()).allowedRequests).toBe(5n);
    const outcomes = await Promise.all(sends);

    // One copy inserted the new period's row; the other is its duplicate, and knows it.
    expect(outcomes.filter((o) => o.applied)).toEqual([
      { applied: true, newPeriod: true, period: `${writerId}/2` },
    ]);
    expect(outcomes.filter((o) => !o.applied)).toEqual([
      { applied: false, newPeriod: true, storedSequence: 2n },
    ]);
    const summary = await original.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([summary.allowedRequests, summary.deniedRequests]).toEqual([5n, 1n]);
  });
});

test('a tracker whose abandoned flush lands across a cutover restarts its period sets', async () => {
  const replicaId = uuid();
  const store = new BoundaryUsageStore(db.client(2), patient);
  const tracker = new BoundaryUsageTracker({ flushDeadlineMs: 2_000 });
  const [x, y, a, b, user] = [uuid(), uuid(), uuid(), uuid(), uuid()];
  tracker.track(x, user, 1, 0);
  tracker.track(y, user, 1, 0);
  await tracker.flush(store, replicaId);

  const cutover = await holdCutover();
  // The flush waits behind the cutover past its deadline and is abandoned; its statement
  // stays queued for the lock in PostgreSQL.
  tracker.track(a, user, 1, 0);
  await expect(tracker.flush(store, replicaId)).rejects.toMatchObject({
    code: 'DEADLINE_EXCEEDED',
  });
  tracker.track(b, user, 1, 0);
  // The resend of the same batch queues too; then the cutover commits and both run.
  const resent = tracker.flush(store, replicaId);
  await waitUntil(async () => (await advisoryWaiters()) >= 2, 'both copies wait for the lock');
  expect((await cutover.commit()).allowedRequests).toBe(2n);
  expect(await resent).toMatchObject({ newPeriod: true, allowedRequests: 2n });

  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  // This period saw a and b. A tracker that missed the new period would still count x and y
  // in its cumulative per-replica number (4).
  expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueWorkspaces]).toEqual([2n, 2n]);
  expect(summary.allowedRequests).toBe(2n);
  expect(tracker.confirmed()).toMatchObject({ allowedRequests: 4n });
});
