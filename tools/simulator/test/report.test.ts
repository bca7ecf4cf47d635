import {
  buildReport,
  DEFAULT_OPTIONS,
  formatReport,
  reportToJson,
  type RunObservations,
} from '../src/index.js';
import type { ReceivedReport } from '../src/lib/collector.js';
import type { ReplicaState } from '../src/lib/replica/protocol.js';

function state(
  index: number,
  generated: [number, number],
  flushed: [number, number],
): ReplicaState {
  return {
    replicaId: `00000000-0000-4000-8000-00000000000${index}`,
    index,
    pid: 1000 + index,
    generated: { allowed: BigInt(generated[0]), denied: BigInt(generated[1]) },
    flushed: { allowed: BigInt(flushed[0]), denied: BigInt(flushed[1]) },
    flushResults: { allowed: BigInt(flushed[0]), denied: BigInt(flushed[1]) },
    pending: {
      allowed: BigInt(generated[0] - flushed[0]),
      denied: BigInt(generated[1] - flushed[1]),
    },
    flushes: 3,
    batches: 3,
    duplicateBatches: 0,
    newPeriods: 1,
    periodsReported: 1,
    deliveries: 1,
    deliveriesAcknowledged: 1,
    errors: {},
    flushLatencyMs: [],
    flushCompletedAtMs: [],
    cutoverLatencyMs: [],
  };
}

function snapshot(
  key: string,
  periodStart: string,
  allowed: number,
  denied: number,
  stale = 0,
): ReceivedReport {
  return {
    idempotencyKey: key,
    receivedAt: new Date(),
    copies: 1,
    body: {
      report_id: key,
      deployment_id: 'd',
      collected_at: periodStart,
      boundary_usage_summary: {
        unique_workspaces: 3,
        unique_users: 2,
        allowed_requests: allowed,
        denied_requests: denied,
        period_start: periodStart,
        period_duration_ms: 5000,
        unique_workspaces_replica_sum: 5,
        unique_users_replica_sum: 4,
        window_start: periodStart,
        window_end: periodStart,
        replicas: 2,
        stale_replicas: stale > 0 ? 1 : 0,
        stale_unique_workspaces_replica_sum: 0,
        stale_unique_users_replica_sum: 0,
        stale_allowed_requests: stale,
        stale_denied_requests: 0,
      },
    },
  };
}

function observations(overrides: Partial<RunObservations> = {}): RunObservations {
  return {
    options: { ...DEFAULT_OPTIONS, replicas: 2 },
    databaseSource: 'PostgreSQL 18',
    databaseName: 'usagekit_sim_test',
    deploymentId: 'deployment',
    startedAt: new Date('2026-01-01T00:00:00Z'),
    trafficMs: 10_000,
    interrupted: false,
    replicas: [0, 1].map((index) => ({
      index,
      replicaId: `00000000-0000-4000-8000-00000000000${index}`,
      pid: 1000 + index,
      outcome: 'stopped' as const,
      state: state(index, [90, 10], [90, 10]),
      flushLatencyMs: [1, 2, 3],
      cutoverLatencyMs: [10],
      failure: undefined,
    })),
    killed: undefined,
    received: [
      snapshot('b', '2026-01-01T00:00:05.000Z', 100, 12),
      snapshot('a', '2026-01-01T00:00:00.000Z', 80, 8),
    ],
    collector: {
      posts: 2,
      accepted: 2,
      duplicates: 0,
      refused: 0,
      acknowledgementsDropped: 0,
      malformed: 0,
    },
    finalReportId: 'b',
    finalCollectionMs: 12,
    lockWaits: {
      intervalMs: 20,
      samples: 10,
      samplesWithWaiters: 0,
      maxWaiting: 0,
      meanWaiting: 0,
    },
    backendsTerminated: 0,
    errors: {},
    leftover: { statsRows: 0, undeliveredReports: 0, rejectedReports: 0 },
    failures: [],
    ...overrides,
  };
}

