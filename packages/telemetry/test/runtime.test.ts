import { LockIds } from '@usagekit/db';
import { startFreezingProxy, startTcpForwarder } from '@usagekit/testing';
import { Client } from 'pg';
import { startUsageRuntime, StopBudget, type StopReport, type UsageRuntime } from '../src/index.js';
import { startReceiver, useDatabase, uuid, waitUntil, type Receiver } from './helpers.js';

/**
 * The runtime of a host process (issue 20 item 2): stop({ budgetMs }) returns within the
 * budget whatever the database does (frozen, lock held by another session), and on the normal
 * path every tracked request reaches the receiver exactly once, the last replica's usage
 * through its final collection.
 */
const db = useDatabase();

/** Timer slack allowed past the budget: timers fire late on a loaded 2-core machine. */
const SLACK_MS = 750;

const HOUR_MS = 3_600_000;

interface Tracked {
  allowed: number;
  denied: number;
}

function trackSome(runtime: UsageRuntime, tracked: Tracked, rounds: number): void {
  for (let i = 0; i < rounds; i++) {
    const allowed = (i % 3) + 1;
    const denied = i % 2;
    runtime.track(uuid(), uuid(), allowed, denied);
    tracked.allowed += allowed;
    tracked.denied += denied;
  }
}

/** Requests in the reports the receiver accepted, one per report id (the Idempotency-Key). */
function receivedTotals(receiver: Receiver): { allowed: number; denied: number; reports: number } {
  const byKey = new Map<string, string>();
  for (const request of receiver.accepted()) {
    const key = String(request.headers['idempotency-key']);
    const earlier = byKey.get(key);
    if (earlier !== undefined) expect(request.body).toBe(earlier); // one key, one body
    byKey.set(key, request.body);
  }
  let allowed = 0;
  let denied = 0;
  for (const body of byKey.values()) {
    const summary = (JSON.parse(body) as { boundary_usage_summary?: Record<string, unknown> })
      .boundary_usage_summary;
    if (!summary) continue;
    allowed += Number(summary['allowed_requests']);
    denied += Number(summary['denied_requests']);
  }
  return { allowed, denied, reports: byKey.size };
}

function stepOf(report: StopReport, step: string) {
  const found = report.steps.find((candidate) => candidate.step === step);
  if (!found) throw new Error(`no step ${step} in ${JSON.stringify(report)}`);
  return found;
}

