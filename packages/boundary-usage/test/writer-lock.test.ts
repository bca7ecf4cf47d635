/**
 * The writers' lock, through the store (not raw SQL): in shared mode flushes take the
 * boundary-usage lock SHARED, so they go past each other and past any other shared holder,
 * and only an exclusive holder (a cutover) stops them.
 *
 * Found by a mutation check: a store that took the writers' lock exclusively in shared mode
 * was caught only by an assertion on SQL text; these fail on the behaviour instead.
 */
import { LockIds, type PrismaClient } from '@usagekit/db';
import { withAdminClient } from '@usagekit/testing';
import { BoundaryUsageStore, type StoreOptions } from '../src/index.js';
import {
  clearTables,
  holdCutoverLock,
  someoneWaitsForAdvisoryLock,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
let admin: PrismaClient;
/** Long, so that a flush that waits for the lock cannot succeed by waiting it out. */
const patient: StoreOptions = { lockTimeoutMs: 5_000, transactionTimeoutMs: 10_000 };

beforeAll(() => {
  admin = db.client(1);
});
beforeEach(() => clearTables(admin));

function flushOf(replicaId: string, allowedRequests: number) {
  return {
    replicaId,
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 0,
    uniqueWorkspacesCount: 0,
    uniqueUsersCount: 0,
    allowedRequests,
    deniedRequests: 0,
  };
}

async function allowedByReplica(): Promise<Record<string, bigint>> {
  const rows = await admin.$queryRaw<{ replica_id: string; allowed_requests: bigint }[]>`
    SELECT replica_id::text AS replica_id, allowed_requests FROM usagekit.boundary_usage_stats`;
  return Object.fromEntries(rows.map((row) => [row.replica_id, row.allowed_requests]));
}

/** Holds the writers' lock SHARED in an open transaction of another session while `work` runs. */
async function whileSharedLockHeld<T>(work: () => Promise<T>): Promise<T> {
  return withAdminClient(db.database().databaseUrl, async (holder) => {
    await holder.query('BEGIN');
    try {
      await holder.query(
        `SELECT pg_advisory_xact_lock_shared(${LockIds.boundaryUsageStats}::bigint)`,
      );
      return await work();
    } finally {
      await holder.query('ROLLBACK');
    }
  });
}

describe.each(['single-statement', 'interactive'] as const)(
  '%s flush, shared mode',
  (flushMode) => {
    test('two flushes complete while a third session holds the shared lock', async () => {
      const [a, b] = [uuid(), uuid()];
      const stores = [a, b].map(
        () => new BoundaryUsageStore(db.client(1), { ...patient, flushMode, lockMode: 'shared' }),
      );
      const outcomes = await whileSharedLockHeld(() =>
        Promise.all([
          stores[0]!.upsertStats(flushOf(a, 3)).catch((error: unknown) => error),
          stores[1]!.upsertStats(flushOf(b, 4)).catch((error: unknown) => error),
        ]),
      );
      // Taken exclusively, each flush would wait behind the holder and end in LOCK_TIMEOUT.
      expect(outcomes).toEqual([
        { newPeriod: true, applied: true },
        { newPeriod: true, applied: true },
      ]);
      expect(await allowedByReplica()).toEqual({ [a]: 3n, [b]: 4n });
    });

    test('none completes while the exclusive lock is held; both complete once it is released', async () => {
      const observer = db.client(1);
      const release = await holdCutoverLock(db.client(1), observer);
      const [a, b] = [uuid(), uuid()];
      const done: string[] = [];
      let flushes: Promise<unknown>[] = [];
      try {
        flushes = [a, b].map((replicaId, index) =>
          new BoundaryUsageStore(db.client(1), { ...patient, flushMode, lockMode: 'shared' })
            .upsertStats(flushOf(replicaId, index + 1))
            .then((result) => {
              done.push(replicaId);
              return result;
            }),
        );
        await waitUntil(async () => {
          const rows = await observer.$queryRaw<{ n: bigint }[]>`
          SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
          return rows[0]!.n === 2n;
        }, 'both flushes wait for the lock');
        expect(done).toEqual([]);
        expect(await allowedByReplica()).toEqual({});
      } finally {
        await release();
      }
      expect(await Promise.all(flushes)).toEqual([
        { newPeriod: true, applied: true },
        { newPeriod: true, applied: true },
      ]);
      expect(await someoneWaitsForAdvisoryLock(observer)).toBe(false);
      expect(await allowedByReplica()).toEqual({ [a]: 1n, [b]: 2n });
    });
  },
);

test('exclusive mode (for comparison): a flush waits behind a shared holder', async () => {
  const store = new BoundaryUsageStore(db.client(1), {
    lockTimeoutMs: 200,
    transactionTimeoutMs: 2_000,
    lockMode: 'exclusive',
  });
  const outcome = await whileSharedLockHeld(() =>
    store.upsertStats(flushOf(uuid(), 1)).catch((error: unknown) => error),
  );
  expect(outcome).toMatchObject({ code: 'LOCK_TIMEOUT' });
});
