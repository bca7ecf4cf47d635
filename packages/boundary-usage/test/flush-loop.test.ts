import { noopLogger, type PrismaClient } from '@usagekit/db';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  InvalidInputError,
  startFlushLoop,
} from '../src/index.js';
import { clearTables, holdCutoverLock, useDatabase, uuid, waitUntil } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const HOUR_MS = 3_600_000;

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

test('flushes on its interval and stop() flushes what is pending', async () => {
  const tracker = new BoundaryUsageTracker();
  const flushed: bigint[] = [];
  const loop = startFlushLoop({
    tracker,
    store,
    replicaId: uuid(),
    intervalMs: 20,
    observer: { onFlush: (result) => result.flushed && flushed.push(result.allowedRequests) },
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  tracker.track(uuid(), uuid(), 3, 0);
  await waitUntil(async () => flushed.length > 0, 'a scheduled flush');
  tracker.track(uuid(), uuid(), 4, 0);
  const first = loop.stop();
  expect(loop.stop()).toBe(first);
  await first;
  expect((await store.getAndResetSummary({ maxStalenessMs: HOUR_MS })).allowedRequests).toBe(7n);
  expect(tracker.pending().allowedRequests).toBe(0n);
});

test('retries a lock timeout with backoff and loses nothing', async () => {
  const releaseLock = await holdCutoverLock(db.client(1), db.client(1));

  const tracker = new BoundaryUsageTracker();
  const impatient = new BoundaryUsageStore(db.client(2), { lockTimeoutMs: 50 });
  const failures: { code: unknown; willRetry: boolean }[] = [];
  let successes = 0;
  const loop = startFlushLoop({
    tracker,
    store: impatient,
    replicaId: uuid(),
    intervalMs: 10,
    maxAttempts: 1000,
    retryBackoff: { baseDelayMs: 5, maxDelayMs: 20 },
    observer: {
      onError: (error, _attempt, willRetry) =>
        failures.push({ code: (error as { code?: unknown }).code, willRetry }),
      onFlush: (result) => {
        if (result.flushed) successes++;
      },
    },
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  tracker.track(uuid(), uuid(), 5, 1);
  await waitUntil(async () => failures.length >= 2, 'the loop retried');
  tracker.track(uuid(), uuid(), 6, 2);
  await releaseLock();
  await waitUntil(async () => successes > 0, 'a flush succeeded after the lock was released');
  await loop.stop();
  expect(failures.every((f) => f.code === 'LOCK_TIMEOUT' && f.willRetry)).toBe(true);
  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.allowedRequests, summary.deniedRequests, summary.uniqueWorkspaces]).toEqual([
    11n,
    3n,
    2n,
  ]);
});

test('aborting the signal stops the loop with a final flush', async () => {
  const tracker = new BoundaryUsageTracker();
  const controller = new AbortController();
  const loop = startFlushLoop({
    tracker,
    store,
    replicaId: uuid(),
    intervalMs: 60_000,
    signal: controller.signal,
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  tracker.track(uuid(), uuid(), 9, 0);
  controller.abort();
  await loop.stop();
  expect((await store.getAndResetSummary({ maxStalenessMs: HOUR_MS })).allowedRequests).toBe(9n);
});

test('a final flush that cannot finish is bounded and keeps the usage in memory', async () => {
  const releaseLock = await holdCutoverLock(db.client(1), db.client(1));
  const tracker = new BoundaryUsageTracker();
  const errors: string[] = [];
  const loop = startFlushLoop({
    tracker,
    store: new BoundaryUsageStore(db.client(1), { lockTimeoutMs: 100 }),
    replicaId: uuid(),
    intervalMs: 60_000,
    finalFlushTimeoutMs: 300,
    logger: { ...noopLogger, error: (message) => errors.push(message) },
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  tracker.track(uuid(), uuid(), 2, 0);
  await loop.stop();
  await releaseLock();
  expect(errors.join('\n')).toMatch(/final flush/);
  expect(tracker.pending().allowedRequests).toBe(2n);
});

test('rejects bad options with a typed error', () => {
  const tracker = new BoundaryUsageTracker();
  expect(() => startFlushLoop({ tracker, store, replicaId: 'replica-1' })).toThrow(
    InvalidInputError,
  );
  expect(() => startFlushLoop({ tracker, store, replicaId: uuid(), intervalMs: 0 })).toThrow(
    /intervalMs/,
  );
  expect(() => startFlushLoop({ tracker, store, replicaId: uuid(), maxAttempts: 1.5 })).toThrow(
    /maxAttempts/,
  );
  expect(() =>
    startFlushLoop({
      tracker,
      store,
      replicaId: uuid(),
      retryBackoff: { baseDelayMs: -5, maxDelayMs: 100 },
    }),
  ).toThrow(/retryBackoff.baseDelayMs/);
});
