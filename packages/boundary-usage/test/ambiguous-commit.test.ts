/**
 * A flush whose connection dies after COMMIT was sent cannot know whether it counted. The
 * proxy below makes exactly that happen: PostgreSQL commits, the reply never arrives. With
 * flush sequences the retry is recognised and skipped; without them it would count twice
 * (the control case shows the harm is real, so the main case can fail).
 */
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { startCommitCuttingProxy, type CommitCuttingProxy } from '@usagekit/testing';
import { BoundaryUsageStore, BoundaryUsageTracker } from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let proxy: CommitCuttingProxy;
let viaProxy: PrismaClient;
const HOUR_MS = 3_600_000;

beforeAll(async () => {
  prisma = db.client();
  proxy = await startCommitCuttingProxy(db.database().databaseUrl);
  // Unnamed statements: the proxy finds the commit point in a Parse message, and a prepared
  // statement is parsed only on its first use per connection.
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

// Prisma runs a one-query batch $transaction as a single autocommit statement, so for the
// single-statement flush the statement's own end is the commit point; the interactive flush
// commits with an explicit COMMIT.
const commitPoint = {
  'single-statement': /pg_advisory_xact_lock/,
  interactive: /^\s*COMMIT\b/i,
} as const;

describe.each(['single-statement', 'interactive'] as const)('%s flush', (flushMode) => {
  test('a flush whose COMMIT reply is lost is retried without counting twice', async () => {
    const store = new BoundaryUsageStore(viaProxy, { flushMode });
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    const [ws, user] = [uuid(), uuid()];
    tracker.track(ws, user, 10, 4);
    const cut = proxy.cutAfterNext(commitPoint[flushMode]);
    const error = await tracker.flush(store, replica).catch((e: unknown) => e);
    await cut;
    expect(error).toMatchObject({ code: 'CONNECTION_LOST' });
    // It did commit: the row is there.
    const rows = await prisma.$queryRaw<
      { allowed_requests: bigint }[]
    >`SELECT allowed_requests FROM usagekit.boundary_usage_stats`;
    expect(rows.map((r) => r.allowed_requests)).toEqual([10n]);
    expect(tracker.pending()).toMatchObject({ allowedRequests: 10n, unconfirmedBatch: true });

    tracker.track(ws, user, 1, 0);
    const retry = await tracker.flush(store, replica);
    expect(retry).toMatchObject({
      batches: 2,
      duplicates: 1,
      allowedRequests: 11n,
      deniedRequests: 4n,
    });
    const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
      maxStalenessMs: HOUR_MS,
    });
    expect([
      summary.allowedRequests,
      summary.deniedRequests,
      summary.uniqueWorkspaces,
      summary.uniqueUsers,
    ]).toEqual([11n, 4n, 1n, 1n]);
  });

  test('a retried first flush of a period restarts the period sets, so replica sums stay right', async () => {
    const store = new BoundaryUsageStore(viaProxy, { flushMode });
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    const [x, y, a, b, user] = [uuid(), uuid(), uuid(), uuid(), uuid()];
    tracker.track(x, user, 1, 0);
    tracker.track(y, user, 1, 0);
    await tracker.flush(store, replica);
    await new BoundaryUsageStore(prisma).getAndResetSummary({ maxStalenessMs: HOUR_MS });
    // The tracker has not seen that cutover. Its next flush inserts (a new period), and the
    // reply to that insert is lost.
    tracker.track(a, user, 1, 0);
    const cut = proxy.cutAfterNext(commitPoint[flushMode]);
    await expect(tracker.flush(store, replica)).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
    await cut;
    tracker.track(b, user, 1, 0);
    const retry = await tracker.flush(store, replica);
    expect(retry).toMatchObject({ duplicates: 1, newPeriod: true });
    const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
      maxStalenessMs: HOUR_MS,
    });
    // {a, b} this period: without first_sequence the tracker would still count x and y (4).
    expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueWorkspaces]).toEqual([2n, 2n]);
    expect(summary.allowedRequests).toBe(2n);
  });

  test('control: the same retry without a flush sequence counts twice', async () => {
    const store = new BoundaryUsageStore(viaProxy, { flushMode });
    const params = {
      replicaId: uuid(),
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      uniqueWorkspacesCount: 1,
      uniqueUsersCount: 1,
      allowedRequests: 10,
      deniedRequests: 4,
    };
    const cut = proxy.cutAfterNext(commitPoint[flushMode]);
    await expect(store.upsertStats(params)).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
    await cut;
    await store.upsertStats(params);
    const summary = await new BoundaryUsageStore(prisma).getAndResetSummary({
      maxStalenessMs: HOUR_MS,
    });
    expect(summary.allowedRequests).toBe(20n);
  });
});
