import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { killOneReplica, startBackendTerminator, type BackendTerminator } from './chaos.js';
import { TelemetryCollector } from './collector.js';
import { withApplicationName } from './database/application-name.js';
import { acquireSimulationDatabase } from './database/simulation-database.js';
import { errorClass } from './error-class.js';
import { startFleet, type ReplicaHandle } from './fleet.js';
import { startLockSampler, type LockSampler } from './lock-sampler.js';
import type { SimulatorOptions } from './options.js';
import { createProgressView, type ProgressMode, type ProgressView } from './progress.js';
import type { ReplicaConfig } from './replica/protocol.js';
import { collectLastPeriod, countLeftovers } from './final-collection.js';
import { periodRows } from './report/periods.js';
import {
  buildReport,
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
  /** --chaos: when to kill a replica, in ms into the traffic phase. Default: midway. */
  chaosKillAtMs?: number;
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
    view.message(`starting ${options.replicas} replica processes…`);
    fleet = await startFleet(
      Array.from({ length: options.replicas }, (_, index): ReplicaConfig => ({
        index,
        databaseUrl: database.databaseUrl,
        deploymentId,
        collectorUrl,
        flushIntervalMs: options.flushIntervalMs,
        periodMs: options.periodMs,
        maxStalenessMs,
        ratePerReplica: options.ratePerReplica,
        workspaces: options.workspaces,
        users: options.users,
        replicas: options.replicas,
        lockMode: options.lockMode,
        stateIntervalMs: 250,
      })),
    );
    const observations = await simulate({
      options,
      controls,
      view,
      prisma,
      collector,
      fleet,
      deploymentId,
      maxStalenessMs,
    });
    return buildReport({
      ...observations,
      databaseSource: database.source,
      databaseName: database.databaseName,
    });
  } finally {
    view.finish();
    for (const replica of fleet) replica.forceKill();
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
  if (options.chaos) {
    terminator = startBackendTerminator({
      prisma,
      meanIntervalMs: controls.chaosTerminateEveryMs ?? 1_500,
      onError: (error) => countError('chaos', error),
    });
    killTimer = setTimeout(
      () => {
        killing = killOneReplica({ fleet, prisma, view, atMs: elapsed() }).catch(
          (error: unknown) => {
            failures.push(
              `killing a replica failed: ${error instanceof Error ? error.message : String(error)}`,
            );
            return undefined;
          },
        );
      },
      controls.chaosKillAtMs ?? options.durationMs / 2,
    );
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
  await terminator?.stop();
  collector.stopChaos();

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
