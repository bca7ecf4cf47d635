/**
 * A reporter that vanishes while holding the exclusive boundary-usage lock (issue 11, item 2).
 * Its connection goes through a freezing proxy, which goes silent right after the cutover got
 * the lock and deleted the rows (uncommitted): no FIN, no RST, so without a server-side bound
 * the backend sits "idle in transaction", lock held, for as long as TCP keepalive takes (about
 * 2 h 11 min by default), and every writer of the fleet fails with LOCK_TIMEOUT meanwhile.
 *
 * With the reporter's idle_in_transaction_session_timeout (10 s by default) the server ends
 * that session, the transaction rolls back and the lock is released: writers on direct
 * connections flush again within 30 s (pg_locks / pg_stat_activity show the holder gone), the
 * vanished reporter's collectSnapshot() settles within the same bound with a typed error, and
 * the accounting is exact: everything tracked is reported once, nothing twice.
 */
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  startFlushLoop,
  type FlushLoop,
} from '@usagekit/boundary-usage';
import { createPrismaClient, DatabaseError, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { TelemetryReporter, type Snapshot } from '../src/index.js';
import {
  CollectingSink,
  FakeClock,
  outbox,
  statsTotals,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
const BOUND_MS = 30_000;
const T0 = new Date('2026-02-03T12:00:00.000Z');
let proxy: FreezingProxy;
let proxied: PrismaClient;

beforeAll(async () => {
  proxy = await startFreezingProxy(db.database().databaseUrl);
  proxied = createPrismaClient({ databaseUrl: proxy.databaseUrl, maxConnections: 2 });
});
afterAll(async () => {
  proxy.thaw();
  await proxied.$disconnect().catch(() => undefined);
  await proxy.close();
});

interface Writer {
  tracker: BoundaryUsageTracker;
  loop: FlushLoop;
  tracked: bigint;
  /** performance.now() of the latest flush that reached the database. */
  lastFlushedAt: number;
}

interface Holder {
  pid: number;
  state: string;
}

async function exclusiveHolders(prisma: PrismaClient): Promise<Holder[]> {
  return prisma.$queryRaw<Holder[]>`
    SELECT l.pid, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
}

test('writers flush again within 30 s of the holder vanishing; its collectSnapshot() settles with a typed error; exact accounting', async () => {
  const observer = db.client(1);
  const writers: Writer[] = [0, 1, 2].map(() => {
    const tracker = new BoundaryUsageTracker();
    const writer: Writer = {
      tracker,
      tracked: 0n,
      lastFlushedAt: 0,
      loop: undefined as unknown as FlushLoop,
    };
    writer.loop = startFlushLoop({
      tracker,
      store: new BoundaryUsageStore(db.client(2)),
      replicaId: uuid(),
      intervalMs: 100,
      observer: {
        onFlush(result) {
          if (result.flushed) writer.lastFlushedAt = performance.now();
        },
      },
    });
    return writer;
  });
  const traffic = setInterval(() => {
    for (const writer of writers) {
      writer.tracker.track(uuid(), uuid(), 2, 1);
      writer.tracked += 3n;
    }
  }, 20);

  // The reporter that will vanish: its store freezes the network as soon as the real cutover
  // (exclusive lock, DELETE … RETURNING) has run, before the outbox row and the COMMIT.
  const realStore = new BoundaryUsageStore(proxied);
  let frozenAt = 0;
  const vanishingStore = Object.create(realStore) as BoundaryUsageStore;
  vanishingStore.getAndResetSummaryInTransaction = async (tx, params) => {
    const summary = await realStore.getAndResetSummaryInTransaction(tx, params);
    proxy.freeze();
    frozenAt = performance.now();
    return summary;
  };
  const vanishing = new TelemetryReporter({
    prisma: proxied,
    store: vanishingStore,
    deploymentId: 'vanished-holder',
    sink: new CollectingSink(),
    clock: new FakeClock(T0),
    collectAttempts: 1,
    reportRetentionMs: TEST_RETENTION_MS,
  });

  try {
    await waitUntil(
      () => writers.every((writer) => writer.lastFlushedAt > 0),
      'every writer flushed once',
    );
    let collectionSettledAt = 0;
    const collection = vanishing.collectSnapshot().then(
      (snapshot: Snapshot) => {
        collectionSettledAt = performance.now();
        return snapshot as unknown;
      },
      (error: unknown) => {
        collectionSettledAt = performance.now();
        return error;
      },
    );
    await waitUntil(() => frozenAt > 0, 'the reporter holds the lock and went silent');

    // Evidence: the exclusive lock is granted to a backend that is idle in transaction.
    const [holder] = await exclusiveHolders(observer);
    expect(holder).toMatchObject({ state: 'idle in transaction' });

    // Writers flush again within the bound, on their own.
    await waitUntil(
      () => writers.every((writer) => writer.lastFlushedAt > frozenAt),
      'every writer flushed after the holder vanished',
      BOUND_MS,
    );
    const recoveredMs = Math.max(...writers.map((writer) => writer.lastFlushedAt)) - frozenAt;
    expect(recoveredMs).toBeLessThan(BOUND_MS);
    // The server ended the holder's session: its backend is gone, and so is the lock.
    const [gone] = await observer.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ${holder!.pid}::int`;
    expect(gone!.n).toBe(0n);
    expect(await exclusiveHolders(observer)).toEqual([]);

    // The vanished reporter's promise settles within the same bound, with a typed error:
    // CONNECTION_LOST when the server's close of the session reaches it (this proxy passes
    // the server's FIN on), DEADLINE_EXCEEDED (collectTimeoutMs) when nothing does.
    const outcome = await collection;
    expect(collectionSettledAt - frozenAt).toBeLessThan(BOUND_MS);
    expect(outcome).toBeInstanceOf(DatabaseError);
    expect(['CONNECTION_LOST', 'DEADLINE_EXCEEDED']).toContain((outcome as DatabaseError).code);
    console.log(
      `[vanished-holder] writers flushed again ${Math.round(recoveredMs)} ms after the holder went silent; ` +
        `its collectSnapshot() settled after ${Math.round(collectionSettledAt - frozenAt)} ms with ${
          (outcome as { code?: string }).code
        }`,
    );

    // Its transaction rolled back: no report, no claim; the rows stayed for the next one.
    expect(await outbox(observer)).toEqual([]);
  } catch (error) {
    await Promise.all(writers.map((writer) => writer.loop.stop()));
    throw error;
  } finally {
    proxy.thaw();
    clearInterval(traffic);
  }

  // The fleet stops (each writer flushes once more); a reporter on a working connection
  // claims the same period (nobody holds it) and reports everything; every report goes once.
  await Promise.all(writers.map((writer) => writer.loop.stop()));
  for (const writer of writers) {
    expect(writer.tracker.pending()).toMatchObject({ allowedRequests: 0n, deniedRequests: 0n });
  }
  const sink = new CollectingSink();
  const successorClient = db.client(2);
  const successor = new TelemetryReporter({
    prisma: successorClient,
    store: new BoundaryUsageStore(successorClient),
    deploymentId: 'vanished-holder',
    sink,
    clock: new FakeClock(T0),
    reportRetentionMs: TEST_RETENTION_MS,
  });
  const snapshot = await successor.collectSnapshot();
  expect(snapshot.periodEndingAt).toEqual(T0);
  expect(await successor.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  expect(await statsTotals(observer)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });

  const tracked = writers.reduce((total, writer) => total + writer.tracked, 0n);
  const summary = snapshot.boundaryUsageSummary!;
  expect(summary.allowedRequests + summary.deniedRequests).toBe(tracked);
  expect(summary.allowedRequests).toBe((tracked * 2n) / 3n);
  expect(sink.sent.map((report) => report.reportId)).toEqual([snapshot.reportId]);
}, 90_000);
