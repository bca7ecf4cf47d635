/**
 * Retention: delivered reports and election rows go after 24 h (by the reporter's clock),
 * flush sequences after 7 idle days (by the database's clock, which stamps them); pending
 * reports stay however old they are.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import type { PrismaClient } from '@usagekit/db';
import {
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
const T0 = new Date('2026-02-03T12:00:00.000Z').getTime();

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

async function flushSequenceReplicas(): Promise<string[]> {
  const rows = await prisma.$queryRaw<{ replica_id: string }[]>`
    SELECT replica_id::text AS replica_id FROM boundary_usage_flush_sequences ORDER BY replica_id`;
  return rows.map((row) => row.replica_id);
}

test('deletes old delivered reports and old lock rows, keeps pending reports and recent rows', async () => {
  const clock = new FakeClock(new Date(T0));
  const sink = new CollectingSink();
  const telemetry = reporter(prisma, clock, sink);

  // A: reported and delivered at T0.
  const a = await telemetry.collectSnapshot();
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  // B: reported at T0 + 30 min, never delivered (the receiver was down for a day).
  clock.set(new Date(T0 + 30 * MINUTE_MS));
  const b = await telemetry.collectSnapshot();
  // C: reported a day later; its election row is recent.
  clock.set(new Date(T0 + 25 * HOUR_MS));
  const c = await telemetry.collectSnapshot();

  // Flush sequences: one replica quiet for 8 days, one active.
  const [quiet, active] = [uuid(), uuid()].sort();
  await prisma.$executeRaw`INSERT INTO boundary_usage_flush_sequences (replica_id, last_sequence, updated_at)
    VALUES (${quiet}::uuid, 4, now() - interval '8 days')`;
  await store.upsertStats(flush(active!, { allowedRequests: 1, sequence: 1n }));

  expect(await telemetry.purgeExpired()).toEqual({ reports: 1, locks: 2, flushSequences: 1 });
  expect((await outbox(prisma)).map((row) => row.report_id)).toEqual([b.reportId, c.reportId]);
  expect(await lockRows(prisma)).toEqual([c.periodEndingAt]);
  expect(await flushSequenceReplicas()).toEqual([active]);
  expect(a.reportId).toBeDefined();

  // B and C are delivered now: retention counts from delivery, not from creation.
  expect(await telemetry.deliverPending()).toEqual({ delivered: 2, failed: 0 });
  clock.advance(24 * HOUR_MS - 1);
  expect(await telemetry.purgeExpired()).toEqual({ reports: 0, locks: 0, flushSequences: 0 });
  clock.advance(2);
  expect(await telemetry.purgeExpired()).toEqual({ reports: 2, locks: 1, flushSequences: 0 });
  expect(await outbox(prisma)).toEqual([]);
});

test('retention periods are options', async () => {
  const clock = new FakeClock(new Date(T0));
  const telemetry = reporter(prisma, clock, new CollectingSink(), {
    reportRetentionMs: HOUR_MS,
    flushSequenceRetentionMs: 60_000,
  });
  await telemetry.collectSnapshot();
  await telemetry.deliverPending();
  await prisma.$executeRaw`INSERT INTO boundary_usage_flush_sequences (replica_id, last_sequence, updated_at)
    VALUES (${uuid()}::uuid, 1, now() - interval '2 minutes')`;
  clock.advance(HOUR_MS + 1);
  expect(await telemetry.purgeExpired()).toEqual({ reports: 1, locks: 1, flushSequences: 1 });
});
