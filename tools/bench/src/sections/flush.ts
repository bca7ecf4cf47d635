/**
 * Section 1: flush throughput and latency with 1, 4, 16 and 64 replicas. Every replica has
 * its own client (its own PrismaClient with a small pool, or its own pg.Pool) and flushes its
 * own replica_id in a tight loop. Contenders alternate within each round; medians over rounds.
 */
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  type StoreOptions,
} from '@usagekit/boundary-usage';
import { createPrismaClient, type CreatePrismaClientOptions } from '@usagekit/db';
import { randomUUID } from 'node:crypto';
import { coderFlush, type CoderLock } from '../lib/coder.js';
import { rotate, type BenchContext } from '../lib/context.js';
import {
  defaultFlushParams,
  rawDefaultFlush,
  rawInteractiveFlush,
  type Baselines,
} from '../lib/baselines.js';
import { runFleet, replicaId, type Fleet, type SegmentResult } from '../lib/fleet.js';
import { fmt, fmtMs, fmtRatio } from '../lib/output.js';
import { runPgbench } from '../lib/pgbench.js';
import { createRawPool } from '../lib/raw-pg.js';
import { median, ratio } from '../lib/stats.js';

export type FlushContenderId =
  'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h' | 'i' | 'k' | 'l' | 't';

export interface FlushContender {
  id: FlushContenderId;
  label: string;
  /** Round trips per flush. */
  roundTrips: number;
  /** Measured only at these concurrencies (an extra, kept off the others to save time). */
  onlyAt?: readonly number[];
}

