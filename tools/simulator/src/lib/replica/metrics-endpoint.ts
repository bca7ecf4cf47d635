import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createFlushMetrics, type FlushLoopObserver } from '@usagekit/boundary-usage';
import { createTelemetryMetrics, type TelemetryObserver } from '@usagekit/telemetry';
import { Counter, Registry } from 'prom-client';

export interface MetricsEndpoint {
  /** The port /metrics listens on (127.0.0.1). */
  port: number;
  flushObserver: FlushLoopObserver;
  telemetryObserver: TelemetryObserver;
  close(): Promise<void>;
}

/**
 * A replica's Prometheus endpoint: its own prom-client registry with the library's flush and
 * telemetry metrics, served at http://127.0.0.1:<port>/metrics, as an application would
 * expose them. Loopback only.
 */
export async function startMetricsEndpoint(): Promise<MetricsEndpoint> {
  const registry = new Registry();
  const flushObserver = createFlushMetrics(registry);
  const telemetryObserver = createTelemetryMetrics(registry);
  initialiseLabelledCounters(registry);
  const server: Server = createServer((request, response) => {
    if (request.method !== 'GET' || !request.url?.startsWith('/metrics')) {
      response.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => {
        response.writeHead(200, { 'content-type': registry.contentType }).end(body);
      },
      (error: unknown) => {
        response.writeHead(500).end(error instanceof Error ? error.message : String(error));
      },
    );
  });
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    flushObserver,
    telemetryObserver,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * prom-client exports a labelled counter only once a label set was incremented. A series that
 * first appears at 1 has no earlier sample, so increase() misses that first event, and a rule
 * like "no report written in 1.5 periods" would see a reporter's first report as no change.
 * Touching every label set with 0 makes each series start at 0. The flush counter is left
 * alone on purpose: at 0 before the flush loop's first tick, it would read as a stalled loop.
 * (The library could do this in
 * createFlushMetrics/createTelemetryMetrics; until it does, applications should, see
 * docs/operations.md.)
 */
function initialiseLabelledCounters(registry: Registry): void {
  const labelSets: Record<string, Record<string, string>[]> = {
    usagekit_boundary_flushed_requests_total: [{ decision: 'allowed' }, { decision: 'denied' }],
    usagekit_telemetry_snapshots_total: [
      { outcome: 'reported' },
      { outcome: 'lost_election' },
      { outcome: 'failed' },
    ],
    usagekit_telemetry_reported_requests_total: [{ decision: 'allowed' }, { decision: 'denied' }],
    usagekit_telemetry_delivery_attempts_total: [{ result: 'delivered' }, { result: 'failed' }],
    usagekit_boundary_flush_errors_total: [{ code: 'LOCK_TIMEOUT' }],
    usagekit_telemetry_errors_total: [{ stage: 'collect', code: 'LOCK_TIMEOUT' }],
  };
  for (const [name, sets] of Object.entries(labelSets)) {
    const metric = registry.getSingleMetric(name);
    if (!(metric instanceof Counter)) continue;
    for (const labels of sets) metric.inc(labels, 0);
  }
}

/** Calls every observer's hook in turn (the flush loop and the reporter each take one). */
export function combineFlushObservers(...observers: FlushLoopObserver[]): FlushLoopObserver {
  return {
    onFlush: (result, durationMs) => {
      for (const observer of observers) observer.onFlush?.(result, durationMs);
    },
    onError: (error, attempt, willRetry) => {
      for (const observer of observers) observer.onError?.(error, attempt, willRetry);
    },
  };
}

export function combineTelemetryObservers(...observers: TelemetryObserver[]): TelemetryObserver {
  return {
    onSnapshot: (snapshot, durationMs) => {
      for (const observer of observers) observer.onSnapshot?.(snapshot, durationMs);
    },
    onDelivery: (attempt) => {
      for (const observer of observers) observer.onDelivery?.(attempt);
    },
    onDeliveryPass: (pass) => {
      for (const observer of observers) observer.onDeliveryPass?.(pass);
    },
    onError: (stage, error) => {
      for (const observer of observers) observer.onError?.(stage, error);
    },
  };
}
