import { setTimeout as sleep } from 'node:timers/promises';
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { noopLogger, schemaTables, usagekitSchemaOf, type PrismaClient } from '@usagekit/db';
import { HttpSink, TelemetryReporter, type Snapshot } from '@usagekit/telemetry';
import type { TelemetryCollector } from './collector.js';
import type { SimulatorOptions } from './options.js';

export interface FinalCollectionInput {
  options: SimulatorOptions;
  prisma: PrismaClient;
  collector: TelemetryCollector;
  deploymentId: string;
  maxStalenessMs: number;
  countError: (where: string, error: unknown) => void;
}

/**
 * After every replica stopped (each flushed one last time), the simulator collects the period
 * in progress itself: it claims the current bucket, or if a replica already reported that one,
 * the next (a reporter whose clock runs one period ahead), which no replica can have claimed;
 * the collection wins it and cuts over whatever is left. Then it delivers every pending
 * report, the replicas' included (a report a killed replica wrote but never sent, or one whose
 * POST failed). Leases and retry backoffs run on the database's clock, so it delivers until
 * the outbox is empty, waiting out a lease a killed replica left (2 × its deliveryTimeoutMs),
 * for at most 30 s.
 */
export async function collectLastPeriod(
  input: FinalCollectionInput,
): Promise<{ reportId: string | undefined; durationMs: number | undefined }> {
  const { options, prisma, collector, countError } = input;
  let clockOffsetMs = 0;
  let durationMs: number | undefined;
  const reporter = new TelemetryReporter({
    prisma,
    store: new BoundaryUsageStore(prisma, { lockMode: options.lockMode }),
    deploymentId: input.deploymentId,
    sink: new HttpSink({ url: collector.url, timeoutMs: 5_000 }),
    snapshotFrequencyMs: options.periodMs,
    maxStalenessMs: input.maxStalenessMs,
    clock: { now: () => new Date(Date.now() + clockOffsetMs) },
    logger: noopLogger,
    deliveryTimeoutMs: 5_000,
    retryBackoff: { baseDelayMs: 100, maxDelayMs: 1_000 },
    observer: {
      onSnapshot(snapshot, collectionMs) {
        if (snapshot.boundaryUsageSummary) durationMs = collectionMs;
      },
      onDelivery(attempt) {
        if (!attempt.delivered) countError('final delivery', attempt.error);
      },
      onError(stage, error) {
        countError(`final ${stage === 'collect' ? 'cutover' : stage}`, error);
      },
    },
  });
  let snapshot: Snapshot = await reporter.collectSnapshot();
  for (let attempt = 1; !snapshot.boundaryUsageSummary && attempt <= 3; attempt++) {
    clockOffsetMs += options.periodMs;
    snapshot = await reporter.collectSnapshot();
  }
  if (!snapshot.boundaryUsageSummary) throw new Error('every bucket ahead was already claimed');
  const giveUpAt = Date.now() + 30_000;
  while ((await countLeftovers(prisma)).undeliveredReports > 0 && Date.now() < giveUpAt) {
    const result = await reporter.deliverPending();
    if (result.delivered + result.failed === 0) await sleep(250);
  }
  return { reportId: snapshot.reportId, durationMs };
}

export async function countLeftovers(
  prisma: PrismaClient,
): Promise<{ statsRows: number; undeliveredReports: number }> {
  const tables = schemaTables(usagekitSchemaOf(prisma)).sql;
  const rows = await prisma.$queryRaw<{ stats_rows: number; undelivered: number }[]>`
    SELECT (SELECT count(*) FROM ${tables.boundary_usage_stats})::int AS stats_rows,
           (SELECT count(*) FROM ${tables.telemetry_reports} WHERE delivered_at IS NULL)::int AS undelivered`;
  return { statsRows: rows[0]?.stats_rows ?? -1, undeliveredReports: rows[0]?.undelivered ?? -1 };
}
