/**
 * Issue 11, item 4: a flush sequence that goes backwards must never drop data silently.
 * Before writer ids, sequences were kept per replica id: a second tracker with the same
 * replica id whose sequences started lower (a clock stepped back, a VM restored from a
 * snapshot) or ran alongside (two processes with one id) had its flushes answered
 * `applied: false`, discarded and counted as confirmed. Each case here compares what was
 * tracked with what the cutovers reported: equal, nothing lost, nothing twice.
 */
import { noopLogger, type PrismaClient } from '@usagekit/db';
import { Registry } from 'prom-client';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  createFlushMetrics,
  startFlushLoop,
  type BoundaryUsageSummary,
} from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const HOUR_MS = 3_600_000;
const ROUNDS = 20 * Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

interface Totals {
  allowed: bigint;
  denied: bigint;
}
const add = (totals: Totals, summary: BoundaryUsageSummary) => {
  totals.allowed += summary.allowedRequests;
  totals.denied += summary.deniedRequests;
};

test('a clock stepped back: a second tracker with the same replica id and lower sequences still counts', async () => {
  const replicaId = uuid();
  const [workspace, user] = [uuid(), uuid()];
  // The first process ran with a clock ahead; its sequences sit far above the second's.
  const first = new BoundaryUsageTracker({ firstSequence: 1_800_000_000_000_000n });
  first.track(workspace, user, 10, 1);
  await first.flush(store, replicaId);
  first.track(workspace, user, 10, 1);
  await first.flush(store, replicaId);

  // The replica restarts on a host whose clock reads a day earlier, keeping its replica id.
  const restarted = new BoundaryUsageTracker({ firstSequence: 1_799_913_600_000_000n });
  expect(restarted.writerId).not.toBe(first.writerId);
  let tracked = 0n;
  for (let i = 1; i <= 5; i++) {
    restarted.track(workspace, user, i, 0);
    tracked += BigInt(i);
    const result = await restarted.flush(store, replicaId);
    expect(result).toMatchObject({ duplicates: 0, sequenceRecoveries: 0 });
  }
  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.allowedRequests, summary.deniedRequests]).toEqual([20n + tracked, 2n]);
  expect(restarted.confirmed()).toMatchObject({ allowedRequests: tracked, duplicates: 0 });
  expect(restarted.pending()).toMatchObject({ allowedRequests: 0n, unconfirmedBatch: false });
  // Each writer has its own sequence row; the first one's is left as it was.
  const rows = await prisma.$queryRaw<{ writer_id: string; last_sequence: bigint }[]>`
    SELECT writer_id::text, last_sequence FROM usagekit.boundary_usage_flush_sequences
     WHERE replica_id = ${replicaId}::uuid ORDER BY last_sequence`;
  expect(rows).toEqual([
    { writer_id: restarted.writerId, last_sequence: 1_799_913_600_000_004n },
    { writer_id: first.writerId, last_sequence: 1_800_000_000_000_001n },
  ]);
});

test('two processes with one replica id: both count through concurrent flushes and cutovers', async () => {
  const replicaId = uuid();
  // Two processes: each its own PrismaClient (pool), store and tracker; one replica id.
  const processes = [0, 1].map(() => ({
    store: new BoundaryUsageStore(db.client(2)),
    tracker: new BoundaryUsageTracker(),
    tracked: { allowed: 0n, denied: 0n } as Totals,
  }));
  const reported: Totals = { allowed: 0n, denied: 0n };
  const workspaces = Array.from({ length: 6 }, uuid);
  const users = Array.from({ length: 3 }, uuid);
  let writing = true;
  // Each process also runs cutovers (its reporter), concurrently with both processes' flushes.
  const cutter = processes[0]!.store;
  const cutovers = Promise.all(
    processes.map(async (p) => {
      let count = 0;
      while (writing) {
        add(reported, await p.store.getAndResetSummary({ maxStalenessMs: HOUR_MS }));
        count++;
        await new Promise((resolve) => setTimeout(resolve, 3));
      }
      return count;
    }),
  ).then(([first, second]) => first! + second!);
  await Promise.all(
    processes.map(async (p, index) => {
      for (let round = 0; round < ROUNDS; round++) {
        const allowed = 1 + ((round * 3 + index) % 7);
        const denied = (round + index) % 3;
        p.tracker.track(
          workspaces[(round + index) % workspaces.length]!,
          users[round % users.length]!,
          allowed,
          denied,
        );
        p.tracked.allowed += BigInt(allowed);
        p.tracked.denied += BigInt(denied);
        const result = await p.tracker.flush(p.store, replicaId);
        expect(result).toMatchObject({ duplicates: 0, sequenceRecoveries: 0 });
      }
    }),
  );
  writing = false;
  const cutoverCount = await cutovers;
  add(reported, await cutter.getAndResetSummary({ maxStalenessMs: HOUR_MS }));

  const tracked = processes.reduce(
    (sum, p) => ({
      allowed: sum.allowed + p.tracked.allowed,
      denied: sum.denied + p.tracked.denied,
    }),
    { allowed: 0n, denied: 0n },
  );
  expect(cutoverCount).toBeGreaterThan(0);
  expect(reported).toEqual(tracked);
  for (const p of processes) {
    expect(p.tracker.pending()).toMatchObject({ allowedRequests: 0n, deniedRequests: 0n });
    expect(p.tracker.confirmed()).toMatchObject({
      allowedRequests: p.tracked.allowed,
      deniedRequests: p.tracked.denied,
      duplicates: 0,
    });
  }
});

