import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, type Logger, type PrismaClient } from '@usagekit/db';
import { HttpSink, TelemetryReporter, type Snapshot } from '@usagekit/telemetry';
import { startBackendTerminator, type BackendTerminator } from './chaos.js';
import { TelemetryCollector } from './collector.js';
import { withApplicationName } from './database/application-name.js';
import { acquireSimulationDatabase } from './database/simulation-database.js';
import { errorClass } from './error-class.js';
import { startFleet, type ReplicaHandle } from './fleet.js';
import { startLockSampler, type LockSampler } from './lock-sampler.js';
import type { SimulatorOptions } from './options.js';
import { pickRandom } from './random.js';
import { createProgressView, type ProgressMode, type ProgressView } from './progress.js';
import { REPLICA_APPLICATION_NAME_PREFIX, type ReplicaConfig } from './replica/protocol.js';
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
const HOUR_MS = 3_600_000;

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
  const final = await collectLastPeriod(input, (where, error) => countError(where, error)).catch(
    (error: unknown) => {
      failures.push(
        `the final collection failed: ${error instanceof Error ? error.message : String(error)}`,
      );
      return undefined;
    },
  );
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

/**
 * --chaos: freezes one random replica (no more traffic or flushes, in-flight flushes settle),
 * takes its last numbers and SIGKILLs it. What it had tracked but not flushed is the only loss
 * the account allows. If its last flush failed, the database alone knows whether that batch
 * committed: its flush sequence tells, once every backend of the dead replica is gone.
 */
async function killOneReplica(input: {
  fleet: readonly ReplicaHandle[];
  prisma: PrismaClient;
  view: ProgressView;
  atMs: number;
}): Promise<KilledReplica | undefined> {
  const candidates = input.fleet.filter((replica) => replica.status === 'running' && replica.alive);
  if (candidates.length === 0) return undefined;
  const victim = pickRandom(candidates);
  if (!victim) return undefined;
  const frozen = await victim.freeze(10_000);
  await victim.kill();
  let unconfirmedBatchApplied: boolean | undefined;
  if (frozen.unconfirmedBatch && victim.replicaId) {
    await waitForBackendsGone(
      input.prisma,
      `${REPLICA_APPLICATION_NAME_PREFIX}${victim.index}`,
      10_000,
    );
    const rows = await input.prisma.$queryRaw<{ last_sequence: bigint | string }[]>`
      SELECT last_sequence FROM boundary_usage_flush_sequences WHERE replica_id = ${victim.replicaId}::uuid`;
    const last = rows[0] ? BigInt(rows[0].last_sequence) : undefined;
    unconfirmedBatchApplied = last !== undefined && last >= frozen.unconfirmedBatch.sequence;
  }
  const state = frozen.state;
  const unflushed =
    state.generated.allowed +
    state.generated.denied -
    state.flushed.allowed -
    state.flushed.denied -
    (unconfirmedBatchApplied && frozen.unconfirmedBatch
      ? frozen.unconfirmedBatch.allowed + frozen.unconfirmedBatch.denied
      : 0n);
  input.view.message(
    `chaos: replica ${victim.index} (pid ${victim.pid}) SIGKILLed at ${(input.atMs / 1000).toFixed(1)}s with ${unflushed} requests tracked but not flushed`,
  );
  return {
    index: victim.index,
    replicaId: victim.replicaId,
    atMs: input.atMs,
    state,
    unconfirmedBatch: frozen.unconfirmedBatch,
    unconfirmedBatchApplied,
  };
}

/** A backend that already received COMMIT finishes it before it exits; wait for that. */
async function waitForBackendsGone(
  prisma: PrismaClient,
  applicationName: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const rows = await prisma.$queryRaw<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND application_name = ${applicationName}`;
    if ((rows[0]?.n ?? 0) === 0) return;
    await sleep(50);
  }
  throw new Error(
    `the killed replica's backends (${applicationName}) did not go away within ${timeoutMs / 1000}s`,
  );
}

/**
 * After every replica stopped (each flushed one last time), the simulator collects the period
 * in progress itself: it claims the current bucket, or if a replica already reported that one,
 * the next (a reporter whose clock runs one period ahead), which no replica can have claimed;
 * the collection wins it and cuts over whatever is left. Then it delivers
 * every pending report, the replicas' included (a report a killed replica wrote but never
 * sent, or one whose POST failed). For that the clock moves an hour ahead, past every lease
 * and retry backoff, so each pending row is due at once.
 */
async function collectLastPeriod(
  input: SimulateInput,
  countError: (where: string, error: unknown) => void,
): Promise<{ reportId: string | undefined; durationMs: number }> {
  const { options, prisma, collector } = input;
  let clockOffsetMs = 0;
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
  };
  const reporter = new TelemetryReporter({
    prisma,
    store: new BoundaryUsageStore(prisma, { lockMode: options.lockMode }),
    deploymentId: input.deploymentId,
    sink: new HttpSink({ url: collector.url, timeoutMs: 5_000 }),
    snapshotFrequencyMs: options.periodMs,
    maxStalenessMs: input.maxStalenessMs,
    clock: { now: () => new Date(Date.now() + clockOffsetMs) },
    logger,
    deliveryTimeoutMs: 5_000,
    retryBackoff: { baseDelayMs: 100, maxDelayMs: 1_000 },
    observer: {
      onDelivery(attempt) {
        if (!attempt.delivered) countError('final delivery', attempt.error);
      },
      onError(stage, error) {
        countError(`final ${stage === 'collect' ? 'cutover' : stage}`, error);
      },
    },
  });
  const startedAt = performance.now();
  let snapshot: Snapshot = await reporter.collectSnapshot();
  for (let attempt = 1; !snapshot.boundaryUsageSummary && attempt <= 3; attempt++) {
    clockOffsetMs += options.periodMs;
    snapshot = await reporter.collectSnapshot();
  }
  const durationMs = performance.now() - startedAt;
  if (!snapshot.boundaryUsageSummary) throw new Error('every bucket ahead was already claimed');
  for (let round = 1; round <= 10; round++) {
    clockOffsetMs = round * HOUR_MS;
    const result = await reporter.deliverPending();
    if (result.delivered + result.failed === 0) break;
  }
  return { reportId: snapshot.reportId, durationMs };
}

async function countLeftovers(
  prisma: PrismaClient,
): Promise<{ statsRows: number; undeliveredReports: number }> {
  const rows = await prisma.$queryRaw<{ stats_rows: number; undelivered: number }[]>`
    SELECT (SELECT count(*) FROM boundary_usage_stats)::int AS stats_rows,
           (SELECT count(*) FROM telemetry_reports WHERE delivered_at IS NULL)::int AS undelivered`;
  return { statsRows: rows[0]?.stats_rows ?? -1, undeliveredReports: rows[0]?.undelivered ?? -1 };
}
