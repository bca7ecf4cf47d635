/**
 * createTelemetryMetrics against a real reporter, a real HTTP receiver on 127.0.0.1 and real
 * PostgreSQL: every series says what happened, on the registry given and nowhere else. And the
 * logs of a failing fleet (flush loop, reporter, pools) never carry a database password.
 */
import { randomUUID } from 'node:crypto';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  createFlushMetrics,
  startFlushLoop,
} from '@usagekit/boundary-usage';
import { createPrismaClient, LockIds, type Logger, type PrismaClient } from '@usagekit/db';
import { findFreePort, withAdminClient } from '@usagekit/testing';
import { Registry, register as globalRegistry } from 'prom-client';
import { createTelemetryMetrics, HttpSink, TelemetryReporter } from '../src/index.js';
import {
  ageOutbox,
  clearTables,
  FakeClock,
  flush,
  FREQUENCY_MS,
  gate,
  MINUTE_MS,
  startReceiver,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
  type Receiver,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
const ALIGNED = '2026-02-03T12:00:00.000Z';
const receivers: Receiver[] = [];

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));
afterEach(async () => {
  await Promise.all(receivers.splice(0).map((receiver) => receiver.close()));
});

async function receiver(options: Parameters<typeof startReceiver>[0] = {}): Promise<Receiver> {
  const started = await startReceiver(options);
  receivers.push(started);
  return started;
}

/**
 * The value of one series (the labels given must match; others are ignored), 0 if absent. A
 * histogram's `_count` and `_sum` are found under the histogram's own name.
 */
async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const base = name.replace(/_(count|sum)$/, '');
  const metric = await (registry.getSingleMetric(name) ?? registry.getSingleMetric(base))?.get();
  const match = metric?.values.find(
    (sample) =>
      ((sample as { metricName?: string }).metricName ?? metric.name) === name &&
      Object.entries(labels).every(([key, label]) => sample.labels[key] === label),
  );
  return match?.value ?? 0;
}

