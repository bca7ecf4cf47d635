import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const PACKAGE_ROOT = join(__dirname, '..');
export const WORKSPACE_ROOT = join(PACKAGE_ROOT, '..', '..');
const SERVICE_BIN = join(PACKAGE_ROOT, 'bin', 'demo-service.js');

/**
 * The service's own migrations, applied the way its `migrate` target does: the real
 * `prisma migrate deploy` with this package's prisma.config.ts (through the workspace's
 * schema-engine tool where Prisma's native engine cannot be downloaded).
 */
export function migrateHostTables(databaseUrl: string): void {
  const result = spawnSync(
    process.execPath,
    [
      join(WORKSPACE_ROOT, 'tools/prisma-schema-engine/bin/prisma.js'),
      'migrate',
      'deploy',
      '--config',
      join(PACKAGE_ROOT, 'prisma.config.ts'),
    ],
    {
      cwd: WORKSPACE_ROOT,
      env: { ...process.env, DATABASE_URL: databaseUrl, CHECKPOINT_DISABLE: '1' },
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  if (result.status !== 0) {
    throw new Error(
      `prisma migrate deploy failed (${result.status}): ${result.stdout}\n${result.stderr}`,
    );
  }
}

export interface ReceivedReport {
  reportId: string;
  periodStart: string;
  allowed: number;
  denied: number;
  uniqueWorkspaces: number;
}

/** A telemetry receiver on loopback: accepts every POST, keeps each report id's first body. */
export interface Receiver {
  url: string;
  posts: number;
  reports: Map<string, ReceivedReport>;
  duplicates: number;
  close(): Promise<void>;
}

export async function startReceiver(): Promise<Receiver> {
  const receiver = {
    posts: 0,
    reports: new Map<string, ReceivedReport>(),
    duplicates: 0,
  } as Receiver;
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      receiver.posts++;
      const key = String(request.headers['idempotency-key']);
      const payload = JSON.parse(body) as {
        boundary_usage_summary?: {
          period_start: string;
          allowed_requests: number;
          denied_requests: number;
          stale_allowed_requests: number;
          stale_denied_requests: number;
          unique_workspaces: number;
        };
      };
      const summary = payload.boundary_usage_summary;
      if (receiver.reports.has(key)) receiver.duplicates++;
      else if (summary) {
        receiver.reports.set(key, {
          reportId: key,
          periodStart: summary.period_start,
          allowed: summary.allowed_requests + summary.stale_allowed_requests,
          denied: summary.denied_requests + summary.stale_denied_requests,
          uniqueWorkspaces: summary.unique_workspaces,
        });
      }
      response.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as { port: number }).port}/snapshot`;
  receiver.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return receiver;
}

export function receivedTotals(receiver: Receiver): { allowed: number; denied: number } {
  let allowed = 0;
  let denied = 0;
  for (const report of receiver.reports.values()) {
    allowed += report.allowed;
    denied += report.denied;
  }
  return { allowed, denied };
}

export interface ServiceProcess {
  child: ChildProcess;
  port: number;
  /** Every JSON line the process printed on stdout. */
  events: Array<Record<string, unknown>>;
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns the real service process (node, no npm or nx in between) and waits for `listening`. */
export async function spawnService(env: Record<string, string>): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [SERVICE_BIN], {
    cwd: WORKSPACE_ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`service did not listen in 30 s: ${stderr.join('\n')}`)),
      30_000,
    );
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as Record<string, unknown>;
      events.push(event);
      if (event['event'] === 'listening') {
        clearTimeout(timer);
        resolve(event['port'] as number);
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`service exited (${code}) before listening: ${stderr.join('\n')}`));
    });
  });
  return { child, port: await listening, events, stderr, exited };
}

export interface TrafficCounts {
  /** Responses 2xx: allowed usage. */
  allowed: number;
  /** Responses 403: denied usage. */
  denied: number;
  /** Notes the service confirmed it wrote (201). */
  created: number;
  /** Requests that got no response (connection refused or reset while the service stopped). */
  unanswered: number;
  other: number;
}

const WORKSPACES = Array.from({ length: 5 }, () => randomUUID());
const USERS = Array.from({ length: 3 }, () => randomUUID());

/** One request of a mix: 70 % note writes, 20 % reads, 10 % writes by a viewer (403). */
export function oneRequest(port: number, index: number, counts: TrafficCounts): Promise<void> {
  const workspace = WORKSPACES[index % WORKSPACES.length]!;
  const user = USERS[index % USERS.length]!;
  const kind = index % 10;
  const method = kind === 7 || kind === 8 ? 'GET' : 'POST';
  const headers: Record<string, string> = {
    'x-user-id': user,
    'content-type': 'application/json',
  };
  if (kind === 9) headers['x-user-role'] = 'viewer';
  const body = method === 'POST' ? JSON.stringify({ text: `note ${index}` }) : undefined;
  return new Promise((resolve) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method,
        path: `/workspaces/${workspace}/notes`,
        headers,
        agent: false, // a connection per request: a response received is a request served
      },
      (response) => {
        response.resume();
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          if (status === 201) counts.created++;
          if (status >= 200 && status < 300) counts.allowed++;
          else if (status === 403) counts.denied++;
          else counts.other++;
          resolve();
        });
        response.on('error', () => {
          counts.unanswered++;
          resolve();
        });
      },
    );
    req.on('error', () => {
      counts.unanswered++;
      resolve();
    });
    req.end(body);
  });
}

export function emptyCounts(): TrafficCounts {
  return { allowed: 0, denied: 0, created: 0, unanswered: 0, other: 0 };
}

/** `concurrency` loops sending requests until `until()` says stop. */
export async function runTraffic(
  port: number,
  concurrency: number,
  counts: TrafficCounts,
  until: () => boolean,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (!until()) await oneRequest(port, next++, counts);
    }),
  );
}

export interface StoppedEvent {
  elapsedMs: number;
  abandonedRequests: number;
  usage: {
    inMemory: { allowedRequests: number; deniedRequests: number };
    awaitingCollection: { allowedRequests: number; deniedRequests: number } | null;
    undeliveredReports: number | null;
    finalCollection: string;
  };
}

export function stoppedEvent(service: ServiceProcess): StoppedEvent {
  const event = service.events.find((e) => e['event'] === 'stopped');
  if (!event) throw new Error(`no "stopped" line; stderr:\n${service.stderr.join('\n')}`);
  return event as unknown as StoppedEvent;
}