describe('startUsageRuntime', () => {
  it('normal path: two replicas, the first stops leaving its usage in the table, the last collects and delivers it all, exactly once', async () => {
    const receiver = await startReceiver();
    db.defer(() => receiver.close());
    const deploymentId = uuid();
    const start = (replicaId: string) =>
      startUsageRuntime({
        databaseUrl: db.database().databaseUrl,
        replicaId,
        deploymentId,
        sink: receiver.url,
        flushIntervalMs: 100,
        snapshotFrequencyMs: HOUR_MS,
      });
    const first = start(uuid());
    const last = start(uuid());
    db.defer(() => first.stop({ budgetMs: 2_000 }));
    db.defer(() => last.stop({ budgetMs: 2_000 }));
    // start() collects at once: one of them claims the hour that just ended (nothing in it).
    // Wait for that, so the first replica's usage is still in the table when it stops.
    await waitUntil(
      () => receiver.accepted().length >= 1,
      'the first collection delivered',
      10_000,
    );
    const tracked = { allowed: 0, denied: 0 };
    trackSome(first, tracked, 40);
    trackSome(last, tracked, 25);
    await new Promise((resolve) => setTimeout(resolve, 250));
    trackSome(first, tracked, 10); // some of it only the final flush takes

    const firstReport = await first.stop();
    expect(firstReport.inMemory).toEqual({ allowedRequests: 0n, deniedRequests: 0n });
    expect(firstReport.finalCollection).toBe('not-requested');
    // Not collected yet: its whole tracked usage waits in its row for the next collection.
    const firstTracked = first.confirmed();
    expect(firstReport.awaitingCollection).toEqual({
      allowedRequests: firstTracked.allowedRequests,
      deniedRequests: firstTracked.deniedRequests,
    });
    expect(firstReport.disconnect).toBe('disconnected');

    trackSome(last, tracked, 15);
    const lastReport = await last.stop({ finalCollection: true });
    expect(lastReport.finalCollection).toBe('reported');
    expect(lastReport.finalReportId).toEqual(expect.any(String));
    expect(lastReport.inMemory).toEqual({ allowedRequests: 0n, deniedRequests: 0n });
    expect(lastReport.awaitingCollection).toEqual({ allowedRequests: 0n, deniedRequests: 0n });
    expect(lastReport.undeliveredReports).toBe(0);
    expect(lastReport.steps.map((step) => [step.step, step.outcome])).toEqual([
      ['flush', 'done'],
      ['final-collection', 'done'],
      ['delivery', 'done'],
      ['account', 'done'],
      ['disconnect', 'done'],
    ]);
    expect(lastReport.elapsedMs).toBeLessThanOrEqual(lastReport.budgetMs);

    const received = receivedTotals(receiver);
    expect({ allowed: received.allowed, denied: received.denied }).toEqual(tracked);
    // The final report was delivered, under its id.
    expect(
      receiver
        .accepted()
        .some((request) => request.headers['idempotency-key'] === lastReport.finalReportId),
    ).toBe(true);
    // JSON-safe, as a host would log it.
    const json = JSON.parse(JSON.stringify(lastReport)) as { inMemory: unknown; steps: unknown[] };
    expect(json.inMemory).toEqual({ allowedRequests: 0, deniedRequests: 0 });
    expect(json.steps).toHaveLength(5);
    console.log(
      `[runtime normal] tracked=${tracked.allowed}/${tracked.denied} received=${received.allowed}/${received.denied} reports=${received.reports} ` +
        `stop(first)=${firstReport.elapsedMs}ms stop(last, final collection)=${lastReport.elapsedMs}ms ` +
        lastReport.steps
          .map((step) => `${step.step}=${step.elapsedMs}/${step.allowanceMs}ms`)
          .join(' '),
    );
  });

  it('frozen database: stop() returns within its budget, says what stayed in memory, and forces the client closed', async () => {
    const proxy = await startFreezingProxy(db.database().databaseUrl);
    db.defer(() => proxy.close());
    const runtime = startUsageRuntime({
      databaseUrl: proxy.databaseUrl,
      replicaId: uuid(),
      deploymentId: uuid(),
      sink: 'http://127.0.0.1:9/never',
      flushIntervalMs: 60_000,
      snapshotFrequencyMs: HOUR_MS,
    });
    db.defer(() => runtime.stop({ budgetMs: 1_000 }));
    const tracked = { allowed: 0, denied: 0 };
    trackSome(runtime, tracked, 20);
    await runtime.flushNow(); // connections open, the profile probed
    const flushedBefore = runtime.confirmed();
    const later = { allowed: 0, denied: 0 };
    trackSome(runtime, later, 12);
    proxy.freeze({ newConnections: true });

    const budgetMs = 3_000;
    const startedAt = performance.now();
    const report = await runtime.stop({ budgetMs, finalCollection: true });
    const elapsedMs = performance.now() - startedAt;

    expect(elapsedMs).toBeLessThanOrEqual(budgetMs + SLACK_MS);
    // Lower bound: it did try, each step for its allowance (the flush alone gets 40 %).
    expect(elapsedMs).toBeGreaterThanOrEqual(budgetMs * 0.4);
    expect(stepOf(report, 'flush').outcome).toBe('timed-out');
    expect(['timed-out', 'skipped']).toContain(stepOf(report, 'final-collection').outcome);
    expect(report.finalCollection).not.toBe('reported');
    expect(report.awaitingCollection).toBeNull();
    expect(report.undeliveredReports).toBeNull();
    // What the frozen database never confirmed is named, and it is exactly what was tracked
    // after the last successful flush: lost at exit, but not silently.
    expect(report.inMemory).toEqual({
      allowedRequests: BigInt(later.allowed),
      deniedRequests: BigInt(later.denied),
    });
    expect(runtime.confirmed().allowedRequests).toBe(flushedBefore.allowedRequests);
    // The connection stuck in the final flush had to be destroyed for $disconnect to finish.
    expect(['forced', 'disconnected']).toContain(report.disconnect);
    console.log(
      `[runtime frozen] budget=${budgetMs}ms stop=${Math.round(elapsedMs)}ms disconnect=${report.disconnect} ` +
        report.steps
          .map((step) => `${step.step}=${step.outcome}:${step.elapsedMs}/${step.allowanceMs}ms`)
          .join(' '),
    );
    proxy.thaw();
  });

  it('lock held by another session: stop() returns within its budget; flushed usage is reported as waiting in the table; nothing touches the database afterwards', async () => {
    const receiver = await startReceiver();
    db.defer(() => receiver.close());
    // Counts every connection the runtime opens.
    const forwarder = await startTcpForwarder(db.database().databaseUrl);
    db.defer(() => forwarder.close());
    const viaForwarder = new URL(db.database().databaseUrl);
    viaForwarder.hostname = '127.0.0.1';
    viaForwarder.port = String(forwarder.port);
    const runtime = startUsageRuntime({
      databaseUrl: viaForwarder.toString(),
      replicaId: uuid(),
      deploymentId: uuid(),
      sink: receiver.url,
      flushIntervalMs: 60_000,
      snapshotFrequencyMs: HOUR_MS,
    });
    db.defer(() => runtime.stop({ budgetMs: 1_000 }));
    // The reporter's first round (at start) collects the period that has ended; let it pass,
    // or it may cut over this test's flush before the lock is taken.
    await runtime.reporter.collectSnapshot();
    const tracked = { allowed: 0, denied: 0 };
    trackSome(runtime, tracked, 20);
    await runtime.flushNow();
    const flushed = runtime.confirmed();
    const later = { allowed: 0, denied: 0 };
    trackSome(runtime, later, 9);

    // Another session takes the boundary-usage lock exclusively, as a cutover would, and keeps it.
    const holder = new Client({ connectionString: db.database().databaseUrl });
    holder.on('error', () => undefined);
    await holder.connect();
    db.defer(() => holder.end());
    // The first test's final collection claimed the hour in progress (the election is per
    // database, not per deployment); forget it, so this final collection can claim it.
    await holder.query('DELETE FROM usagekit.telemetry_locks');
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock($1::bigint)', [
      LockIds.boundaryUsageStats.toString(),
    ]);

    const budgetMs = 6_000;
    const startedAt = performance.now();
    const report = await runtime.stop({ budgetMs, finalCollection: true });
    const elapsedMs = performance.now() - startedAt;
    const acceptedAtStop = forwarder.acceptedConnections();
    await holder.query('ROLLBACK');
    // With the lock free, work the steps gave up on (a flush retry, the collection, the
    // delivery queued behind it) would run now, on a client stop() already closed: Prisma
    // would open it again. None may start after stop() has returned.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(forwarder.acceptedConnections()).toBe(acceptedAtStop);
    expect([...forwarder.openConnections().values()].reduce((a, b) => a + b, 0)).toBe(0);

    expect(elapsedMs).toBeLessThanOrEqual(budgetMs + SLACK_MS);
    expect(elapsedMs).toBeGreaterThanOrEqual(budgetMs * 0.4);
    expect(['timed-out', 'failed']).toContain(stepOf(report, 'flush').outcome);
    // The final collection needs the same lock, exclusively: it cannot report either.
    expect(['timed-out', 'failed']).toContain(report.finalCollection);
    expect(report.inMemory).toEqual({
      allowedRequests: BigInt(later.allowed),
      deniedRequests: BigInt(later.denied),
    });
    // Reads take no advisory lock: the account still says what waits in the table.
    expect(report.awaitingCollection).toEqual({
      allowedRequests: flushed.allowedRequests,
      deniedRequests: flushed.deniedRequests,
    });
    // A retry of the flush may still be waiting for the lock: then the disconnect forces it.
    expect(['disconnected', 'forced']).toContain(report.disconnect);
    console.log(
      `[runtime lock held] budget=${budgetMs}ms stop=${Math.round(elapsedMs)}ms ` +
        report.steps
          .map(
            (step) =>
              `${step.step}=${step.outcome}${step.code ? `(${step.code})` : ''}:${step.elapsedMs}/${step.allowanceMs}ms`,
          )
          .join(' '),
    );
  });

  it('stop() counts a rejected report (dead letter) as rejected, not as undelivered', async () => {
    const { databaseUrl } = db.database();
    const client = new Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      // Earlier tests' usage would be collected into a report of its own at this start.
      await client.query('DELETE FROM usagekit.telemetry_reports');
      await client.query('DELETE FROM usagekit.boundary_usage_stats');
      // One dead letter and one report waiting out its backoff (not due during this stop).
      await client.query(
        `INSERT INTO usagekit.telemetry_reports
           (report_id, event_type, period_starting_at, period_duration_ms, payload,
            attempts, next_attempt_at, rejected_at, rejections)
         VALUES ($1, 'boundary_usage_summary', '2026-01-01T00:00:00Z', 1800000, '{}', 3,
                 now() + interval '1 hour', now(), 3),
                ($2, 'boundary_usage_summary', '2026-01-01T00:30:00Z', 1800000, '{}', 1,
                 now() + interval '1 hour', NULL, 0)`,
        [uuid(), uuid()],
      );
    } finally {
      await client.end();
    }
    const runtime = startUsageRuntime({
      databaseUrl,
      replicaId: uuid(),
      deploymentId: uuid(),
      sink: 'http://127.0.0.1:9/never',
      flushIntervalMs: 60_000,
      snapshotFrequencyMs: HOUR_MS,
    });
    const report = await runtime.stop({ budgetMs: 5_000 });
    expect(stepOf(report, 'account').outcome).toBe('done');
    const after = new Client({ connectionString: databaseUrl });
    await after.connect();
    const { rows } = await after
      .query<{ pending: number; rejected: number }>(
        `SELECT count(*) FILTER (WHERE rejected_at IS NULL)::int AS pending,
                count(*) FILTER (WHERE rejected_at IS NOT NULL)::int AS rejected
           FROM usagekit.telemetry_reports WHERE delivered_at IS NULL`,
      )
      .finally(() => after.end());
    expect(rows[0]).toEqual({ pending: 1, rejected: 1 });
    expect(report.undeliveredReports).toBe(1);
    expect(report.rejectedReports).toBe(1);
  });

  it('rejects bad options with INVALID_INPUT: synchronously at start, as a rejection from stop()', async () => {
    const base = {
      databaseUrl: db.database().databaseUrl,
      replicaId: uuid(),
      deploymentId: uuid(),
      sink: 'http://127.0.0.1:9/never',
    };
    expect(() => startUsageRuntime({ ...base, replicaId: 'replica-1' })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT', field: 'replicaId' }),
    );
    expect(() => startUsageRuntime({ ...base, databaseUrl: undefined })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT' }),
    );
    const runtime = startUsageRuntime(base);
    await expect(runtime.stop({ budgetMs: -1 })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'budgetMs',
    });
    const report = await runtime.stop({ budgetMs: 2_000 });
    expect(report.inMemory).toEqual({ allowedRequests: 0n, deniedRequests: 0n });
    // Idempotent: the same promise.
    expect(await runtime.stop()).toBe(report);
  });
});

describe('StopBudget', () => {
  it('splits the default 20 s: flush 8 s, final collection 5 s, delivery the rest, account 1 s, disconnect 2 s', () => {
    const budget = new StopBudget(20_000, true);
    expect(budget.allowanceMs('flush')).toBe(8_000);
    expect(budget.allowanceMs('final-collection')).toBe(5_000);
    // Nothing used yet: delivery could take all but the reserves of account and disconnect.
    expect(budget.allowanceMs('delivery')).toBeGreaterThan(16_900);
    expect(budget.allowanceMs('delivery')).toBeLessThanOrEqual(17_000);
    expect(budget.allowanceMs('account')).toBe(1_000);
    expect(budget.steps).toEqual([
      'flush',
      'final-collection',
      'delivery',
      'account',
      'disconnect',
    ]);
    expect(new StopBudget(20_000, false).steps).not.toContain('final-collection');
  });
});