/** Holds the exclusive boundary-usage lock on its own connection until released. */
async function holdCutoverLock(holder: PrismaClient): Promise<{ release: () => Promise<void> }> {
  const released = gate();
  const locked = gate();
  const held = holder.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)`;
      locked.open();
      await released.promise;
    },
    { timeout: 60_000 },
  );
  await Promise.race([locked.promise, held]);
  return {
    release: async () => {
      released.open();
      await held;
    },
  };
}

test('every series counts what happened: elections, cutovers, stale rows, deliveries, backlog, errors', async () => {
  const registry = new Registry();
  const observer = createTelemetryMetrics(registry, { labels: { replica: 'r1' } });
  const server = await receiver({ statusFor: (index) => (index === 0 ? 503 : 202) });
  const clock = new FakeClock(ALIGNED);
  const store = new BoundaryUsageStore(prisma, { lockTimeoutMs: 100 });
  const telemetry = new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'metrics',
    sink: new HttpSink({ url: server.url, timeoutMs: 5_000 }),
    clock,
    reportRetentionMs: TEST_RETENTION_MS,
    observer,
    collectAttempts: 1,
    retryBackoff: { baseDelayMs: 1_000, maxDelayMs: 1_000 },
  });
  // Another replica's reporter, on its own pool, wins the first period.
  const rivalClient = db.client(2);
  const rival = new TelemetryReporter({
    prisma: rivalClient,
    store: new BoundaryUsageStore(rivalClient),
    deploymentId: 'metrics',
    sink: server.url,
    clock,
    reportRetentionMs: TEST_RETENTION_MS,
  });
  expect((await rival.collectSnapshot()).boundaryUsageSummary).toBeDefined();
  expect((await telemetry.collectSnapshot()).boundaryUsageSummary).toBeUndefined();

  // Next period: two fresh replica rows and one stale row (window older than 2 × frequency).
  const stale = uuid();
  await store.upsertStats(flush(uuid(), { allowedRequests: 7, deniedRequests: 3 }));
  await store.upsertStats(flush(uuid(), { allowedRequests: 5, deniedRequests: 1 }));
  await store.upsertStats(flush(stale, { allowedRequests: 1_000, deniedRequests: 1_000 }));
  await prisma.$executeRaw`UPDATE usagekit.boundary_usage_stats SET window_start = now() - interval '3 hours'
    WHERE replica_id = ${stale}::uuid`;
  clock.advance(FREQUENCY_MS);
  const reported = await telemetry.collectSnapshot();
  expect(reported.boundaryUsageSummary).toMatchObject({
    allowedRequests: 12n,
    deniedRequests: 4n,
    replicas: 2,
    staleReplicas: 1,
  });

  // A collection that cannot get the cutover lock fails (LOCK_TIMEOUT, no retry) explicitly.
  clock.advance(FREQUENCY_MS);
  const lock = await holdCutoverLock(db.client(1));
  await expect(telemetry.collectSnapshot()).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
  await lock.release();

  // Two reports pending; the receiver refuses the first POST and accepts the next. They were
  // written an hour ago by the database's clock (ages are the database's, not the reporter's).
  await ageOutbox(prisma, 2 * FREQUENCY_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 1 });
  const pendingAfterFirstPass = await value(registry, 'usagekit_telemetry_outbox_pending_reports');
  const ageAfterFirstPass = await value(
    registry,
    'usagekit_telemetry_outbox_oldest_pending_age_seconds',
  );
  expect(ageAfterFirstPass).toBeGreaterThanOrEqual((2 * FREQUENCY_MS) / 1000);
  expect(ageAfterFirstPass).toBeLessThan((2 * FREQUENCY_MS) / 1000 + 60);
  await ageOutbox(prisma, MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });

  const metric = (name: string, labels: Record<string, string> = {}): Promise<number> =>
    value(registry, `usagekit_telemetry_${name}`, { replica: 'r1', ...labels });
  expect({
    reported: await metric('snapshots_total', { outcome: 'reported' }),
    lostElection: await metric('snapshots_total', { outcome: 'lost_election' }),
    failed: await metric('snapshots_total', { outcome: 'failed' }),
    cutovers: await metric('cutover_duration_seconds_count'),
    replicas: await metric('cutover_replicas_total'),
    staleRows: await metric('cutover_stale_rows_total'),
    allowed: await metric('reported_requests_total', { decision: 'allowed' }),
    denied: await metric('reported_requests_total', { decision: 'denied' }),
    delivered: await metric('delivery_attempts_total', { result: 'delivered' }),
    failedSends: await metric('delivery_attempts_total', { result: 'failed' }),
    lockTimeouts: await metric('errors_total', { stage: 'collect', code: 'LOCK_TIMEOUT' }),
    refused: await metric('errors_total', { stage: 'deliver', code: 'SINK_REJECTED' }),
    pendingAfterFirstPass,
    pendingNow: await metric('outbox_pending_reports'),
    ageNow: await metric('outbox_oldest_pending_age_seconds'),
  }).toEqual({
    reported: 1,
    lostElection: 1,
    failed: 1,
    cutovers: 1,
    replicas: 2,
    staleRows: 1,
    allowed: 12,
    denied: 4,
    delivered: 2,
    failedSends: 1,
    lockTimeouts: 1,
    refused: 1,
    pendingAfterFirstPass: 1,
    pendingNow: 0,
    ageNow: 0,
  });
  expect(server.requests.map((request) => request.status)).toEqual([503, 202, 202]);

  const text = await registry.metrics();
  expect(text).toContain(
    'usagekit_telemetry_cutover_duration_seconds_bucket{le="0.001",replica="r1"}',
  );
  expect(text).toMatch(/# TYPE usagekit_telemetry_outbox_pending_reports gauge/);
  expect(await globalRegistry.metrics()).not.toContain('usagekit_');
});

test('the schedule feeds the same series; telemetry and flush metrics share one registry under a prefix', async () => {
  const registry = new Registry();
  const flushObserver = createFlushMetrics(registry, { prefix: 'app_' });
  const observer = createTelemetryMetrics(registry, { prefix: 'app_' });
  // Nothing listens on this port: every send fails with SINK_UNREACHABLE.
  const closedPort = await findFreePort();
  const clock = new FakeClock(ALIGNED);
  const store = new BoundaryUsageStore(prisma);
  const tracker = new BoundaryUsageTracker();
  tracker.track(uuid(), uuid(), 4, 1);
  const loop = startFlushLoop({
    tracker,
    store,
    replicaId: uuid(),
    intervalMs: 60_000,
    observer: flushObserver,
  });
  db.defer(() => loop.stop()); // stopped even if the test fails
  await loop.flushNow();
  await loop.stop();
  const telemetry = new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'metrics-schedule',
    sink: new HttpSink({ url: `http://127.0.0.1:${closedPort}/snapshot`, timeoutMs: 2_000 }),
    clock,
    reportRetentionMs: TEST_RETENTION_MS,
    observer,
  });
  telemetry.start();
  await waitUntil(
    async () =>
      (await value(registry, 'app_telemetry_errors_total', { code: 'SINK_UNREACHABLE' })) === 1 &&
      (await value(registry, 'app_telemetry_outbox_pending_reports')) === 1,
    'the scheduled round collected, tried to deliver and measured the backlog',
  );
  await telemetry.stop();

  expect(await value(registry, 'app_telemetry_snapshots_total', { outcome: 'reported' })).toBe(1);
  expect(
    await value(registry, 'app_telemetry_reported_requests_total', { decision: 'allowed' }),
  ).toBe(await value(registry, 'app_boundary_flushed_requests_total', { decision: 'allowed' }));
  expect(
    await value(registry, 'app_telemetry_reported_requests_total', { decision: 'denied' }),
  ).toBe(1);
  expect(await value(registry, 'app_telemetry_delivery_attempts_total', { result: 'failed' })).toBe(
    1,
  );
  expect(
    await value(registry, 'app_telemetry_delivery_attempts_total', { result: 'delivered' }),
  ).toBe(0);
  expect(await registry.metrics()).not.toContain('usagekit_');
  expect(await globalRegistry.metrics()).not.toMatch(/usagekit_|app_telemetry_/);
});

