import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { TelemetryObserver } from './options.js';

export interface TelemetryMetricsOptions {
  /** Metric name prefix; default `usagekit_`. */
  prefix?: string;
  /** Labels added to every series, e.g. `{ replica: replicaId }`. */
  labels?: Record<string, string>;
}

/**
 * Prometheus metrics for a telemetry reporter, registered on the registry the application
 * passes in (never prom-client's global one: a library that registers globally crashes the
 * second time it is loaded, prometheus/client_js#334). Returns the observer to give
 * `new TelemetryReporter({ observer })`. The flush side has its own: createFlushMetrics in
 * @usagekit/boundary-usage; both can share one registry.
 *
 * Series (with the default prefix):
 * - `usagekit_telemetry_snapshots_total{outcome}`: collections, by outcome: `reported` (this
 *   reporter won the period and wrote its report), `lost_election` (another replica had it),
 *   `failed` (nothing claimed or deleted; the rows wait for the next period);
 * - `usagekit_telemetry_cutover_duration_seconds`: claim + cutover + outbox write of the
 *   collections that reported, retries included;
 * - `usagekit_telemetry_cutover_replicas_total`, `…_cutover_stale_rows_total`: replica rows
 *   counted, and rows deleted but left out as stale (their totals are in the report);
 * - `usagekit_telemetry_reported_requests_total{decision}`: requests in the reports written,
 *   to set beside `usagekit_boundary_flushed_requests_total`;
 * - `usagekit_telemetry_outbox_pending_reports`, `…_outbox_oldest_pending_age_seconds`:
 *   the backlog after the latest delivery pass;
 * - `usagekit_telemetry_outbox_rejected_reports`: rejected reports (dead letters) waiting for
 *   an operator, after the latest delivery pass;
 * - `usagekit_telemetry_reports_rejected_total`: reports moved to the rejected state;
 * - `usagekit_telemetry_standby_waits_total{outcome}`, `…_standby_wait_seconds`: reports that
 *   waited for the database's standbys before their send: `flushed`, `unverified` (the role
 *   cannot read pg_stat_replication's positions: sent without proof), `timed_out` (not sent);
 * - `usagekit_telemetry_delivery_attempts_total{result}`: `delivered` | `failed`;
 * - `usagekit_telemetry_errors_total{stage, code}`: failed collections, delivery passes and
 *   purges by error code (`LOCK_TIMEOUT`, `CONNECTION_LOST`, …), plus failed sends
 *   (`stage="deliver"`, `SINK_REJECTED`, `SINK_UNREACHABLE`, `SINK_TIMEOUT`);
 * - `usagekit_telemetry_abandoned_total{stage}`: calls abandoned at their deadline
 *   (DEADLINE_EXCEEDED: nothing answered), `collect` | `deliver` | `purge`;
 * - `usagekit_telemetry_clock_skew_seconds`: the reporter's clock minus the database's, at the
 *   latest claim (positive: the reporter is ahead);
 * - `usagekit_telemetry_clock_skew_refusals_total`: claims refused because that skew put the
 *   period outside the window (CLOCK_SKEW).
 */
