import {
  assertPositiveMs,
  BoundaryUsageStore,
  BoundaryUsageTracker,
  combineHooks,
  createFlushMetrics,
  isUuid,
  startFlushLoop,
  type ConfirmedUsage,
  type FlushLoop,
  type FlushLoopObserver,
  type FlushLoopOptions,
  type FlushResult,
  type PendingUsage,
  type StoreOptions,
  type TrackerOptions,
} from '@usagekit/boundary-usage';
import {
  createPrismaClient,
  disconnectWithin,
  InvalidInputError,
  noopLogger,
  schemaTables,
  toDatabaseError,
  type CreatePrismaClientOptions,
  type Logger,
  type PrismaClient,
} from '@usagekit/db';
import type { Registry } from 'prom-client';
import { describeError } from '../errors.js';
import { createTelemetryMetrics } from '../metrics.js';
import type { TelemetryObserver, TelemetryReporterOptions } from '../options.js';
import { TelemetryReporter } from '../reporter.js';
import type { Sink } from '../sink.js';
import * as sql from '../sql.js';
import { DEFAULT_STOP_BUDGET_MS, StopBudget, type StopStepName } from './stop-budget.js';
import { stopReportJson, type StopReport, type StopStep } from './stop-report.js';

/** usagekit's client when the runtime builds it: one flush and one reporter call at a time, plus room (README). */
export const DEFAULT_RUNTIME_MAX_CONNECTIONS = 4;

export interface UsageRuntimeOptions {
  /**
   * The database. The runtime builds usagekit's own client from it (createPrismaClient, pool
   * of `client.maxConnections`, default 4) and closes it in stop(). Give this or `prisma`.
   */
  databaseUrl?: string;
  /**
   * Or a client you built with createPrismaClient for usagekit. It becomes the runtime's:
   * stop() disconnects it. Never the host's own PrismaClient (see @usagekit/db, "Which client").
   */
  prisma?: PrismaClient;
  /** Options for the client built from `databaseUrl` (statementDeadlineMs, …). */
  client?: Omit<CreatePrismaClientOptions, 'databaseUrl' | 'logger'>;
  /** This replica's id, a uuid: stable for the process (a pod), unique in the fleet. */
  replicaId: string;
  /** Identifies the deployment in every report and in the report id. */
  deploymentId: string;
  /** Where reports go: a Sink, or a receiver URL for an HttpSink with its defaults. */
  sink: Sink | string | URL;
  /** Time between flushes. Default 60 s (coder's). */
  flushIntervalMs?: number;
  /** Length of a telemetry period. Default 30 min. */
  snapshotFrequencyMs?: number;
  /** stop()'s budget when the call does not give one. Default 20 s (DEFAULT_STOP_BUDGET_MS). */
  stopBudgetMs?: number;
  logger?: Logger;
  /** Prometheus series of the flush loop and the reporter, on your registry. */
  metrics?: { registry: Registry; prefix?: string; labels?: Record<string, string> };
  /** Hooks of your own, called after the metrics' (a hook that throws is logged and ignored). */
  observers?: { flush?: FlushLoopObserver; telemetry?: TelemetryObserver };
  /** The store: its options, or one you built on the same client (a subclass, for instance). */
  store?: StoreOptions | BoundaryUsageStore;
  tracker?: Omit<TrackerOptions, 'logger'>;
  flushLoop?: Pick<FlushLoopOptions, 'maxAttempts' | 'retryBackoff'>;
  /** The reporter's other options (timeouts, retention, clock, …). */
  reporter?: Omit<
    TelemetryReporterOptions,
    'prisma' | 'store' | 'deploymentId' | 'sink' | 'snapshotFrequencyMs' | 'logger' | 'observer'
  >;
}

export interface UsageRuntimeStopOptions {
  /** The whole stop's budget; default the runtime's stopBudgetMs (20 s). */
  budgetMs?: number;
  /**
   * This replica is the last one standing (the deployment scales to zero, the last pod of a
   * rollout): after the final flush, collect the period in progress and deliver it, instead
   * of leaving it in the table for a reporter that will not come until the next start.
   * Default false: a replica that stops while others run leaves its flushed usage to their
   * next scheduled collection (see the README for why not always).
   */
  finalCollection?: boolean;
}

