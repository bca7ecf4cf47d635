import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BoundaryUsageStore, BoundaryUsageTracker } from '@usagekit/boundary-usage';
import { createPrismaClient, LockIds, type PrismaClient } from '@usagekit/db';
import { BOUNDARY_USAGE_EVENT_TYPE, HttpSink, TelemetryReporter } from '@usagekit/telemetry';
import {
  dropDatabase,
  SERVER_URL_ENV,
  uniqueDatabaseName,
  waitUntil,
  withAdminClient,
  withDatabase,
} from '@usagekit/testing';
import { Client } from 'pg';
import type { StatusReport } from '../src/index.js';
import { runCliProcess, type CliRun } from './run-cli.js';

// A fresh, empty database (not the suites' migrated template) owned by a role with a password,
// so `migrate` really starts from nothing and the redaction has a secret to keep.
const serverUrl = process.env[SERVER_URL_ENV]!;
const databaseName = uniqueDatabaseName('cli_fresh');
const role = uniqueDatabaseName('cli_role');
const password = `pw-${randomBytes(12).toString('hex')}`;
const databaseUrl = (() => {
  const url = new URL(withDatabase(serverUrl, databaseName));
  url.username = role;
  url.password = password;
  return url.toString();
})();

const outputs: string[] = [];
const clients: PrismaClient[] = [];
const pgClients: Client[] = [];
let receiver: Server;
let receiverStatus = 503;
let receiverUrl: string;
const received: Array<{ key: string | undefined; body: string }> = [];

async function cli(...args: string[]): Promise<CliRun> {
  const run = await runCliProcess(args);
  outputs.push(run.stdout, run.stderr);
  return run;
}

async function statusJson(): Promise<{ run: CliRun; status: StatusReport }> {
  const run = await cli('status', '--database-url', databaseUrl, '--json');
  return { run, status: JSON.parse(run.stdout) as StatusReport };
}

async function sessionClient(): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl });
  client.on('error', () => undefined);
  await client.connect();
  pgClients.push(client);
  return client;
}

beforeAll(async () => {
  await withAdminClient(serverUrl, async (admin) => {
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await admin.query(`CREATE DATABASE ${databaseName} OWNER ${role}`);
  });
  receiver = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      if (receiverStatus === 200) {
        received.push({ key: request.headers['idempotency-key'] as string | undefined, body });
      }
      response
        .writeHead(receiverStatus)
        .end(receiverStatus === 200 ? 'ok' : 'down for maintenance');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const address = receiver.address() as { port: number };
  receiverUrl = `http://127.0.0.1:${address.port}/snapshot`;
});

afterAll(async () => {
  for (const client of pgClients) await client.end().catch(() => undefined);
  for (const client of clients) await client.$disconnect().catch(() => undefined);
  await new Promise((resolve) => receiver?.close(resolve));
  await dropDatabase(serverUrl, databaseName);
  await withAdminClient(serverUrl, (admin) => admin.query(`DROP ROLE IF EXISTS ${role}`));
});

