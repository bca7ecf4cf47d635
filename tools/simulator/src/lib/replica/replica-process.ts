import { randomUUID } from 'node:crypto';
import { createPrismaClient, type Logger } from '@usagekit/db';
import { HttpSink, startUsageRuntime, type UsageRuntime } from '@usagekit/telemetry';
import { errorClass } from '../error-class.js';
import { withApplicationName } from '../database/application-name.js';
import { ObservedStore } from './observed-store.js';
import {
  REPLICA_APPLICATION_NAME_PREFIX,
  REPLICA_CONFIG_ENV,
  type ParentToReplica,
  type ReplicaConfig,
  type ReplicaState,
  type ReplicaToParent,
  type RequestCounts,
} from './protocol.js';
import {
  combineFlushObservers,
  combineTelemetryObservers,
  startMetricsEndpoint,
} from './metrics-endpoint.js';
import { SyntheticTraffic } from './synthetic-traffic.js';

/**
 * One replica (the `__replica` role of bin/run.js): its own PrismaClient and replica id, and
 * @usagekit/telemetry's runtime (tracker fed by synthetic traffic, flush loop, reporter), as a
 * host service of a real deployment runs it, stopped with its budgeted stop(). It reports its
 * counts to the simulator over IPC.
 */
/** A replica's stop budget; below the simulator's STOP_TIMEOUT_MS, after which it kills the replica. */
const REPLICA_STOP_BUDGET_MS = 15_000;

export function runReplicaProcess(): void {
  // Ctrl-C in a terminal signals the whole foreground process group. The simulator decides
  // when a replica stops (and stops it gracefully), so the signal itself is ignored here.
  process.on('SIGINT', () => undefined);
  const config = JSON.parse(process.env[REPLICA_CONFIG_ENV] ?? 'null') as ReplicaConfig | null;
  if (!config) {
    console.error(
      `replica: ${REPLICA_CONFIG_ENV} is not set; the simulator starts replicas itself`,
    );
    process.exit(1);
  }
  runReplica(config).catch((error: unknown) => {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    send({ type: 'fatal', message }, () => process.exit(1));
  });
}

function send(message: ReplicaToParent, then?: () => void): void {
  if (!process.connected) {
    then?.();
    return;
  }
  process.send?.(message, undefined, {}, () => then?.());
}

