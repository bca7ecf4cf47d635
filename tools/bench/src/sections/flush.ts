/**
 * Section 1: flush throughput and latency with 1, 4, 16 and 64 replicas. Every replica has
 * its own client (its own PrismaClient with a small pool, or its own pg.Pool) and flushes its
 * own replica_id in a tight loop. Contenders alternate within each round; medians over rounds.
 */
import { BoundaryUsageStore, type StoreOptions } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import { rotate, type BenchContext } from '../lib/context.js';
import { runFleet, replicaId, type Fleet, type SegmentResult } from '../lib/fleet.js';
import { fmt, fmtMs, fmtRatio } from '../lib/output.js';
import { runPgbench } from '../lib/pgbench.js';
import {
  createRawPool,
  rawFlushInteractive,
  rawFlushPrepared,
  rawFlushSingleStatement,
} from '../lib/raw-pg.js';
import type { FlushValues } from '../lib/raw-sql.js';
import { median, ratio } from '../lib/stats.js';

export type FlushContenderId = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h' | 'i' | 'j';

export interface FlushContender {
  id: FlushContenderId;
  label: string;
  /** Round trips per flush. */
  roundTrips: number;
  /** Measured only at these concurrencies (an extra, kept off the others to save time). */
  onlyAt?: readonly number[];
}

export const FLUSH_CONTENDERS: readonly FlushContender[] = [
  { id: 'a', label: 'ours: shared lock, single statement (default)', roundTrips: 1 },
  { id: 'b', label: 'ours: exclusive lock (coder), single statement', roundTrips: 1 },
  { id: 'c', label: 'ours: shared lock, interactive', roundTrips: 5 },
  {
    id: 'd',
    label: 'raw node-postgres: BEGIN, lock_timeout, shared lock, upsert, COMMIT',
    roundTrips: 5,
  },
  { id: 'e', label: 'pgbench: the same five statements as d', roundTrips: 5 },
  { id: 'f', label: "raw node-postgres: a's single statement", roundTrips: 1 },
  { id: 'g', label: 'ours: exclusive lock, interactive (coder, in full)', roundTrips: 5 },
  {
    id: 'h',
    label: 'raw node-postgres: f as a named prepared statement',
    roundTrips: 1,
    onlyAt: [16],
  },
  {
    id: 'i',
    label: 'ours: a with preparedStatements (createPrismaClient option)',
    roundTrips: 1,
  },
  {
    id: 'j',
    label: 'ours: b with preparedStatements',
    roundTrips: 1,
  },
];

/** Pool size of each replica's client: a replica runs one flush at a time, 2 leaves slack. */
export const REPLICA_POOL_SIZE = 2;

export interface FlushRound {
  flushesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  flushes: number;
  errors: number;
  clientCpuUsPerFlush: number;
  serverCpuUsPerFlush: number | undefined;
}

export interface FlushCell {
  contender: FlushContenderId;
  replicas: number;
  rounds: FlushRound[];
  /** Medians over rounds. */
  flushesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  clientCpuUsPerFlush: number;
  serverCpuUsPerFlush: number | undefined;
  errors: number;
  firstError?: string;
}

export interface FlushRatios {
  replicas: number;
  /** ours (a) ÷ raw node-postgres (d). */
  oursOverRawPg: number;
  /** ours (a) ÷ pgbench (e). */
  oursOverPgbench: number;
  /** shared (a) ÷ exclusive (b). */
  sharedOverExclusive: number;
  /** ours (a) ÷ raw pg running a's single statement (f): Prisma's cost for identical SQL. */
  oursOverRawSameStatement: number;
  /** ours interactive (c) ÷ raw pg (d): Prisma's cost for identical five statements. */
  interactiveOverRawPg: number;
  /** shared ÷ exclusive, both interactive (c ÷ g). */
  sharedOverExclusiveInteractive: number;
  /** raw prepared (h) ÷ raw unprepared (f): what parsing and planning each flush costs. */
  preparedOverUnprepared: number;
  /** ours with preparedStatements (i) ÷ ours default (a). */
  oursPreparedOverOurs: number;
  /** ours with preparedStatements (i) ÷ raw pg (d). */
  oursPreparedOverRawPg: number;
  /** shared ÷ exclusive, both with preparedStatements (i ÷ j). */
  sharedOverExclusivePrepared: number;
}

