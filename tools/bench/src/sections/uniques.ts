/**
 * Section 5: what exact cross-replica uniques cost. A period with 100 k distinct ids (50 k
 * workspaces, 50 k users): the flush that carries them all (new ids; then the same ids again,
 * as when another replica already reported them), and the cutover that counts them, each
 * against the same operation without ids, and against raw node-postgres sending the same SQL.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, schemaTables } from '@usagekit/db';
import { rotate, type BenchContext } from '../lib/context.js';
import { clientCpuUs } from '../lib/cpu.js';
import { fillIds, fillStats, MAX_STALENESS_MS } from '../lib/fill.js';
import { replicaId } from '../lib/fleet.js';
import { flatUuid } from '../lib/ids.js';
import { fmt, fmtMs } from '../lib/output.js';
import { rawCutover } from '../lib/baselines.js';
import { createRawPool } from '../lib/raw-pg.js';
import { recordCall, replayCall, type RecordedCall } from '../lib/replay.js';
import { median } from '../lib/stats.js';

export type UniquesOperation =
  | 'flush, no ids'
  | 'flush, 100k new ids'
  | 'flush, 100k ids already recorded'
  | 'cutover, 16 replicas, no ids'
  | 'cutover, 16 replicas + 100k ids';

export interface UniquesCell {
  operation: UniquesOperation;
  oursMs: number;
  rawMs: number | undefined;
  /** Node CPU of our call (validation, Prisma's serialization, the driver). */
  oursClientCpuMs: number;
  rawClientCpuMs: number | undefined;
}

export interface UniquesSectionResult {
  distinctIds: number;
  cells: UniquesCell[];
  /** (flush with new ids − flush without) ÷ ids, ours. */
  flushUsPerId: number;
  /** (cutover with ids − cutover without) ÷ ids, ours. */
  cutoverUsPerId: number;
}

interface Sample {
  ms: number;
  cpuMs: number;
}

async function timed(work: () => Promise<unknown>): Promise<Sample> {
  const cpu = clientCpuUs();
  const started = performance.now();
  await work();
  return { ms: performance.now() - started, cpuMs: (clientCpuUs() - cpu) / 1000 };
}

