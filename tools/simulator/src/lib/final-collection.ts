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
 * After every replica stopped (each flushed one last time), the simulator collects what is
 * left itself: the period that just ended if no replica reported it yet, otherwise the period
 * in progress through the reporter's final-collection API (`collectCurrentPeriod()`, which
 * claims the bucket ending at the next edge: no replica can have claimed it). Then it delivers
 * every pending report, the replicas' included (a report a killed replica wrote but never
 * sent, or one whose POST failed). Leases and retry backoffs run on the database's clock, so it
 * delivers until the outbox is empty, waiting out a lease a killed replica left
 * (standbyFlushTimeoutMs + deliveryTimeoutMs + max(deliveryTimeoutMs, 5 s)), for at most 30 s.
 */
export async function collectLastPeriod(
  input: FinalCollectionInput,
): Promise<{ reportId: string | undefined; durationMs: number | undefined }> {
  const { options, prisma, collector, countError } = input;
  let durationMs: number | undefined;
  const reporter = new TelemetryReporter({
    prisma,
    store: new BoundaryUsageStore(prisma, { lockMode: options.lockMode }),
    deploymentId: input.deploymentId,
    sink: new HttpSink({ url: collector.url, timeoutMs: 5_000 }),
    snapshotFrequencyMs: options.periodMs,
    maxStalenessMs: input.maxStalenessMs,
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
  if (!snapshot.boundaryUsageSummary) snapshot = await reporter.collectCurrentPeriod();
  if (!snapshot.boundaryUsageSummary) {
    throw new Error('the period in progress was already claimed by another final collection');
  }
  const giveUpAt = Date.now() + 30_000;
  while ((await countLeftovers(prisma)).undeliveredReports > 0 && Date.now() < giveUpAt) {
    const result = await reporter.deliverPending();
    if (result.delivered + result.failed === 0) await sleep(250);
  }
  return { reportId: snapshot.reportId, durationMs };
}

/**
 * What the run left behind. Rejected reports (dead letters) are counted apart: no reporter
 * sends them again, so waiting for them would only spin until the give-up.
 */
export async function countLeftovers(
  prisma: PrismaClient,
): Promise<{ statsRows: number; undeliveredReports: number; rejectedReports: number }> {
  const tables = schemaTables(usagekitSchemaOf(prisma)).sql;
  const rows = await prisma.$queryRaw<
    { stats_rows: number; undelivered: number; rejected: number }[]
  >`
    SELECT (SELECT count(*) FROM ${tables.boundary_usage_stats})::int AS stats_rows,
           (SELECT count(*) FROM ${tables.telemetry_reports}
             WHERE delivered_at IS NULL AND rejected_at IS NULL)::int AS undelivered,
           (SELECT count(*) FROM ${tables.telemetry_reports}
             WHERE delivered_at IS NULL AND rejected_at IS NOT NULL)::int AS rejected`;
  return {
    statsRows: rows[0]?.stats_rows ?? -1,
    undeliveredReports: rows[0]?.undelivered ?? -1,
    rejectedReports: rows[0]?.rejected ?? -1,
  };
}