export interface FlushSectionResult {
  contenders: readonly FlushContender[];
  pgbench: 'measured' | 'not found';
  cells: FlushCell[];
  ratios: FlushRatios[];
}

/** What every contender writes per flush: a steady-state flush with no new ids. */
export function flushValues(replica: string, sequence: bigint): FlushValues {
  return {
    replicaId: replica,
    sequence,
    uniqueWorkspacesDelta: 1n,
    uniqueUsersDelta: 1n,
    uniqueWorkspacesCount: 1n,
    uniqueUsersCount: 1n,
    allowedRequests: 3n,
    deniedRequests: 1n,
    workspaceIds: [],
    userIds: [],
  };
}

export function openStoreFleet(
  databaseUrl: string,
  ids: readonly string[],
  options: StoreOptions,
  clientOptions: { preparedStatements?: boolean } = {},
): Fleet {
  const clients = ids.map(() =>
    createPrismaClient({ databaseUrl, maxConnections: REPLICA_POOL_SIZE, ...clientOptions }),
  );
  const flushers = ids.map((id, i) => {
    const store = new BoundaryUsageStore(clients[i], options);
    // The shape the tracker sends: counts as numbers, request deltas as bigints.
    return (sequence: bigint) =>
      store.upsertStats({
        replicaId: id,
        sequence,
        uniqueWorkspacesDelta: 1,
        uniqueUsersDelta: 1,
        uniqueWorkspacesCount: 1,
        uniqueUsersCount: 1,
        allowedRequests: 3n,
        deniedRequests: 1n,
        workspaceIds: [],
        userIds: [],
      });
  });
  return {
    flushers,
    close: async () => void (await Promise.all(clients.map((c) => c.$disconnect()))),
  };
}

export function openRawFleet(
  databaseUrl: string,
  ids: readonly string[],
  flush: typeof rawFlushInteractive,
): Fleet {
  const pools = ids.map(() => createRawPool(databaseUrl, REPLICA_POOL_SIZE));
  const flushers = ids.map((id, i) => {
    const pool = pools[i];
    return (sequence: bigint) => flush(pool, flushValues(id, sequence));
  });
  return { flushers, close: async () => void (await Promise.all(pools.map((p) => p.end()))) };
}

export function openFleet(
  id: FlushContenderId,
  databaseUrl: string,
  ids: readonly string[],
): Fleet {
  switch (id) {
    case 'a':
      return openStoreFleet(databaseUrl, ids, {
        lockMode: 'shared',
        flushMode: 'single-statement',
      });
    case 'b':
      return openStoreFleet(databaseUrl, ids, {
        lockMode: 'exclusive',
        flushMode: 'single-statement',
      });
    case 'c':
      return openStoreFleet(databaseUrl, ids, { lockMode: 'shared', flushMode: 'interactive' });
    case 'g':
      return openStoreFleet(databaseUrl, ids, { lockMode: 'exclusive', flushMode: 'interactive' });
    case 'd':
      return openRawFleet(databaseUrl, ids, rawFlushInteractive);
    case 'f':
      return openRawFleet(databaseUrl, ids, rawFlushSingleStatement);
    case 'h':
      return openRawFleet(databaseUrl, ids, rawFlushPrepared);
    case 'i':
      return openStoreFleet(
        databaseUrl,
        ids,
        { lockMode: 'shared', flushMode: 'single-statement' },
        { preparedStatements: true },
      );
    case 'j':
      return openStoreFleet(
        databaseUrl,
        ids,
        { lockMode: 'exclusive', flushMode: 'single-statement' },
        { preparedStatements: true },
      );
    case 'e':
      throw new Error('pgbench is not a Node fleet');
  }
}

