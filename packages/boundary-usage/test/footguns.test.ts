/**
 * Issue 20 item 5: footguns a code review found, each fixed and proven here.
 */
import { createPrismaClient, LockTimeoutError, type PrismaClient } from '@usagekit/db';
import { startCommitCuttingProxy, type CommitCuttingProxy } from '@usagekit/testing';
import { BoundaryUsageStore, BoundaryUsageTracker, startFlushLoop } from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let proxy: CommitCuttingProxy;
let viaProxy: PrismaClient;
const HOUR_MS = 3_600_000;

beforeAll(async () => {
  prisma = db.client();
  proxy = await startCommitCuttingProxy(db.database().databaseUrl);
  // Unnamed statements: the proxy finds the commit point in a Parse message.
  viaProxy = createPrismaClient({
    databaseUrl: proxy.databaseUrl,
    maxConnections: 2,
    preparedStatements: false,
  });
});
afterAll(async () => {
  await viaProxy?.$disconnect().catch(() => undefined);
  await proxy?.close();
});
beforeEach(() => clearTables(prisma));

async function cutOver(): Promise<{ allowed: bigint; denied: bigint; replicas: number }> {
  const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
    maxStalenessMs: HOUR_MS,
  });
  return {
    allowed: summary.allowedRequests,
    denied: summary.deniedRequests,
    replicas: summary.replicas,
  };
}

describe('a batch is bound to the replica id it was first sent under', () => {
  test('resent under another replica id after a lost COMMIT reply, it still counts once', async () => {
    const store = new BoundaryUsageStore(viaProxy);
    const tracker = new BoundaryUsageTracker();
    const [first, second] = [uuid(), uuid()];
    tracker.track(uuid(), uuid(), 10, 4);
    const cut = proxy.cutAfterNext(/pg_advisory_xact_lock/);
    const error = await tracker.flush(store, first).catch((e: unknown) => e);
    await cut;
    // PostgreSQL committed; the reply was lost: the outcome is unknown to the tracker.
    expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
    expect(tracker.pending()).toMatchObject({ allowedRequests: 10n, unconfirmedBatch: true });

    // The host now flushes under another id (a restart of its own id logic, a typo, a
    // reconfiguration). The unconfirmed batch must go under its first id, where its sequence
    // is recognised, not as a new row under the new id.
    tracker.track(uuid(), uuid(), 1, 0);
    const retry = await tracker.flush(store, second);
    expect(retry).toMatchObject({ batches: 2, duplicates: 1 });
    expect(await cutOver()).toEqual({ allowed: 11n, denied: 4n, replicas: 2 });
  });
});

describe('observer hooks are isolated', () => {
  test('a throwing onFlush does not turn a committed flush into a failure (nor a retry)', async () => {
    const store = new BoundaryUsageStore(prisma);
    const tracker = new BoundaryUsageTracker();
    const warnings: string[] = [];
    const errors: unknown[] = [];
    const loop = startFlushLoop({
      tracker,
      store,
      replicaId: uuid(),
      intervalMs: 3_600_000,
      logger: {
        debug: () => undefined,
        info: () => undefined,
        warn: (message) => warnings.push(message),
        error: () => undefined,
      },
      observer: {
        onFlush: () => {
          throw new Error('metrics backend down');
        },
        onError: (error) => errors.push(error),
      },
    });
    db.defer(() => loop.stop());
    tracker.track(uuid(), uuid(), 5, 2);
    const result = await loop.flushNow();
    expect(result).toMatchObject({ flushed: true, allowedRequests: 5n, deniedRequests: 2n });
    expect(errors).toEqual([]);
    expect(warnings.some((message) => message.includes('observer.onFlush threw'))).toBe(true);
    expect(await cutOver()).toEqual({ allowed: 5n, denied: 2n, replicas: 1 });
  });

  test('an observer that is a class instance (hooks on its prototype) is called', async () => {
    class FlushCounter {
      readonly flushed: bigint[] = [];
      onFlush(result: { allowedRequests: bigint }): void {
        this.flushed.push(result.allowedRequests);
      }
    }
    const counter = new FlushCounter();
    const tracker = new BoundaryUsageTracker();
    const loop = startFlushLoop({
      tracker,
      store: new BoundaryUsageStore(prisma),
      replicaId: uuid(),
      intervalMs: 3_600_000,
      observer: counter,
    });
    db.defer(() => loop.stop());
    tracker.track(uuid(), uuid(), 4, 0);
    await loop.flushNow();
    expect(counter.flushed).toEqual([4n]);
  });

  test('a throwing onError does not escape the retry loop: the flush is retried and lands', async () => {
    // A store whose first upsert fails with a retryable LockTimeoutError (what a real lock
    // timeout gives; the loop only reads `retryable`), then works.
    const real = new BoundaryUsageStore(prisma);
    let calls = 0;
    const store = Object.create(real) as BoundaryUsageStore;
    store.upsertStats = async (params) => {
      calls++;
      if (calls === 1) {
        throw new LockTimeoutError('lock timeout (test)', { sqlState: '55P03' });
      }
      return real.upsertStats(params);
    };
    const tracker = new BoundaryUsageTracker();
    const loop = startFlushLoop({
      tracker,
      store,
      replicaId: uuid(),
      intervalMs: 3_600_000,
      retryBackoff: { baseDelayMs: 1, maxDelayMs: 5 },
      observer: {
        onError: () => {
          throw new Error('metrics backend down');
        },
      },
    });
    db.defer(() => loop.stop());
    tracker.track(uuid(), uuid(), 3, 1);
    await expect(loop.flushNow()).resolves.toMatchObject({ flushed: true, allowedRequests: 3n });
    expect(calls).toBe(2);
    expect(await cutOver()).toEqual({ allowed: 3n, denied: 1n, replicas: 1 });
  });
});

