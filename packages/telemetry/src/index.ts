export { TelemetryReporter } from './lib/reporter.js';
export { DEFAULT_REPORTER_OPTIONS, CLAIM_WINDOW_MARGIN_MS } from './lib/options.js';
export { ClockSkewError, StandbyLagError } from './lib/errors.js';
export type { StandbyWait } from './lib/standby-flush.js';
export type {
  ClockSkewReading,
  TelemetryReporterOptions,
  TelemetryObserver,
  DeliveryAttempt,
  DeliveryPass,
} from './lib/options.js';
export type { DeliveryResult } from './lib/deliver.js';
export type { PurgeResult } from './lib/retention.js';
export {
  HttpSink,
  DEFAULT_HTTP_SINK_TIMEOUT_MS,
  PERMANENT_REFUSAL_STATUSES,
} from './lib/http-sink.js';
export { parseRetryAfter } from './lib/retry-after.js';
export { listRejectedReports, retryRejectedReports } from './lib/dead-letters.js';
export type {
  RejectedReport,
  ListRejectedReportsOptions,
  RetryRejectedReportsOptions,
  RetryRejectedReportsResult,
} from './lib/dead-letters.js';
export type { HttpSinkOptions } from './lib/http-sink.js';
export { JsonLinesSink } from './lib/json-lines-sink.js';
export type { JsonLinesSinkOptions } from './lib/json-lines-sink.js';
export { SinkError } from './lib/sink.js';
export type {
  Sink,
  SinkSendOptions,
  SinkErrorOptions,
  OutboxReport,
  SinkErrorCode,
} from './lib/sink.js';
export { BOUNDARY_USAGE_EVENT_TYPE, snapshotToJson, serializeSnapshot } from './lib/snapshot.js';
export type {
  Snapshot,
  BoundaryUsageReport,
  SnapshotJson,
  BoundaryUsageSummaryJson,
} from './lib/snapshot.js';
// Counters in the report's JSON; the rule lives with the tracker, the lowest layer that writes them.
export { jsonInteger, parseJsonInteger, type JsonInteger } from '@usagekit/boundary-usage';
export { reportIdFor, uuidV5, REPORT_ID_NAMESPACE } from './lib/report-id.js';
export { floorToFrequency, periodAt } from './lib/period.js';
export type { Period } from './lib/period.js';
export { systemClock } from './lib/clock.js';
export type { Clock } from './lib/clock.js';
export { retryDelayMs } from './lib/backoff.js';
export type { RetryBackoff } from './lib/backoff.js';
export { createTelemetryMetrics } from './lib/metrics.js';
export type { TelemetryMetricsOptions } from './lib/metrics.js';
export { startUsageRuntime, DEFAULT_RUNTIME_MAX_CONNECTIONS } from './lib/runtime/usage-runtime.js';
export type {
  UsageRuntime,
  UsageRuntimeOptions,
  UsageRuntimeStopOptions,
} from './lib/runtime/usage-runtime.js';
export { DEFAULT_STOP_BUDGET_MS, StopBudget } from './lib/runtime/stop-budget.js';
export type { StopStepName } from './lib/runtime/stop-budget.js';
export type { StopReport, StopStep } from './lib/runtime/stop-report.js';