export async function runUniquesSection(ctx: BenchContext): Promise<UniquesSectionResult> {
  const { settings, db } = ctx;
  const half = settings.uniquesDistinctIds / 2;
  const workspaceIds = Array.from({ length: half }, flatUuid);
  const userIds = Array.from({ length: half }, flatUuid);
  const first = replicaId(ctx.replicaIdPrefix, 0);
  const second = replicaId(ctx.replicaIdPrefix, 1);

  const prisma = createPrismaClient({ databaseUrl: db.databaseUrl, maxConnections: 2 });
  const store = new BoundaryUsageStore(prisma);
  const pool = createRawPool(db.databaseUrl, 2);
  const base = {
    uniqueWorkspacesCount: half,
    uniqueUsersCount: half,
    allowedRequests: 3n,
    deniedRequests: 1n,
  };
  const ours = (replica: string, withIds: boolean) =>
    store.upsertStats({
      ...base,
      replicaId: replica,
      sequence: 1n,
      uniqueWorkspacesDelta: withIds ? half : 0,
      uniqueUsersDelta: withIds ? half : 0,
      workspaceIds: withIds ? workspaceIds : [],
      userIds: withIds ? userIds : [],
    });
  // Raw node-postgres sends what the store sent for the same flush (recorded in the warm-up),
  // for another replica.
  const recorded = new Map<boolean, RecordedCall>();
  const raw = async (replica: string, withIds: boolean) => {
    const call = recorded.get(withIds);
    if (!call) throw new Error('uniques: the store flush was not recorded');
    return replayCall(pool, call, [[first, replica]]);
  };

  const samples = new Map<string, Sample[]>();
  const record = (key: string, sample: Sample) => {
    samples.set(key, [...(samples.get(key) ?? []), sample]);
  };

  try {
    // Warm both clients, including a flush with a large array parameter, and record the
    // store's two flushes for the raw side.
    for (const withIds of [false, true]) {
      await db.reset();
      recorded.set(withIds, await recordCall(() => ours(first, withIds)));
    }
    await db.reset();
    await raw(second, true);

    for (let round = 0; round < settings.uniquesRounds; round++) {
      for (const side of rotate(['ours', 'raw'] as const, round)) {
        const flush = side === 'ours' ? ours : raw;
        await db.reset();
        record(`${side}:flush, no ids`, await timed(() => flush(first, false)));
        await db.reset();
        record(`${side}:flush, 100k new ids`, await timed(() => flush(first, true)));
        record(`${side}:flush, 100k ids already recorded`, await timed(() => flush(second, true)));
        await assertIdsRecorded(ctx, settings.uniquesDistinctIds);

        const cutover =
          side === 'ours'
            ? async () => {
                const s = await store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS });
                return s.uniqueWorkspaces + s.uniqueUsers;
              }
            : async () => {
                const r = await rawCutover(pool, ctx.baselines);
                return BigInt(r.unique_workspaces) + BigInt(r.unique_users);
              };
        await db.reset();
        await fillStats(db, 16);
        record(`${side}:cutover, 16 replicas, no ids`, await timed(cutover));
        await db.reset();
        await fillStats(db, 16);
        await fillIds(db, settings.uniquesDistinctIds);
        let counted = 0n;
        record(
          `${side}:cutover, 16 replicas + 100k ids`,
          await timed(async () => {
            counted = await cutover();
          }),
        );
        if (counted !== BigInt(settings.uniquesDistinctIds)) {
          throw new Error(
            `uniques: the ${side} cutover counted ${counted} ids, expected ${settings.uniquesDistinctIds}`,
          );
        }
      }
    }
  } finally {
    await prisma.$disconnect();
    await pool.end();
  }

  const operations: UniquesOperation[] = [
    'flush, no ids',
    'flush, 100k new ids',
    'flush, 100k ids already recorded',
    'cutover, 16 replicas, no ids',
    'cutover, 16 replicas + 100k ids',
  ];
  const med = (key: string, field: keyof Sample) =>
    median((samples.get(key) ?? []).map((s) => s[field]));
  const cells: UniquesCell[] = operations.map((operation) => ({
    operation,
    oursMs: med(`ours:${operation}`, 'ms'),
    rawMs: med(`raw:${operation}`, 'ms'),
    oursClientCpuMs: med(`ours:${operation}`, 'cpuMs'),
    rawClientCpuMs: med(`raw:${operation}`, 'cpuMs'),
  }));
  const ms = (op: UniquesOperation) => cells.find((c) => c.operation === op)?.oursMs ?? Number.NaN;
  const result: UniquesSectionResult = {
    distinctIds: settings.uniquesDistinctIds,
    cells,
    flushUsPerId:
      ((ms('flush, 100k new ids') - ms('flush, no ids')) * 1000) / settings.uniquesDistinctIds,
    cutoverUsPerId:
      ((ms('cutover, 16 replicas + 100k ids') - ms('cutover, 16 replicas, no ids')) * 1000) /
      settings.uniquesDistinctIds,
  };
  ctx.out.table(
    `5. Exact uniques: ${fmt(settings.uniquesDistinctIds)} distinct ids per period (median of ${settings.uniquesRounds} rounds)`,
    ['operation', 'ours ms', 'raw pg ms', 'ours client CPU ms', 'raw client CPU ms'],
    cells.map((c) => [
      c.operation,
      fmtMs(c.oursMs),
      fmtMs(c.rawMs),
      fmtMs(c.oursClientCpuMs),
      fmtMs(c.rawClientCpuMs),
    ]),
    [
      `per distinct id, ours: flush +${result.flushUsPerId.toFixed(2)} µs, cutover +${result.cutoverUsPerId.toFixed(2)} µs`,
    ],
  );
  return result;
}

async function assertIdsRecorded(ctx: BenchContext, expected: number): Promise<void> {
  const [row] = await ctx.db.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${schemaTables().text.boundary_usage_ids}`,
  );
  if (Number(row?.n) !== expected) {
    throw new Error(`uniques: ${row?.n} ids recorded, expected ${expected}`);
  }
}
