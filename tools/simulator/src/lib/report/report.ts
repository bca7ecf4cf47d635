import type { CollectorStats, ReceivedReport } from '../collector.js';
import type { LockWaitSummary } from '../lock-sampler.js';
import type { SimulatorOptions } from '../options.js';
import type { ReplicaState, RequestCounts, UnconfirmedBatch } from '../replica/protocol.js';
import type { FaultEvents } from '../faults.js';
import type { AlertInterval } from '../prometheus/prometheus-server.js';
import { periodRows, type PeriodRow } from './periods.js';
import { measureStall, type ReplicaStall } from './stalls.js';
import { addCounts, summarizeLatency, type LatencySummary } from './stats.js';

/** How one replica ended, with its final numbers. */
export interface ReplicaOutcome {
  index: number;
  replicaId: string | undefined;
  pid: number | undefined;
  outcome: 'stopped' | 'killed' | 'crashed';
  /** The last state it reported (for a killed replica: the state it froze in). */
  state: ReplicaState | undefined;
  flushLatencyMs: readonly number[];
  cutoverLatencyMs: readonly number[];
  /** When each completed flush ended, epoch ms (for the partition's stall). */
  flushCompletedAtMs?: readonly number[];
  failure: string | undefined;
}

/** What Prometheus said about the run (--prometheus). */
export interface AlertsObservation {
  /** observed: Prometheus ran; unavailable: not installed; failed: it ran but broke. */
  status: 'observed' | 'unavailable' | 'failed';
  note?: string;
  url?: string;
  /** Scrape and rule evaluation interval. */
  intervalMs?: number;
  /** Firing intervals from the ALERTS series, epoch ms. */
  intervals: AlertInterval[];
}

/** The replica --chaos killed, and what it had at that moment. */
export interface KilledReplica {
  index: number;
  replicaId: string | undefined;
  /** Milliseconds into the traffic phase. */
  atMs: number;
  /** The state it answered 'freeze' with, its last words. */
  state: ReplicaState;
  /** A batch whose upsert had failed (ambiguous commit), if any, and what the database says. */
  unconfirmedBatch: UnconfirmedBatch | undefined;
  unconfirmedBatchApplied: boolean | undefined;
}

/** Everything the run observed; buildReport turns it into the account. */
export interface RunObservations {
  options: SimulatorOptions;
  databaseSource: string;
  databaseName: string;
  deploymentId: string;
  startedAt: Date;
  trafficMs: number;
  interrupted: boolean;
  replicas: ReplicaOutcome[];
  killed: KilledReplica | undefined;
  received: ReceivedReport[];
  collector: CollectorStats;
  finalReportId: string | undefined;
  finalCollectionMs: number | undefined;
  lockWaits: LockWaitSummary;
  backendsTerminated: number;
  /** Errors of the simulator's own work (final collection, chaos queries…), by class. */
  errors: Record<string, number>;
  /** Left in the database after the final collection and delivery (both must be 0). */
  leftover: { statsRows: number; undeliveredReports: number; rejectedReports: number } | undefined;
  /** Problems that make the run fail whatever the numbers say. */
  failures: string[];
  /** Epoch ms when the traffic phase began (times in the report are relative to it). */
  trafficStartedAtMs?: number;
  /** --chaos: the timed faults as they happened. */
  faults?: FaultEvents;
  /** --prometheus. */
  alerts?: AlertsObservation;
}

/** One alert's firing, as the report shows it (ms into the traffic phase). */
export interface AlertRow {
  alertname: string;
  severity: string;
  labels: Record<string, string>;
  firingFromMs: number;
  firingToMs: number;
  stillFiring: boolean;
}

