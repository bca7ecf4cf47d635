import { DeadlineExceededError, type PrismaClient } from '@usagekit/db';
import { Registry, register as globalRegistry } from 'prom-client';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  createFlushMetrics,
  startFlushLoop,
  type UpsertStatsParams,
  type UpsertStatsResult,
} from '../src/index.js';
import { clearTables, holdCutoverLock, useDatabase, uuid, waitUntil } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = await registry.getSingleMetric(name)?.get();
  const match = metric?.values.find((v) =>
    Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return match?.value ?? 0;
}

test('flush metrics count flushes, requests, errors and retries on the given registry only', async () => {
  const registry = new Registry();
  const observer = createFlushMetrics(registry, { labels: { replica: 'r1' } });
  const releaseLock = await holdCutoverLock(db.client(1), db.client(1));

  const tracker = new BoundaryUsageTracker();
  const loop = startFlushLoop({
    tracker,
    store: new BoundaryUsageStore(db.client(2), { lockTimeoutMs: 50 }),
    replicaId: uuid(),
    intervalMs: 10,
    maxAttempts: 1000,
    retryBackoff: { baseDelayMs: 5, maxDelayMs: 10 },
    observer,
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  tracker.track(uuid(), uuid(), 5, 2);
  await waitUntil(
    async () => (await value(registry, 'usagekit_boundary_flush_retries_total')) >= 2,
    'retries are counted',
  );
  await releaseLock();
  await waitUntil(
    async () =>
      (await value(registry, 'usagekit_boundary_flushes_total', { outcome: 'flushed' })) >= 1,
    'a flush is counted',
  );
  await loop.stop();

  expect(
    await value(registry, 'usagekit_boundary_flushed_requests_total', {
      decision: 'allowed',
      replica: 'r1',
    }),
  ).toBe(5);
  expect(
    await value(registry, 'usagekit_boundary_flushed_requests_total', { decision: 'denied' }),
  ).toBe(2);
  expect(
    await value(registry, 'usagekit_boundary_flush_errors_total', { code: 'LOCK_TIMEOUT' }),
  ).toBeGreaterThanOrEqual(2);
  expect(await registry.metrics()).toContain('usagekit_boundary_flush_duration_seconds_bucket');
  expect(await globalRegistry.metrics()).not.toContain('usagekit_');
});

test('abandoned flushes and sequence recoveries are counted', async () => {
  const registry = new Registry();
  const observer = createFlushMetrics(registry, { labels: { replica: 'r2' } });
  const releaseLock = await holdCutoverLock(db.client(1), db.client(1));
  // The database layer's own deadline (conn's statement deadline) arrives as the same error.
  let failNext = false;
  class DbDeadlineStore extends BoundaryUsageStore {
    override async upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
      if (failNext) {
        failNext = false;
        throw new DeadlineExceededError('statement', 15_000);
      }
      return super.upsertStats(params);
    }
  }
  const tracker = new BoundaryUsageTracker({ flushDeadlineMs: 1_000 });
  const loop = startFlushLoop({
    tracker,
    // Waits for the held lock longer than the tracker's flush deadline.
    store: new DbDeadlineStore(db.client(2), {
      lockTimeoutMs: 5_000,
      transactionTimeoutMs: 10_000,
    }),
    replicaId: uuid(),
    intervalMs: 3_600_000,
    maxAttempts: 1,
    observer,
  });
  try {
    tracker.track(uuid(), uuid(), 5, 2);
    await expect(loop.flushNow()).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await releaseLock();
    failNext = true;
    await expect(loop.flushNow()).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(await value(registry, 'usagekit_boundary_flush_abandoned_total')).toBe(2);
    expect(
      await value(registry, 'usagekit_boundary_flush_errors_total', { code: 'DEADLINE_EXCEEDED' }),
    ).toBe(2);

    await loop.flushNow();
    await prisma.$executeRaw`UPDATE usagekit.boundary_usage_flush_sequences
       SET last_sequence = last_sequence + 10 WHERE writer_id = ${tracker.writerId}::uuid`;
    tracker.track(uuid(), uuid(), 1, 0);
    await loop.flushNow();
    expect(
      await value(registry, 'usagekit_boundary_flush_sequence_recoveries_total', {
        replica: 'r2',
      }),
    ).toBe(1);
  } finally {
    await loop.stop();
  }
  const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
    maxStalenessMs: 3_600_000,
  });
  expect([summary.allowedRequests, summary.deniedRequests]).toEqual([6n, 2n]);
});
