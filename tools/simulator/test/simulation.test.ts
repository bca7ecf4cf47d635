import {
  DEFAULT_OPTIONS,
  formatReport,
  runSimulation,
  type SimulatorOptions,
} from '../src/index.js';
import { databaseExists, testServerUrl } from './support/server.js';

// Real runs: replica processes, PostgreSQL, the collector. Short, but long enough for several
// periods (period 2 s; reporters tick 1 s after each period edge).
function shortRun(overrides: Partial<SimulatorOptions>): SimulatorOptions {
  return {
    ...DEFAULT_OPTIONS,
    replicas: 3,
    durationMs: 5_000,
    flushIntervalMs: 400,
    periodMs: 2_000,
    ratePerReplica: 100,
    workspaces: 12,
    users: 5,
    databaseUrl: testServerUrl(),
    ...overrides,
  };
}

describe('runSimulation', () => {
  it('balances a short run: generated = flushed = reported, over several periods and cutovers', async () => {
    const report = await runSimulation(shortRun({}), { progress: 'none' });

    expect(report.checks.filter((check) => !check.ok)).toEqual([]);
    expect(report.balanced).toBe(true);
    const { generated, flushed, reported, unflushed, reportedMinusFlushed } = report.account;
    expect(generated.total).toBeGreaterThan(1_000n);
    expect(flushed).toEqual(generated);
    expect(reported).toEqual(generated);
    expect(unflushed.total).toBe(0n);
    expect(reportedMinusFlushed.total).toBe(0n);

    expect(report.replicas.map((replica) => replica.outcome)).toEqual([
      'stopped',
      'stopped',
      'stopped',
    ]);
    const withData = report.periods.filter((row) => row.replicas > 0);
    expect(withData.length).toBeGreaterThanOrEqual(2);
    expect(report.periods.filter((row) => row.finalCollection)).toHaveLength(1);
    for (const row of withData) {
      // Exact distinct counts never exceed the population nor coder's per-replica sums.
      expect(row.uniqueWorkspaces).toBeGreaterThan(0n);
      expect(row.uniqueWorkspaces).toBeLessThanOrEqual(12n);
      expect(row.uniqueUsers).toBeLessThanOrEqual(5n);
      expect(row.uniqueWorkspacesReplicaSum).toBeGreaterThanOrEqual(row.uniqueWorkspaces);
      expect(row.uniqueUsersReplicaSum).toBeGreaterThanOrEqual(row.uniqueUsers);
    }
    expect(report.leftover).toEqual({ statsRows: 0, undeliveredReports: 0, rejectedReports: 0 });
    expect(report.latency.flush.count).toBeGreaterThan(0);
    expect(report.latency.cutover.count).toBeGreaterThanOrEqual(withData.length);
    expect(report.collector.malformed).toBe(0);
    // The simulator cleans up after itself.
    expect(await databaseExists(testServerUrl(), report.database.name)).toBe(false);
  }, 90_000);

  it('with --prometheus but no Prometheus installed, says so and runs without it', async () => {
    const report = await runSimulation(shortRun({ durationMs: 2_000, prometheus: true }), {
      progress: 'none',
      prometheusBinary: null,
    });
    expect(report.balanced).toBe(true);
    expect(report.alerts).toMatchObject({ status: 'unavailable', fired: [] });
    expect(formatReport(report)).toContain(
      'Alerts: not observed: prometheus is not installed (Debian: apt-get install -y prometheus); running without it',
    );
  }, 90_000);

  it('with --chaos, loses only what the killed replica had tracked but not flushed', async () => {
    const report = await runSimulation(shortRun({ durationMs: 6_000, chaos: true }), {
      progress: 'none',
      chaosKillAtMs: 3_000,
      chaosTerminateEveryMs: 400,
    });

    expect(report.checks.filter((check) => !check.ok)).toEqual([]);
    expect(report.balanced).toBe(true);
    const killed = report.chaos?.killed;
    expect(killed).toBeTruthy();
    expect(
      report.replicas
        .filter((replica) => replica.outcome === 'killed')
        .map((replica) => replica.index),
    ).toEqual([killed!.index]);
    expect(report.replicas.filter((replica) => replica.outcome === 'stopped')).toHaveLength(2);
    // The loss is the killed replica's tracked − flushed at the SIGKILL, and nothing else.
    expect(killed!.lost.total).toBe(killed!.tracked.total - killed!.flushed.total);
    expect(killed!.lost.total).toBeGreaterThanOrEqual(0n);
    const { generated, flushed, reported, unflushed, reportedMinusFlushed, lostWithKilledReplica } =
      report.account;
    expect(lostWithKilledReplica).toEqual(killed!.lost);
    expect(unflushed.total).toBe(0n);
    expect(reportedMinusFlushed.total).toBe(0n);
    expect(reported).toEqual(flushed);
    expect(flushed.total + lostWithKilledReplica.total).toBe(generated.total);
    expect(report.chaos!.backendsTerminated).toBeGreaterThan(0);
    expect(report.leftover).toEqual({ statsRows: 0, undeliveredReports: 0, rejectedReports: 0 });
    // The partition happened, froze open replica connections, healed, and every replica that
    // was not killed flushed again after it.
    const partition = report.chaos!.partition;
    expect(partition).toBeTruthy();
    expect(partition!.connectionsFrozen).toBeGreaterThan(0);
    expect(partition!.thawedMs).not.toBeNull();
    const survivors = partition!.replicas.filter((row) => row.index !== killed!.index);
    expect(survivors).toHaveLength(2);
    for (const row of survivors) expect(row.recoveredAfterPartitionMs).not.toBeNull();
  }, 90_000);
});
