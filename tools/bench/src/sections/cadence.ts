/**
 * Section 7: the flush at production cadence. Every other section flushes in a tight loop on
 * warm connections; a real replica flushes once a minute, and what its pool holds by then
 * decides what the flush costs. Time is compressed (an interval of a few hundred ms instead of
 * 60 s), but each flush finds its pool as a real replica's would:
 *
 * - warm: the pool's idle timeout is longer than the interval, so the connection opened at the
 *   previous flush is still there;
 * - per-flush: the idle timeout is shorter than the interval (the library's default, 1 s, or
 *   pg-pool's 10 s, at a 1-minute flush), so the connection closed after the previous flush and
 *   this one connects: TCP, TLS when asked, startup with the session settings, authentication,
 *   and statement preparation again; its close (the backend's exit) falls in the window too.
 *
 * On direct connections and through PgBouncer (transaction pooling, PgBouncer keeps its own
 * server connections), with TLS required (`sslmode=require`, as managed databases run) and
 * without. Reported per flush: PostgreSQL CPU and Node CPU (and PgBouncer's), net of what each
 * spends idle over the same time, and the new client sockets per flush, which shows each flush
 * met the pool it should have. Then what a warm connection costs instead: a backend's memory
 * and a max_connections slot, or PgBouncer's memory per client.
 */
import { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import { findProgram, startPgBouncer, type PgBouncer } from '@usagekit/testing';
import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { defaultFlushParams } from '../lib/baselines.js';
import {
  flushOffsetsMs,
  perFlushNetOfIdle,
  type CadencePool,
  type CadenceTransport,
} from '../lib/cadence-model.js';
import { rotate, type BenchContext } from '../lib/context.js';
import { clientCpuUs, processCpuUs } from '../lib/cpu.js';
import { replicaId } from '../lib/fleet.js';
import { fmt, fmtMs } from '../lib/output.js';
import { processMemory } from '../lib/proc-memory.js';
import { median, summarizeLatencies } from '../lib/stats.js';
import { withTls } from '../lib/tls.js';

/** The interval the compressed schedule stands for: the tracker's default flush. */
export const CADENCE_REAL_INTERVAL_SECONDS = 60;
/** pg-pool's default idle timeout, what createPrismaClient used before issue 19. */
export const PG_POOL_DEFAULT_IDLE_TIMEOUT_MS = 10_000;

export interface CadenceCellSpec {
  transport: CadenceTransport;
  tls: boolean;
  pool: CadencePool;
}

export interface CadenceRound {
  flushes: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  /** New TCP connections the fleet opened per flush (1 per-flush, 0 warm). */
  socketsPerFlush: number;
  nodeUsPerFlush: number | undefined;
  serverUsPerFlush: number | undefined;
  poolerUsPerFlush: number | undefined;
  windowSeconds: number;
  /**
   * What the server, Node and PgBouncer spent per second with the fleet open and not flushing,
   * measured just before the window: subtracted, so the figures are per flush.
   */
  idleUsPerSecond: IdleRates;
}

/** Section 7's table columns; the console and the README write the same ones. */
export const CADENCE_COLUMNS = [
  'transport',
  'TLS',
  'pool',
  'PostgreSQL µs/flush',
  'Node µs/flush',
  'PgBouncer µs/flush',
  'p50 ms',
  'p99 ms',
  'connects/flush',
  'errors',
] as const;

/** A cell's figures, the columns after transport, TLS and pool. */
export function cadenceFigures(cell: CadenceCell): string[] {
  return [
    fmt(cell.serverUsPerFlush),
    fmt(cell.nodeUsPerFlush),
    cell.transport === 'pgbouncer' ? fmt(cell.poolerUsPerFlush) : '',
    fmtMs(cell.p50Ms),
    fmtMs(cell.p99Ms),
    cell.socketsPerFlush.toFixed(2),
    String(cell.errors),
  ];
}

export interface IdleRates {
  server: number | undefined;
  node: number;
  pooler: number | undefined;
}

export interface CadenceCell extends CadenceCellSpec {
  replicas: number;
  /** The pool's idle timeout in the compressed run. */
  idleTimeoutMs: number;
  rounds: CadenceRound[];
  /** Medians over rounds. */
  p50Ms: number;
  p99Ms: number;
  socketsPerFlush: number;
  nodeUsPerFlush: number | undefined;
  serverUsPerFlush: number | undefined;
  poolerUsPerFlush: number | undefined;
  errors: number;
  firstError?: string;
}

export interface WarmConnectionCost {
  transport: CadenceTransport;
  tls: boolean;
  /** PostgreSQL backend (direct): memory contexts after one default flush, bytes. */
  backendContextBytes?: number;
  /** PostgreSQL backend (direct): private memory (USS) after one default flush. */
  backendPrivateBytes?: number;
  /** The same for a backend that only connected and ran SELECT 1. */
  freshBackendContextBytes?: number;
  freshBackendPrivateBytes?: number;
  /** PgBouncer: growth of its private memory per idle client connection. */
  poolerBytesPerClient?: number;
  poolerClientsMeasured?: number;
}

export interface CadenceSectionResult {
  realIntervalSeconds: number;
  /** The compressed interval: each replica flushes once per intervalMs. */
  intervalMs: number;
  intervals: number;
  replicas: number;
  rounds: number;
  /** Idle timeouts in the compressed run: warm (longer than the interval) and per-flush. */
  warmIdleTimeoutMs: number;
  perFlushIdleTimeoutMs: number;
  cells: CadenceCell[];
  warm: WarmConnectionCost[];
  maxConnections: number | undefined;
  superuserReservedConnections: number | undefined;
  /** pg_hba's method for the bench's connections (password, scram-sha-256, trust). */
  authMethod: string | undefined;
  pgbouncerClientAuth: string | undefined;
  tlsMeasured: boolean;
  pgbouncerMeasured: boolean;
  notes: string[];
}

const POOLER_MEMORY_CLIENTS = 200;

export async function runCadenceSection(ctx: BenchContext): Promise<CadenceSectionResult> {
  const { settings, out, db } = ctx;
  const notes: string[] = [];
  const intervalMs = settings.cadenceIntervalMs;
  const replicas = settings.cadenceReplicas;
  // Per-flush: closed well before the next flush (pg-pool's 10 s against 60 s, compressed);
  // warm: kept past it.
  const perFlushIdleTimeoutMs = Math.max(
    20,
    Math.round(
      (intervalMs * PG_POOL_DEFAULT_IDLE_TIMEOUT_MS) / (CADENCE_REAL_INTERVAL_SECONDS * 1000),
    ),
  );
  // Warm: far past the interval, however late a loaded machine runs the schedule.
  const warmIdleTimeoutMs = 60_000;

  const tlsMeasured = db.info.tls;
  if (!tlsMeasured) notes.push('the server does not offer TLS (ssl = off): TLS cells skipped');
  let pgbouncer: PgBouncer | undefined;
  if (findProgram('pgbouncer')) {
    pgbouncer = await startPgBouncer(db.databaseUrl, {
      serverConnections: 4,
      maxClientConnections: replicas * 4 + POOLER_MEMORY_CLIENTS + 50,
      clientTls: db.certificate
        ? { certFile: db.certificate.certFile, keyFile: db.certificate.keyFile }
        : undefined,
    });
  } else {
    notes.push('pgbouncer not found: PgBouncer cells skipped (apt-get install pgbouncer)');
  }
  const poolerTls = pgbouncer !== undefined && db.certificate !== undefined;
  try {
    const specs: CadenceCellSpec[] = [];
    for (const transport of ['direct', 'pgbouncer'] as const) {
      if (transport === 'pgbouncer' && !pgbouncer) continue;
      for (const tls of [false, true]) {
        if (tls && (transport === 'direct' ? !tlsMeasured : !poolerTls)) continue;
        for (const pool of ['warm', 'per-flush'] as const) specs.push({ transport, tls, pool });
      }
    }
    const urlFor = (spec: Pick<CadenceCellSpec, 'transport' | 'tls'>) => {
      const base = spec.transport === 'direct' ? db.databaseUrl : pgbouncer!.databaseUrl;
      return spec.tls ? withTls(base) : base;
    };
    const poolerPid = pgbouncer?.pid;
    const sample = () => ({
      node: clientCpuUs(),
      server: ctx.cpu.sample().serverUs,
      pooler: poolerPid !== undefined ? processCpuUs(poolerPid) : undefined,
      at: performance.now(),
    });

    const perRound = new Map<string, CadenceRound[]>();
    const firstErrors = new Map<string, string>();
    // One unmeasured pass over every cell first: Node compiles the connect, TLS and pooler
    // paths, and the background work that follows start-up (compilation, GC) dies down.
    for (const spec of specs) {
      await measureCell(ctx, {
        url: urlFor(spec),
        spec,
        replicas: Math.min(replicas, 4),
        intervalMs: 100,
        intervals: 2,
        idleTimeoutMs: spec.pool === 'warm' ? warmIdleTimeoutMs : perFlushIdleTimeoutMs,
        settleMs: perFlushIdleTimeoutMs + 50,
        sample,
        idleWindowMs: 0,
      });
    }
    for (let round = 0; round < settings.cadenceRounds; round++) {
      ctx.signal.throwIfAborted();
      for (const spec of rotate(specs, round)) {
        await db.reset();
        await quiesce();
        const result = await measureCell(ctx, {
          url: urlFor(spec),
          spec,
          replicas,
          intervalMs,
          intervals: settings.cadenceIntervals,
          idleTimeoutMs: spec.pool === 'warm' ? warmIdleTimeoutMs : perFlushIdleTimeoutMs,
          settleMs: perFlushIdleTimeoutMs + 150,
          sample,
          idleWindowMs: settings.cadenceIdleWindowMs,
        });
        const key = cellKey(spec);
        perRound.set(key, [...(perRound.get(key) ?? []), result.round]);
        if (result.firstError && !firstErrors.has(key)) firstErrors.set(key, result.firstError);
        out.line(
          `  ${describeCell(spec)}: PostgreSQL ${fmt(result.round.serverUsPerFlush)} µs, Node ${fmt(result.round.nodeUsPerFlush)} µs${spec.transport === 'pgbouncer' ? `, PgBouncer ${fmt(result.round.poolerUsPerFlush)} µs` : ''} per flush; p50 ${fmtMs(result.round.p50Ms)} ms; ${result.round.socketsPerFlush.toFixed(2)} connects/flush${result.round.errors ? `; ${result.round.errors} errors` : ''}`,
        );
      }
    }
    const cells: CadenceCell[] = specs.map((spec) => {
      const rounds = perRound.get(cellKey(spec)) ?? [];
      const med = (pick: (r: CadenceRound) => number | undefined) => {
        const values = rounds.map(pick).filter((v): v is number => v !== undefined);
        return values.length > 0 ? median(values) : undefined;
      };
      return {
        ...spec,
        replicas,
        idleTimeoutMs: spec.pool === 'warm' ? warmIdleTimeoutMs : perFlushIdleTimeoutMs,
        rounds,
        p50Ms: med((r) => r.p50Ms) ?? Number.NaN,
        p99Ms: med((r) => r.p99Ms) ?? Number.NaN,
        socketsPerFlush: med((r) => r.socketsPerFlush) ?? Number.NaN,
        nodeUsPerFlush: med((r) => r.nodeUsPerFlush),
        serverUsPerFlush: med((r) => r.serverUsPerFlush),
        poolerUsPerFlush: med((r) => r.poolerUsPerFlush),
        errors: rounds.reduce((sum, r) => sum + r.errors, 0),
        ...(firstErrors.has(cellKey(spec)) ? { firstError: firstErrors.get(cellKey(spec)) } : {}),
      };
    });

    const warm: WarmConnectionCost[] = [];
    for (const tls of tlsMeasured ? [false, true] : [false]) {
      warm.push(await warmBackendCost(db.databaseUrl, tls));
    }
    if (pgbouncer?.pid !== undefined) {
      for (const tls of poolerTls ? [false, true] : [false]) {
        warm.push(await poolerClientCost(pgbouncer, tls));
      }
    }
    const serverSettings = await db.query<{ max: string; reserved: string }>(
      `SELECT current_setting('max_connections') AS max,
              current_setting('superuser_reserved_connections') AS reserved`,
    );
    const authMethod = await db
      .query<{ method: string }>(
        `SELECT auth_method AS method FROM pg_hba_file_rules
          WHERE type = 'host' AND error IS NULL ORDER BY line_number LIMIT 1`,
      )
      .then((rows) => rows[0]?.method)
      .catch(() => undefined);

    out.table(
      `7. Production cadence (${replicas} replicas, each flushing once per ${intervalMs} ms standing for ${CADENCE_REAL_INTERVAL_SECONDS} s; ${settings.cadenceIntervals} intervals × ${settings.cadenceRounds} rounds)`,
      [...CADENCE_COLUMNS],
      cells.map((c) => [c.transport, c.tls ? 'require' : 'off', c.pool, ...cadenceFigures(c)]),
      [
        ...warm.map((w) =>
          w.transport === 'direct'
            ? `warm backend (${w.tls ? 'TLS' : 'plain'}): ${fmt((w.backendContextBytes ?? Number.NaN) / 1024)} kB in memory contexts, ${fmt((w.backendPrivateBytes ?? Number.NaN) / 1024)} kB private (a fresh backend: ${fmt((w.freshBackendContextBytes ?? Number.NaN) / 1024)} / ${fmt((w.freshBackendPrivateBytes ?? Number.NaN) / 1024)} kB)`
            : `PgBouncer client (${w.tls ? 'TLS' : 'plain'}): ${fmt((w.poolerBytesPerClient ?? Number.NaN) / 1024, 1)} kB per idle client (${w.poolerClientsMeasured} clients)`,
        ),
        ...notes,
      ],
    );

    return {
      realIntervalSeconds: CADENCE_REAL_INTERVAL_SECONDS,
      intervalMs,
      intervals: settings.cadenceIntervals,
      replicas,
      rounds: settings.cadenceRounds,
      warmIdleTimeoutMs,
      perFlushIdleTimeoutMs,
      cells,
      warm,
      maxConnections: numberOrUndefined(serverSettings[0]?.max),
      superuserReservedConnections: numberOrUndefined(serverSettings[0]?.reserved),
      authMethod,
      pgbouncerClientAuth: pgbouncer ? 'trust' : undefined,
      tlsMeasured,
      pgbouncerMeasured: pgbouncer !== undefined,
      notes,
    };
  } finally {
    await pgbouncer?.stop();
  }
}

export function cellKey(spec: CadenceCellSpec): string {
  return `${spec.transport}/${spec.tls ? 'tls' : 'plain'}/${spec.pool}`;
}

export function describeCell(spec: CadenceCellSpec): string {
  return `${spec.transport === 'direct' ? 'direct' : 'PgBouncer'}, ${spec.tls ? 'TLS' : 'plain'}, ${spec.pool}`;
}

/** Collects the previous cell's garbage before the next window opens. */
async function quiesce(): Promise<void> {
  (globalThis as { gc?: () => void }).gc?.();
  await sleep(200);
}

type Sample = { node: number; server: number | undefined; pooler: number | undefined; at: number };

async function idleRates(
  sample: () => Sample,
  windowMs: number,
  signal: AbortSignal,
): Promise<IdleRates> {
  const start = sample();
  await sleep(windowMs, undefined, { signal });
  const end = sample();
  const seconds = (end.at - start.at) / 1000;
  const rate = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined ? undefined : Math.max(0, b - a) / seconds;
  return {
    server: rate(start.server, end.server),
    node: rate(start.node, end.node) ?? 0,
    pooler: rate(start.pooler, end.pooler),
  };
}

interface CellRun {
  url: string;
  spec: CadenceCellSpec;
  replicas: number;
  intervalMs: number;
  intervals: number;
  idleTimeoutMs: number;
  /** After the last flush: long enough for a per-flush pool to close its connection. */
  settleMs: number;
  sample: () => Sample;
  /** Before the window: the fleet open, not flushing (0: not measured, nothing subtracted). */
  idleWindowMs: number;
}

async function measureCell(
  ctx: BenchContext,
  run: CellRun,
): Promise<{ round: CadenceRound; firstError: string | undefined }> {
  const ids = Array.from({ length: run.replicas }, (_, i) => replicaId(ctx.replicaIdPrefix, i));
  const clients = ids.map(() =>
    createPrismaClient({
      databaseUrl: run.url,
      maxConnections: 2,
      idleTimeoutMs: run.idleTimeoutMs,
    }),
  );
  const flushers = ids.map((id, i) => {
    const store = new BoundaryUsageStore(clients[i]);
    const writerId = randomUUID();
    return (sequence: bigint) => store.upsertStats(defaultFlushParams(id, sequence, writerId));
  });
  const connects = countSocketConnects();
  try {
    // A replica's first flush after start: the connection profile's probe, the first
    // connection, Prisma's warm-up. Then the pools settle into what the cadence leaves them.
    await Promise.all(flushers.map((flush) => flush(1n)));
    await sleep(run.settleMs, undefined, { signal: ctx.signal });

    const idle: IdleRates =
      run.idleWindowMs > 0
        ? await idleRates(run.sample, run.idleWindowMs, ctx.signal)
        : { server: 0, node: 0, pooler: 0 };
    const latencies: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    connects.start();
    const start = run.sample();
    const offsets = flushOffsetsMs(run.replicas, run.intervalMs);
    await Promise.all(
      flushers.map(async (flush, i) => {
        let lastEnd = Number.NEGATIVE_INFINITY;
        for (let k = 0; k < run.intervals; k++) {
          // On time, and for a per-flush pool never before its idle timeout has closed the
          // previous connection (a loaded machine runs late; the next flush must still find
          // the pool a real replica's would, a minute later).
          const due = Math.max(
            start.at + k * run.intervalMs + offsets[i],
            run.spec.pool === 'per-flush' ? lastEnd + 3 * run.idleTimeoutMs + 100 : 0,
          );
          const wait = due - performance.now();
          ctx.signal.throwIfAborted();
          if (wait > 0) await sleep(wait);
          const began = performance.now();
          try {
            await flush(BigInt(k + 2));
            latencies.push(performance.now() - began);
          } catch (error) {
            errors++;
            firstError ??= error instanceof Error ? error.message.split('\n')[0] : String(error);
          }
          lastEnd = performance.now();
        }
      }),
    );
    await sleep(run.settleMs, undefined, { signal: ctx.signal });
    const end = run.sample();
    const sockets = connects.stop();
    const windowSeconds = (end.at - start.at) / 1000;
    const flushes = latencies.length;
    const diff = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined ? undefined : b - a;
    const summary = summarizeLatencies(latencies);
    return {
      round: {
        flushes,
        errors,
        p50Ms: summary.p50Ms,
        p99Ms: summary.p99Ms,
        socketsPerFlush: flushes > 0 ? sockets / flushes : Number.NaN,
        nodeUsPerFlush: perFlushNetOfIdle(end.node - start.node, idle.node, windowSeconds, flushes),
        serverUsPerFlush: perFlushNetOfIdle(
          diff(start.server, end.server),
          idle.server,
          windowSeconds,
          flushes,
        ),
        poolerUsPerFlush:
          run.spec.transport === 'pgbouncer'
            ? perFlushNetOfIdle(diff(start.pooler, end.pooler), idle.pooler, windowSeconds, flushes)
            : undefined,
        windowSeconds,
        idleUsPerSecond: idle,
      },
      firstError,
    };
  } finally {
    connects.stop();
    await Promise.all(clients.map((c) => c.$disconnect().catch(() => undefined)));
  }
}

/**
 * What a warm direct connection costs the server: the backend of a one-connection client after
 * one default flush (its statement prepared, catalog caches filled), beside a backend that only
 * connected. Memory contexts are PostgreSQL's own accounting; private memory is what the kernel
 * would get back when the backend exits.
 */
async function warmBackendCost(databaseUrl: string, tls: boolean): Promise<WarmConnectionCost> {
  const url = tls ? withTls(databaseUrl) : databaseUrl;
  const contextsSql = `SELECT pg_backend_pid() AS pid,
      (SELECT sum(total_bytes) FROM pg_backend_memory_contexts)::float8 AS bytes`;
  const fresh = new Client({ connectionString: url });
  fresh.on('error', () => undefined);
  let freshContexts: number | undefined;
  let freshPrivate: number | undefined;
  try {
    await fresh.connect();
    const { rows } = await fresh.query<{ pid: number; bytes: number }>(contextsSql);
    freshContexts = rows[0]?.bytes;
    freshPrivate = rows[0] ? processMemory(rows[0].pid)?.privateBytes : undefined;
  } finally {
    await fresh.end().catch(() => undefined);
  }
  const prisma = createPrismaClient({ databaseUrl: url, maxConnections: 1, idleTimeoutMs: 60_000 });
  try {
    const store = new BoundaryUsageStore(prisma);
    const writerId = randomUUID();
    const id = randomUUID();
    await store.upsertStats(defaultFlushParams(id, 1n, writerId));
    await store.upsertStats(defaultFlushParams(id, 2n, writerId));
    const rows = await prisma.$queryRawUnsafe<{ pid: number; bytes: number }[]>(contextsSql);
    return {
      transport: 'direct',
      tls,
      backendContextBytes: rows[0]?.bytes,
      backendPrivateBytes: rows[0] ? processMemory(rows[0].pid)?.privateBytes : undefined,
      freshBackendContextBytes: freshContexts,
      freshBackendPrivateBytes: freshPrivate,
    };
  } finally {
    await prisma.$disconnect();
  }
}

/** PgBouncer's private memory before and after opening idle client connections, per client. */
async function poolerClientCost(pgbouncer: PgBouncer, tls: boolean): Promise<WarmConnectionCost> {
  const pid = pgbouncer.pid!;
  const url = tls ? withTls(pgbouncer.databaseUrl) : pgbouncer.databaseUrl;
  const before = processMemory(pid)?.privateBytes;
  const clients: Client[] = [];
  try {
    for (let i = 0; i < POOLER_MEMORY_CLIENTS; i++) {
      const client = new Client({ connectionString: url });
      client.on('error', () => undefined);
      clients.push(client);
    }
    // A few at a time: PgBouncer's login is quick, the machine is small.
    for (let i = 0; i < clients.length; i += 20) {
      await Promise.all(clients.slice(i, i + 20).map((c) => c.connect()));
    }
    const after = processMemory(pid)?.privateBytes;
    return {
      transport: 'pgbouncer',
      tls,
      poolerBytesPerClient:
        before !== undefined && after !== undefined
          ? Math.max(0, after - before) / POOLER_MEMORY_CLIENTS
          : undefined,
      poolerClientsMeasured: POOLER_MEMORY_CLIENTS,
    };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

/**
 * Counts TCP connects made by this process while started: each is a connection a flush had to
 * open. node-postgres opens its socket with `new Socket().connect()`, which the
 * 'net.client.socket' diagnostics channel does not see, so the prototype method is wrapped for
 * the measured window only (the bench's own process; restored on stop).
 */
function countSocketConnects(): { start(): void; stop(): number } {
  const original = Socket.prototype.connect;
  let count = 0;
  let active = false;
  return {
    start() {
      if (active) return;
      active = true;
      Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
        count++;
        return (original as (...a: unknown[]) => Socket).apply(this, args);
      } as typeof original;
    },
    stop() {
      if (active) {
        Socket.prototype.connect = original;
        active = false;
      }
      return count;
    },
  };
}

function numberOrUndefined(value: string | undefined): number | undefined {
  const n = Number(value);
  return value !== undefined && Number.isFinite(n) ? n : undefined;
}
