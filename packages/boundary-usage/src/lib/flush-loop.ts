import { noopLogger, type DatabaseError, type Logger } from '@usagekit/db';
import { backoffDelayMs, pause, type BackoffOptions } from './backoff.js';
import { combineHooks } from './observer-hooks.js';
import type { BoundaryUsageStore } from './store.js';
import type { BoundaryUsageTracker, FlushResult } from './tracker.js';
import {
  assertPositiveInteger,
  assertPositiveMs,
  assertPositiveMsRoundedUp,
  assertUuid,
  InvalidInputError,
} from './validation.js';

/** Optional observer of the loop, e.g. to feed metrics. Every method is optional. */
export interface FlushLoopObserver {
  onFlush?(result: FlushResult, durationMs: number): void;
  onError?(error: unknown, attempt: number, willRetry: boolean): void;
  /**
   * A flush attempt was abandoned at a deadline (DEADLINE_EXCEEDED: the tracker's
   * flushDeadlineMs, or a deadline of the database layer). Also reported to onError.
   */
  onAbandoned?(error: unknown, attempt: number): void;
  /** Batches found the stored sequence ahead and were resequenced and resent (`count` > 0). */
  onSequenceRecoveries?(count: number): void;
}

export interface FlushLoopOptions {
  tracker: BoundaryUsageTracker;
  store: BoundaryUsageStore;
  replicaId: string;
  /** Time between flushes; coder uses one minute. */
  intervalMs?: number;
  /** Aborting it stops the loop as stop() does (including the final flush). */
  signal?: AbortSignal;
  logger?: Logger;
  /** Attempts per tick for retryable errors (deadlock, lock timeout, lost connection…). */
  maxAttempts?: number;
  retryBackoff?: BackoffOptions;
  /**
   * Upper bound on stop(): waiting for a flush in flight plus the final flush, retries
   * included. stop() resolves by then whatever the database does.
   */
  finalFlushTimeoutMs?: number;
  observer?: FlushLoopObserver;
}

export interface FlushLoop {
  /**
   * Stops the timer, waits for a flush in flight, then flushes once more; resolves within
   * `timeoutMs` (default: finalFlushTimeoutMs) in all (what could not be flushed by then stays
   * in the tracker, and a flush still running is left to its own deadline). Idempotent: every
   * call returns the same promise; the first call's `timeoutMs` holds.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
  /** Flushes now, with retries, outside the schedule (never overlapping a running flush). */
  flushNow(): Promise<FlushResult>;
}

export const DEFAULT_FLUSH_LOOP_OPTIONS = {
  intervalMs: 60_000,
  maxAttempts: 5,
  retryBackoff: { baseDelayMs: 50, maxDelayMs: 2_000 },
  finalFlushTimeoutMs: 10_000,
} as const;

/**
 * Flushes the tracker every `intervalMs`. Flushes never overlap (the tracker serializes
 * them). Errors that may succeed on a second try (error.retryable: deadlock, serialization,
 * lock timeout, lost connection, transaction timeout) are retried with capped, jittered
 * backoff; anything else is logged and waits for the next tick. Nothing tracked is lost
 * either way: a failed batch stays in the tracker.
 */