export const FLUSH_CONTENDERS: readonly FlushContender[] = [
  {
    id: 'a',
    label:
      'ours, the default flush: every library default; upsertStats with a writer id, a sequence and no ids',
    roundTrips: 1,
  },
  { id: 'b', label: "ours: a with lockMode 'exclusive' (coder's locking)", roundTrips: 1 },
  { id: 'c', label: "ours: a with flushMode 'interactive'", roundTrips: 5 },
  {
    id: 'd',
    label: "raw node-postgres: c's statements as the store sends them (recorded), in a transaction",
    roundTrips: 5,
  },
  { id: 'e', label: 'pgbench: the same statements as d', roundTrips: 5 },
  {
    id: 'f',
    label: "raw node-postgres: a's statement(s) as the store sends them (recorded), unnamed",
    roundTrips: 1,
  },
  { id: 'g', label: 'ours: exclusive lock, interactive', roundTrips: 5 },
  {
    id: 'h',
    label: 'raw node-postgres: f as named prepared statements',
    roundTrips: 1,
  },
  {
    id: 'i',
    label: 'ours: a with createPrismaClient({ preparedStatements: false })',
    roundTrips: 1,
  },
  {
    id: 'k',
    label:
      "coder's protocol in raw node-postgres, exclusive lock: BEGIN, pg_advisory_xact_lock, prepared upsert, COMMIT",
    roundTrips: 4,
  },
  {
    id: 'l',
    label:
      "coder's protocol, shared lock: BEGIN, pg_advisory_xact_lock_shared, prepared upsert, COMMIT (the baseline)",
    roundTrips: 4,
  },
  {
    id: 't',
    label: 'ours through a real tracker: track() one known workspace and owner, then flush()',
    roundTrips: 1,
    onlyAt: [16],
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
  /** the default (a) ÷ coder's protocol, shared lock, prepared (l): throughput. The goal. */
  defaultOverCoderShared: number;
  /** the default (a) ÷ coder's protocol as coder runs it, exclusive (k). */
  defaultOverCoderExclusive: number;
  /** PostgreSQL CPU per flush, the default (a) ÷ coder shared (l): lower is better. */
  defaultServerCpuOverCoderShared: number;
  /** the default (a) ÷ raw single statement, prepared (h). */
  defaultOverRawPrepared: number;
  /** the default (a) ÷ raw single statement, unnamed (f): the client's cost for identical SQL. */
  defaultOverRawSameStatement: number;
  /** raw prepared (h) ÷ raw unnamed (f): what parsing and planning each flush costs. */
  preparedOverUnprepared: number;
  /** the default (a) ÷ ours without prepared statements (i). */
  defaultOverUnprepared: number;
  /** the default (a) ÷ the store's interactive protocol in raw node-postgres (d). */
  defaultOverRawInteractive: number;
  /** the default (a) ÷ pgbench running d (e). */
  defaultOverPgbench: number;
  /** shared (a) ÷ exclusive (b). */
  sharedOverExclusive: number;
  /** coder's protocol, shared (l) ÷ exclusive (k). */
  coderSharedOverExclusive: number;
  /** ours interactive (c) ÷ raw pg (d): the client's cost for identical statements. */
  interactiveOverRawPg: number;
  /** a real tracker's flush (t) ÷ the default (a). */
  trackerOverDefault: number;
}

export interface FlushSectionResult {
  contenders: readonly FlushContender[];
  pgbench: 'measured' | 'not found';
  cells: FlushCell[];
  ratios: FlushRatios[];
}

/** What a fleet needs besides the replica ids. */
export interface FleetEnv {
  databaseUrl: string;
  /** The store's statements recorded from the wire, for the raw replays d, f and h. */
  baselines: Baselines;
}

export function openStoreFleet(
  databaseUrl: string,
  ids: readonly string[],
  options: StoreOptions,
  clientOptions: Omit<CreatePrismaClientOptions, 'databaseUrl' | 'maxConnections'> = {},
): Fleet {
  const clients = ids.map(() =>
    createPrismaClient({ databaseUrl, maxConnections: REPLICA_POOL_SIZE, ...clientOptions }),
  );
  const flushers = ids.map((id, i) => {
    const store = new BoundaryUsageStore(clients[i], options);
    // One writer per replica, as one tracker per replica process has.
    const writerId = randomUUID();
    return (sequence: bigint) => store.upsertStats(defaultFlushParams(id, sequence, writerId));
  });
  return {
    flushers,
    close: async () => void (await Promise.all(clients.map((c) => c.$disconnect()))),
  };
}

/**
 * Contender t: each replica owns a real BoundaryUsageTracker and, per flush, tracks one
 * request of its own workspace and owner, then flushes: whatever the tracker sends in steady
 * state (its sequence, its writer identity, the ids it carries) is what gets measured. The
 * fleet's sequence numbers are ignored: the tracker numbers its own batches.
 */
export function openTrackerFleet(databaseUrl: string, ids: readonly string[]): Fleet {
  const clients = ids.map(() =>
    createPrismaClient({ databaseUrl, maxConnections: REPLICA_POOL_SIZE }),
  );
  const flushers = ids.map((id, i) => {
    const store = new BoundaryUsageStore(clients[i]);
    const tracker = new BoundaryUsageTracker();
    // Per replica, a workspace and owner of its own: uuids derived from the replica's id.
    const workspace = `${id.slice(0, 24)}${'a'.repeat(12)}`;
    const owner = `${id.slice(0, 24)}${'b'.repeat(12)}`;
    return async () => {
      tracker.track(workspace, owner, 3, 1);
      return tracker.flush(store, id);
    };
  });
  return {
    flushers,
    close: async () => void (await Promise.all(clients.map((c) => c.$disconnect()))),
  };
}

export function openRawFleet(
  databaseUrl: string,
  ids: readonly string[],
  flush: (pool: import('pg').Pool, replica: string, sequence: bigint) => Promise<unknown>,
): Fleet {
  const pools = ids.map(() => createRawPool(databaseUrl, REPLICA_POOL_SIZE));
  const flushers = ids.map((id, i) => {
    const pool = pools[i];
    return (sequence: bigint) => flush(pool, id, sequence);
  });
  return { flushers, close: async () => void (await Promise.all(pools.map((p) => p.end()))) };
}

function coderFleet(databaseUrl: string, ids: readonly string[], lock: CoderLock): Fleet {
  return openRawFleet(databaseUrl, ids, (pool, replica) =>
    coderFlush(pool, lock, {
      replicaId: replica,
      uniqueWorkspacesDelta: 1n,
      uniqueUsersDelta: 1n,
      allowedRequests: 3n,
      deniedRequests: 1n,
      uniqueWorkspacesCount: 1n,
      uniqueUsersCount: 1n,
    }),
  );
}

export function openFleet(id: FlushContenderId, env: FleetEnv, ids: readonly string[]): Fleet {
  const { databaseUrl, baselines } = env;
  switch (id) {
    case 'a':
      return openStoreFleet(databaseUrl, ids, {});
    case 'b':
      return openStoreFleet(databaseUrl, ids, { lockMode: 'exclusive' });
    case 'c':
      return openStoreFleet(databaseUrl, ids, { flushMode: 'interactive' });
    case 'g':
      return openStoreFleet(databaseUrl, ids, { lockMode: 'exclusive', flushMode: 'interactive' });
    case 'i':
      return openStoreFleet(databaseUrl, ids, {}, { preparedStatements: false });
    case 'd':
      return openRawFleet(databaseUrl, ids, (pool, replica, sequence) =>
        rawInteractiveFlush(pool, baselines, replica, sequence),
      );
    case 'f':
      return openRawFleet(databaseUrl, ids, (pool, replica, sequence) =>
        rawDefaultFlush(pool, baselines, replica, sequence, false),
      );
    case 'h':
      return openRawFleet(databaseUrl, ids, (pool, replica, sequence) =>
        rawDefaultFlush(pool, baselines, replica, sequence, true),
      );
    case 'k':
      return coderFleet(databaseUrl, ids, 'exclusive');
    case 'l':
      return coderFleet(databaseUrl, ids, 'shared');
    case 't':
      return openTrackerFleet(databaseUrl, ids);
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
      flush: ctx.baselines.interactiveFlush,
      cpu: ctx.cpu,
      signal: ctx.signal,
    }).then((r) => ({ ...r, seconds: timing.seconds }));
  }
  const ids = Array.from({ length: replicas }, (_, i) => replicaId(ctx.replicaIdPrefix, i));
  const fleet = openFleet(contender, fleetEnv(ctx), ids);
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