test('two processes with one replica id: the exact uniques of a period count each id once', async () => {
  const replicaId = uuid();
  const a = new BoundaryUsageTracker();
  const b = new BoundaryUsageTracker();
  const storeB = new BoundaryUsageStore(db.client(2));
  const [shared, onlyA, onlyB, user] = [uuid(), uuid(), uuid(), uuid()];
  a.track(shared, user, 1, 0);
  a.track(onlyA, user, 1, 0);
  b.track(shared, user, 1, 0);
  b.track(onlyB, user, 1, 0);
  await Promise.all([a.flush(store, replicaId), b.flush(storeB, replicaId)]);
  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.uniqueWorkspaces, summary.uniqueUsers, summary.allowedRequests]).toEqual([
    3n,
    1n,
    4n,
  ]);
  // One row for the replica id: its per-replica counts are those of the writer that wrote
  // last (2 workspaces, 1 user), never the two writers' sum.
  expect([
    summary.replicas,
    summary.uniqueWorkspacesReplicaSum,
    summary.uniqueUsersReplicaSum,
  ]).toEqual([1, 2n, 1n]);
});

test('a first send that finds the stored sequence ahead is resequenced, resent, counted and logged', async () => {
  const replicaId = uuid();
  const registry = new Registry();
  const metrics = createFlushMetrics(registry);
  const warnings: { message: string; fields: unknown }[] = [];
  const logger = {
    ...noopLogger,
    warn: (message: string, fields?: unknown) => warnings.push({ message, fields }),
  };
  const tracker = new BoundaryUsageTracker({ logger });
  const loop = startFlushLoop({
    tracker,
    store,
    replicaId,
    intervalMs: 3_600_000,
    observer: metrics,
  });
  try {
    tracker.track(uuid(), uuid(), 3, 1);
    await loop.flushNow();
    // Something moved this writer's stored sequence ahead of it (in the field: another
    // process writing with the same writer id, a restored backup of the table).
    await prisma.$executeRaw`UPDATE usagekit.boundary_usage_flush_sequences
       SET last_sequence = last_sequence + 1000 WHERE writer_id = ${tracker.writerId}::uuid`;
    tracker.track(uuid(), uuid(), 5, 2);
    const result = await loop.flushNow();
    expect(result).toMatchObject({
      flushed: true,
      sequenceRecoveries: 1,
      duplicates: 0,
      allowedRequests: 5n,
    });
    expect(tracker.sequenceRecoveries()).toBe(1);
    expect(warnings).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(/sequence/),
        fields: expect.objectContaining({ storedSequence: '1001', sequence: '1002' }),
      }),
    ]);
    // The tracker continues above the stored sequence: later flushes need no recovery.
    tracker.track(uuid(), uuid(), 7, 0);
    expect(await loop.flushNow()).toMatchObject({ sequenceRecoveries: 0, duplicates: 0 });
  } finally {
    await loop.stop();
  }
  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  expect([summary.allowedRequests, summary.deniedRequests]).toEqual([15n, 3n]);
  const recoveries = await registry
    .getSingleMetric('usagekit_boundary_flush_sequence_recoveries_total')
    ?.get();
  expect(recoveries?.values[0]?.value).toBe(1);
  const [stored] = await prisma.$queryRaw<{ last_sequence: bigint }[]>`
    SELECT last_sequence FROM usagekit.boundary_usage_flush_sequences WHERE writer_id = ${tracker.writerId}::uuid`;
  expect(stored?.last_sequence).toBe(1003n);
});

test('two processes with one replica id: each restarts its period when the other started the new one', async () => {
  const replicaId = uuid();
  const a = new BoundaryUsageTracker();
  const b = new BoundaryUsageTracker();
  const [x, y, z, w, user] = [uuid(), uuid(), uuid(), uuid(), uuid()];
  a.track(x, user, 1, 0);
  await a.flush(store, replicaId);
  b.track(y, user, 1, 0);
  expect(await b.flush(store, replicaId)).toMatchObject({ newPeriod: false });
  await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });

  // After the cutover A's flush inserts the new period's row; B's only updates it, and still
  // learns that the period changed under it (the row's inserting flush is not the one it saw).
  a.track(x, user, 1, 0);
  expect(await a.flush(store, replicaId)).toMatchObject({ newPeriod: true });
  b.track(z, user, 1, 0);
  expect(await b.flush(store, replicaId)).toMatchObject({ newPeriod: true });
  b.track(z, user, 1, 0);
  b.track(w, user, 1, 0);
  expect(await b.flush(store, replicaId)).toMatchObject({ newPeriod: false });

  const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
  // B wrote last: its distinct workspaces this period are {z, w}. Had it kept the previous
  // period's y, its per-replica count would say 3.
  expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueWorkspaces]).toEqual([2n, 3n]);
  expect(summary.allowedRequests).toBe(4n);
});
