/**
 * A reporter whose clock is a day off can do no harm (issue 11, item 7): retention, leases and
 * ages run on the database's now(), and the claim refuses a period outside a window around it
 * with a typed CLOCK_SKEW error, a log line and a metric. The receiver deduplicates by key and
 * checks that no report id ever arrives with two different bodies; the accounting is exact.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import type { Logger, PrismaClient } from '@usagekit/db';
import { Registry } from 'prom-client';
import {
  ClockSkewError,
  createTelemetryMetrics,
  HttpSink,
  parseJsonInteger,
  TelemetryReporter,
  type Clock,
  type SnapshotJson,
} from '../src/index.js';
import {
  ageOutbox,
  clearTables,
  flush,
  lockRows,
  MINUTE_MS,
  outbox,
  startReceiver,
  statsTotals,
  useDatabase,
  uuid,
  type Receiver,
} from './helpers.js';

const db = useDatabase();
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
let prisma: PrismaClient;
let store: BoundaryUsageStore;
let receiver: Receiver;

beforeAll(async () => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
  receiver = await startReceiver();
});
afterAll(() => receiver.close());
beforeEach(async () => {
  await clearTables(prisma);
  receiver.requests.length = 0;
});

/** The machine's clock moved by `offsetMs`: a reporter on a host whose time is off. */
function skewedClock(offsetMs: number): Clock {
  return { now: () => new Date(Date.now() + offsetMs) };
}

interface LogEntry {
  level: string;
  message: string;
  meta?: Record<string, unknown>;
}

function reporterWith(
  clock: Clock,
  options: { registry?: Registry; log?: LogEntry[]; reportRetentionMs?: number } = {},
): TelemetryReporter {
  const log = options.log ?? [];
  const at =
    (level: string) =>
    (message: string, meta?: Record<string, unknown>): void => {
      log.push({ level, message, meta });
    };
  const logger: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
  return new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'clock-skew',
    sink: new HttpSink({ url: receiver.url }),
    clock,
    logger,
    collectAttempts: 1,
    ...(options.registry ? { observer: createTelemetryMetrics(options.registry) } : {}),
    ...(options.reportRetentionMs ? { reportRetentionMs: options.reportRetentionMs } : {}),
  });
}

/** Every accepted body per Idempotency-Key; a key with two different bodies is the bug. */
function bodiesByKey(): Map<string, Set<string>> {
  const byKey = new Map<string, Set<string>>();
  for (const request of receiver.accepted()) {
    const key = String(request.headers['idempotency-key']);
    const bodies = byKey.get(key) ?? new Set<string>();
    bodies.add(request.body);
    byKey.set(key, bodies);
  }
  return byKey;
}

function reportedAllowed(): bigint {
  let total = 0n;
  for (const bodies of bodiesByKey().values()) {
    const body = JSON.parse([...bodies][0]!) as SnapshotJson;
    total += parseJsonInteger(body.boundary_usage_summary?.allowed_requests ?? 0);
  }
  return total;
}

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = await registry.getSingleMetric(name)?.get();
  const sample = metric?.values.find((entry) =>
    Object.entries(labels).every(
      ([key, label]) => (entry.labels as Record<string, unknown>)[key] === label,
    ),
  );
  return sample?.value ?? 0;
}

