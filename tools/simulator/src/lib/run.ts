import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { killOneReplica, startBackendTerminator, type BackendTerminator } from './chaos.js';
import { TelemetryCollector } from './collector.js';
import { withApplicationName } from './database/application-name.js';
import { acquireSimulationDatabase } from './database/simulation-database.js';
import { errorClass } from './error-class.js';
import { planFaults, startFaults, type FaultRunner } from './faults.js';
import { startFleet, type ReplicaHandle } from './fleet.js';
import { startLockSampler, type LockSampler } from './lock-sampler.js';
import type { SimulatorOptions } from './options.js';
import { createProgressView, type ProgressMode, type ProgressView } from './progress.js';
import {
  findPrometheus,
  simulatorRules,
  startPrometheus,
  type PrometheusServer,
} from './prometheus/prometheus-server.js';
import type { ReplicaConfig } from './replica/protocol.js';
import { collectLastPeriod, countLeftovers } from './final-collection.js';
import { periodRows } from './report/periods.js';
import {
  buildReport,
  type AlertsObservation,
  type KilledReplica,
  type RunObservations,
  type SimulationReport,
} from './report/report.js';
import { addCounts } from './report/stats.js';

export interface RunControls {
  /** Ends the traffic early (Ctrl-C); the replicas still stop gracefully and the report follows. */
  signal?: AbortSignal;
  /** Where progress goes (default process.stderr) and how it is drawn. */
  progressStream?: { write(chunk: string): boolean; isTTY?: boolean; columns?: number };
  progress?: ProgressMode;
  /** --chaos: when to kill a replica, in ms into the traffic phase. Default: 80 % in. */
  chaosKillAtMs?: number;
  /**
   * --prometheus: the binary to run; null behaves as if none were installed. Default: the
   * first `prometheus` on PATH, else /usr/bin/prometheus.
   */
  prometheusBinary?: string | null;
  /** --chaos: mean time between two pg_terminate_backend calls. Default 1.5 s. */
  chaosTerminateEveryMs?: number;
}

const MAIN_APPLICATION_NAME = 'usagekit-sim-main';

/**
 * One simulation: PostgreSQL, a collector, N replica processes with traffic, flush loops and
 * reporters; then a graceful stop, the last period collected and delivered, and the account.
 * Throws only when the run cannot start (PostgreSQL, the replicas); anything that goes wrong
 * after the traffic started ends up in the report as a failed check.
 */