export function createTelemetryMetrics(
  registry: Registry,
  options: TelemetryMetricsOptions = {},
): TelemetryObserver {
  const prefix = options.prefix ?? 'usagekit_';
  const labels = options.labels ?? {};
  const labelNames = Object.keys(labels);
  const registers = [registry];
  const name = (suffix: string): string => `${prefix}telemetry_${suffix}`;

  const snapshots = new Counter({
    name: name('snapshots_total'),
    help: 'Collections, by outcome: reported (won the period), lost_election (another replica had it), failed.',
    labelNames: [...labelNames, 'outcome'],
    registers,
  });
  const cutoverDuration = new Histogram({
    name: name('cutover_duration_seconds'),
    help: 'Duration of collections that reported: claim, cutover and outbox write in one transaction, retries included.',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const cutoverReplicas = new Counter({
    name: name('cutover_replicas_total'),
    help: 'Replica rows counted by cutovers.',
    labelNames,
    registers,
  });
  const staleRows = new Counter({
    name: name('cutover_stale_rows_total'),
    help: 'Rows cutovers deleted but left out of the summary because their window was older than maxStalenessMs (totals reported apart).',
    labelNames,
    registers,
  });
  const reportedRequests = new Counter({
    name: name('reported_requests_total'),
    help: 'Requests in the reports written to the outbox, by decision.',
    labelNames: [...labelNames, 'decision'],
    registers,
  });
  const pendingReports = new Gauge({
    name: name('outbox_pending_reports'),
    help: 'Reports not yet delivered, as of the latest delivery pass.',
    labelNames,
    registers,
  });
  const oldestPendingAge = new Gauge({
    name: name('outbox_oldest_pending_age_seconds'),
    help: 'How long the oldest undelivered report has waited, as of the latest delivery pass (0 when none).',
    labelNames,
    registers,
  });
  const rejectedReports = new Gauge({
    name: name('outbox_rejected_reports'),
    help: 'Rejected reports (dead letters: refused permanently by the receiver) waiting for an operator, as of the latest delivery pass.',
    labelNames,
    registers,
  });
  const reportsRejected = new Counter({
    name: name('reports_rejected_total'),
    help: 'Reports moved to the rejected state after rejectAfterRefusals permanent refusals.',
    labelNames,
    registers,
  });
  const standbyWaits = new Counter({
    name: name('standby_waits_total'),
    help: "Reports that waited for the database's standbys to flush their cutover before the send, by outcome: flushed, unverified (positions not readable: sent without proof), timed_out (not sent).",
    labelNames: [...labelNames, 'outcome'],
    registers,
  });
  const standbyWaitDuration = new Histogram({
    name: name('standby_wait_seconds'),
    help: "How long a report waited for the database's standbys to flush its cutover.",
    labelNames,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const deliveryAttempts = new Counter({
    name: name('delivery_attempts_total'),
    help: 'Reports sent to the sink, by result (delivered: acknowledged; failed: retried later).',
    labelNames: [...labelNames, 'result'],
    registers,
  });
  const errors = new Counter({
    name: name('errors_total'),
    help: 'Failed collections, delivery passes, purges and sends, by stage and error code.',
    labelNames: [...labelNames, 'stage', 'code'],
    registers,
  });

  const abandoned = new Counter({
    name: name('abandoned_total'),
    help: 'Collections, delivery passes and purges abandoned at their deadline (DEADLINE_EXCEEDED: nothing answered), by stage.',
    labelNames: [...labelNames, 'stage'],
    registers,
  });
  const clockSkew = new Gauge({
    name: name('clock_skew_seconds'),
    help: "The reporter's clock minus the database's now(), at the latest claim (positive: the reporter is ahead).",
    labelNames,
    registers,
  });
  const clockSkewRefusals = new Counter({
    name: name('clock_skew_refusals_total'),
    help: "Claims refused (CLOCK_SKEW) because the reporter's clock put the period outside the window around the database's time.",
    labelNames,
    registers,
  });

  return {
    onSnapshot(snapshot, durationMs) {
      const summary = snapshot.boundaryUsageSummary;
      if (!summary) {
        snapshots.inc({ ...labels, outcome: 'lost_election' });
        return;
      }
      snapshots.inc({ ...labels, outcome: 'reported' });
      cutoverDuration.observe(labels, durationMs / 1000);
      cutoverReplicas.inc(labels, summary.replicas);
      staleRows.inc(labels, summary.staleReplicas);
      // Counter.inc takes a number: exact up to 2^53 requests per report.
      reportedRequests.inc({ ...labels, decision: 'allowed' }, Number(summary.allowedRequests));
      reportedRequests.inc({ ...labels, decision: 'denied' }, Number(summary.deniedRequests));
    },
    onDelivery(attempt) {
      deliveryAttempts.inc({ ...labels, result: attempt.delivered ? 'delivered' : 'failed' });
      if (!attempt.delivered)
        errors.inc({ ...labels, stage: 'deliver', code: codeOf(attempt.error) });
      if (attempt.rejected) reportsRejected.inc(labels);
    },
    onDeliveryPass(pass) {
      pendingReports.set(labels, pass.pendingReports);
      oldestPendingAge.set(labels, (pass.oldestPendingAgeMs ?? 0) / 1000);
      rejectedReports.set(labels, pass.rejectedReports);
    },
    onError(stage, error) {
      if (stage === 'collect') snapshots.inc({ ...labels, outcome: 'failed' });
      const code = codeOf(error);
      errors.inc({ ...labels, stage, code });
      if (code === 'DEADLINE_EXCEEDED') abandoned.inc({ ...labels, stage });
    },
    onStandbyWait(wait) {
      standbyWaits.inc({ ...labels, outcome: wait.outcome });
      standbyWaitDuration.observe(labels, wait.waitedMs / 1000);
    },
    onClockSkew(reading) {
      clockSkew.set(labels, reading.skewMs / 1000);
      if (reading.refused) clockSkewRefusals.inc(labels);
    },
  };
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.length > 0 ? code : 'UNKNOWN';
}