test('a reporter a day ahead purges no live row and cannot claim: CLOCK_SKEW with both times, a log line and metrics', async () => {
  const inSync = reporterWith(skewedClock(0));
  await store.upsertStats(flush(uuid(), { allowedRequests: 3 }));
  const reported = await inSync.collectSnapshot();
  expect(reported.boundaryUsageSummary?.allowedRequests).toBe(3n);
  expect(await inSync.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  await store.upsertStats(flush(uuid(), { allowedRequests: 4 }));

  const registry = new Registry();
  const log: LogEntry[] = [];
  const ahead = reporterWith(skewedClock(DAY_MS), { registry, log });
  // Its clock says the election row and the delivered report are a day old: by the database's
  // clock they are seconds old, and the database's clock decides.
  expect(await ahead.purgeExpired()).toEqual({ reports: 0, locks: 0, flushSequences: 0 });
  expect(await lockRows(prisma)).toEqual([reported.periodEndingAt]);
  expect((await outbox(prisma)).map((row) => row.report_id)).toEqual([reported.reportId]);

  const refused = ahead.collectSnapshot();
  await expect(refused).rejects.toBeInstanceOf(ClockSkewError);
  const error = (await refused.catch((thrown: unknown) => thrown)) as ClockSkewError;
  expect(error.code).toBe('CLOCK_SKEW');
  expect(error.retryable).toBe(false);
  expect(error.skewMs).toBeGreaterThan(DAY_MS - MINUTE_MS);
  expect(error.skewMs).toBeLessThan(DAY_MS + MINUTE_MS);
  expect(error.message).toContain(error.reporterTime.toISOString());
  expect(error.message).toContain(error.databaseTime.toISOString());
  // Nothing claimed, nothing cut over: the rows wait for a reporter whose clock is right.
  expect(await lockRows(prisma)).toEqual([reported.periodEndingAt]);
  expect(await statsTotals(prisma)).toMatchObject({ rows: 1n, allowed: 4n });
  expect(
    log.filter((entry) => entry.level === 'error' && /clock skew/.test(entry.message)),
  ).toEqual([
    expect.objectContaining({
      meta: expect.objectContaining({
        code: 'CLOCK_SKEW',
        reporterTime: error.reporterTime.toISOString(),
        databaseTime: error.databaseTime.toISOString(),
      }),
    }),
  ]);
  expect(await value(registry, 'usagekit_telemetry_clock_skew_refusals_total')).toBe(1);
  expect(
    await value(registry, 'usagekit_telemetry_errors_total', {
      stage: 'collect',
      code: 'CLOCK_SKEW',
    }),
  ).toBe(1);
  expect(await value(registry, 'usagekit_telemetry_snapshots_total', { outcome: 'failed' })).toBe(
    1,
  );
  const skewSeconds = await value(registry, 'usagekit_telemetry_clock_skew_seconds');
  expect(Math.abs(skewSeconds - DAY_MS / 1000)).toBeLessThan(60);

  // The in-sync reporter reports what the skewed one left: tracked = reported, once each.
  // A reporter 31 min ahead claims the next bucket (still inside the window: one period + 5 min).
  const next = reporterWith(skewedClock(31 * MINUTE_MS));
  expect((await next.collectSnapshot()).boundaryUsageSummary?.allowedRequests).toBe(4n);
  expect(await next.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  expect([...bodiesByKey().values()].every((bodies) => bodies.size === 1)).toBe(true);
  expect(bodiesByKey().size).toBe(2);
  expect(reportedAllowed()).toBe(7n);
});

test('a reporter a day behind cannot claim a purged period again: no report id is written twice', async () => {
  // A day ago, a reporter whose clock was right reported period P (here: a reporter on
  // today's clock set 25 h back, with a retention that lets it claim P), and it was delivered.
  const dayAgo = reporterWith(skewedClock(-25 * HOUR_MS), { reportRetentionMs: 2 * DAY_MS });
  await store.upsertStats(flush(uuid(), { allowedRequests: 5 }));
  const history = await dayAgo.collectSnapshot();
  expect(history.boundaryUsageSummary?.allowedRequests).toBe(5n);
  expect(await dayAgo.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  // 25 hours pass by the database's clock; the purge removes P's election row and report.
  await ageOutbox(prisma, 25 * HOUR_MS);
  const inSync = reporterWith(skewedClock(0));
  expect(await inSync.purgeExpired()).toEqual({ reports: 1, locks: 1, flushSequences: 0 });
  expect(await lockRows(prisma)).toEqual([]);
  expect(await outbox(prisma)).toEqual([]);

  // New usage; a reporter whose clock is a day (and an hour) behind reads P again.
  await store.upsertStats(flush(uuid(), { allowedRequests: 7 }));
  const behind = reporterWith(skewedClock(-25 * HOUR_MS));
  const refused = await behind.collectSnapshot().catch((thrown: unknown) => thrown);
  expect(refused).toBeInstanceOf(ClockSkewError);
  expect((refused as ClockSkewError).periodEndingAt).toEqual(history.periodEndingAt);
  expect((refused as ClockSkewError).skewMs).toBeLessThan(-25 * HOUR_MS + MINUTE_MS);
  expect(await lockRows(prisma)).toEqual([]);
  expect(await outbox(prisma)).toEqual([]);
  expect(await statsTotals(prisma)).toMatchObject({ rows: 1n, allowed: 7n });
  expect(await behind.deliverPending()).toEqual({ delivered: 0, failed: 0 });

  // The in-sync reporter reports the new usage under a new period and id.
  const current = await inSync.collectSnapshot();
  expect(current.boundaryUsageSummary?.allowedRequests).toBe(7n);
  expect(current.reportId).not.toBe(history.reportId);
  expect(await inSync.deliverPending()).toEqual({ delivered: 1, failed: 0 });

  // Every key arrived with one body only; tracked = reported, nothing twice.
  const byKey = bodiesByKey();
  expect(byKey.size).toBe(2);
  expect([...byKey.values()].map((bodies) => bodies.size)).toEqual([1, 1]);
  expect(reportedAllowed()).toBe(12n);
});

test('a small skew is harmless: a reporter minutes off still claims, and the gauge shows the skew', async () => {
  const registry = new Registry();
  const late = reporterWith(skewedClock(-3 * MINUTE_MS), { registry });
  await store.upsertStats(flush(uuid(), { allowedRequests: 2 }));
  expect((await late.collectSnapshot()).boundaryUsageSummary?.allowedRequests).toBe(2n);
  const skewSeconds = await value(registry, 'usagekit_telemetry_clock_skew_seconds');
  expect(skewSeconds).toBeGreaterThan(-3 * 60 - 30);
  expect(skewSeconds).toBeLessThan(-3 * 60 + 30);
  expect(await value(registry, 'usagekit_telemetry_clock_skew_refusals_total')).toBe(0);
});