export async function runSimulation(
  options: SimulatorOptions,
  controls: RunControls = {},
): Promise<SimulationReport> {
  const view = createProgressView(
    controls.progressStream ?? process.stderr,
    controls.progress ?? 'auto',
  );
  const database = await acquireSimulationDatabase({
    serverUrl: options.databaseUrl,
    keepDatabase: options.keepDatabase,
    onStatus: (line) => view.message(line),
  });
  let collector: TelemetryCollector | undefined;
  let prisma: PrismaClient | undefined;
  let fleet: ReplicaHandle[] = [];
  let proxy: FreezingProxy | undefined;
  let prometheus: PrometheusServer | undefined;
  try {
    collector = await TelemetryCollector.start(
      options.chaos ? { refuseRate: 0.25, dropAcknowledgementRate: 0.15 } : {},
    );
    prisma = createPrismaClient({
      databaseUrl: withApplicationName(database.databaseUrl, MAIN_APPLICATION_NAME),
      maxConnections: 4,
    });
    const deploymentId = randomUUID();
    const collectorUrl = collector.url;
    const maxStalenessMs = 2 * options.periodMs;
    // --chaos partitions the network between the replicas and PostgreSQL, so their
    // connections go through a proxy that can go silent; the simulator's own do not.
    if (options.chaos) proxy = await startFreezingProxy(database.databaseUrl);
    const replicaDatabaseUrl = proxy?.databaseUrl ?? database.databaseUrl;
    view.message(`starting ${options.replicas} replica processes…`);
    fleet = await startFleet(
      Array.from({ length: options.replicas }, (_, index): ReplicaConfig => ({
        index,
        databaseUrl: replicaDatabaseUrl,
        deploymentId,
        collectorUrl,
        flushIntervalMs: options.flushIntervalMs,
        periodMs: options.periodMs,
        statementDeadlineMs: options.statementDeadlineMs,
        maxStalenessMs,
        ratePerReplica: options.ratePerReplica,
        workspaces: options.workspaces,
        users: options.users,
        replicas: options.replicas,
        lockMode: options.lockMode,
        stateIntervalMs: 250,
      })),
    );
    let alerts: AlertsObservation | undefined;
    if (options.prometheus) {
      // Every replica serves /metrics; the ports are printed when someone is going to scrape
      // them, so the default run's output stays as it was.
      view.message(
        `replica metrics: ${fleet.map((replica) => `http://127.0.0.1:${replica.metricsPort}/metrics`).join(' ')}`,
      );
      const binary =
        controls.prometheusBinary === undefined ? findPrometheus() : controls.prometheusBinary;
      const started = await startPrometheusFor(options, binary ?? undefined, fleet, view);
      prometheus = started.server;
      alerts = started.alerts;
    }
    const observations = await simulate({
      options,
      controls,
      view,
      prisma,
      collector,
      fleet,
      deploymentId,
      maxStalenessMs,
      proxy,
      prometheus,
      alerts,
    });
    return buildReport({
      ...observations,
      databaseSource: database.source,
      databaseName: database.databaseName,
    });
  } finally {
    view.finish();
    for (const replica of fleet) replica.forceKill();
    await prometheus?.stop().catch(() => undefined);
    await proxy?.close().catch(() => undefined);
    await prisma?.$disconnect().catch(() => undefined);
    await collector?.close();
    await database.release();
  }
}

interface SimulateInput {
  options: SimulatorOptions;
  controls: RunControls;
  view: ProgressView;
  prisma: PrismaClient;
  collector: TelemetryCollector;
  fleet: ReplicaHandle[];
  deploymentId: string;
  maxStalenessMs: number;
  proxy: FreezingProxy | undefined;
  prometheus: PrometheusServer | undefined;
  alerts: AlertsObservation | undefined;
}

/** Starts Prometheus over the fleet, or says why it does not run. Never fails the run. */
async function startPrometheusFor(
  options: SimulatorOptions,
  binary: string | undefined,
  fleet: readonly ReplicaHandle[],
  view: ProgressView,
): Promise<{ server: PrometheusServer | undefined; alerts: AlertsObservation }> {
  if (!binary) {
    const note =
      'prometheus is not installed (Debian: apt-get install -y prometheus); running without it';
    view.message(`--prometheus: ${note}`);
    return { server: undefined, alerts: { status: 'unavailable', note, intervals: [] } };
  }
  // The stall window is 5 flush intervals; scraping once per flush interval (1 s at most)
  // keeps several samples in it for short intervals too.
  const intervalMs = Math.min(1_000, Math.max(250, options.flushIntervalMs));
  try {
    const server = await startPrometheus({
      binary,
      intervalMs,
      rulesYaml: simulatorRules(options),
      targets: fleet.map((replica) => ({
        address: `127.0.0.1:${replica.metricsPort}`,
        labels: { replica: String(replica.index) },
      })),
    });
    await server.waitForTargets(15_000);
    view.message(
      `prometheus: ${server.url} scraping ${fleet.length} replicas, shipped rules rendered for flush ${options.flushIntervalMs} ms / period ${options.periodMs} ms, evaluated every ${intervalMs} ms`,
    );
    return { server, alerts: { status: 'observed', url: server.url, intervalMs, intervals: [] } };
  } catch (error) {
    const note = `prometheus did not start: ${error instanceof Error ? error.message : String(error)}`;
    view.message(`--prometheus: ${note}`);
    return { server: undefined, alerts: { status: 'failed', note, intervals: [] } };
  }
}