/** The tracker, flush loop and reporter of one host process, with one budgeted stop. */
export interface UsageRuntime {
  readonly replicaId: string;
  /** The tracker's writer id (random per runtime). */
  readonly writerId: string;
  /**
   * Counts one batch of requests for a workspace and its owner (uuids). O(1), no I/O. Throws
   * InvalidInputError (INVALID_INPUT) for a bad id or count, and counts nothing then. After
   * stop() began it still counts, but the count is flushed only if the final flush has not
   * started yet (stop()'s report says what stayed in memory).
   */
  track(workspaceId: string, ownerId: string, allowed: number, denied: number): void;
  /** Flushes now, with the loop's retries. */
  flushNow(): Promise<FlushResult>;
  /** Tracked, not yet known to be in the database (JSON-safe). */
  pending(): PendingUsage;
  /** Known to be in the database since the start (JSON-safe). */
  confirmed(): ConfirmedUsage;
  /**
   * Stops everything in order within the budget: the final flush, the final collection (when
   * asked), the reporter's last delivery, one read saying where the usage is, and closing
   * usagekit's client. Resolves (never rejects for the database's sake) within `budgetMs`
   * plus timer slack, with a {@link StopReport}. Idempotent: every call returns the first
   * call's promise. Rejects with InvalidInputError for a bad option.
   */
  stop(options?: UsageRuntimeStopOptions): Promise<StopReport>;
  /** usagekit's client: for usagekit's own calls (connectionProfile, …), never the host's queries. */
  readonly prisma: PrismaClient;
  readonly store: BoundaryUsageStore;
  readonly tracker: BoundaryUsageTracker;
  readonly reporter: TelemetryReporter;
}

/**
 * Starts usagekit in a host process: builds (or takes) usagekit's client, a tracker, the flush
 * loop and the reporter, and starts the loop and the reporter's schedule. Needs no database to
 * start (connections are made lazily): tracking works at once. Throws InvalidInputError
 * (INVALID_INPUT) for a bad option, before anything starts.
 */
