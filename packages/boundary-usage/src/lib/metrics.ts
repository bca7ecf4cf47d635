import { Counter, Histogram, type Registry } from 'prom-client';
import type { FlushLoopObserver } from './flush-loop.js';

export interface FlushMetricsOptions {
  /** Metric name prefix; default `usagekit_`. */
  prefix?: string;
  /** Labels added to every series, e.g. `{ replica: replicaId }`. */
  labels?: Record<string, string>;
}

/**
 * Prometheus metrics for a flush loop, registered on the registry the application passes in
 * (never prom-client's global one: a library that registers globally crashes the second time
 * it is loaded, prometheus/client_js#334). Returns the observer to give `startFlushLoop`.
 *
 * Series: `<prefix>boundary_flushes_total{outcome}` (flushed | idle), `…_flush_duration_seconds`,
 * `…_flush_errors_total{code}`, `…_flush_retries_total`, `…_flush_duplicates_total` (batches the
 * database already had: ambiguous commits resolved), `…_flushed_requests_total{decision}`,
 * `…_flush_abandoned_total` (attempts abandoned at a deadline) and
 * `…_flush_sequence_recoveries_total` (batches resequenced above a stored sequence).
 */
export function createFlushMetrics(
  registry: Registry,
  options: FlushMetricsOptions = {},
): FlushLoopObserver {
  const prefix = options.prefix ?? 'usagekit_';
  const labels = options.labels ?? {};
  const labelNames = Object.keys(labels);
  const registers = [registry];
  const flushes = new Counter({
    name: `${prefix}boundary_flushes_total`,
    help: 'Flush attempts that succeeded, by outcome (flushed: wrote to the database; idle: nothing new).',
    labelNames: [...labelNames, 'outcome'],
    registers,
  });
  const duration = new Histogram({
    name: `${prefix}boundary_flush_duration_seconds`,
    help: 'Duration of successful flushes, including any resent batch.',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  const errors = new Counter({
    name: `${prefix}boundary_flush_errors_total`,
    help: 'Failed flush attempts, by error code (DEADLOCK, LOCK_TIMEOUT, CONNECTION_LOST, …).',
    labelNames: [...labelNames, 'code'],
    registers,
  });
  const retries = new Counter({
    name: `${prefix}boundary_flush_retries_total`,
    help: 'Failed flush attempts that were retried with backoff.',
    labelNames,
    registers,
  });
  const duplicates = new Counter({
    name: `${prefix}boundary_flush_duplicates_total`,
    help: 'Resent batches the database had already applied (ambiguous commits resolved without double counting).',
    labelNames,
    registers,
  });
  const abandoned = new Counter({
    name: `${prefix}boundary_flush_abandoned_total`,
    help: 'Flush attempts abandoned at a deadline (DEADLINE_EXCEEDED: a silent connection, a frozen server); the batch is kept and resent with its sequence.',
    labelNames,
    registers,
  });
  const recoveries = new Counter({
    name: `${prefix}boundary_flush_sequence_recoveries_total`,
    help: "Batches that found their writer's stored flush sequence ahead and were resequenced and resent instead of dropped.",
    labelNames,
    registers,
  });
  const requests = new Counter({
    name: `${prefix}boundary_flushed_requests_total`,
    help: 'Requests written to the database, by decision.',
    labelNames: [...labelNames, 'decision'],
    registers,
  });
  return {
    onFlush(result, durationMs) {
      flushes.inc({ ...labels, outcome: result.flushed ? 'flushed' : 'idle' });
      duration.observe(labels, durationMs / 1000);
      if (result.duplicates > 0) duplicates.inc(labels, result.duplicates);
      // Counter.inc takes a number; counts this large per flush are far beyond 2^53 requests.
      if (result.allowedRequests > 0n)
        requests.inc({ ...labels, decision: 'allowed' }, Number(result.allowedRequests));
      if (result.deniedRequests > 0n)
        requests.inc({ ...labels, decision: 'denied' }, Number(result.deniedRequests));
    },
    onAbandoned() {
      abandoned.inc(labels);
    },
    onSequenceRecoveries(count) {
      recoveries.inc(labels, count);
    },
    onError(error, _attempt, willRetry) {
      const code = (error as { code?: unknown })?.code;
      errors.inc({ ...labels, code: typeof code === 'string' ? code : 'UNKNOWN' });
      if (willRetry) retries.inc(labels);
    },
  };
}
