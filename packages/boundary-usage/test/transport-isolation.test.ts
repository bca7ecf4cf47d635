/**
 * READ COMMITTED is pinned for the flush and for every transaction, whatever the database
 * default (issue 11 item 6). Under `default_transaction_isolation = 'serializable'` (or
 * repeatable read) a cutover that waited behind a flush took its snapshot before the wait and
 * then fails with 40001 on the row the flush updated; retry storms and failed collections
 * follow; and of two writers sharing a replica id, the one that waited for the other's row
 * fails the same way. Run with the suite's own database set to serializable, on both
 * transports: createPrismaClient pins the level at startup (the single-statement flush has no
 * transaction of its own to pin it in), a client of your own gets it in every transaction.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { connectionProfile, createPrismaClient, Prisma, PrismaClient } from '@usagekit/db';
import { quoteIdentifier, withAdminClient } from '@usagekit/testing';
import { BoundaryUsageStore, BoundaryUsageTracker, type StoreOptions } from '../src/index.js';
import {
  gate,
  runSeedStress,
  someoneWaitsForAdvisoryLock,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
const own: PrismaClient[] = [];
const HOUR_MS = 3_600_000;
const ROUNDS = Math.max(1, Number(process.env['USAGEKIT_STRESS_ROUNDS'] ?? 1));

beforeAll(async () => {
  // Only sessions that start afterwards see it: every client below is new.
  const name = quoteIdentifier(db.database().name);
  await withAdminClient(db.database().databaseUrl, (admin) =>
    admin.query(`ALTER DATABASE ${name} SET default_transaction_isolation = 'serializable'`),
  );
});
afterAll(async () => {
  await Promise.all(own.map((client) => client.$disconnect().catch(() => undefined)));
});

const transports: Record<string, (maxConnections?: number) => PrismaClient> = {
  'createPrismaClient (session settings)': (maxConnections = 2) => {
    const prisma = createPrismaClient({ databaseUrl: db.database().databaseUrl, maxConnections });
    own.push(prisma);
    return prisma;
  },
  'a PrismaClient of your own (no session settings)': (maxConnections = 2) => {
    const prisma = new PrismaClient({
      adapter: new PrismaPg({ connectionString: db.database().databaseUrl, max: maxConnections }),
    });
    own.push(prisma);
    return prisma;
  },
};

function flushOf(replicaId: string, sequence: bigint, allowed: number) {
  return {
    replicaId,
    sequence,
    uniqueWorkspacesDelta: 1,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    allowedRequests: allowed,
    deniedRequests: 0,
    workspaceIds: [uuid()],
    userIds: [uuid()],
  };
}

test('the database default really is serializable for a plain session', async () => {
  const rows = await withAdminClient(db.database().databaseUrl, (admin) =>
    admin.query<{ isolation: string }>(
      `SELECT current_setting('transaction_isolation') AS isolation`,
    ),
  );
  expect(rows.rows[0]!.isolation).toBe('serializable');
});

test('createPrismaClient pins read committed at startup: its flush runs as the single statement, at read committed', async () => {
  // The single-statement flush has no transaction of its own to pin the level in: it runs at
  // the session's level, which only the startup setting makes read committed. Without the pin
  // the connection profile falls back (no session settings) and every flush pays for an
  // interactive transaction, five round trips instead of one.
  const prisma = transports['createPrismaClient (session settings)']!(1);
  expect(await connectionProfile(prisma)).toMatchObject({ via: 'direct', sessionSettings: true });
  const [row] = await prisma.$queryRaw<{ isolation: string }[]>`
    SELECT current_setting('transaction_isolation') AS isolation`;
  expect(row!.isolation).toBe('read committed');
});

describe.each(Object.entries(transports))('%s', (_label, makeClient) => {
  const storeOptions: StoreOptions = { lockTimeoutMs: 10_000, transactionTimeoutMs: 12_000 };

  test('a cutover that waited behind a flush, and a flush that waited behind a cutover: no 40001, exact totals', async () => {
    const writer = new BoundaryUsageStore(makeClient(), storeOptions);
    const cutover = new BoundaryUsageStore(makeClient(), storeOptions);
    const observer = makeClient(1);
    const replica = uuid();
    await cutover.getAndResetSummary({ maxStalenessMs: HOUR_MS }); // start from nothing
    await writer.upsertStats(flushOf(replica, 1n, 10));

    // 1. A flush holds the writer lock and updates the replica's row; a cutover waits.
    const releaseFlush = gate();
    const flushInside = gate();
    const flushing = makeClient(1).$transaction(
      async (tx) => {
        await writer.upsertStatsInTransaction(tx, flushOf(replica, 2n, 5));
        flushInside.open();
        await releaseFlush.promise;
      },
      { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted, timeout: 30_000 },
    );
    await flushInside.promise;
    const cutting = cutover.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    await waitUntil(() => someoneWaitsForAdvisoryLock(observer), 'the cutover waits');
    releaseFlush.open();
    await flushing;
    // Under serializable its snapshot predates the flush's update: 40001 here.
    const first = await cutting;
    expect(first.allowedRequests).toBe(15n);

    // 2. A cutover holds the exclusive lock; a default flush waits behind it.
    await writer.upsertStats(flushOf(replica, 3n, 7));
    const releaseCutover = gate();
    const holding = makeClient(1).$transaction(
      async (tx) => {
        const summary = await cutover.getAndResetSummaryInTransaction(tx, {
          maxStalenessMs: HOUR_MS,
        });
        await releaseCutover.promise;
        return summary;
      },
      { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted, timeout: 30_000 },
    );
    await waitUntil(async () => {
      const rows = await observer.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock'
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      return rows[0]!.n > 0n;
    }, 'the cutover holds the lock');
    const late = writer.upsertStats(flushOf(replica, 4n, 3));
    await waitUntil(() => someoneWaitsForAdvisoryLock(observer), 'the flush waits');
    releaseCutover.open();
    expect((await holding).allowedRequests).toBe(7n);
    expect(await late).toEqual({ applied: true, newPeriod: true });
    const last = await cutover.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(last.allowedRequests).toBe(3n);
  });

  test('trackers sharing a replica id flush concurrently: a flush that waited for the row applies (no 40001), exact totals', async () => {
    // Writers sharing a replica id update one row. The flush that waits for another's row
    // lock must re-read the row once it is free: under read committed it does and applies;
    // run at serializable its snapshot predates the other's update, and it fails with 40001
    // (could not serialize access due to concurrent update).
    const replica = uuid();
    const writers = [0, 1].map(() => ({
      tracker: new BoundaryUsageTracker(),
      store: new BoundaryUsageStore(makeClient(2), storeOptions),
    }));
    const observer = makeClient(1);
    const cutover = new BoundaryUsageStore(observer, storeOptions);
    await cutover.getAndResetSummary({ maxStalenessMs: HOUR_MS }); // start from nothing
    const errors: string[] = [];
    let tracked = 0n;
    const flushOne = async ({ tracker, store }: (typeof writers)[number]) => {
      tracker.track(uuid(), uuid(), 1, 0);
      tracked += 1n;
      await tracker.flush(store, replica).catch((error: { code?: string }) => {
        errors.push(String(error.code));
      });
    };
    await Promise.all(writers.map(flushOne)); // the row exists: from now on flushes update it

    // 1. Deterministic: a third writer of the replica id holds the row mid-flush; a tracker's
    // flush waits for it, then applies.
    const release = gate();
    const inside = gate();
    const holding = makeClient(1).$transaction(
      async (tx) => {
        await writers[0]!.store.upsertStatsInTransaction(tx, flushOf(replica, 1n, 5));
        inside.open();
        await release.promise;
      },
      { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted, timeout: 30_000 },
    );
    await inside.promise;
    const waiting = flushOne(writers[1]!);
    await waitUntil(async () => {
      const rows = await observer.$queryRaw<{ n: bigint }[]>`
        SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND a.datname = current_database()`;
      return rows[0]!.n > 0n;
    }, 'the flush waits for the row');
    release.open();
    await holding;
    await waiting;
    tracked += 5n;

    // 2. Both trackers flushing at once, round after round.
    for (let round = 0; round < 10 * ROUNDS; round++) await Promise.all(writers.map(flushOne));

    // A failed flush keeps its batch: flush again, so a failure shows as an error, not a loss.
    for (const { tracker, store } of writers) await tracker.flush(store, replica);
    const summary = await cutover.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect(errors).toEqual([]);
    expect(summary.allowedRequests).toBe(tracked);
  });

  test(`concurrent flushes and cutovers (the seed's stress shape, ${ROUNDS} round(s)): no errors, exact totals`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const result = await runSeedStress({
        client: () => makeClient(2),
        storeOptions,
        flushesPerWriter: 15,
        writers: 4,
        cutovers: 3,
      });
      expect(result.errors).toEqual([]);
      expect(result.reported).toEqual(result.committed);
    }
  });
});
