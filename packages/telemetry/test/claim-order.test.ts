/**
 * The order inside a collection: the telemetry_locks claim comes BEFORE the exclusive
 * boundary-usage lock. A reporter that lost the period must learn it without touching the
 * writers' lock: otherwise every losing replica, once per period, queues behind flushes (and
 * makes flushes queue behind it) for a period it will not report, and under a held lock it
 * fails with LOCK_TIMEOUT instead of "not ours".
 *
 * Found by a mutation check: taking the lock before the claim survived every other test.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { LockIds, type PrismaClient } from '@usagekit/db';
import { withAdminClient } from '@usagekit/testing';
import {
  clearTables,
  CollectingSink,
  FakeClock,
  flush,
  lockRows,
  reporter,
  statsTotals,
  useDatabase,
  uuid,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
const ALIGNED = '2026-02-03T12:00:00.000Z';
/** Long enough that a collection waiting for the lock could not pass by luck. */
const PATIENT_LOCK_TIMEOUT_MS = 3_000;

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));

test('a period already claimed, the boundary-usage lock held elsewhere: "not ours" at once, no LOCK_TIMEOUT, no wait', async () => {
  const clock = new FakeClock(ALIGNED);
  const store = new BoundaryUsageStore(prisma);
  await store.upsertStats(flush(uuid(), { allowedRequests: 7 }));
  // Another replica's reporter wins this period.
  const winner = await reporter(prisma, clock, new CollectingSink()).collectSnapshot();
  expect(winner.boundaryUsageSummary?.allowedRequests).toBe(7n);
  // Usage for the next period, which the loser must not touch.
  await store.upsertStats(flush(uuid(), { allowedRequests: 5 }));

  const loserClient = db.client(1);
  const loser = reporter(loserClient, clock, new CollectingSink(), {
    store: new BoundaryUsageStore(loserClient, {
      lockTimeoutMs: PATIENT_LOCK_TIMEOUT_MS,
      transactionTimeoutMs: 4 * PATIENT_LOCK_TIMEOUT_MS,
    }),
    lockTimeoutMs: PATIENT_LOCK_TIMEOUT_MS,
    collectAttempts: 1,
  });

  const { outcome, someoneWaited } = await withAdminClient(
    db.database().databaseUrl,
    async (holder) => {
      // A cutover (or anyone) holds the writers' lock exclusively for the whole collection.
      await holder.query('BEGIN');
      try {
        await holder.query(`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)`);
        let waited = false;
        let watching = true;
        const watcher = (async () => {
          while (watching) {
            const { rows } = await holder.query<{ n: string }>(
              `SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
            );
            if (Number(rows[0]!.n) > 0) waited = true;
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        })();
        const result = await loser.collectSnapshot().then(
          (snapshot) => ({ snapshot, code: undefined }),
          (error: unknown) => ({ snapshot: undefined, code: (error as { code?: string }).code }),
        );
        watching = false;
        await watcher;
        return { outcome: result, someoneWaited: waited };
      } finally {
        await holder.query('ROLLBACK');
      }
    },
  );

  expect(outcome.code).toBeUndefined(); // not LOCK_TIMEOUT
  expect(outcome.snapshot).toBeDefined();
  expect(outcome.snapshot!.boundaryUsageSummary).toBeUndefined(); // "not ours"
  expect(someoneWaited).toBe(false);
  // The loser deleted nothing: the next period's usage is still there, the claim is the winner's.
  expect(await statsTotals(prisma)).toMatchObject({ rows: 1n, allowed: 5n });
  expect(await lockRows(prisma)).toHaveLength(1);
});
