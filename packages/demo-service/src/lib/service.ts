import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '@usagekit/db';
import { startUsageRuntime, type StopReport, type UsageRuntime } from '@usagekit/telemetry';
import type { DemoServiceConfig } from './config.js';
import { createHostClient, disconnectHostClient } from './host-client.js';
import { handle } from './routes.js';

/** Of the shutdown budget: at most this for in-flight HTTP requests to finish. */
const MAX_DRAIN_MS = 5_000;
/** Kept back for closing the service's own client after usagekit's stop. */
const HOST_DISCONNECT_MS = 1_000;
/** When the port cannot be had: usagekit's stop (nothing was tracked) and the host client's. */
const FAILED_START_STOP_MS = 2_000;

export interface DemoService {
  readonly port: number;
  readonly url: string;
  readonly runtime: UsageRuntime;
  /** Idempotent: drains HTTP, stops usagekit within what is left of the budget, closes the host client. */
  shutdown(): Promise<ShutdownReport>;
}

export interface ShutdownReport {
  budgetMs: number;
  elapsedMs: number;
  /** Requests still running when the drain's time ran out (their connections were closed). */
  abandonedRequests: number;
  usage: StopReport;
  hostClient: 'disconnected' | 'abandoned';
}

/**
 * Starts the service: its own client for its own tables, usagekit's runtime (tracker, flush
 * loop, reporter, on usagekit's own client) and the HTTP server. Every request with a
 * workspace and a user is tracked once, when its response is written.
 */
export async function startDemoService(
  config: DemoServiceConfig,
  logger: Logger,
): Promise<DemoService> {
  const host = createHostClient(config.databaseUrl);
  const runtime = startUsageRuntime({
    databaseUrl: config.databaseUrl,
    client: { schema: config.usagekitSchema },
    replicaId: config.replicaId,
    deploymentId: config.deploymentId,
    sink: config.telemetryUrl,
    flushIntervalMs: config.flushIntervalMs,
    snapshotFrequencyMs: config.snapshotFrequencyMs,
    logger,
  });

  let inFlight = 0;
  let draining = false;
  let idle: (() => void) | undefined;
  const server: Server = createServer((request, response) => {
    inFlight++;
    // While draining, every response closes its connection, so no keep-alive socket lingers.
    if (draining) response.shouldKeepAlive = false;
    handle(request, response, host)
      .then((outcome) => {
        if (outcome) {
          runtime.track(
            outcome.workspaceId,
            outcome.userId,
            outcome.allowed ? 1 : 0,
            outcome.allowed ? 0 : 1,
          );
        }
      })
      .catch((error: unknown) => {
        logger.error('request failed', { error: (error as Error).message, url: request.url });
        if (!response.headersSent) response.writeHead(500).end('{"error":"internal"}');
        else response.destroy();
      })
      .finally(() => {
        inFlight--;
        if (inFlight === 0) idle?.();
      });
  });
  server.keepAliveTimeout = 5_000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    // EADDRINUSE and the like: nothing was served, but the runtime (flush loop, reporter, its
    // client) and the host client are running; stop them so a caller that handles the error
    // is not left with their timers and connections.
    logger.error('listen failed', { error: (error as Error).message, port: config.port });
    await runtime.stop({ budgetMs: FAILED_START_STOP_MS }).catch(() => undefined);
    await disconnectHostClient(host, HOST_DISCONNECT_MS);
    throw error;
  }
  const port = (server.address() as AddressInfo).port;

  let shuttingDown: Promise<ShutdownReport> | undefined;
  const shutdown = (): Promise<ShutdownReport> =>
    (shuttingDown ??= (async () => {
      const startedAt = performance.now();
      const remaining = () => config.shutdownBudgetMs - (performance.now() - startedAt);
      // 1. Stop taking requests and let the running ones finish (each is tracked as it ends).
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const drained = new Promise<void>((resolve) => {
        idle = resolve;
        if (inFlight === 0) resolve();
      });
      const drainMs = Math.min(MAX_DRAIN_MS, remaining() / 4);
      await within(Promise.all([closed, drained]), drainMs);
      const abandonedRequests = inFlight;
      server.closeAllConnections();
      // 2. usagekit: final flush, final collection if last, delivery, close its client.
      const usage = await runtime.stop({
        budgetMs: Math.max(1, Math.floor(remaining() - HOST_DISCONNECT_MS)),
        finalCollection: config.finalCollection,
      });
      // 3. The service's own client.
      const hostClient = await disconnectHostClient(host, Math.max(1, remaining()));
      return {
        budgetMs: config.shutdownBudgetMs,
        elapsedMs: Math.round(performance.now() - startedAt),
        abandonedRequests,
        usage,
        hostClient,
      };
    })());

  return { port, url: `http://127.0.0.1:${port}`, runtime, shutdown };
}

async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work,
    new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, ms)))),
  ]);
  clearTimeout(timer);
}