/**
 * Round trips per flush as this run's store sends them: the recorded calls' statements, plus
 * BEGIN and COMMIT when they run in a transaction (the static figures are the defaults).
 */
export function withRecordedRoundTrips(
  contenders: readonly FlushContender[],
  baselines: Baselines,
): FlushContender[] {
  const trips = (call: Baselines['defaultFlush']['call']) =>
    call.statements.length + (call.transaction ? 2 : 0);
  const single = trips(baselines.defaultFlush.call);
  const interactive = trips(baselines.interactiveFlush.call);
  return contenders.map((c) => {
    if (['a', 'b', 'f', 'h', 'i', 't'].includes(c.id)) return { ...c, roundTrips: single };
    if (['c', 'd', 'e', 'g'].includes(c.id)) return { ...c, roundTrips: interactive };
    return c;
  });
}

export function fleetEnv(ctx: BenchContext): FleetEnv {
  return { databaseUrl: ctx.db.databaseUrl, baselines: ctx.baselines };
}

export async function runFlushSection(ctx: BenchContext): Promise<FlushSectionResult> {
  const { settings, out } = ctx;
  const contenders = withRecordedRoundTrips(
    FLUSH_CONTENDERS.filter((c) => c.id !== 'e' || ctx.pgbench !== undefined),
    ctx.baselines,
  );
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
  const cell = (id: FlushContenderId) =>
    cells.find((c) => c.contender === id && c.replicas === replicas);
  const tput = (id: FlushContenderId) => cell(id)?.flushesPerSecond;
  return {
    replicas,
    defaultOverCoderShared: ratio(tput('a'), tput('l')),
    defaultOverCoderExclusive: ratio(tput('a'), tput('k')),
    defaultServerCpuOverCoderShared: ratio(
      cell('a')?.serverCpuUsPerFlush,
      cell('l')?.serverCpuUsPerFlush,
    ),
    defaultOverRawPrepared: ratio(tput('a'), tput('h')),
    defaultOverRawSameStatement: ratio(tput('a'), tput('f')),
    preparedOverUnprepared: ratio(tput('h'), tput('f')),
    defaultOverUnprepared: ratio(tput('a'), tput('i')),
    defaultOverRawInteractive: ratio(tput('a'), tput('d')),
    defaultOverPgbench: ratio(tput('a'), tput('e')),
    sharedOverExclusive: ratio(tput('a'), tput('b')),
    coderSharedOverExclusive: ratio(tput('l'), tput('k')),
    interactiveOverRawPg: ratio(tput('c'), tput('d')),
    trackerOverDefault: ratio(tput('t'), tput('a')),
  };
}

/**
 * `top` ÷ `bottom` round by round at `replicas`: each round measures every contender back to
 * back, so a round's ratio compares the two under the same machine load. Their spread says how
 * far one run's ratio of medians can be trusted.
 */
export function roundByRoundRatios(
  cells: readonly FlushCell[],
  top: FlushContenderId,
  bottom: FlushContenderId,
  replicas: number,
): number[] {
  const rounds = (id: FlushContenderId) =>
    cells.find((c) => c.contender === id && c.replicas === replicas)?.rounds ?? [];
  const below = rounds(bottom);
  return rounds(top)
    .map((round, i) => ratio(round.flushesPerSecond, below[i]?.flushesPerSecond))
    .filter((value) => Number.isFinite(value));
}

/** Ratio columns of the flush tables: key, heading. Shared by the console and the README. */
export const RATIO_COLUMNS: ReadonlyArray<
  readonly [Exclude<keyof FlushRatios, 'replicas'>, string]
> = [
  ['defaultOverCoderShared', 'a ÷ l default / coder shared'],
  ['defaultServerCpuOverCoderShared', 'a ÷ l PostgreSQL CPU per flush'],
  ['defaultOverCoderExclusive', 'a ÷ k default / coder as shipped'],
  ['defaultOverRawPrepared', 'a ÷ h default / raw prepared'],
  ['defaultOverRawSameStatement', 'a ÷ f default / raw same statement'],
  ['preparedOverUnprepared', 'h ÷ f prepared / unnamed'],
  ['defaultOverUnprepared', 'a ÷ i default / unprepared'],
  ['defaultOverRawInteractive', 'a ÷ d default / raw 5 statements'],
  ['defaultOverPgbench', 'a ÷ e default / pgbench'],
  ['sharedOverExclusive', 'a ÷ b shared / exclusive'],
  ['coderSharedOverExclusive', 'l ÷ k coder shared / exclusive'],
  ['interactiveOverRawPg', 'c ÷ d same statements'],
  ['trackerOverDefault', 't ÷ a real tracker / default'],
];

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
    'Flush ratios (throughput unless noted)',
    ['replicas', ...RATIO_COLUMNS.map(([, heading]) => heading)],
    ratios.map((r) => [String(r.replicas), ...RATIO_COLUMNS.map(([key]) => fmtRatio(r[key]))]),
  );
}