describe('logs', () => {
  interface Entry {
    level: keyof Logger;
    message: string;
    meta?: Record<string, unknown>;
  }

  function capturingLogger(entries: Entry[]): Logger {
    const at =
      (level: keyof Logger) =>
      (message: string, meta?: Record<string, unknown>): void => {
        entries.push({ level, message, meta });
      };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  }

  /** Everything a logger was given (messages, meta, thrown errors) as one string. */
  function asText(value: unknown): string {
    return JSON.stringify(value, (_key, item: unknown) => {
      if (typeof item === 'bigint') return item.toString();
      if (item instanceof Error) {
        return { name: item.name, message: item.message, stack: item.stack, cause: item.cause };
      }
      return item;
    });
  }

  test('a failing flush loop, reporter and pool never log the database password', async () => {
    const role = `usagekit_redact_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const password = `pw-${randomUUID()}`;
    const { serverUrl, databaseUrl, name } = db.database();
    await withAdminClient(serverUrl, async (admin) => {
      await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    });
    await withAdminClient(databaseUrl, async (admin) => {
      await admin.query(`GRANT USAGE ON SCHEMA usagekit TO ${role}`);
      await admin.query(`GRANT ALL ON ALL TABLES IN SCHEMA usagekit TO ${role}`);
    });
    const entries: Entry[] = [];
    const logger = capturingLogger(entries);
    const roleUrl = new URL(databaseUrl);
    roleUrl.username = role;
    roleUrl.password = password;
    // One more client whose server is not there at all, with the same password in its URL.
    const nowhere = new URL(roleUrl.href);
    nowhere.port = String(await findFreePort());
    const clients = [roleUrl, nowhere].map((url) =>
      createPrismaClient({ databaseUrl: url.href, maxConnections: 2, logger }),
    );
    const thrown: unknown[] = [];
    try {
      const server = await receiver();
      const clock = new FakeClock(ALIGNED);
      const fleet = clients.map((client) => {
        const store = new BoundaryUsageStore(client, { lockTimeoutMs: 50 });
        const tracker = new BoundaryUsageTracker();
        const loop = startFlushLoop({
          tracker,
          store,
          replicaId: uuid(),
          intervalMs: 10,
          maxAttempts: 2,
          retryBackoff: { baseDelayMs: 5, maxDelayMs: 10 },
          finalFlushTimeoutMs: 2_000,
          logger,
        });
        db.defer(() => loop.stop()); // stopped even if the test fails
        const telemetry = new TelemetryReporter({
          prisma: client,
          store,
          deploymentId: 'redaction',
          sink: server.url,
          clock,
          reportRetentionMs: TEST_RETENTION_MS,
          logger,
          collectAttempts: 1,
        });
        return { tracker, loop, telemetry };
      });
      const terminate = (): Promise<void> =>
        withAdminClient(serverUrl, async (admin) => {
          await admin.query(
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND datname = $2`,
            [role, name],
          );
        });
      const deadline = Date.now() + 20_000;
      // Until a pool has logged where it is connected (the URL, which must come out redacted).
      while (!entries.some((entry) => entry.meta?.['database'] !== undefined)) {
        if (Date.now() > deadline) throw new Error('no pool error was logged');
        for (const { tracker, telemetry } of fleet) {
          tracker.track(uuid(), uuid(), 1, 0);
          clock.advance(FREQUENCY_MS);
          await telemetry.collectSnapshot().catch((error: unknown) => thrown.push(error));
          await telemetry.deliverPending().catch((error: unknown) => thrown.push(error));
        }
        await terminate();
      }
      // And a flush that fails on a lock held past its timeout.
      const lock = await holdCutoverLock(db.client(1));
      fleet[0]!.tracker.track(uuid(), uuid(), 1, 0);
      await fleet[0]!.loop.flushNow().catch((error: unknown) => thrown.push(error));
      await lock.release();
      await Promise.all(
        fleet.map(({ loop, telemetry }) => Promise.all([loop.stop(), telemetry.stop()])),
      );
    } finally {
      await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
      await withAdminClient(databaseUrl, async (admin) => {
        await admin.query(`REVOKE ALL ON ALL TABLES IN SCHEMA usagekit FROM ${role}`);
        await admin.query(`REVOKE USAGE ON SCHEMA usagekit FROM ${role}`);
      });
      await withAdminClient(serverUrl, async (admin) => {
        await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`,
          [role],
        );
        await admin.query(`DROP ROLE IF EXISTS ${role}`);
      });
    }

    // Which log lines and errors carry the password (named, without printing it).
    const leaks = [
      ...entries.filter((entry) => asText(entry).includes(password)).map((entry) => entry.message),
      ...thrown.filter((error) => asText(error).includes(password)).map(String),
    ];
    expect(leaks).toEqual([]);
    // The failures were real and logged: lost connections, a lock timeout, the unreachable
    // server, and the pool's own report naming the database, redacted.
    const logged = asText(entries);
    expect(logged).toContain('CONNECTION_LOST');
    expect(logged).toContain('LOCK_TIMEOUT');
    expect(logged).toContain(`${role}:***@`);
    expect(thrown.length).toBeGreaterThan(0);
  });
});