describe('usagekit CLI against a fresh database', () => {
  test('status before migrate: every migration pending, exit 3', async () => {
    const { run, status } = await statusJson();
    expect(run.code).toBe(3);
    expect(Object.keys(status)).toEqual(
      expect.arrayContaining(['migrations', 'replicas', 'lock', 'periods', 'outbox']),
    );
    expect(status.migrations.current).toBe(false);
    expect(status.migrations.applied).toEqual([]);
    expect(status.migrations.pending.length).toBeGreaterThanOrEqual(5);
    expect(status.migrations.pending[0]).toBe('20260127000000_init');
    expect(status.replicas).toEqual([]);
    expect(status.outbox).toEqual({
      pending: 0,
      oldestPendingAgeMs: null,
      lastDeliveredAt: null,
      failing: [],
      rejected: 0,
      rejectedReports: [],
    });
  });

  test('migrate applies everything once, then nothing; status is current, exit 0', async () => {
    const first = await cli('migrate', '--database-url', databaseUrl, '--json');
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const applied = (JSON.parse(first.stdout) as { applied: string[] }).applied;
    expect(applied[0]).toBe('20260127000000_init');

    const again = await cli('migrate', '--database-url', databaseUrl);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('nothing to apply');

    const { run, status } = await statusJson();
    expect(run.code).toBe(0);
    expect(status.migrations.current).toBe(true);
    expect(status.migrations.applied.map((m) => m.name)).toEqual(applied);
    expect(status.migrations.pending).toEqual([]);
    expect(status.database).toContain(':***@');
    expect(status.schema).toBe('usagekit');
  });

  test('after flushes and a collection: replicas, period and a failing report, exit 4; retry makes it due; delivered, exit 0', async () => {
    const prisma = createPrismaClient({ databaseUrl, maxConnections: 2 });
    clients.push(prisma);
    const store = new BoundaryUsageStore(prisma);
    const replicaA = randomUUID();
    const replicaB = randomUUID();
    const trackerA = new BoundaryUsageTracker();
    const trackerB = new BoundaryUsageTracker();
    trackerA.track(randomUUID(), randomUUID(), 3, 1);
    trackerB.track(randomUUID(), randomUUID(), 2, 0);
    trackerB.track(randomUUID(), randomUUID(), 5, 4);
    await trackerA.flush(store, replicaA);
    await trackerB.flush(store, replicaB);

    const flushed = await statusJson();
    expect(flushed.run.code).toBe(0);
    const byId = new Map(flushed.status.replicas.map((r) => [r.replicaId, r]));
    expect([...byId.keys()].sort()).toEqual([replicaA, replicaB].sort());
    expect(byId.get(replicaA)!.awaitingCutover).toMatchObject({
      allowedRequests: 3,
      deniedRequests: 1,
      uniqueWorkspaces: 1,
      uniqueUsers: 1,
    });
    expect(byId.get(replicaB)!.awaitingCutover).toMatchObject({
      allowedRequests: 7,
      deniedRequests: 4,
      uniqueWorkspaces: 2,
      uniqueUsers: 2,
    });
    expect(byId.get(replicaA)!.writers).toBe(1);
    expect(byId.get(replicaA)!.lastFlushAt).not.toBeNull();
    expect(flushed.status.periods.lastClaimed).toBeNull();

    const reporter = new TelemetryReporter({
      prisma,
      store,
      deploymentId: 'cli-test',
      sink: new HttpSink({ url: receiverUrl, timeoutMs: 5_000 }),
      // Long enough that the failed report is still backing off when `outbox retry` runs.
      retryBackoff: { baseDelayMs: 600_000, maxDelayMs: 600_000 },
    });
    const snapshot = await reporter.collectSnapshot();
    expect(snapshot.reportId).toBeDefined();
    const failedPass = await reporter.deliverPending();
    expect(failedPass).toMatchObject({ delivered: 0, failed: 1 });

    const failing = await statusJson();
    expect(failing.run.code).toBe(4);
    // The cutover emptied the rows; the replicas are still known by their flush sequences.
    const after = new Map(failing.status.replicas.map((r) => [r.replicaId, r]));
    expect(after.get(replicaA)).toMatchObject({
      awaitingCutover: null,
      lastFlushAt: byId.get(replicaA)!.lastFlushAt,
    });
    expect(failing.status.periods.lastClaimed).toMatchObject({
      eventType: BOUNDARY_USAGE_EVENT_TYPE,
      periodEndingAt: snapshot.periodEndingAt.toISOString(),
    });
    expect(failing.status.periods.claimedPeriods).toBe(1);
    expect(failing.status.outbox.pending).toBe(1);
    expect(failing.status.outbox.oldestPendingAgeMs).toBeGreaterThanOrEqual(0);
    expect(failing.status.outbox.failing).toHaveLength(1);
    expect(failing.status.outbox.failing[0]).toMatchObject({
      reportId: snapshot.reportId,
      attempts: 1,
    });
    expect(failing.status.outbox.failing[0]!.lastError).toMatch(/503/);
    expect(failing.run.stdout).not.toContain(password);

    const human = await cli('status', '--database-url', databaseUrl);
    expect(human.code).toBe(4);
    expect(human.stdout).toContain(`failing  ${snapshot.reportId}`);

    const list = await cli('outbox', 'list', '--database-url', databaseUrl, '--json');
    expect(list.code).toBe(0);
    const reports = (
      JSON.parse(list.stdout) as { reports: Array<{ reportId: string; nextAttemptAt: string }> }
    ).reports;
    expect(reports.map((r) => r.reportId)).toEqual([snapshot.reportId]);

    const probe = await sessionClient();
    const dueNow = async () =>
      (
        await probe.query<{ due: boolean }>(
          'SELECT next_attempt_at <= now() AS due FROM usagekit.telemetry_reports WHERE report_id = $1',
          [snapshot.reportId],
        )
      ).rows[0]!.due;
    expect(await dueNow()).toBe(false); // backing off after the 503

    const unknownId = randomUUID();
    const partly = await cli(
      'outbox',
      'retry',
      snapshot.reportId!,
      unknownId,
      '--database-url',
      databaseUrl,
      '--json',
    );
    expect(partly.code).toBe(4);
    expect(JSON.parse(partly.stdout)).toMatchObject({
      revived: [],
      due: [snapshot.reportId],
      notPending: [unknownId],
    });
    expect(await dueNow()).toBe(true);

    receiverStatus = 200;
    expect(await reporter.deliverPending()).toMatchObject({ delivered: 1, failed: 0 });
    expect(received.map((r) => r.key)).toEqual([snapshot.reportId]);
    const delivered = await statusJson();
    expect(delivered.run.code).toBe(0);
    expect(delivered.status.outbox).toMatchObject({
      pending: 0,
      oldestPendingAgeMs: null,
      failing: [],
    });
    expect(delivered.status.outbox.lastDeliveredAt).not.toBeNull();

    const retryDelivered = await cli(
      'outbox',
      'retry',
      snapshot.reportId!,
      '--database-url',
      databaseUrl,
    );
    expect(retryDelivered.code).toBe(4); // delivered is not pending: nothing to retry
  });

  test('dead letters: status counts a rejected report (exit 4), list --rejected shows it, retry makes it pending again', async () => {
    const db = await sessionClient();
    // Issue 18's migration adds these columns; IF NOT EXISTS keeps the test honest should a
    // database be migrated without it (the CLI reads dead letters only where they exist).
    await db.query(`ALTER TABLE usagekit.telemetry_reports
        ADD COLUMN IF NOT EXISTS rejected_at TIMESTAMPTZ(6),
        ADD COLUMN IF NOT EXISTS rejections INTEGER NOT NULL DEFAULT 0`);
    const reportId = randomUUID();
    await db.query(
      `INSERT INTO usagekit.telemetry_reports
         (report_id, event_type, period_starting_at, period_duration_ms, payload, attempts,
          last_error, next_attempt_at, rejected_at, rejections)
       VALUES ($1, $2, '2020-01-01T00:00:00Z', 1800000, '{}'::jsonb, 3,
               'SINK_REJECTED: receiver answered 422', now(), now(), 3)`,
      [reportId, BOUNDARY_USAGE_EVENT_TYPE],
    );

    const { run, status } = await statusJson();
    expect(run.code).toBe(4);
    expect(status.outbox).toMatchObject({ pending: 0, rejected: 1, failing: [] });
    expect(status.outbox.rejectedReports).toEqual([
      expect.objectContaining({ reportId, rejections: 3, lastError: expect.stringMatching(/422/) }),
    ]);
    const pendingList = await cli('outbox', 'list', '--database-url', databaseUrl, '--json');
    expect((JSON.parse(pendingList.stdout) as { reports: unknown[] }).reports).toEqual([]);
    const rejectedList = await cli(
      'outbox',
      'list',
      '--rejected',
      '--database-url',
      databaseUrl,
      '--json',
    );
    expect(
      (JSON.parse(rejectedList.stdout) as { reports: Array<{ reportId: string }> }).reports.map(
        (r) => r.reportId,
      ),
    ).toEqual([reportId]);

    const retry = await cli('outbox', 'retry', reportId, '--database-url', databaseUrl, '--json');
    expect(retry.code).toBe(0);
    expect(JSON.parse(retry.stdout)).toMatchObject({
      due: [],
      revived: [reportId],
      notPending: [],
    });
    const row = (
      await db.query<{ rejected: boolean; rejections: number; due: boolean }>(
        `SELECT rejected_at IS NOT NULL AS rejected, rejections, next_attempt_at <= now() AS due
           FROM usagekit.telemetry_reports WHERE report_id = $1`,
        [reportId],
      )
    ).rows[0];
    expect(row).toEqual({ rejected: false, rejections: 0, due: true });
    const after = await statusJson();
    expect(after.status.outbox).toMatchObject({ pending: 1, rejected: 0 });

    await db.query(
      'UPDATE usagekit.telemetry_reports SET delivered_at = now() WHERE report_id = $1',
      [reportId],
    );
  });

  test('lock: the holder of the boundary-usage lock and a session waiting for it', async () => {
    const holder = await sessionClient();
    const waiter = await sessionClient();
    const key = LockIds.boundaryUsageStats.toString();
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock($1::bigint)', [key]);
    const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))
      .rows[0]!.pid;
    const waiterPid = (await waiter.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))
      .rows[0]!.pid;
    await waiter.query('BEGIN');
    const waiting = waiter.query('SELECT pg_advisory_xact_lock_shared($1::bigint)', [key]);
    await waitUntil(
      async () =>
        (await holder.query('SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted', [waiterPid]))
          .rowCount === 1,
      'the waiter queues for the lock',
    );

    const { run, status } = await statusJson();
    expect(run.code).toBe(0);
    expect(status.lock.held).toEqual([
      expect.objectContaining({
        lock: 'boundaryUsageStats',
        pid: holderPid,
        mode: 'ExclusiveLock',
        granted: true,
      }),
    ]);
    expect(status.lock.waiting).toEqual([
      expect.objectContaining({
        lock: 'boundaryUsageStats',
        pid: waiterPid,
        mode: 'ShareLock',
        granted: false,
      }),
    ]);
    expect(status.lock.held[0]!.inTransactionMs).toBeGreaterThanOrEqual(0);

    await holder.query('ROLLBACK');
    await waiting;
    await waiter.query('ROLLBACK');
    const released = await statusJson();
    expect(released.status.lock).toEqual({ held: [], waiting: [] });
  });

  test('migrate waits for another migrate only until its deadline: exit 2', async () => {
    const other = await sessionClient();
    await other.query('SELECT pg_advisory_lock($1::bigint)', [LockIds.migrate.toString()]);
    try {
      const run = await cli('migrate', '--database-url', databaseUrl, '--timeout-ms', '1500');
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/usagekit migrate: .*1500/);
      expect(run.elapsedMs).toBeGreaterThanOrEqual(1_500);
      expect(run.elapsedMs).toBeLessThan(15_000);
    } finally {
      await other.query('SELECT pg_advisory_unlock($1::bigint)', [LockIds.migrate.toString()]);
    }
  });

  test('a migration that fails: migrate exits 3, status shows it failed and exits 3', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'usagekit-cli-migrations-'));
    mkdirSync(join(dir, '20990101000000_broken'));
    writeFileSync(join(dir, '20990101000000_broken', 'migration.sql'), 'SELECT 1 / 0;\n');
    const run = await cli('migrate', '--database-url', databaseUrl, '--migrations-dir', dir);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/20990101000000_broken/);
    const { run: statusRun, status } = await statusJson();
    expect(statusRun.code).toBe(3);
    expect(status.migrations.failed).toEqual([
      expect.objectContaining({
        name: '20990101000000_broken',
        error: expect.stringMatching(/division by zero/),
      }),
    ]);
  });
});