export function startUsageRuntime(options: UsageRuntimeOptions): UsageRuntime {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidInputError('options', options, 'an options object');
  }
  const logger = options.logger ?? noopLogger;
  if (!isUuid(options.replicaId)) {
    throw new InvalidInputError('replicaId', options.replicaId, 'a uuid (8-4-4-4-12 hex digits)');
  }
  const replicaId = options.replicaId.toLowerCase();
  const defaultBudgetMs = assertPositiveMs(
    'stopBudgetMs',
    options.stopBudgetMs ?? DEFAULT_STOP_BUDGET_MS,
  );
  if ((options.databaseUrl === undefined) === (options.prisma === undefined)) {
    throw new InvalidInputError(
      'databaseUrl',
      options.databaseUrl,
      'exactly one of databaseUrl (the runtime builds its client) and prisma (a createPrismaClient client)',
    );
  }
  const prisma =
    options.prisma ??
    createPrismaClient({
      maxConnections: DEFAULT_RUNTIME_MAX_CONNECTIONS,
      ...options.client,
      databaseUrl: options.databaseUrl as string,
      logger,
    });
  const store =
    options.store instanceof BoundaryUsageStore
      ? options.store
      : new BoundaryUsageStore(prisma, options.store);
  const tracker = new BoundaryUsageTracker({ ...options.tracker, logger });
  const hookFailed = (hook: string, error: unknown): void =>
    logger.warn(`usagekit runtime: observer ${hook} threw; ignored`, {
      error: describeError(error),
    });
  const metrics = options.metrics;
  const metricOptions = metrics ? { prefix: metrics.prefix, labels: metrics.labels } : undefined;
  // The reporter validates its options in its constructor: built before the loop starts, so a
  // bad option leaves nothing running.
  const reporter = new TelemetryReporter({
    ...options.reporter,
    prisma,
    store,
    deploymentId: options.deploymentId,
    sink: options.sink,
    snapshotFrequencyMs: options.snapshotFrequencyMs,
    logger,
    observer: combineHooks<TelemetryObserver>(
      [
        metrics ? createTelemetryMetrics(metrics.registry, metricOptions) : undefined,
        options.observers?.telemetry,
      ],
      hookFailed,
    ),
  });
  const loop: FlushLoop = startFlushLoop({
    ...options.flushLoop,
    tracker,
    store,
    replicaId,
    intervalMs: options.flushIntervalMs,
    logger,
    observer: combineHooks<FlushLoopObserver>(
      [
        metrics ? createFlushMetrics(metrics.registry, metricOptions) : undefined,
        options.observers?.flush,
      ],
      hookFailed,
    ),
  });
  reporter.start();

  let stopping: Promise<StopReport> | undefined;
  const stop = (stopOptions: UsageRuntimeStopOptions = {}): Promise<StopReport> => {
    if (stopping) return stopping;
    let budgetMs: number;
    try {
      budgetMs = assertPositiveMs('budgetMs', stopOptions.budgetMs ?? defaultBudgetMs);
      if (
        stopOptions.finalCollection !== undefined &&
        typeof stopOptions.finalCollection !== 'boolean'
      ) {
        throw new InvalidInputError('finalCollection', stopOptions.finalCollection, 'a boolean');
      }
    } catch (error) {
      return Promise.reject(error);
    }
    stopping = stopInOrder({
      budget: new StopBudget(budgetMs, stopOptions.finalCollection === true),
      finalCollection: stopOptions.finalCollection === true,
      loop,
      reporter,
      tracker,
      prisma,
      store,
      replicaId,
      logger,
    });
    return stopping;
  };

  return {
    replicaId,
    writerId: tracker.writerId,
    track: (workspaceId, ownerId, allowed, denied) =>
      tracker.track(workspaceId, ownerId, allowed, denied),
    flushNow: () => loop.flushNow(),
    pending: () => tracker.pending(),
    confirmed: () => tracker.confirmed(),
    stop,
    prisma,
    store,
    tracker,
    reporter,
  };
}

interface StopInput {
  budget: StopBudget;
  finalCollection: boolean;
  loop: FlushLoop;
  reporter: TelemetryReporter;
  tracker: BoundaryUsageTracker;
  prisma: PrismaClient;
  store: BoundaryUsageStore;
  replicaId: string;
  logger: Logger;
}

/**
 * The order matters: the final flush first (so a final collection finds everything this
 * replica tracked), then the collection, then the reporter's stop (it stops the schedule and
 * delivers what is pending, the final report included), then the account (one read, while the
 * client is still open), then the client. Each step's deadline is what the budget leaves for
 * it when it starts (StopBudget); a step that runs out of time is left to its own deadline and
 * the next one starts, so stop() returns within the budget whatever the database does.
 */
