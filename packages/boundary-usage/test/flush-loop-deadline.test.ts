/**
 * Issue 11, item 1, for the flush loop: a flush in flight on a connection that went silent
 * (a partition, a failover, a NAT dropping the flow: no FIN, no RST) must not hang the loop or
 * stop(). The PrismaClient here is plain createPrismaClient over a freezing TCP proxy, so the
 * bound must come from the tracker and the loop alone, whatever the database layer does.
 */
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { Registry } from 'prom-client';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  createFlushMetrics,
  startFlushLoop,
} from '../src/index.js';
import { clearTables, useDatabase, uuid, waitUntil } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let direct: BoundaryUsageStore;
let proxy: FreezingProxy;
let viaProxy: PrismaClient;
const HOUR_MS = 3_600_000;

beforeAll(async () => {
  prisma = db.client();
  direct = new BoundaryUsageStore(prisma);
});
beforeEach(async () => {
  await clearTables(prisma);
  proxy = await startFreezingProxy(db.database().databaseUrl);
  viaProxy = createPrismaClient({ databaseUrl: proxy.databaseUrl, maxConnections: 2 });
  // An open pooled connection, so the freeze catches a connection the flush reuses.
  await viaProxy.$queryRaw`SELECT 1`;
});
afterEach(async () => {
  proxy.thaw();
  await viaProxy.$disconnect().catch(() => undefined);
  await proxy.close();
});

async function metric(registry: Registry, name: string): Promise<number> {
  return (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
}

test('a flush on a frozen connection is abandoned at its deadline, stop() returns, and the batch lands later exactly once', async () => {
  const registry = new Registry();
  const tracker = new BoundaryUsageTracker({ flushDeadlineMs: 1_000 });
  const replicaId = uuid();
  const loop = startFlushLoop({
    tracker,
    store: new BoundaryUsageStore(viaProxy),
    replicaId,
    intervalMs: HOUR_MS,
    maxAttempts: 2,
    retryBackoff: { baseDelayMs: 10, maxDelayMs: 20 },
    finalFlushTimeoutMs: 1_500,
    observer: createFlushMetrics(registry),
  });
  tracker.track(uuid(), uuid(), 6, 2);
  proxy.freeze({ newConnections: true });

  // Both attempts go silent; each is abandoned after 1 s. Without a deadline this never settles.
  await expect(loop.flushNow()).rejects.toMatchObject({
    code: 'DEADLINE_EXCEEDED',
    retryable: true,
  });
  expect(await metric(registry, 'usagekit_boundary_flush_abandoned_total')).toBe(2);
  expect(tracker.pending()).toMatchObject({
    allowedRequests: 6n,
    deniedRequests: 2n,
    unconfirmedBatch: true,
  });

  // stop() waits for nothing unbounded: its final flush goes silent too, and it returns by
  // finalFlushTimeoutMs. (A generous limit, not a timing assertion.)
  tracker.track(uuid(), uuid(), 1, 0);
  const stopping = Date.now();
  await loop.stop();
  expect(Date.now() - stopping).toBeLessThan(10_000);
  expect(tracker.pending().allowedRequests).toBe(7n);

  // The partition heals (frozen flows are gone). The tracker resends the same batch with its
  // sequence, then the newer one (a flush attempt stop() left running may get there first, on
  // a fresh connection of the proxied pool): everything lands once.
  proxy.thaw();
  await tracker.flush(direct, replicaId);
  expect(tracker.pending()).toMatchObject({ allowedRequests: 0n, unconfirmedBatch: false });
  expect(tracker.confirmed()).toMatchObject({ allowedRequests: 7n, deniedRequests: 2n });
  const summary = await direct.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.allowedRequests, summary.deniedRequests]).toEqual([7n, 2n]);
});

test('an abandoned flush that still lands afterwards is not counted twice', async () => {
  const tracker = new BoundaryUsageTracker({ flushDeadlineMs: 1_000 });
  const replicaId = uuid();
  tracker.track(uuid(), uuid(), 4, 1);
  proxy.freeze();
  await expect(tracker.flush(new BoundaryUsageStore(viaProxy), replicaId)).rejects.toMatchObject({
    code: 'DEADLINE_EXCEEDED',
  });
  // The network comes back and delivers what it held: the abandoned statement runs and commits.
  proxy.thaw({ resumeFrozen: true });
  await waitUntil(async () => {
    const rows = await prisma.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM usagekit.boundary_usage_stats WHERE replica_id = ${replicaId}::uuid`;
    return rows[0]!.n > 0n;
  }, 'the abandoned flush landed');
  // The resend carries the same sequence: recognised as the batch already applied.
  tracker.track(uuid(), uuid(), 1, 0);
  expect(await tracker.flush(direct, replicaId)).toMatchObject({
    duplicates: 1,
    batches: 2,
    sequenceRecoveries: 0,
    allowedRequests: 5n,
  });
  const summary = await direct.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.allowedRequests, summary.deniedRequests]).toEqual([5n, 1n]);
});

test('stop() returns within finalFlushTimeoutMs while a scheduled flush hangs on a frozen connection', async () => {
  const tracker = new BoundaryUsageTracker({ flushDeadlineMs: 60_000 });
  const replicaId = uuid();
  let started = 0;
  const loop = startFlushLoop({
    tracker,
    store: new BoundaryUsageStore(viaProxy),
    replicaId,
    intervalMs: 20,
    finalFlushTimeoutMs: 500,
    observer: { onError: () => started++ },
  });
  tracker.track(uuid(), uuid(), 3, 0);
  proxy.freeze({ newConnections: true });
  // Let a scheduled flush start and hang (its own deadline is a minute away).
  await new Promise((resolve) => setTimeout(resolve, 200));
  const stopping = Date.now();
  await loop.stop();
  // Bounded by finalFlushTimeoutMs, not by the hung flush (a generous limit).
  expect(Date.now() - stopping).toBeLessThan(10_000);
  expect(started).toBe(0);
  expect(tracker.pending()).toMatchObject({ allowedRequests: 3n, unconfirmedBatch: true });
});
