import { assertPositiveMsRoundedUp, InvalidInputError } from '@usagekit/boundary-usage';
import { retryDelayMs } from './backoff.js';
import { readClock } from './clock.js';
import { collectSnapshot } from './collect.js';
import { throwIfExpired, withDeadline } from './deadline.js';
import { deliverDue, nextPendingAttemptDelayMs, type DeliveryResult } from './deliver.js';
import { describeError } from './errors.js';
import {
  resolveReporterOptions,
  type ResolvedReporterOptions,
  type TelemetryReporterOptions,
} from './options.js';
import { floorToFrequency, nextBucketEdge } from './period.js';
import { purgeExpired, type PurgeResult } from './retention.js';
import type { Snapshot } from './snapshot.js';

/**
 * A scheduled tick lands this long after the bucket edge, so a timer or clock that is a hair
 * early still reads a time inside the new bucket (tick() also checks, and waits again if not).
 */
const TICK_SLACK_MS = 1_000;
/** setTimeout's limit (2^31 − 1 ms, about 24.8 days); a longer delay would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

type Stage = 'collect' | 'deliver' | 'purge';

/**
 * Once per period, exactly one replica's reporter claims the period, cuts over the boundary
 * usage rows and writes the report into the outbox, all in one transaction; every reporter
 * delivers outbox rows through the sink, oldest first, until the receiver acknowledges them.
 *
 * All work of one reporter (explicit calls and the schedule) runs one piece at a time, in call
 * order; several reporters (replicas) coordinate through the database only.
 */
export class TelemetryReporter {
  private readonly settings: ResolvedReporterOptions;
  private queue: Promise<unknown> = Promise.resolve();
  private state: 'idle' | 'running' | 'stopped' = 'idle';
  private tickTimer: NodeJS.Timeout | undefined;
  private deliveryTimer: NodeJS.Timeout | undefined;
  /** The bucket the schedule last collected, so an early timer never collects it twice. */
  private lastTickBucket: number | undefined;
  /** Failed scheduled collections in the current bucket (retried within it, with backoff). */
  private collectFailures = 0;
  /** Aborted when stop() gives up: a send still in flight is then cancelled, not left open. */
  private abandonSends = new AbortController();
  private stopping: Promise<void> | undefined;

  /** Validates every option; throws InvalidInputError (code 'INVALID_INPUT') naming the field. */
  constructor(options: TelemetryReporterOptions) {
    this.settings = resolveReporterOptions(options);
  }

  get deploymentId(): string {
    return this.settings.deploymentId;
  }

  get snapshotFrequencyMs(): number {
    return this.settings.snapshotFrequencyMs;
  }

  get maxStalenessMs(): number {
    return this.settings.maxStalenessMs;
  }

  /**
   * Claims the current period (the clock floored to snapshotFrequencyMs) and, if this reporter
   * won it, cuts over the boundary usage rows and writes the report into the outbox, in one
   * transaction. A lost claim gives a snapshot without `boundaryUsageSummary` and deletes
   * nothing. On failure nothing is claimed, deleted or written (the rows wait for the next
   * collection) and a typed error is thrown: a DatabaseError, a ClockSkewError (CLOCK_SKEW)
   * when this reporter's clock is too far from the database's, or a DeadlineExceededError
   * after collectTimeoutMs. Sends nothing: see deliverPending().
   */
  collectSnapshot(): Promise<Snapshot> {
    return this.serialized(() => this.observed('collect', () => this.collectBounded()));
  }

  /**
   * Sends due outbox rows through the sink, oldest first (at most deliveryBatchSize), and marks
   * each delivered or schedules its retry with backoff. Two reporters never send the same row
   * at the same time. Delivers reports written by any reporter, crashed ones included.
   * Bounded by deliveryPassTimeoutMs (DeadlineExceededError).
   */
  deliverPending(): Promise<DeliveryResult> {
    return this.serialized(() => this.observed('deliver', () => this.deliverBounded()));
  }

  /**
   * Deletes delivered reports and telemetry_locks rows older than reportRetentionMs, and flush
   * sequences idle for flushSequenceRetentionMs, by the database's clock. Pending reports are
   * always kept. Bounded by purgeTimeoutMs (DeadlineExceededError).
   */
  purgeExpired(): Promise<PurgeResult> {
    return this.serialized(() => this.observed('purge', () => this.purgeBounded()));
  }