/** One measured segment of one contender, from empty tables. */
export async function measureContender(
  ctx: BenchContext,
  contender: FlushContenderId,
  replicas: number,
  timing: { warmupMs: number; seconds: number },
): Promise<SegmentResult & { clientCpuMeasured?: boolean }> {
  await ctx.db.reset();
  if (contender === 'e') {
    if (!ctx.pgbench) throw new Error('pgbench not found');
    return runPgbench({
      pgbench: ctx.pgbench,
      databaseUrl: ctx.db.databaseUrl,
      clients: replicas,
      seconds: timing.seconds,
      replicaIdPrefix: ctx.replicaIdPrefix,
      cpu: ctx.cpu,
      signal: ctx.signal,
    }).then((r) => ({ ...r, seconds: timing.seconds }));
  }
  const ids = Array.from({ length: replicas }, (_, i) => replicaId(ctx.replicaIdPrefix, i));
  const fleet = openFleet(contender, ctx.db.databaseUrl, ids);
  try {
    return await runFleet(fleet, {
      warmupMs: timing.warmupMs,
      durationMs: timing.seconds * 1000,
      signal: ctx.signal,
      cpu: ctx.cpu,
    });
  } finally {
    await fleet.close();
  }
}

export async function runFlushSection(ctx: BenchContext): Promise<FlushSectionResult> {
  const { settings, out } = ctx;
  const contenders = FLUSH_CONTENDERS.filter((c) => c.id !== 'e' || ctx.pgbench !== undefined);
  if (!ctx.pgbench) out.line('pgbench not found, skipped (contender e)');
  const cells: FlushCell[] = [];
  for (const replicas of settings.concurrencies) {
    const here = contenders.filter((c) => !c.onlyAt || c.onlyAt.includes(replicas));
    const rounds = new Map<FlushContenderId, FlushRound[]>(here.map((c) => [c.id, []]));
    const roundsOf = (id: FlushContenderId): FlushRound[] => rounds.get(id) ?? [];
    const firstErrors = new Map<FlushContenderId, string>();
    for (let round = 0; round < settings.flushRounds; round++) {
      for (const contender of rotate(here, round)) {
        const result = await measureContender(ctx, contender.id, replicas, {
          warmupMs: settings.flushWarmupMs,
          seconds: settings.flushSeconds,
        });
        roundsOf(contender.id).push({
          flushesPerSecond: result.flushesPerSecond,
          p50Ms: result.latency.p50Ms,
          p99Ms: result.latency.p99Ms,
          flushes: result.flushes,
          errors: result.errors,
          clientCpuUsPerFlush: result.cpu.clientUsPerOp,
          serverCpuUsPerFlush: result.cpu.serverUsPerOp,
        });
        if (result.firstError && !firstErrors.has(contender.id))
          firstErrors.set(contender.id, result.firstError);
      }
    }
    const line: string[] = [];
    for (const contender of here) {
      const cell = summarizeCell(contender.id, replicas, roundsOf(contender.id));
      const firstError = firstErrors.get(contender.id);
      if (firstError) cell.firstError = firstError;
      cells.push(cell);
      line.push(`${contender.id} ${fmt(cell.flushesPerSecond)}/s`);
    }
    out.line(`  ${replicas} replica(s): ${line.join(', ')}`);
  }
  const ratios = settings.concurrencies.map((replicas) => flushRatios(cells, replicas));
  printFlushTables(ctx, contenders, cells, ratios);
  return { contenders, pgbench: ctx.pgbench ? 'measured' : 'not found', cells, ratios };
}

