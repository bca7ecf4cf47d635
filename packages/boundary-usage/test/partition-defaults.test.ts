/**
 * Issue 11's promise, with the library's defaults and nothing tuned: a partition that leaves
 * every existing connection silent (no FIN, no RST) and makes new connections hang for 5 s
 * delays flushing by at most the documented bound (README "Failover, partitions and clocks":
 * 30 s), and afterwards the accounting is exact. Only the flush interval is short, so the test
 * sees many flushes; every deadline is the default one.
 */
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { BoundaryUsageStore, BoundaryUsageTracker, startFlushLoop } from '../src/index.js';
import { clearTables, useDatabase, uuid, waitUntil } from './helpers.js';

const db = useDatabase();
const DOCUMENTED_BOUND_MS = 30_000;
let proxy: FreezingProxy;
let viaProxy: PrismaClient;

afterAll(async () => {
  proxy?.thaw();
  await viaProxy?.$disconnect().catch(() => undefined);
  await proxy?.close();
});

test('with defaults, a partition that silences every connection delays flushing by less than 30 s; nothing lost or counted twice', async () => {
  const prisma = db.client();
  await clearTables(prisma);
  proxy = await startFreezingProxy(db.database().databaseUrl);
  viaProxy = createPrismaClient({ databaseUrl: proxy.databaseUrl });
  const tracker = new BoundaryUsageTracker();
  const flushedAt: number[] = [];
  const loop = startFlushLoop({
    tracker,
    store: new BoundaryUsageStore(viaProxy),
    replicaId: uuid(),
    intervalMs: 250,
    observer: { onFlush: () => flushedAt.push(Date.now()) },
  });
  let tracked = 0n;
  const traffic = setInterval(() => {
    tracker.track(uuid(), uuid(), 1, 0);
    tracked++;
  }, 20);
  try {
    await waitUntil(() => flushedAt.length >= 4, 'four flushes before the partition', 10_000);

    const partitionAt = Date.now();
    proxy.freeze({ newConnections: true });
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    // New connections work again; the old ones stay silent for good, as after a failover.
    proxy.freeze({ newConnections: false });
    await waitUntil(
      () => flushedAt.some((at) => at > partitionAt + 5_000),
      'a flush after the partition',
      DOCUMENTED_BOUND_MS + 5_000,
    );
    const recoveredAfterMs = flushedAt.find((at) => at > partitionAt + 5_000)! - partitionAt;
    console.log(
      `partition-defaults: flushing resumed ${recoveredAfterMs} ms after the partition began`,
    );
    expect(recoveredAfterMs).toBeLessThan(DOCUMENTED_BOUND_MS);
  } finally {
    clearInterval(traffic);
  }
  await loop.stop();
  expect(tracker.pending()).toMatchObject({ allowedRequests: 0n, unconfirmedBatch: false });

  const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
    maxStalenessMs: 3_600_000,
  });
  expect(summary.allowedRequests).toBe(tracked);
  expect(summary.deniedRequests).toBe(0n);
}, 90_000);
