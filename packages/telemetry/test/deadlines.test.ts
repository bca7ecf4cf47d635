/**
 * Every wait of the reporter has a deadline (issue 11, item 1). Through a proxy that makes
 * every connection go silent (no FIN, no RST), collectSnapshot(), deliverPending() and
 * purgeExpired() each settle with DeadlineExceededError (DEADLINE_EXCEEDED) at their bound,
 * are counted in usagekit_telemetry_abandoned_total{stage}, and stop() returns within its
 * bound. Once the network is back the same reporter works again, and the abandoned collection
 * lost nothing: the next one reports every flushed request, once.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, DeadlineExceededError, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { Registry } from 'prom-client';
import { createTelemetryMetrics, TelemetryReporter } from '../src/index.js';
import {
  CollectingSink,
  FakeClock,
  flush,
  FREQUENCY_MS,
  outbox,
  statsTotals,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
const T0 = new Date('2026-02-03T12:00:00.000Z').getTime();
let proxy: FreezingProxy;
let proxied: PrismaClient;
let direct: PrismaClient;

beforeAll(async () => {
  proxy = await startFreezingProxy(db.database().databaseUrl);
  proxied = createPrismaClient({ databaseUrl: proxy.databaseUrl, maxConnections: 2 });
  direct = db.client();
});
afterAll(async () => {
  proxy.thaw();
  await proxied.$disconnect().catch(() => undefined);
  await proxy.close();
});

async function settledWithin<T>(promise: Promise<T>, boundMs: number): Promise<unknown> {
  const startedAt = performance.now();
  const outcome = await promise.then(
    (result) => result as unknown,
    (error: unknown) => error,
  );
  expect(performance.now() - startedAt).toBeLessThan(boundMs);
  return outcome;
}

async function value(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const metric = await registry.getSingleMetric(name)?.get();
  const sample = metric?.values.find((entry) =>
    Object.entries(labels).every(
      ([key, label]) => (entry.labels as Record<string, unknown>)[key] === label,
    ),
  );
  return sample?.value ?? 0;
}

test('a silent network: collect, deliver and purge settle at their deadlines, counted as abandoned; nothing is lost', async () => {
  const store = new BoundaryUsageStore(direct);
  const clock = new FakeClock(new Date(T0));
  const sink = new CollectingSink();
  const registry = new Registry();
  const reporter = new TelemetryReporter({
    prisma: proxied,
    store: new BoundaryUsageStore(proxied, { lockTimeoutMs: 300, transactionTimeoutMs: 1_000 }),
    deploymentId: 'deadlines',
    sink,
    clock,
    observer: createTelemetryMetrics(registry),
    lockTimeoutMs: 300,
    collectTimeoutMs: 1_500,
    deliveryTimeoutMs: 500,
    deliveryPassTimeoutMs: 1_500,
    standbyFlushTimeoutMs: 500, // the pass must outlast the standby wait plus one send
    purgeTimeoutMs: 1_500,
    stopTimeoutMs: 2_000,
    reportRetentionMs: TEST_RETENTION_MS,
  });
  // A period reported while the network is fine, waiting in the outbox.
  await store.upsertStats(flush(uuid(), { allowedRequests: 5, deniedRequests: 1 }));
  const before = await reporter.collectSnapshot();
  expect(before.boundaryUsageSummary?.allowedRequests).toBe(5n);
  await store.upsertStats(flush(uuid(), { allowedRequests: 8, deniedRequests: 2 }));

  // The partition: every connection through the proxy, existing or new, goes silent.
  proxy.freeze({ newConnections: true });
  clock.advance(FREQUENCY_MS);
  const collected = await settledWithin(reporter.collectSnapshot(), 10_000);
  expect(collected).toBeInstanceOf(DeadlineExceededError);
  expect(collected).toMatchObject({ code: 'DEADLINE_EXCEEDED', deadlineMs: 1_500 });
  const delivered = await settledWithin(reporter.deliverPending(), 10_000);
  expect(delivered).toMatchObject({ code: 'DEADLINE_EXCEEDED', deadlineMs: 1_500 });
  const purged = await settledWithin(reporter.purgeExpired(), 10_000);
  expect(purged).toMatchObject({ code: 'DEADLINE_EXCEEDED', deadlineMs: 1_500 });
  for (const stage of ['collect', 'deliver', 'purge']) {
    expect(await value(registry, 'usagekit_telemetry_abandoned_total', { stage })).toBe(1);
    expect(
      await value(registry, 'usagekit_telemetry_errors_total', {
        stage,
        code: 'DEADLINE_EXCEEDED',
      }),
    ).toBe(1);
  }
  // The abandoned collection took nothing: the rows are still in the table.
  expect(await statsTotals(direct)).toMatchObject({ allowed: 8n, denied: 2n });
  expect(sink.sent).toHaveLength(0);

  // The network comes back; the same reporter collects and delivers everything, once.
  proxy.thaw();
  const after = await reporter.collectSnapshot();
  expect(after.boundaryUsageSummary).toMatchObject({ allowedRequests: 8n, deniedRequests: 2n });
  expect(await reporter.deliverPending()).toEqual({ delivered: 2, failed: 0 });
  expect(sink.sent.map((report) => report.reportId).sort()).toEqual(
    [before.reportId, after.reportId].sort(),
  );
  expect((await outbox(direct)).every((row) => row.delivered_at !== null)).toBe(true);
  expect(await statsTotals(direct)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });
});

test('stop() returns within stopTimeoutMs while a collection hangs on a silent connection', async () => {
  const clock = new FakeClock(new Date(T0 + 10 * FREQUENCY_MS));
  const reporter = new TelemetryReporter({
    prisma: proxied,
    store: new BoundaryUsageStore(proxied),
    deploymentId: 'deadlines-stop',
    sink: new CollectingSink(),
    clock,
    stopTimeoutMs: 1_000,
    reportRetentionMs: TEST_RETENTION_MS,
  });
  proxy.freeze({ newConnections: true });
  try {
    const collecting = reporter.collectSnapshot(); // default collectTimeoutMs: 25 s
    const stopped = await settledWithin(reporter.stop(), 5_000);
    expect(stopped).toBeUndefined();
    proxy.thaw();
    // The collection settles too: the thaw broke its connection and its retry, on a fresh
    // one, reported the (empty) period.
    const outcome = await settledWithin(collecting, 30_000);
    expect(outcome).toMatchObject({ deploymentId: 'deadlines-stop' });
  } finally {
    proxy.thaw();
  }
});

test('a collection abandoned mid-way (after its cutover, before its commit) loses nothing: the server rolls it back', async () => {
  const store = new BoundaryUsageStore(direct);
  const period = new Date(T0 + 20 * FREQUENCY_MS);
  await store.upsertStats(flush(uuid(), { allowedRequests: 11, deniedRequests: 4 }));
  // The store freezes the network right after the real cutover ran (rows deleted, exclusive
  // lock held, nothing committed): the outbox row and the COMMIT never reach the server.
  const realStore = new BoundaryUsageStore(proxied);
  const freezingStore = Object.create(realStore) as BoundaryUsageStore;
  freezingStore.getAndResetSummaryInTransaction = async (tx, params) => {
    const summary = await realStore.getAndResetSummaryInTransaction(tx, params);
    proxy.freeze();
    return summary;
  };
  const registry = new Registry();
  const abandoning = new TelemetryReporter({
    prisma: proxied,
    store: freezingStore,
    deploymentId: 'deadlines-midway',
    sink: new CollectingSink(),
    clock: new FakeClock(period),
    observer: createTelemetryMetrics(registry),
    collectAttempts: 1,
    collectTimeoutMs: 1_500,
    idleInTransactionTimeoutMs: 3_000,
    reportRetentionMs: TEST_RETENTION_MS,
  });
  try {
    const outcome = await settledWithin(abandoning.collectSnapshot(), 10_000);
    expect(outcome).toMatchObject({ code: 'DEADLINE_EXCEEDED', deadlineMs: 1_500 });
    expect(await value(registry, 'usagekit_telemetry_abandoned_total', { stage: 'collect' })).toBe(
      1,
    );
    // The server ends the silent session (idle_in_transaction_session_timeout) and rolls it back.
    await waitUntil(async () => {
      const [row] = await direct.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock'
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      return row!.n === 0n;
    }, 'the abandoned transaction is gone');
  } finally {
    proxy.thaw();
  }
  // Neither claimed nor reported; the rows are back (they were never deleted for good).
  expect(await statsTotals(direct)).toMatchObject({ allowed: 11n, denied: 4n });
  expect(
    (await outbox(direct)).filter(
      (row) => row.period_starting_at >= new Date(T0 + 19 * FREQUENCY_MS),
    ),
  ).toEqual([]);
  const successor = new TelemetryReporter({
    prisma: direct,
    store,
    deploymentId: 'deadlines-midway',
    sink: new CollectingSink(),
    clock: new FakeClock(period),
    reportRetentionMs: TEST_RETENTION_MS,
  });
  const snapshot = await successor.collectSnapshot();
  expect(snapshot.periodEndingAt).toEqual(period);
  expect(snapshot.boundaryUsageSummary).toMatchObject({ allowedRequests: 11n, deniedRequests: 4n });
  expect(await statsTotals(direct)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });
});