function summarizeCell(
  contender: FlushContenderId,
  replicas: number,
  rounds: FlushRound[],
): FlushCell {
  const server = rounds
    .map((r) => r.serverCpuUsPerFlush)
    .filter((v): v is number => v !== undefined);
  return {
    contender,
    replicas,
    rounds,
    flushesPerSecond: median(rounds.map((r) => r.flushesPerSecond)),
    p50Ms: median(rounds.map((r) => r.p50Ms)),
    p99Ms: median(rounds.map((r) => r.p99Ms)),
    clientCpuUsPerFlush: median(rounds.map((r) => r.clientCpuUsPerFlush)),
    serverCpuUsPerFlush: server.length > 0 ? median(server) : undefined,
    errors: rounds.reduce((sum, r) => sum + r.errors, 0),
  };
}

export function flushRatios(cells: readonly FlushCell[], replicas: number): FlushRatios {
  const tput = (id: FlushContenderId) =>
    cells.find((c) => c.contender === id && c.replicas === replicas)?.flushesPerSecond;
  return {
    replicas,
    oursOverRawPg: ratio(tput('a'), tput('d')),
    oursOverPgbench: ratio(tput('a'), tput('e')),
    sharedOverExclusive: ratio(tput('a'), tput('b')),
    oursOverRawSameStatement: ratio(tput('a'), tput('f')),
    interactiveOverRawPg: ratio(tput('c'), tput('d')),
    sharedOverExclusiveInteractive: ratio(tput('c'), tput('g')),
    preparedOverUnprepared: ratio(tput('h'), tput('f')),
    oursPreparedOverOurs: ratio(tput('i'), tput('a')),
    oursPreparedOverRawPg: ratio(tput('i'), tput('d')),
    sharedOverExclusivePrepared: ratio(tput('i'), tput('j')),
  };
}

function printFlushTables(
  ctx: BenchContext,
  contenders: readonly FlushContender[],
  cells: readonly FlushCell[],
  ratios: readonly FlushRatios[],
): void {
  const rows = cells.map((cell) => [
    `${cell.contender} ${contenders.find((c) => c.id === cell.contender)?.label ?? ''}`,
    String(cell.replicas),
    fmt(cell.flushesPerSecond),
    fmtMs(cell.p50Ms),
    fmtMs(cell.p99Ms),
    fmt(cell.clientCpuUsPerFlush),
    fmt(cell.serverCpuUsPerFlush),
    String(cell.errors),
  ]);
  ctx.out.table(
    `1. Flush throughput (median of ${ctx.settings.flushRounds} rounds × ${ctx.settings.flushSeconds} s)`,
    [
      'contender',
      'replicas',
      'flushes/s',
      'p50 ms',
      'p99 ms',
      'client µs/flush',
      'server µs/flush',
      'errors',
    ],
    rows,
  );
  ctx.out.table(
    'Flush ratios (throughput)',
    [
      'replicas',
      'a÷d ours/raw pg',
      'a÷e ours/pgbench',
      'a÷b shared/excl',
      'a÷f same stmt',
      'c÷d same 5 stmts',
      'c÷g shared/excl itx',
      'h÷f prepared',
      'i÷a ours prepared',
      'i÷d ours prepared/raw pg',
      'i÷j shared/excl prepared',
    ],
    ratios.map((r) => [
      String(r.replicas),
      fmtRatio(r.oursOverRawPg),
      fmtRatio(r.oursOverPgbench),
      fmtRatio(r.sharedOverExclusive),
      fmtRatio(r.oursOverRawSameStatement),
      fmtRatio(r.interactiveOverRawPg),
      fmtRatio(r.sharedOverExclusiveInteractive),
      fmtRatio(r.preparedOverUnprepared),
      fmtRatio(r.oursPreparedOverOurs),
      fmtRatio(r.oursPreparedOverRawPg),
      fmtRatio(r.sharedOverExclusivePrepared),
    ]),
  );
}