export interface Counts {
  allowed: bigint;
  denied: bigint;
  total: bigint;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface SimulationReport {
  balanced: boolean;
  interrupted: boolean;
  settings: {
    replicas: number;
    durationMs: number;
    flushIntervalMs: number;
    periodMs: number;
    statementDeadlineMs: number;
    ratePerReplica: number;
    workspaces: number;
    users: number;
    lockMode: 'shared' | 'exclusive';
    chaos: boolean;
  };
  database: { source: string; name: string };
  deploymentId: string;
  startedAt: string;
  trafficMs: number;
  account: {
    generated: Counts;
    flushed: Counts;
    reported: Counts;
    /** Part of `reported` that arrived as stale rows (counted apart by the cutover). */
    reportedStale: Counts;
    /** The only loss allowed: what the killed replica had tracked but not flushed. */
    lostWithKilledReplica: Counts;
    /** generated − flushed − lostWithKilledReplica, over live replicas: must be 0. */
    unflushed: Counts;
    /** reported − flushed: must be 0. */
    reportedMinusFlushed: Counts;
  };
  periods: PeriodRow[];
  replicas: Array<{
    index: number;
    replicaId: string | null;
    pid: number | null;
    outcome: ReplicaOutcome['outcome'];
    generated: Counts;
    flushed: Counts;
    unflushed: Counts;
    flushes: number;
    duplicateBatches: number;
    newPeriods: number;
    periodsReported: number;
    deliveries: number;
    deliveriesAcknowledged: number;
  }>;
  collector: CollectorStats;
  latency: { flush: LatencySummary; cutover: LatencySummary };
  lockWaits: LockWaitSummary & { lockTimeouts: number };
  errors: Record<string, number>;
  chaos: {
    backendsTerminated: number;
    killed: {
      index: number;
      replicaId: string | null;
      atMs: number;
      tracked: Counts;
      flushed: Counts;
      lost: Counts;
      ambiguousBatch: 'none' | 'applied' | 'not applied' | 'unknown';
    } | null;
    /** The network partition of the replicas' connections, ms into the traffic phase. */
    partition: {
      beganMs: number;
      connectionsFrozen: number;
      newConnectionsMs: number | null;
      thawedMs: number | null;
      connectionsDropped: number | null;
      replicas: ReplicaStall[];
    } | null;
    lockHeld: { fromMs: number; toMs: number | null; error: string | null } | null;
    collectorOutage: { fromMs: number; toMs: number | null } | null;
  } | null;
  alerts: {
    status: AlertsObservation['status'];
    note: string | null;
    url: string | null;
    intervalMs: number | null;
    fired: AlertRow[];
  } | null;
  /**
   * Requests the store confirmed that FlushResult of successful flushes does not account for,
   * over replicas that stopped normally (see README, "Why the store counts flushes").
   */
  flushResultShortfall: Counts;
  leftover: { statsRows: number; undeliveredReports: number; rejectedReports: number } | null;
  checks: Check[];
}

const ZERO: RequestCounts = { allowed: 0n, denied: 0n };

export function counts(value: RequestCounts): Counts {
  return { allowed: value.allowed, denied: value.denied, total: value.allowed + value.denied };
}

function plus(a: RequestCounts, b: RequestCounts): RequestCounts {
  return { allowed: a.allowed + b.allowed, denied: a.denied + b.denied };
}

function minus(a: RequestCounts, b: RequestCounts): RequestCounts {
  return { allowed: a.allowed - b.allowed, denied: a.denied - b.denied };
}

function isZero(value: RequestCounts): boolean {
  return value.allowed === 0n && value.denied === 0n;
}

/** The account: what was generated, flushed and reported, and whether it balances. */
export function buildReport(run: RunObservations): SimulationReport {
  const { rows: periods, problems } = periodRows(run.received, run.finalReportId);
  const checks: Check[] = [];

  let generated = ZERO;
  let flushed = ZERO;
  let unflushed = ZERO;
  let lost = ZERO;
  let flushResultShortfall = ZERO;
  const errors: Record<string, number> = {};
  const flushLatency: number[] = [];
  const cutoverLatency: number[] = [];
  const replicaRows: SimulationReport['replicas'] = [];

  for (const replica of run.replicas) {
    const killed = run.killed?.index === replica.index ? run.killed : undefined;
    const state = killed?.state ?? replica.state;
    flushLatency.push(...replica.flushLatencyMs);
    cutoverLatency.push(...replica.cutoverLatencyMs);
    if (!state) {
      checks.push({
        name: `replica ${replica.index} reported its counts`,
        ok: false,
        detail: replica.failure ?? 'it never reported a state',
      });
      continue;
    }
    addCounts(errors, state.errors);
    const replicaFlushed =
      killed?.unconfirmedBatch && killed.unconfirmedBatchApplied
        ? plus(state.flushed, killed.unconfirmedBatch)
        : state.flushed;
    const remainder = minus(state.generated, replicaFlushed);
    generated = plus(generated, state.generated);
    flushed = plus(flushed, replicaFlushed);
    // A killed replica froze mid-flush (its flush never returned), so only live ones compare.
    if (!killed)
      flushResultShortfall = plus(flushResultShortfall, minus(state.flushed, state.flushResults));
    if (killed) lost = plus(lost, remainder);
    else unflushed = plus(unflushed, remainder);
    replicaRows.push({
      index: replica.index,
      replicaId: replica.replicaId ?? null,
      pid: replica.pid ?? null,
      outcome: replica.outcome,
      generated: counts(state.generated),
      flushed: counts(replicaFlushed),
      unflushed: counts(remainder),
      flushes: state.flushes,
      duplicateBatches: state.duplicateBatches,
      newPeriods: state.newPeriods,
      periodsReported: state.periodsReported,
      deliveries: state.deliveries,
      deliveriesAcknowledged: state.deliveriesAcknowledged,
    });
    if (replica.failure && !killed) {
      checks.push({
        name: `replica ${replica.index} stopped cleanly`,
        ok: false,
        detail: replica.failure,
      });
    }
  }
  addCounts(errors, run.errors);
  if (run.finalCollectionMs !== undefined) cutoverLatency.push(run.finalCollectionMs);

  const reportedFresh = periods.reduce<RequestCounts>(
    (sum, row) => plus(sum, { allowed: row.allowed, denied: row.denied }),
    ZERO,
  );
  const reportedStale = periods.reduce<RequestCounts>(
    (sum, row) => plus(sum, { allowed: row.staleAllowed, denied: row.staleDenied }),
    ZERO,
  );
  const reported = plus(reportedFresh, reportedStale);
  const reportedMinusFlushed = minus(reported, flushed);

  const survivors = run.replicas.filter((replica) => run.killed?.index !== replica.index);
  checks.push({
    name: 'every live replica flushed everything it tracked',
    ok: isZero(unflushed),
    detail: isZero(unflushed)
      ? `${survivors.length} replica(s), 0 requests left unflushed`
      : `${fmt(unflushed.allowed + unflushed.denied)} requests tracked by live replicas were not flushed`,
  });
  checks.push({
    name: 'reported = flushed',
    ok: isZero(reportedMinusFlushed),
    detail: isZero(reportedMinusFlushed)
      ? `${fmt(reported.allowed + reported.denied)} requests in ${periods.length} report(s)`
      : `reported − flushed = ${fmt(reportedMinusFlushed.allowed + reportedMinusFlushed.denied)} (allowed ${fmt(reportedMinusFlushed.allowed)}, denied ${fmt(reportedMinusFlushed.denied)})`,
  });
  if (run.killed) {
    const ambiguous =
      run.killed.unconfirmedBatch !== undefined && run.killed.unconfirmedBatchApplied === undefined;
    checks.push({
      name: 'the killed replica’s loss is exactly its unflushed part',
      ok: !ambiguous,
      detail: ambiguous
        ? 'its last flush failed and the database could not say whether it was applied'
        : `${fmt(lost.allowed + lost.denied)} requests tracked but not yet flushed at the SIGKILL`,
    });
  }
  if (run.leftover) {
    checks.push({
      name: 'nothing left behind',
      ok:
        run.leftover.statsRows === 0 &&
        run.leftover.undeliveredReports === 0 &&
        run.leftover.rejectedReports === 0,
      detail: `${run.leftover.statsRows} boundary_usage_stats row(s), ${run.leftover.undeliveredReports} undelivered and ${run.leftover.rejectedReports} rejected report(s) after the final collection`,
    });
  }
  if (problems.length > 0) {
    checks.push({
      name: 'every report received is a snapshot',
      ok: false,
      detail: problems.join('; '),
    });
  }
  for (const failure of run.failures)
    checks.push({ name: 'the run completed', ok: false, detail: failure });

  const killed = run.killed;
  const lockTimeouts = Object.entries(errors)
    .filter(([key]) => key.endsWith(' LOCK_TIMEOUT'))
    .reduce((sum, [, value]) => sum + value, 0);

  return {
    balanced: checks.every((check) => check.ok),
    interrupted: run.interrupted,
    settings: {
      replicas: run.options.replicas,
      durationMs: run.options.durationMs,
      flushIntervalMs: run.options.flushIntervalMs,
      periodMs: run.options.periodMs,
      statementDeadlineMs: run.options.statementDeadlineMs,
      ratePerReplica: run.options.ratePerReplica,
      workspaces: run.options.workspaces,
      users: run.options.users,
      lockMode: run.options.lockMode,
      chaos: run.options.chaos,
    },
    database: { source: run.databaseSource, name: run.databaseName },
    deploymentId: run.deploymentId,
    startedAt: run.startedAt.toISOString(),
    trafficMs: Math.round(run.trafficMs),
    account: {
      generated: counts(generated),
      flushed: counts(flushed),
      reported: counts(reported),
      reportedStale: counts(reportedStale),
      lostWithKilledReplica: counts(lost),
      unflushed: counts(unflushed),
      reportedMinusFlushed: counts(reportedMinusFlushed),
    },
    periods,
    replicas: replicaRows,
    collector: run.collector,
    latency: { flush: summarizeLatency(flushLatency), cutover: summarizeLatency(cutoverLatency) },
    lockWaits: { ...run.lockWaits, lockTimeouts },
    errors,
    chaos: run.options.chaos
      ? {
          backendsTerminated: run.backendsTerminated,
          killed: killed
            ? {
                index: killed.index,
                replicaId: killed.replicaId ?? null,
                atMs: Math.round(killed.atMs),
                tracked: counts(killed.state.generated),
                flushed: counts(
                  replicaRows.find((row) => row.index === killed.index)?.flushed ?? ZERO,
                ),
                lost: counts(lost),
                ambiguousBatch: !killed.unconfirmedBatch
                  ? 'none'
                  : killed.unconfirmedBatchApplied === undefined
                    ? 'unknown'
                    : killed.unconfirmedBatchApplied
                      ? 'applied'
                      : 'not applied',
              }
            : null,
          ...chaosFaults(run),
        }
      : null,
    alerts: run.alerts
      ? {
          status: run.alerts.status,
          note: run.alerts.note ?? null,
          url: run.alerts.url ?? null,
          intervalMs: run.alerts.intervalMs ?? null,
          fired: run.alerts.intervals.map((interval) => ({
            alertname: interval.alertname,
            severity: interval.severity,
            labels: interval.labels,
            firingFromMs: Math.round(interval.firingFromMs - (run.trafficStartedAtMs ?? 0)),
            firingToMs: Math.round(interval.firingToMs - (run.trafficStartedAtMs ?? 0)),
            stillFiring: interval.stillFiring,
          })),
        }
      : null,
    flushResultShortfall: counts(flushResultShortfall),
    leftover: run.leftover ?? null,
    checks,
  };
}

function chaosFaults(
  run: RunObservations,
): Pick<NonNullable<SimulationReport['chaos']>, 'partition' | 'lockHeld' | 'collectorOutage'> {
  const events = run.faults;
  const round = (value: number | undefined): number | null =>
    value === undefined ? null : Math.round(value);
  const start = run.trafficStartedAtMs ?? 0;
  const partition =
    events?.partitionBeganMs === undefined
      ? null
      : {
          beganMs: Math.round(events.partitionBeganMs),
          connectionsFrozen: events.connectionsFrozen ?? 0,
          newConnectionsMs: round(events.newConnectionsMs),
          thawedMs: round(events.thawedMs),
          connectionsDropped: events.connectionsDropped ?? null,
          replicas: run.replicas.map((replica) => {
            const endMs = run.killed?.index === replica.index ? run.killed.atMs : run.trafficMs;
            return measureStall({
              index: replica.index,
              flushTimesMs: (replica.flushCompletedAtMs ?? []).map((at) => at - start),
              endMs,
              partitionMs: events.partitionBeganMs,
              thawMs: events.thawedMs,
              graceMs: run.options.flushIntervalMs,
            });
          }),
        };
  return {
    partition,
    lockHeld:
      events?.lockHeldFromMs === undefined
        ? events?.lockHoldError
          ? { fromMs: 0, toMs: null, error: events.lockHoldError }
          : null
        : {
            fromMs: Math.round(events.lockHeldFromMs),
            toMs: round(events.lockHeldToMs),
            error: events.lockHoldError ?? null,
          },
    collectorOutage:
      events?.outageFromMs === undefined
        ? null
        : { fromMs: Math.round(events.outageFromMs), toMs: round(events.outageToMs) },
  };
}

function fmt(value: bigint): string {
  return value.toLocaleString('en-US');
}
