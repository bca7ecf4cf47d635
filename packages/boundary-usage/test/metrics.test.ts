import type { PrismaClient } from '@usagekit/db';
import { Registry, register as globalRegistry } from 'prom-client';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  createFlushMetrics,
  startFlushLoop,
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
