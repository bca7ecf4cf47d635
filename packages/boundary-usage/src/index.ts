export { BoundaryUsageStore, DEFAULT_STORE_OPTIONS, NIL_WRITER_ID } from './lib/store.js';
export type { StoreOptions, UpsertStatsParams, UpsertStatsResult, LockMode } from './lib/store.js';
export {
  BoundaryUsageTracker,
  DEFAULT_TRACKER_OPTIONS,
  SequenceConflictError,
} from './lib/tracker.js';
export type { FlushResult, TrackerOptions, PendingUsage, ConfirmedUsage } from './lib/tracker.js';
export { startFlushLoop, DEFAULT_FLUSH_LOOP_OPTIONS } from './lib/flush-loop.js';
export type { FlushLoop, FlushLoopOptions, FlushLoopObserver } from './lib/flush-loop.js';
export type { BackoffOptions } from './lib/backoff.js';
export { backoffDelayMs } from './lib/backoff.js';
export type { BoundaryUsageSummary, StaleTotals } from './lib/summary.js';
export { emptySummary } from './lib/summary.js';
export {
  InvalidInputError,
  isUuid,
  assertPositiveInteger,
  assertPositiveMs,
  assertPositiveMsRoundedUp,
} from './lib/validation.js';
export { jsonInteger, parseJsonInteger, type JsonInteger } from './lib/json-integer.js';
export { combineHooks } from './lib/observer-hooks.js';
export { createFlushMetrics } from './lib/metrics.js';
export type { FlushMetricsOptions } from './lib/metrics.js';