  /**
   * The final collection, for a replica that is the last one standing (issue 20): claims the
   * period in progress (the bucket that ends at the next edge) now, cuts over what every replica
   * flushed so far and writes it to the outbox, as collectSnapshot() does for a period that has
   * ended. The report covers the period's start up to now; anything flushed later in the same
   * period waits for the next period's report (nothing lost, nothing counted twice). A snapshot
   * without `boundaryUsageSummary` means another final collection already claimed it: the rows
   * wait in the table. Same errors and deadline as collectSnapshot().
   *
   * `signal`: the caller's own limit (a shutdown budget). Once it is aborted no attempt starts,
   * even one still queued behind the reporter's other work, and the call rejects with its
   * reason; an attempt in flight is settled by the database, all or nothing.
   */
  collectCurrentPeriod(options: { signal?: AbortSignal } = {}): Promise<Snapshot> {
    const callerSignal = options?.signal;
    if (callerSignal !== undefined && !(callerSignal instanceof AbortSignal)) {
      return Promise.reject(new InvalidInputError('signal', callerSignal, 'an AbortSignal'));
    }
    return this.serialized(() =>
      this.observed('collect', () => {
        throwIfExpired(callerSignal);
        return withDeadline('telemetry collection', this.settings.collectTimeoutMs, (signal) =>
          collectSnapshot(
            this.settings,
            callerSignal ? AbortSignal.any([signal, callerSignal]) : signal,
            'current',
          ),
        );
      }),
    );
  }

  // Every call of the reporter has a deadline. The queue moves on when the deadline fires,
  // not when the abandoned work ends (on a silent connection it may never end by itself):
  // what it left in flight is settled by the database, all or nothing.
  private collectBounded(): Promise<Snapshot> {
    return withDeadline('telemetry collection', this.settings.collectTimeoutMs, (signal) =>
      collectSnapshot(this.settings, signal),
    );
  }

  private deliverBounded(giveUp?: AbortSignal): Promise<DeliveryResult> {
    const abandon = this.abandonSends.signal;
    return withDeadline('telemetry delivery pass', this.settings.deliveryPassTimeoutMs, (signal) =>
      deliverDue(this.settings, AbortSignal.any([signal, abandon, ...(giveUp ? [giveUp] : [])])),
    );
  }

  private purgeBounded(): Promise<PurgeResult> {
    return withDeadline('telemetry purge', this.settings.purgeTimeoutMs, () =>
      purgeExpired(this.settings),
    );
  }

  /**
   * Collects, delivers and purges now, then again just after every period edge (computed from
   * the clock), and retries pending deliveries when their backoff ends. Errors are logged and
   * passed to observer.onError, never thrown. The timers do not keep the process alive.
   * Calling start() while running does nothing; after stop() it throws.
   */
  start(): void {
    if (this.state === 'running') return;
    if (this.state === 'stopped') {
      throw new Error('TelemetryReporter: start() after stop(); create a new reporter instead');
    }
    this.state = 'running';
    this.scheduleTick(0);
  }

  /**
   * Stops the schedule, waits for work in flight, then tries one last delivery; bounded by
   * stopTimeoutMs, after which it resolves anyway (pending reports stay in the outbox for the
   * next reporter). `timeoutMs` replaces stopTimeoutMs for this stop (the first call's holds).
   * Idempotent: every call returns the same promise. Explicit calls
   * (collectSnapshot, deliverPending, purgeExpired) keep working afterwards.
   */
  stop(options?: { timeoutMs?: number }): Promise<void> {
    if (this.stopping) return this.stopping;
    let stopTimeoutMs = this.settings.stopTimeoutMs;
    try {
      if (options?.timeoutMs !== undefined) {
        stopTimeoutMs = assertPositiveMsRoundedUp('timeoutMs', options.timeoutMs);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    this.stopping = this.stopOnce(stopTimeoutMs);
    return this.stopping;
  }

  private async stopOnce(stopTimeoutMs: number): Promise<void> {
    this.state = 'stopped';
    clearTimeout(this.tickTimer);
    clearTimeout(this.deliveryTimer);
    const { logger } = this.settings;
    // Queued behind work in flight (a collection waiting for the lock), the last delivery may
    // not have started when stop() gives up: then it must not start at all, or it would run
    // after stop() returned, on a client the caller may have closed (Prisma would open it again).
    const giveUp = new AbortController();
    const lastDelivery = this.serialized(() =>
      giveUp.signal.aborted
        ? Promise.resolve<DeliveryResult>({ delivered: 0, failed: 0 })
        : this.observed('deliver', () => this.deliverBounded(giveUp.signal)),
    ).then(
      (result) => {
        if (result.delivered + result.failed > 0)
          logger.info('telemetry: last delivery before stop', { ...result });
      },
      // deliverPending() already told the observer.
      (error: unknown) => this.logError('telemetry: last delivery before stop failed', error),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), stopTimeoutMs);
    });
    const outcome = await Promise.race([lastDelivery, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      // Cancel the send still in flight (its report's lease outlives it; the next reporter
      // sends it again, same key). Explicit calls after stop() get a fresh controller.
      giveUp.abort(new Error('stop() gave up waiting for in-flight work'));
      this.abandonSends.abort(new Error('stop() gave up waiting for the send'));
      this.abandonSends = new AbortController();
      logger.error(
        'telemetry: stop() gave up waiting for in-flight work; pending reports stay in the outbox',
        {
          stopTimeoutMs,
        },
      );
    }
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work);
    this.queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private scheduleTick(delayMs: number): void {
    clearTimeout(this.tickTimer);
    this.tickTimer = setTimeout(() => {
      this.tickTimer = undefined;
      this.serialized(() => this.tick()).catch((error: unknown) =>
        this.reportError('collect', 'telemetry: scheduled round failed', error),
      );
    }, clampDelay(delayMs));
    this.tickTimer.unref();
  }