async function stopInOrder(input: StopInput): Promise<StopReport> {
  const { budget, loop, reporter, tracker, prisma, store, replicaId, logger } = input;
  const steps: StopStep[] = [];
  let finalCollection: StopReport['finalCollection'] = 'not-requested';
  let finalReportId: string | undefined;
  let account: sql.ShutdownAccountRow | undefined;
  let disconnect: StopReport['disconnect'] = 'skipped';

  await runStep(steps, budget, 'flush', async (allowanceMs) => {
    await loop.stop({ timeoutMs: allowanceMs });
    // The loop logs and swallows a failed final flush; what is left says whether it worked.
    const left = tracker.pending();
    if (left.allowedRequests + left.deniedRequests > 0n || left.unconfirmedBatch) {
      throw Object.assign(
        new Error('the final flush did not flush everything; the rest stays in memory'),
        {
          code: 'UNFLUSHED',
        },
      );
    }
  });

  if (input.finalCollection) {
    const step = await runStep(steps, budget, 'final-collection', async (_allowanceMs, signal) => {
      const snapshot = await reporter.collectCurrentPeriod({ signal });
      finalReportId = snapshot.reportId;
      finalCollection = snapshot.boundaryUsageSummary ? 'reported' : 'already-claimed';
    });
    if (step.outcome !== 'done') finalCollection = step.outcome;
  }

  await runStep(steps, budget, 'delivery', (allowanceMs) =>
    reporter.stop({ timeoutMs: allowanceMs }),
  );

  await runStep(steps, budget, 'account', async () => {
    const rows = await prisma.$queryRaw<sql.ShutdownAccountRow[]>(
      sql.shutdownAccount(schemaTables(store.options.schema), replicaId),
    );
    account = rows[0];
  });

  const disconnectStep = await runStep(
    steps,
    budget,
    'disconnect',
    async (allowanceMs) => {
      // Closed for good: work a timed-out step left behind fails with CLIENT_CLOSED instead of
      // reopening the client after stop() has returned.
      const closed = await disconnectWithin(prisma, allowanceMs, { reconnect: false });
      disconnect = closed.outcome;
    },
    { ownTimer: true },
  );
  if (disconnectStep.outcome === 'skipped') {
    // No time left: start it anyway so the connections close, without waiting for it.
    void disconnectWithin(prisma, 1_000, { reconnect: false }).catch(() => undefined);
  }

  const left = tracker.pending();
  const report: Omit<StopReport, 'toJSON'> = {
    budgetMs: budget.budgetMs,
    elapsedMs: Math.round(budget.elapsedMs()),
    steps,
    inMemory: { allowedRequests: left.allowedRequests, deniedRequests: left.deniedRequests },
    awaitingCollection: account
      ? { allowedRequests: account.allowed_requests, deniedRequests: account.denied_requests }
      : null,
    undeliveredReports: account ? account.undelivered_reports : null,
    rejectedReports: account ? account.rejected_reports : null,
    finalCollection,
    ...(finalReportId ? { finalReportId } : {}),
    disconnect,
  };
  const lost = left.allowedRequests + left.deniedRequests > 0n;
  (lost ? logger.error : logger.info).call(
    logger,
    'usagekit runtime stopped',
    stopReportJson(report) as Record<string, unknown>,
  );
  return Object.defineProperty(report, 'toJSON', {
    enumerable: false,
    value: () => stopReportJson(report),
  }) as StopReport;
}

/**
 * Runs one step within what the budget allows it: settles when the work does or at its
 * allowance, whichever is first ('timed-out': the work goes on in the background, bounded by
 * its own deadline). `ownTimer`: the work bounds itself to the allowance (disconnectWithin).
 */
async function runStep(
  steps: StopStep[],
  budget: StopBudget,
  name: StopStepName,
  work: (allowanceMs: number, signal: AbortSignal) => Promise<unknown>,
  options: { ownTimer?: boolean } = {},
): Promise<StopStep> {
  const allowanceMs = budget.allowanceMs(name);
  const step: StopStep = { step: name, allowanceMs, elapsedMs: 0, outcome: 'done' };
  steps.push(step);
  if (allowanceMs <= 0) {
    step.outcome = 'skipped';
    return step;
  }
  const startedAt = performance.now();
  let timer: NodeJS.Timeout | undefined;
  // Aborted when the step runs out of time: work that honours it starts nothing new after
  // stop() has moved on (and returned, and closed the client).
  const outOfTime = new AbortController();
  const running = Promise.resolve()
    .then(() => work(allowanceMs, outOfTime.signal))
    .then(
      () => 'done' as const,
      (error: unknown) => error,
    );
  const outcome = options.ownTimer
    ? await running
    : await Promise.race([
        running,
        new Promise<'timed-out'>((resolve) => {
          timer = setTimeout(() => resolve('timed-out'), allowanceMs);
        }),
      ]);
  clearTimeout(timer);
  if (outcome === 'timed-out') {
    outOfTime.abort(new Error(`stop(): the ${name} step ran out of its ${allowanceMs} ms`));
  }
  step.elapsedMs = Math.round(performance.now() - startedAt);
  if (outcome === 'done' || outcome === 'timed-out') {
    step.outcome = outcome;
  } else {
    step.outcome = 'failed';
    const code = (outcome as { code?: unknown })?.code;
    step.code = typeof code === 'string' ? code : toDatabaseError(outcome).code;
    step.error = describeError(outcome);
  }
  return step;
}
