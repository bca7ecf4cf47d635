import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BoundaryUsageStore, type UpsertStatsParams } from '@usagekit/boundary-usage';
import { type PrismaClient } from '@usagekit/db';
import { useDatabase } from '@usagekit/test-support';
import { gate, waitUntil } from '@usagekit/testing';

export { gate, waitUntil };
import {
  TelemetryReporter,
  type Clock,
  type OutboxReport,
  type Sink,
  type TelemetryReporterOptions,
} from '../src/index.js';

export const MINUTE_MS = 60_000;
export const FREQUENCY_MS = 30 * MINUTE_MS;

// One useDatabase() for every package's suites (closes clients and drops the database even
// when a test fails): @usagekit/test-support.
export { useDatabase };

export const uuid = (): string => randomUUID();

/** A clock that only moves when told to. */
export class FakeClock implements Clock {
  private current: number;
  constructor(start: Date | string) {
    this.current = new Date(start).getTime();
  }
  now(): Date {
    return new Date(this.current);
  }
  set(time: Date | string): void {
    this.current = new Date(time).getTime();
  }
  advance(ms: number): void {
    this.current += ms;
  }
}

/** One flush's parameters, zero except for what is given. */
export function flush(
  replicaId: string,
  counts: Partial<UpsertStatsParams> = {},
): UpsertStatsParams {
  return {
    replicaId,
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 0,
    uniqueWorkspacesCount: 0,
    uniqueUsersCount: 0,
    allowedRequests: 0,
    deniedRequests: 0,
    ...counts,
  };
}

/** A sink that keeps what it is sent (a real Sink, standing in for a receiver). */
export class CollectingSink implements Sink {
  readonly sent: OutboxReport[] = [];
  async send(report: OutboxReport): Promise<void> {
    this.sent.push(report);
  }
}

export interface ReceivedRequest {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
  status: number;
}

export interface Receiver {
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Requests answered with a 2xx. */
  accepted(): ReceivedRequest[];
  close(): Promise<void>;
}

/**
 * A real HTTP receiver on 127.0.0.1. `statusFor(n)` picks the status of the n-th request
 * (0-based); every request is recorded with its headers and body.
 */
export async function startReceiver(
  options: { port?: number; statusFor?: (index: number) => number } = {},
): Promise<Receiver> {
  const statusFor = options.statusFor ?? (() => 202);
  const requests: ReceivedRequest[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const status = statusFor(requests.length);
      requests.push({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        status,
      });
      response.writeHead(status, { 'content-type': 'text/plain' });
      response.end(status < 300 ? 'ok' : 'unavailable');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/snapshot`,
    port,
    requests,
    accepted: () => requests.filter((request) => request.status >= 200 && request.status < 300),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * The tests' fake clocks read fixed dates in 2026, months before the database's now(). The
 * claim refuses a bucket older than the retention (minus a margin) by the database's clock
 * (the skew guard), so test reporters keep ten years of retention unless a test sets its own.
 */
export const TEST_RETENTION_MS = 10 * 365 * 24 * 60 * MINUTE_MS;

/** A reporter with the test defaults (fake clock required, 30-minute periods). */
export function reporter(
  prisma: PrismaClient,
  clock: Clock,
  sink: TelemetryReporterOptions['sink'],
  overrides: Partial<TelemetryReporterOptions> = {},
): TelemetryReporter {
  return new TelemetryReporter({
    prisma,
    store: new BoundaryUsageStore(prisma),
    deploymentId: 'test-deployment',
    sink,
    clock,
    reportRetentionMs: TEST_RETENTION_MS,
    ...overrides,
  });
}

/**
 * Moves the outbox through time as if the database's clock had advanced by `ms`: every time a
 * report row holds (created, due, delivered) moves back by that much. Leases, backoffs and
 * retention run on the database's now(), which a test cannot set.
 */
export async function ageOutbox(prisma: PrismaClient, ms: number): Promise<void> {
  await prisma.$executeRaw`UPDATE usagekit.telemetry_reports
       SET created_at = created_at - ${ms}::bigint * interval '1 millisecond',
           next_attempt_at = next_attempt_at - ${ms}::bigint * interval '1 millisecond',
           delivered_at = delivered_at - ${ms}::bigint * interval '1 millisecond'`;
}

/** The database's now(). */
export async function databaseNow(prisma: PrismaClient): Promise<Date> {
  const [row] = await prisma.$queryRaw<{ now: Date }[]>`SELECT now() AS now`;
  return row!.now;
}

export interface OutboxRow {
  report_id: string;
  period_starting_at: Date;
  period_duration_ms: bigint;
  payload: string;
  attempts: number;
  last_error: string | null;
  next_attempt_at: Date;
  delivered_at: Date | null;
}

export async function outbox(prisma: PrismaClient): Promise<OutboxRow[]> {
  return prisma.$queryRaw<OutboxRow[]>`
    SELECT report_id::text AS report_id, period_starting_at, period_duration_ms, payload::text AS payload,
           attempts, last_error, next_attempt_at, delivered_at
      FROM usagekit.telemetry_reports ORDER BY created_at, report_id`;
}

export async function lockRows(prisma: PrismaClient): Promise<Date[]> {
  const rows = await prisma.$queryRaw<{ period_ending_at: Date }[]>`
    SELECT period_ending_at FROM usagekit.telemetry_locks ORDER BY period_ending_at`;
  return rows.map((row) => row.period_ending_at);
}

export async function statsTotals(
  prisma: PrismaClient,
): Promise<{ rows: bigint; allowed: bigint; denied: bigint }> {
  const rows = await prisma.$queryRaw<{ rows: bigint; allowed: bigint; denied: bigint }[]>`
    SELECT count(*) AS rows, COALESCE(sum(allowed_requests), 0)::bigint AS allowed,
           COALESCE(sum(denied_requests), 0)::bigint AS denied
      FROM usagekit.boundary_usage_stats`;
  return rows[0]!;
}

export async function clearTables(prisma: PrismaClient): Promise<void> {
  await prisma.$executeRaw`TRUNCATE usagekit.boundary_usage_stats, usagekit.boundary_usage_ids, usagekit.boundary_usage_flush_sequences,
    usagekit.telemetry_locks, usagekit.telemetry_reports`;
}