describe('every async call rejects, never throws', () => {
  test('flush() with a bad replica id or store rejects with INVALID_INPUT', async () => {
    const tracker = new BoundaryUsageTracker();
    const store = new BoundaryUsageStore(prisma);
    let thrown: unknown;
    let flushing: Promise<unknown> | undefined;
    try {
      flushing = tracker.flush(store, 'replica-1');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeUndefined();
    await expect(flushing).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'replicaId' });
    await expect(
      tracker.flush(undefined as unknown as BoundaryUsageStore, uuid()),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'store' });
  });

  /** A loop that never flushes by itself (an hour between ticks). */
  const idleLoop = () =>
    startFlushLoop({
      tracker: new BoundaryUsageTracker(),
      store: new BoundaryUsageStore(prisma),
      replicaId: uuid(),
      intervalMs: 3_600_000,
    });

  test('the flush loop stop() with a bad timeout rejects with INVALID_INPUT', async () => {
    const loop = idleLoop();
    db.defer(() => loop.stop());
    let thrown: unknown;
    let stopping: Promise<unknown> | undefined;
    try {
      stopping = loop.stop({ timeoutMs: -5 });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeUndefined();
    await expect(stopping).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'timeoutMs' });
  });

  test.each([['100'], [Number.NaN], [Number.POSITIVE_INFINITY], [null]])(
    'the flush loop stop() refuses a timeout of %p (a string is not coerced) and a fraction is rounded up',
    async (timeoutMs) => {
      const loop = idleLoop();
      db.defer(() => loop.stop());
      await expect(loop.stop({ timeoutMs: timeoutMs as unknown as number })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
        field: 'timeoutMs',
      });
      const other = idleLoop();
      await expect(other.stop({ timeoutMs: 0.4 })).resolves.toBeUndefined();
    },
  );
});

describe('pending() and confirmed() are JSON-safe', () => {
  test('JSON.stringify writes the counts (numbers, or strings past 2^53)', async () => {
    const tracker = new BoundaryUsageTracker();
    tracker.track(uuid(), uuid(), Number.MAX_SAFE_INTEGER, 0);
    tracker.track(uuid(), uuid(), 10, 3);
    expect(JSON.parse(JSON.stringify(tracker.pending()))).toEqual({
      allowedRequests: '9007199254741001',
      deniedRequests: 3,
      unconfirmedBatch: false,
    });
    expect(JSON.parse(JSON.stringify(tracker.confirmed()))).toEqual({
      allowedRequests: 0,
      deniedRequests: 0,
      batches: 0,
      duplicates: 0,
    });
    // The values themselves stay bigints, and toJSON is not an own enumerable key.
    expect(tracker.pending().allowedRequests).toBe(9_007_199_254_741_001n);
    expect(Object.keys(tracker.pending())).toEqual([
      'allowedRequests',
      'deniedRequests',
      'unconfirmedBatch',
    ]);
  });
});
