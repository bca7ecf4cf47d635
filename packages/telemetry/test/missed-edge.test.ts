/**
 * No skipped period (issue 18, item 4): the scheduled collection at a period's edge fails for
 * real (another session holds the exclusive boundary-usage lock, so the cutover times out on
 * PostgreSQL's lock_timeout), and the reporter tries again within the same period, with
 * backoff, instead of waiting for the next edge: the period gets its own report, holding its
 * own rows, none stale, and nothing is collected twice.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { LockIds, type PrismaClient } from '@usagekit/db';
import type { TelemetryReporter } from '../src/index.js';
import {
  clearTables,
  CollectingSink,
  FakeClock,
  flush,
  gate,
  outbox,
  reporter,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
const reporters: TelemetryReporter[] = [];

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));
afterEach(async () => {
  await Promise.all(reporters.splice(0).map((telemetry) => telemetry.stop()));
});

/** Another session holds the exclusive boundary-usage lock until release(). */
async function holdBoundaryUsageLock(holder: PrismaClient): Promise<{ release(): Promise<void> }> {
  const released = gate();
  const locked = gate();
  const held = holder.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)`;
      locked.open();
      await released.promise;
    },
    { timeout: 60_000 },
  );
  await Promise.race([locked.promise, held]);
  return {
    release: async () => {
      released.open();
      await held;
    },
  };
}

test('a collection that fails at the edge is retried within the same period, with backoff, and reports that period', async () => {
  const store = new BoundaryUsageStore(prisma, { lockTimeoutMs: 100 });
  await store.upsertStats(flush(uuid(), { allowedRequests: 11, deniedRequests: 2 }));
  const lock = await holdBoundaryUsageLock(db.client());

  // The clock stays inside the bucket of 12:00 for the whole test: only a retry within the
  // period can report it (the next edge is 30 minutes of this clock away).
  const clock = new FakeClock('2026-02-03T12:00:01.000Z');
  const failures: unknown[] = [];
  let snapshots = 0;
  const sink = new CollectingSink();
  const telemetry = reporter(prisma, clock, sink, {
    store,
    collectAttempts: 1,
    collectRetryBackoff: { baseDelayMs: 200, maxDelayMs: 400 },
    observer: {
      onError: (stage, error) => {
        if (stage === 'collect') failures.push(error);
      },
      onSnapshot: () => snapshots++,
    },
  });
  reporters.push(telemetry);
  telemetry.start();
  await waitUntil(() => failures.length >= 2, 'two collections failed on the held lock', 10_000);
  const heldFor = performance.now();
  await lock.release();

  await waitUntil(() => snapshots === 1, 'a retry within the period collected', 10_000);
  const retriedAfterMs = performance.now() - heldFor;
  expect(failures.every((error) => (error as { code?: string }).code === 'LOCK_TIMEOUT')).toBe(
    true,
  );
  // Backoff, not a tight loop: with 200–400 ms between retries (each retry itself waits the
  // 100 ms lock_timeout), a few failures, not hundreds.
  expect(failures.length).toBeLessThanOrEqual(6);
  expect(retriedAfterMs).toBeLessThan(5_000);

  const [row] = await outbox(prisma);
  expect(row!.period_starting_at.toISOString()).toBe('2026-02-03T11:30:00.000Z');
  const payload = JSON.parse(row!.payload) as {
    boundary_usage_summary: {
      allowed_requests: number;
      denied_requests: number;
      stale_replicas: number;
    };
  };
  expect(payload.boundary_usage_summary).toMatchObject({
    allowed_requests: 11,
    denied_requests: 2,
    stale_replicas: 0,
  });
  await waitUntil(() => sink.sent.length === 1, 'the report was delivered');

  // Once the period is collected, the schedule waits for the next edge: no second collection.
  const failuresSoFar = failures.length;
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  expect(snapshots).toBe(1);
  expect(failures.length).toBe(failuresSoFar);
});