describe('usagekit CLI exit codes without a database', () => {
  test('unreachable database: exit 2, the password never printed', async () => {
    const closed = `postgresql://someone:${password}@127.0.0.1:1/nowhere`;
    for (const args of [['status'], ['migrate'], ['outbox', 'list']]) {
      const run = await cli(...args, '--database-url', closed, '--connect-timeout-ms', '2000');
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('someone:***@127.0.0.1:1');
    }
    const fromEnv = await runCliProcess(['status'], { DATABASE_URL: closed });
    outputs.push(fromEnv.stdout, fromEnv.stderr);
    expect(fromEnv.code).toBe(2);
  });

  test('usage errors: exit 1', async () => {
    expect((await cli('status')).code).toBe(1); // no URL, no DATABASE_URL
    expect((await cli('frobnicate', '--database-url', databaseUrl)).code).toBe(1);
    expect((await cli('status', '--database-url', databaseUrl, '--bogus')).code).toBe(1);
    expect((await cli('outbox', 'retry', 'not-a-uuid', '--database-url', databaseUrl)).code).toBe(
      1,
    );
    expect((await cli('outbox', 'retry', '--database-url', databaseUrl)).code).toBe(1);
    expect(
      (
        await cli(
          'outbox',
          'retry',
          '--all-pending',
          '--all-rejected',
          '--database-url',
          databaseUrl,
        )
      ).code,
    ).toBe(1);
    expect((await cli('status', '--database-url', databaseUrl, '--timeout-ms', '0')).code).toBe(1);
    expect((await cli('status', '--database-url', databaseUrl, '--schema', 'public')).code).toBe(1);
    const help = await cli('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Exit codes:');
  });

  test('no output of any run in this file contained the password', () => {
    expect(outputs.length).toBeGreaterThan(20);
    for (const text of outputs) expect(text).not.toContain(password);
  });
});