async function runReplica(config: ReplicaConfig): Promise<void> {
  const errors: Record<string, number> = {};
  const countError = (where: string, error: unknown): void => {
    const key = `${where} ${errorClass(error)}`;
    errors[key] = (errors[key] ?? 0) + 1;
  };
  const ignore = (): void => undefined;
  const logger: Logger = {
    debug: ignore,
    info: ignore,
    // createPrismaClient reports a dropped idle connection here (the pool replaces it).
    warn: (message) => {
      if (message.startsWith('usagekit: idle database connection failed'))
        countError('pool', 'IDLE_CONNECTION_LOST');
    },
    error: ignore,
  };

  const prisma = createPrismaClient({
    databaseUrl: withApplicationName(
      config.databaseUrl,
      `${REPLICA_APPLICATION_NAME_PREFIX}${config.index}`,
    ),
    maxConnections: 4,
    statementDeadlineMs: config.statementDeadlineMs,
    logger,
  });
  await prisma.$queryRaw`SELECT 1`;
  const metrics = await startMetricsEndpoint();
  const replicaId = randomUUID();
  const store = new ObservedStore(prisma, { lockMode: config.lockMode });
  let runtime: UsageRuntime | undefined;

  const generated: RequestCounts = { allowed: 0n, denied: 0n };
  const flushResults: RequestCounts = { allowed: 0n, denied: 0n };
  const counters = {
    flushes: 0,
    batches: 0,
    duplicateBatches: 0,
    newPeriods: 0,
    periodsReported: 0,
    deliveries: 0,
    deliveriesAcknowledged: 0,
  };
  let flushLatencyMs: number[] = [];
  let cutoverLatencyMs: number[] = [];
  let flushCompletedAtMs: number[] = [];

  const state = (): ReplicaState => {
    const zero = { allowedRequests: 0n, deniedRequests: 0n };
    const pending = runtime?.pending() ?? zero;
    const confirmed = runtime?.confirmed() ?? zero;
    const snapshot: ReplicaState = {
      replicaId,
      index: config.index,
      pid: process.pid,
      generated: { ...generated },
      flushed: { allowed: confirmed.allowedRequests, denied: confirmed.deniedRequests },
      flushResults: { ...flushResults },
      pending: { allowed: pending.allowedRequests, denied: pending.deniedRequests },
      ...counters,
      errors: { ...errors },
      flushLatencyMs,
      cutoverLatencyMs,
      flushCompletedAtMs,
    };
    flushLatencyMs = [];
    cutoverLatencyMs = [];
    flushCompletedAtMs = [];
    return snapshot;
  };
  const pushState = (): void => send({ type: 'state', state: state() });

  const traffic = new SyntheticTraffic(
    {
      replicaIndex: config.index,
      replicas: config.replicas,
      workspaces: config.workspaces,
      users: config.users,
      ratePerSecond: config.ratePerReplica,
    },
    (workspaceId, ownerId, allowed, denied) => {
      runtime?.track(workspaceId, ownerId, allowed, denied);
      generated.allowed += BigInt(allowed);
      generated.denied += BigInt(denied);
    },
  );

  const telemetryObserver = combineTelemetryObservers(metrics.telemetryObserver, {
    onSnapshot(snapshot, durationMs) {
      if (!snapshot.boundaryUsageSummary) return;
      counters.periodsReported++;
      cutoverLatencyMs.push(durationMs);
    },
    onDelivery(attempt) {
      counters.deliveries++;
      if (attempt.delivered) counters.deliveriesAcknowledged++;
      else countError('delivery', attempt.error);
    },
    onError(stage, error) {
      countError(stage === 'collect' ? 'cutover' : stage, error);
    },
  });
  const flushObserver = combineFlushObservers(metrics.flushObserver, {
    onFlush(result, durationMs) {
      flushCompletedAtMs.push(Date.now());
      if (!result.flushed) return;
      counters.flushes++;
      counters.batches += result.batches;
      counters.duplicateBatches += result.duplicates;
      if (result.newPeriod) counters.newPeriods++;
      flushResults.allowed += result.allowedRequests;
      flushResults.denied += result.deniedRequests;
      flushLatencyMs.push(durationMs);
      pushState();
    },
    onError(error) {
      countError('flush', error);
    },
  });

  let stateTimer: NodeJS.Timeout | undefined;
  const start = (): void => {
    if (runtime) return;
    runtime = startUsageRuntime({
      prisma,
      store,
      replicaId,
      deploymentId: config.deploymentId,
      sink: new HttpSink({ url: config.collectorUrl, timeoutMs: 2_000 }),
      flushIntervalMs: config.flushIntervalMs,
      snapshotFrequencyMs: config.periodMs,
      logger,
      observers: { flush: flushObserver, telemetry: telemetryObserver },
      reporter: {
        maxStalenessMs: config.maxStalenessMs,
        // Short delivery timeouts and backoff: a failed POST is retried within the run.
        deliveryTimeoutMs: 2_000,
        retryBackoff: { baseDelayMs: 250, maxDelayMs: 2_000 },
      },
      // Within the simulator's wait for a replica to stop (it kills one that takes longer).
      stopBudgetMs: REPLICA_STOP_BUDGET_MS,
    });
    traffic.start();
    stateTimer = setInterval(pushState, config.stateIntervalMs);
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      traffic.stop();
      clearInterval(stateTimer);
      // The runtime's stop: the final flush first, so the simulator's last collection finds
      // everything, then the reporter's last delivery, then usagekit's client, all within the
      // budget. The simulator collects the last period itself, after every replica stopped.
      if (runtime) await runtime.stop();
      else await prisma.$disconnect().catch(() => undefined);
      const finalState = state();
      await metrics.close();
      send({ type: 'stopped', state: finalState }, () => process.exit(0));
    })());

  process.on('message', (message: ParentToReplica) => {
    switch (message.type) {
      case 'start':
        start();
        break;
      case 'freeze':
        traffic.stop();
        clearInterval(stateTimer);
        void store
          .freeze()
          .then(() =>
            send({ type: 'frozen', state: state(), unconfirmedBatch: store.unconfirmed }),
          );
        break;
      case 'stop':
        void stop();
        break;
    }
  });
  // The simulator is gone: flush what we have and leave.
  process.on('disconnect', () => void stop());
  send({ type: 'ready', replicaId, pid: process.pid, metricsPort: metrics.port });
}