  /**
   * One scheduled round: collect, deliver, purge; then plan the next round and any retry. A
   * collection that fails is tried again within the same bucket, with backoff
   * (collectRetryBackoff), until it succeeds or the next edge takes over: one failed edge (a
   * failover, a migration holding the lock) must not skip the period, or the next report
   * would carry two periods under one label and rows near maxStalenessMs would go stale.
   */
  private async tick(): Promise<void> {
    if (this.state !== 'running') return;
    const { snapshotFrequencyMs, logger } = this.settings;
    const bucket = floorToFrequency(readClock(this.settings.clock), snapshotFrequencyMs).getTime();
    const newBucket = this.lastTickBucket === undefined || bucket > this.lastTickBucket;
    if (newBucket || this.collectFailures > 0) {
      if (newBucket) this.collectFailures = 0;
      this.lastTickBucket = bucket;
      const collected = await this.attempt(
        'collect',
        'telemetry: collection failed; retrying within this period',
        () => this.collectBounded(),
      );
      this.collectFailures = collected === undefined ? this.collectFailures + 1 : 0;
      // stop() may have come (and given up) during the collection: it delivers itself.
      if (this.state !== 'running') return;
      await this.attempt('deliver', 'telemetry: delivery failed', () => this.deliverBounded());
      if (newBucket && this.state === 'running') {
        const purged = await this.attempt('purge', 'telemetry: retention failed', () =>
          this.purgeBounded(),
        );
        if (purged && purged.reports + purged.locks + purged.flushSequences > 0) {
          logger.debug('telemetry: purged expired rows', { ...purged });
        }
      }
    }
    if (this.state !== 'running') return;
    const now = readClock(this.settings.clock);
    const untilNextRoundMs =
      nextBucketEdge(now, snapshotFrequencyMs).getTime() - now.getTime() + TICK_SLACK_MS;
    this.scheduleTick(
      this.collectFailures > 0
        ? Math.min(
            untilNextRoundMs,
            retryDelayMs(this.collectFailures, this.settings.collectRetryBackoff),
          )
        : untilNextRoundMs,
    );
    await this.scheduleDeliveryRetry();
  }

  /** Wakes up when the earliest pending report is due, unless the next round comes first. */
  private async scheduleDeliveryRetry(): Promise<void> {
    clearTimeout(this.deliveryTimer);
    this.deliveryTimer = undefined;
    const dueInMs = await this.attempt('deliver', 'telemetry: could not read the outbox', () =>
      withDeadline('telemetry outbox read', this.settings.deliveryPassTimeoutMs, () =>
        nextPendingAttemptDelayMs(this.settings),
      ),
    );
    if (dueInMs === undefined || dueInMs === null || this.state !== 'running') return;
    // The delay is the database's (due time − its now()); the next round is on our clock.
    // Comparing two durations needs no agreement between the clocks.
    const now = readClock(this.settings.clock);
    const untilNextRoundMs =
      nextBucketEdge(now, this.settings.snapshotFrequencyMs).getTime() - now.getTime();
    if (dueInMs >= untilNextRoundMs) return;
    this.deliveryTimer = setTimeout(() => {
      this.deliveryTimer = undefined;
      this.serialized(async () => {
        if (this.state !== 'running') return;
        await this.attempt('deliver', 'telemetry: delivery failed', () => this.deliverBounded());
        await this.scheduleDeliveryRetry();
      }).catch((error: unknown) =>
        this.reportError('deliver', 'telemetry: delivery retry failed', error),
      );
    }, clampDelay(dueInMs));
    this.deliveryTimer.unref();
  }

  /** Runs one step of a scheduled round; a failure is logged, observed and gives undefined. */
  private async attempt<T>(
    stage: Stage,
    message: string,
    step: () => Promise<T>,
  ): Promise<T | undefined> {
    try {
      return await this.observed(stage, step);
    } catch (error) {
      this.logError(message, error);
      return undefined;
    }
  }

  /**
   * Runs one operation, explicit or scheduled; a failure goes to observer.onError, exactly
   * once, and is rethrown. Metrics then count an application's own collectSnapshot() failures
   * as well as the schedule's.
   */
  private async observed<T>(stage: Stage, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      this.notifyError(stage, error);
      throw error;
    }
  }

  /** For failures outside observed(): logged and passed to the observer. */
  private reportError(stage: Stage, message: string, error: unknown): void {
    this.logError(message, error);
    this.notifyError(stage, error);
  }

  private logError(message: string, error: unknown): void {
    this.settings.logger.error(message, {
      code: (error as { code?: unknown })?.code,
      error: describeError(error),
    });
  }

  private notifyError(stage: Stage, error: unknown): void {
    try {
      this.settings.observer.onError?.(stage, error);
    } catch (hookError) {
      this.settings.logger.warn('telemetry: observer.onError threw', {
        error: describeError(hookError),
      });
    }
  }
}

function clampDelay(delayMs: number): number {
  return Math.min(Math.max(0, Math.ceil(delayMs)), MAX_TIMER_MS);
}