export function startFlushLoop(options: FlushLoopOptions): FlushLoop {
  const { tracker, store } = options;
  if (!tracker) throw new InvalidInputError('tracker', tracker, 'a BoundaryUsageTracker');
  if (!store) throw new InvalidInputError('store', store, 'a BoundaryUsageStore');
  const replicaId = assertUuid('replicaId', options.replicaId);
  const intervalMs = assertPositiveMs(
    'intervalMs',
    options.intervalMs ?? DEFAULT_FLUSH_LOOP_OPTIONS.intervalMs,
  );
  const maxAttempts = assertPositiveInteger(
    'maxAttempts',
    options.maxAttempts ?? DEFAULT_FLUSH_LOOP_OPTIONS.maxAttempts,
  );
  const finalFlushTimeoutMs = assertPositiveMs(
    'finalFlushTimeoutMs',
    options.finalFlushTimeoutMs ?? DEFAULT_FLUSH_LOOP_OPTIONS.finalFlushTimeoutMs,
  );
  const requestedBackoff = options.retryBackoff ?? DEFAULT_FLUSH_LOOP_OPTIONS.retryBackoff;
  const backoff: BackoffOptions = {
    baseDelayMs: assertPositiveMs('retryBackoff.baseDelayMs', requestedBackoff?.baseDelayMs),
    maxDelayMs: assertPositiveMs('retryBackoff.maxDelayMs', requestedBackoff?.maxDelayMs),
  };
  const logger = options.logger ?? noopLogger;
  const observer = isolatedObserver(options.observer ?? {}, logger);
  const ticking = new AbortController();

  async function flushWithRetries(
    signal: AbortSignal | undefined,
    deadline = Infinity,
  ): Promise<FlushResult> {
    for (let attempt = 1; ; attempt++) {
      const startedAt = performance.now();
      const recoveriesBefore = tracker.sequenceRecoveries();
      const reportRecoveries = () => {
        const recovered = tracker.sequenceRecoveries() - recoveriesBefore;
        if (recovered > 0) observer.onSequenceRecoveries?.(recovered);
      };
      try {
        const result = await tracker.flush(store, replicaId);
        reportRecoveries();
        observer.onFlush?.(result, performance.now() - startedAt);
        return result;
      } catch (error) {
        reportRecoveries();
        if ((error as { code?: unknown })?.code === 'DEADLINE_EXCEEDED') {
          observer.onAbandoned?.(error, attempt);
        }
        const retryable = (error as Partial<DatabaseError>)?.retryable === true;
        const delay = backoffDelayMs(attempt - 1, backoff);
        const willRetry =
          retryable && attempt < maxAttempts && !signal?.aborted && Date.now() + delay < deadline;
        observer.onError?.(error, attempt, willRetry);
        logger.warn('boundary usage flush failed', {
          replicaId,
          attempt,
          willRetry,
          code: (error as { code?: unknown })?.code,
          error: error instanceof Error ? error.message : String(error),
        });
        if (!willRetry) throw error;
        await pause(delay, signal);
        // The backoff may have been cut short or run late: never start an attempt past the
        // deadline (stop() may have returned by then).
        if (Date.now() >= deadline) throw error;
      }
    }
  }

  const loop = (async () => {
    while (!ticking.signal.aborted) {
      await pause(intervalMs, ticking.signal);
      if (ticking.signal.aborted) break;
      await flushWithRetries(ticking.signal).catch(() => undefined);
    }
  })();

  let stopping: Promise<void> | undefined;
  function stop(stopOptions?: { timeoutMs?: number }): Promise<void> {
    if (stopping) return stopping;
    let timeoutMs = finalFlushTimeoutMs;
    try {
      if (stopOptions?.timeoutMs !== undefined) {
        timeoutMs = assertPositiveMsRoundedUp('timeoutMs', stopOptions.timeoutMs);
      }
    } catch (error) {
      return Promise.reject(error);
    }
    stopping = (async () => {
      ticking.abort();
      // One timer bounds both waits: a flush in flight (which the tracker's flushDeadlineMs
      // ends on its own, but that may be longer) and the final flush. Without it a flush stuck
      // on a silent connection kept stop() from returning at all (issue 11, item 1).
      const deadline = Date.now() + timeoutMs;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const outcome = await Promise.race([
        loop
          // No final flush may start after stop() has returned.
          .then(() => (Date.now() < deadline ? flushWithRetries(undefined, deadline) : undefined))
          .then(
            () => 'flushed' as const,
            (error: unknown) => error,
          ),
        timedOut,
      ]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        logger.error('boundary usage final flush timed out; unflushed usage stays in memory', {
          replicaId,
          timeoutMs,
        });
      } else if (outcome !== 'flushed') {
        logger.error('boundary usage final flush failed; unflushed usage stays in memory', {
          replicaId,
          error: outcome instanceof Error ? outcome.message : String(outcome),
        });
      }
    })();
    return stopping;
  }

  if (options.signal) {
    if (options.signal.aborted) void stop();
    else options.signal.addEventListener('abort', () => void stop(), { once: true });
  }

  return { stop, flushNow: () => flushWithRetries(undefined) };
}

/** The observer with every hook isolated (observer-hooks.ts): a hook that throws is logged. */
function isolatedObserver(observer: FlushLoopObserver, logger: Logger): FlushLoopObserver {
  return combineHooks([observer], (name, error) =>
    logger.warn(`boundary usage flush loop: observer.${name} threw; ignored`, {
      error: error instanceof Error ? error.message : String(error),
    }),
  );
}