/** After the traffic, how long to wait for alerts still firing or pending to resolve. */
const ALERT_SETTLE_TIMEOUT_MS = 30_000;

/**
 * Keeps the fleet running (traffic included) until Prometheus reports no alert pending or
 * firing, so the report shows each alert resolving rather than its targets disappearing.
 * Bounded: what still fires at the deadline is reported as still firing.
 */
async function settleAlerts(
  prometheus: PrometheusServer,
  view: ProgressView,
): Promise<string | undefined> {
  const deadline = Date.now() + ALERT_SETTLE_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    const active = await prometheus.activeAlerts();
    if (active.length === 0) return undefined;
    if (Date.now() > deadline)
      return `after waiting ${ALERT_SETTLE_TIMEOUT_MS / 1_000} s, still active: ${[...new Set(active.map((alert) => `${alert.alertname} (${alert.state})`))].join(', ')}`;
    if (!announced) {
      view.message(
        `waiting up to ${ALERT_SETTLE_TIMEOUT_MS / 1_000}s for ${active.length} alert(s) to resolve (${[...new Set(active.map((alert) => alert.alertname))].join(', ')})…`,
      );
      announced = true;
    }
    await sleep(prometheus.intervalMs);
  }
}

async function simulate(
  input: SimulateInput,
): Promise<Omit<RunObservations, 'databaseSource' | 'databaseName'>> {
  const { options, controls, view, prisma, collector, fleet } = input;
  const signal = controls.signal;
  const failures: string[] = [];
  const errors: Record<string, number> = {};
  const countError = (where: string, error: unknown): void => {
    addCounts(errors, { [`${where} ${errorClass(error)}`]: 1 });
  };

  const startedAt = new Date();
  const trafficStartedAtMs = Date.now();
  const trafficStart = performance.now();
  const elapsed = (): number => performance.now() - trafficStart;
  for (const replica of fleet) replica.start();
  view.message(
    `running ${options.replicas} replicas × ${options.ratePerReplica} req/s for ${options.durationMs / 1000}s` +
      ` (flush every ${options.flushIntervalMs} ms, period ${options.periodMs} ms, lock mode ${options.lockMode}${options.chaos ? ', chaos' : ''})`,
  );

  const sampler: LockSampler = startLockSampler({ prisma, intervalMs: 20 });
  let terminator: BackendTerminator | undefined;
  let killing: Promise<KilledReplica | undefined> | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let faults: FaultRunner | undefined;
  if (options.chaos) {
    const plan = planFaults(options.durationMs);
    if (input.proxy) {
      faults = startFaults({ plan, proxy: input.proxy, collector, prisma, elapsed, view });
    }
    terminator = startBackendTerminator({
      prisma,
      meanIntervalMs: controls.chaosTerminateEveryMs ?? 1_500,
      onError: (error) => countError('chaos', error),
      // Terminating a backend behind the partition would close its client's socket and end
      // that connection's silence early; the partition is the fault being measured then.
      paused: () => faults?.partitioned === true,
    });
    killTimer = setTimeout(() => {
      killing = killOneReplica({ fleet, prisma, view, atMs: elapsed() }).catch((error: unknown) => {
        failures.push(
          `killing a replica failed: ${error instanceof Error ? error.message : String(error)}`,
        );
        return undefined;
      });
    }, controls.chaosKillAtMs ?? plan.killAtMs);
  }

  const progress = () => ({
    elapsedMs: Math.min(elapsed(), options.durationMs),
    durationMs: options.durationMs,
    replicasRunning: fleet.filter((replica) => replica.status === 'running').length,
    replicas: fleet.length,
    ...fleetTotals(fleet),
    ...collectorTotals(collector),
  });
  while (elapsed() < options.durationMs && !signal?.aborted) {
    view.update(progress());
    await sleep(Math.min(250, options.durationMs - elapsed()), undefined, { signal }).catch(
      () => undefined,
    );
  }
  const trafficMs = elapsed();
  view.update(progress());
  const interrupted = signal?.aborted === true && trafficMs < options.durationMs;
  view.finish();
  if (interrupted)
    view.message(`interrupted after ${(trafficMs / 1000).toFixed(1)}s; stopping gracefully…`);

  clearTimeout(killTimer);
  const killed = await killing;
  await faults?.stop();
  await terminator?.stop();
  collector.stopChaos();

  let alerts = input.alerts;
  if (input.prometheus && alerts) {
    try {
      const stillActive = await settleAlerts(input.prometheus, view);
      const intervals = await input.prometheus.alertHistory(trafficStartedAtMs - 5_000, Date.now());
      // Rules aggregate by (job, instance); name the replica behind each instance.
      const replicaByInstance = new Map(
        fleet.map((replica) => [`127.0.0.1:${replica.metricsPort}`, String(replica.index)]),
      );
      for (const interval of intervals) {
        const instance = interval.labels['instance'];
        const replica = instance === undefined ? undefined : replicaByInstance.get(instance);
        if (replica === undefined) continue;
        const { instance: _instance, ...rest } = interval.labels;
        interval.labels = { replica, ...rest };
      }
      alerts = { ...alerts, intervals, note: stillActive };
    } catch (error) {
      alerts = {
        ...alerts,
        status: 'failed',
        note: `reading alerts from Prometheus failed: ${error instanceof Error ? error.message : String(error)}`,
      };
    }
    await input.prometheus.stop();
  }

  view.message('stopping replicas (each flushes one last time)…');
  await Promise.all(fleet.map((replica) => replica.stop()));
  await sampler.stop();

  view.message('collecting and delivering the last period…');
  const final = await collectLastPeriod({ ...input, countError }).catch((error: unknown) => {
    failures.push(
      `the final collection failed: ${error instanceof Error ? error.message : String(error)}`,
    );
    return undefined;
  });
  const leftover = await countLeftovers(prisma).catch((error: unknown) => {
    failures.push(
      `could not check what is left in the database: ${error instanceof Error ? error.message : String(error)}`,
    );
    return undefined;
  });

  return {
    options,
    deploymentId: input.deploymentId,
    startedAt,
    trafficMs,
    interrupted,
    replicas: fleet.map((replica) => ({
      index: replica.index,
      replicaId: replica.replicaId,
      pid: replica.pid,
      outcome:
        replica.status === 'killed'
          ? 'killed'
          : replica.status === 'stopped'
            ? 'stopped'
            : 'crashed',
      state: replica.state,
      flushLatencyMs: replica.flushLatencyMs,
      cutoverLatencyMs: replica.cutoverLatencyMs,
      flushCompletedAtMs: replica.flushCompletedAtMs,
      failure: replica.failure,
    })),
    killed,
    received: collector.received(),
    collector: collector.stats(),
    finalReportId: final?.reportId,
    finalCollectionMs: final?.durationMs,
    lockWaits: sampler.summary(),
    backendsTerminated: terminator?.terminated ?? 0,
    errors,
    leftover,
    failures,
    trafficStartedAtMs,
    faults: faults?.events,
    alerts,
  };
}

/** Live totals over the replicas' latest states (a killed replica keeps its last one). */
function fleetTotals(fleet: readonly ReplicaHandle[]) {
  let generated = 0n;
  let flushed = 0n;
  const errors: Record<string, number> = {};
  for (const replica of fleet) {
    const state = replica.state;
    if (!state) continue;
    generated += state.generated.allowed + state.generated.denied;
    flushed += state.flushed.allowed + state.flushed.denied;
    addCounts(errors, state.errors);
  }
  return { generated, flushed, errors };
}

function collectorTotals(collector: TelemetryCollector) {
  const { rows } = periodRows(collector.received(), undefined);
  let reported = 0n;
  for (const row of rows) reported += row.allowed + row.denied + row.staleAllowed + row.staleDenied;
  return { reported, periods: rows.length };
}
