/**
 * Two reporters (two replicas, separate pools) race for every period while both replicas keep
 * flushing: exactly one report per period, no deadlock, and the sum of all reports equals
 * everything flushed. Then both drain the outbox at once: every report is sent exactly once.
 * USAGEKIT_STRESS_ROUNDS multiplies the number of periods.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import {
  BOUNDARY_USAGE_EVENT_TYPE,
  parseJsonInteger,
  TelemetryReporter,
  type Snapshot,
  type SnapshotJson,
} from '../src/index.js';
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
} from './helpers.js';

const db = useDatabase();
const ROUNDS = 20 * Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const FLUSHES_PER_REPLICA = 4;
const T0 = new Date('2026-02-03T12:00:00.000Z').getTime();

const randomInt = (max: number): number => Math.floor(Math.random() * (max + 1));

test(`two reporters racing ${ROUNDS} periods: one report per period, totals conserved`, async () => {
  const clock = new FakeClock(new Date(T0));
  const replicas = [0, 1].map(() => {
    const prisma = db.client(6);
    const store = new BoundaryUsageStore(prisma);
    const sink = new CollectingSink();
    const telemetry = new TelemetryReporter({
      prisma,
      store,
      deploymentId: 'stress',
      sink,
      clock,
      reportRetentionMs: TEST_RETENTION_MS,
    });
    return { prisma, store, sink, telemetry, replicaId: uuid() };
  });
  const [first] = replicas;
  let flushedAllowed = 0n;
  let flushedDenied = 0n;
  const reported: Snapshot[] = [];

  for (let round = 0; round < ROUNDS; round++) {
    // Anywhere inside the round's bucket: both reporters read the same clock.
    clock.set(new Date(T0 + round * FREQUENCY_MS + randomInt(FREQUENCY_MS - 1)));
    const writers = replicas.map(async ({ store, replicaId }) => {
      for (let i = 0; i < FLUSHES_PER_REPLICA; i++) {
        const allowed = BigInt(randomInt(1_000));
        const denied = BigInt(randomInt(100));
        await store.upsertStats(
          flush(replicaId, { allowedRequests: allowed, deniedRequests: denied }),
        );
        flushedAllowed += allowed;
        flushedDenied += denied;
      }
    });
    // Alternate who asks first, so either side wins some periods.
    const order = round % 2 === 0 ? replicas : [...replicas].reverse();
    const [snapshots] = await Promise.all([
      Promise.all(order.map(({ telemetry }) => telemetry.collectSnapshot())),
      ...writers,
    ]);
    const claimed = snapshots.filter((snapshot) => snapshot.boundaryUsageSummary !== undefined);
    expect(claimed).toHaveLength(1);
    expect(snapshots.filter((snapshot) => snapshot.reportId === undefined)).toHaveLength(1);
    reported.push(claimed[0]!);
  }
  // One more period after the writers stopped collects whatever landed after the last cutover.
  clock.set(new Date(T0 + ROUNDS * FREQUENCY_MS));
  reported.push(await first!.telemetry.collectSnapshot());
  expect(await statsTotals(first!.prisma)).toEqual({ rows: 0n, allowed: 0n, denied: 0n });

  const sum = (pick: (snapshot: Snapshot) => bigint): bigint =>
    reported.reduce((total, snapshot) => total + pick(snapshot), 0n);
  expect(sum((snapshot) => snapshot.boundaryUsageSummary!.allowedRequests)).toBe(flushedAllowed);
  expect(sum((snapshot) => snapshot.boundaryUsageSummary!.deniedRequests)).toBe(flushedDenied);

  const rows = await outbox(first!.prisma);
  expect(rows).toHaveLength(ROUNDS + 1);
  expect(new Set(rows.map((row) => row.period_starting_at.toISOString())).size).toBe(ROUNDS + 1);
  expect(new Set(rows.map((row) => row.report_id))).toEqual(
    new Set(reported.map((snapshot) => snapshot.reportId)),
  );
  const [locks] = await first!.prisma.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM usagekit.telemetry_locks WHERE event_type = ${BOUNDARY_USAGE_EVENT_TYPE}`;
  expect(locks!.n).toBe(BigInt(ROUNDS + 1));

  // Both drain at once until the outbox is empty: each report leaves exactly once.
  for (let pass = 0; pass < ROUNDS + 2; pass++) {
    const results = await Promise.all(replicas.map(({ telemetry }) => telemetry.deliverPending()));
    expect(results.every((result) => result.failed === 0)).toBe(true);
    if (results.every((result) => result.delivered === 0)) break;
  }
  const sent = replicas.flatMap(({ sink }) => sink.sent);
  expect(sent).toHaveLength(ROUNDS + 1);
  expect(new Set(sent.map((report) => report.reportId)).size).toBe(ROUNDS + 1);
  const payloads = sent.map((report) => (report.payload as SnapshotJson).boundary_usage_summary!);
  expect(
    payloads.reduce((total, summary) => total + parseJsonInteger(summary.allowed_requests), 0n),
  ).toBe(flushedAllowed);
  expect(
    payloads.reduce((total, summary) => total + parseJsonInteger(summary.denied_requests), 0n),
  ).toBe(flushedDenied);
  expect((await outbox(first!.prisma)).every((row) => row.delivered_at !== null)).toBe(true);
});
