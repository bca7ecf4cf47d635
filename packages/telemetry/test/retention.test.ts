/**
 * Retention: delivered reports and election rows go after 24 h, flush sequences after 7 idle
 * days, all by the database's clock (a test ages rows instead of moving a fake clock); pending
 * reports stay however old they are.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import type { PrismaClient } from '@usagekit/db';
import {
  ageOutbox,
  clearTables,
  CollectingSink,
  FakeClock,
  flush,
  lockRows,
  MINUTE_MS,
  outbox,
  reporter,
  useDatabase,
  uuid,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const HOUR_MS = 60 * MINUTE_MS;
const FREQUENCY_MS = 30 * MINUTE_MS;

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

async function flushSequenceReplicas(): Promise<string[]> {
  const rows = await prisma.$queryRaw<{ replica_id: string }[]>`
    SELECT replica_id::text AS replica_id FROM usagekit.boundary_usage_flush_sequences ORDER BY replica_id`;
  return rows.map((row) => row.replica_id);
}

/** Election rows move back in time too, as if the database's clock advanced by `ms`. */
async function ageLocks(ms: number): Promise<void> {
  await prisma.$executeRaw`UPDATE usagekit.telemetry_locks
       SET period_ending_at = period_ending_at - ${ms}::bigint * interval '1 millisecond'`;
}

/** A bucket an hour before the database's now(), so a few periods after it stay in the past. */
function recentBucket(): number {
  const now = Date.now() - HOUR_MS;
  return now - (now % FREQUENCY_MS);
}

test('deletes old delivered reports and old lock rows, keeps pending reports and recent rows', async () => {
  const T0 = recentBucket();
  const clock = new FakeClock(new Date(T0));
  const sink = new CollectingSink();
  const telemetry = reporter(prisma, clock, sink, { reportRetentionMs: 24 * HOUR_MS });

  // A: reported and delivered.
  const a = await telemetry.collectSnapshot();
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  // B: reported a period later, never delivered (the receiver was down for a day).
  clock.set(new Date(T0 + FREQUENCY_MS));
  const b = await telemetry.collectSnapshot();
  // A day passes, by the database's clock.
  await ageOutbox(prisma, 25 * HOUR_MS);
  await ageLocks(25 * HOUR_MS);
  // C: reported now; its rows are recent.
  clock.set(new Date(T0 + 2 * FREQUENCY_MS));
  const c = await telemetry.collectSnapshot();

  // Flush sequences: one replica quiet for 8 days, one active.
  const [quiet, active] = [uuid(), uuid()].sort();
  await prisma.$executeRaw`INSERT INTO usagekit.boundary_usage_flush_sequences (replica_id, last_sequence, updated_at)
    VALUES (${quiet}::uuid, 4, now() - interval '8 days')`;
  await store.upsertStats(flush(active!, { allowedRequests: 1, sequence: 1n }));

  expect(await telemetry.purgeExpired()).toEqual({ reports: 1, locks: 2, flushSequences: 1 });
  expect((await outbox(prisma)).map((row) => row.report_id)).toEqual([b.reportId, c.reportId]);
  expect(await lockRows(prisma)).toEqual([c.periodEndingAt]);
  expect(await flushSequenceReplicas()).toEqual([active]);
  expect(a.reportId).toBeDefined();

  // B and C are delivered now: retention counts from delivery, not from creation.
  expect(await telemetry.deliverPending()).toEqual({ delivered: 2, failed: 0 });
  await ageOutbox(prisma, 24 * HOUR_MS - 60_000);
  await prisma.$executeRaw`UPDATE usagekit.telemetry_locks SET period_ending_at = now() - interval '23 hours 59 minutes'`;
  expect(await telemetry.purgeExpired()).toEqual({ reports: 0, locks: 0, flushSequences: 0 });
  await ageOutbox(prisma, 2 * 60_000);
  await ageLocks(2 * 60_000);
  expect(await telemetry.purgeExpired()).toEqual({ reports: 2, locks: 1, flushSequences: 0 });
  expect(await outbox(prisma)).toEqual([]);
});

test("retention periods are options, and the reporter's clock does not move them", async () => {
  const clock = new FakeClock(new Date(recentBucket()));
  const telemetry = reporter(prisma, clock, new CollectingSink(), {
    reportRetentionMs: 2 * HOUR_MS,
    flushSequenceRetentionMs: 60_000,
  });
  await telemetry.collectSnapshot();
  await telemetry.deliverPending();
  await prisma.$executeRaw`INSERT INTO usagekit.boundary_usage_flush_sequences (replica_id, last_sequence, updated_at)
    VALUES (${uuid()}::uuid, 1, now() - interval '2 minutes')`;
  // A reporter clock a week ahead purges nothing early: the cut-off is the database's.
  clock.advance(7 * 24 * HOUR_MS);
  expect(await telemetry.purgeExpired()).toEqual({ reports: 0, locks: 0, flushSequences: 1 });
  await ageOutbox(prisma, 2 * HOUR_MS + 1_000);
  await ageLocks(2 * HOUR_MS + 1_000);
  // (the lock row's bucket was at most 1.5 h old; aged by 2 h it is past the 2 h retention)
  expect(await telemetry.purgeExpired()).toEqual({ reports: 1, locks: 1, flushSequences: 0 });
});