describe('buildReport', () => {
  it('balances when generated = flushed = reported, and orders periods by start', () => {
    const report = buildReport(observations());
    expect(report.balanced).toBe(true);
    expect(report.account.generated.total).toBe(200n);
    expect(report.account.flushed.total).toBe(200n);
    expect(report.account.reported.total).toBe(200n);
    expect(report.periods.map((row) => [row.reportId, row.finalCollection])).toEqual([
      ['a', false],
      ['b', true],
    ]);
    expect(report.periods[0]).toMatchObject({
      uniqueWorkspaces: 3n,
      uniqueWorkspacesReplicaSum: 5n,
      replicas: 2,
    });
    const text = formatReport(report);
    expect(text).toContain('BALANCED: generated 200 = flushed 200 = reported 200.');
    expect(JSON.parse(reportToJson(report)).account.reported.total).toBe(200);
  });

  it('counts stale rows as reported, and shows them apart', () => {
    const report = buildReport(
      observations({ received: [snapshot('a', '2026-01-01T00:00:00.000Z', 170, 20, 10)] }),
    );
    expect(report.balanced).toBe(true);
    expect(report.account.reportedStale.total).toBe(10n);
    expect(formatReport(report)).toContain('1 row(s): 10');
  });

  it('does not balance when a report is missing', () => {
    const report = buildReport(
      observations({ received: [snapshot('a', '2026-01-01T00:00:00.000Z', 80, 8)] }),
    );
    expect(report.balanced).toBe(false);
    expect(report.account.reportedMinusFlushed.total).toBe(-112n);
    expect(formatReport(report)).toContain('NOT BALANCED');
  });

  it('does not balance when a live replica kept requests it never flushed', () => {
    const base = observations();
    base.replicas[1]!.state = state(1, [95, 10], [90, 10]);
    const report = buildReport(base);
    expect(report.balanced).toBe(false);
    expect(report.account.unflushed.total).toBe(5n);
  });

  it('allows exactly the killed replica’s unflushed requests, and counts an applied ambiguous batch as flushed', () => {
    const base = observations();
    base.replicas[1]!.outcome = 'killed';
    // Tracked 120, confirmed 80; its last, failed batch of 20 turned out to be applied.
    base.killed = {
      index: 1,
      replicaId: base.replicas[1]!.replicaId,
      atMs: 5_000,
      state: state(1, [110, 10], [75, 5]),
      unconfirmedBatch: { sequence: 7n, writerId: undefined, allowed: 15n, denied: 5n },
      unconfirmedBatchApplied: true,
    };
    base.received = [snapshot('a', '2026-01-01T00:00:00.000Z', 180, 20)];
    const report = buildReport(base);
    expect(report.account.lostWithKilledReplica.total).toBe(20n);
    expect(report.account.flushed.total).toBe(200n);
    expect(report.chaos).toBeNull(); // chaos flag off in these options
    expect(report.balanced).toBe(true);

    const chaos = buildReport({
      ...base,
      options: { ...base.options, chaos: true },
      backendsTerminated: 3,
    });
    expect(chaos.chaos?.killed).toMatchObject({
      index: 1,
      ambiguousBatch: 'applied',
      lost: { total: 20n },
    });
    expect(formatReport(chaos)).toContain(
      '+ lost with the killed replica 20; nothing else lost or counted twice.',
    );
  });

  it('shows the partition per replica and the alerts Prometheus reported, in traffic time', () => {
    const start = Date.parse('2026-01-01T00:00:00Z');
    const base = observations();
    const report = buildReport({
      ...base,
      options: { ...base.options, chaos: true, prometheus: true },
      trafficMs: 20_000,
      trafficStartedAtMs: start,
      replicas: base.replicas.map((replica) => ({
        ...replica,
        // Replica 0 flushes every second except from 2 s to 13.6 s; replica 1 never again after 2 s.
        flushCompletedAtMs: (replica.index === 0
          ? [1_000, 2_000, 13_600, 14_600]
          : [1_000, 2_000]
        ).map((at) => start + at),
      })),
      faults: {
        partitionBeganMs: 3_000,
        connectionsFrozen: 8,
        newConnectionsMs: 6_000,
        thawedMs: 13_500,
        connectionsDropped: 5,
      },
      alerts: {
        status: 'observed',
        url: 'http://127.0.0.1:9090',
        intervalMs: 1_000,
        intervals: [
          {
            alertname: 'UsagekitTelemetryStalled',
            severity: 'critical',
            labels: { replica: '0' },
            firingFromMs: start + 8_000,
            firingToMs: start + 14_000,
            stillFiring: false,
          },
        ],
      },
    });
    expect(report.chaos?.partition?.replicas.map((row) => row.recoveredAfterThawMs)).toEqual([
      100,
      null,
    ]);
    expect(report.alerts?.fired).toEqual([
      expect.objectContaining({ firingFromMs: 8_000, firingToMs: 14_000, stillFiring: false }),
    ]);
    const text = formatReport(report);
    expect(text).toContain(
      'Partition: at 3.0s 8 replica connection(s) and every new one went silent (no FIN, no RST); new connections worked again at 6.0s; healed at 13.5s',
    );
    expect(text).toMatch(/ {2}0 +11\.6s +2\.0s +13\.6s +10\.6s +0\.1s/);
    expect(text).toMatch(/ {2}1 +18\.0s +2\.0s +20\.0s +never +-/);
    expect(text).toMatch(/UsagekitTelemetryStalled +critical +replica=0 +8\.0s +14\.0s +resolved/);
  });

  it('says why alerts were not observed', () => {
    const report = buildReport(
      observations({
        alerts: { status: 'unavailable', note: 'prometheus is not installed', intervals: [] },
      }),
    );
    expect(formatReport(report)).toContain('Alerts: not observed: prometheus is not installed');
  });

  it('fails on anything left in the database or a failure during the run', () => {
    expect(
      buildReport(observations({ leftover: { statsRows: 1, undeliveredReports: 0, rejectedReports: 0 } })).balanced,
    ).toBe(false);
    expect(
      buildReport(observations({ failures: ['the final collection failed: boom'] })).balanced,
    ).toBe(false);
  });
});
