export { BoundaryUsageStore, DEFAULT_STORE_OPTIONS } from './lib/store.js';
export type { StoreOptions, UpsertStatsParams, UpsertStatsResult, LockMode } from './lib/store.js';
export type { BoundaryUsageSummary, StaleTotals } from './lib/summary.js';
export { emptySummary } from './lib/summary.js';
export { InvalidInputError, isUuid } from './lib/validation.js';
