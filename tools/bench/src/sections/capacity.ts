/**
 * Section 6: capacity. Two questions an operator asks before turning the tracker on, answered
 * from measurements of this run:
 *
 * - How many replicas does one PostgreSQL core serve at a 1-minute flush? From PostgreSQL CPU
 *   per default flush (contender a, 16 replicas): a core has 60 s of CPU per minute.
 * - How long does the cutover hold its exclusive lock? Every writer that flushes meanwhile
 *   waits, and gives up after its lock_timeout (2 s by default) with 55P03; its batch is kept
 *   and resent, but the flush fails. Measured through the store's public getAndResetSummary
 *   with the statements timed on the wire: from the return of the lock statement to the
 *   return of COMMIT, for 1 k and 10 k replica rows and for 100 k and 1 M distinct ids in a
 *   period; extrapolated linearly to the size at which the hold reaches the lock_timeout.
 */
import { BoundaryUsageStore, DEFAULT_STORE_OPTIONS } from '@usagekit/boundary-usage';
import { createPrismaClient, DEFAULT_POOL_IDLE_TIMEOUT_MS } from '@usagekit/db';
import {
  capacityRows,
  fleetTable,
  type CapacityRow,
  type FleetNeeds,
} from '../lib/cadence-model.js';
import type { BenchContext } from '../lib/context.js';
import { fillIds, fillStats, MAX_STALENESS_MS } from '../lib/fill.js';
import { fmt, fmtMs } from '../lib/output.js';
import { median } from '../lib/stats.js';
import { exclusiveLockHoldMs, timeQueries } from '../lib/wire-timing.js';
import type { CadenceSectionResult } from './cadence.js';
import { measureContender, type FlushSectionResult } from './flush.js';

/** The flush interval the capacity figures assume (coder's, and the tracker loop's default). */
export const CAPACITY_FLUSH_INTERVAL_SECONDS = 60;
export const CAPACITY_REPLICAS = 16;

export interface LockHoldCell {
  kind: 'replica-rows' | 'distinct-ids';
  replicaRows: number;
  distinctIds: number;
  /** Median over rounds: lock statement returned → COMMIT returned. */
  holdMs: number;
  holdRoundsMs: number[];
  /** Median of the whole getAndResetSummary call. */
  callMs: number;
}

export interface LockTimeoutPoint {
  /** Fitted: hold ≈ fixedMs + perUnitUs × size (from the two measured sizes). */
  fixedMs: number;
  perUnitUs: number;
  /** The size at which the hold would reach the writers' lock_timeout; undefined if it never grows. */
  sizeAtLockTimeout: number | undefined;
}

export interface CapacitySectionResult {
  flushIntervalSeconds: number;
  /** Where the per-flush figures come from. */
  flushSource: 'flush section' | 'measured here';
  replicas: number;
  serverCpuUsPerFlush: number | undefined;
  flushesPerSecond: number | undefined;
  /** One core's CPU per interval ÷ PostgreSQL CPU per flush. */
  replicasPerCore: number | undefined;
  /** Measured throughput × interval: replicas this run's server kept up with (CPU shared with the bench). */
  replicasAtMeasuredThroughput: number | undefined;
  lockTimeoutMs: number;
  holds: LockHoldCell[];
  rowsFit: LockTimeoutPoint | undefined;
  idsFit: LockTimeoutPoint | undefined;
  /** Sizes whose cutover failed (the others are still reported). */
  holdFailures?: string[];
  /**
   * From section 7 (production cadence), when it ran: replicas per PostgreSQL core, per 1,000
   * PostgreSQL connections and per PgBouncer core, direct and behind PgBouncer, warm and
   * per-flush, with and without TLS; per-flush holds assume the library's default idle timeout.
   */
  cadence?: {
    perFlushIdleTimeoutMs: number;
    rows: CapacityRow[];
    fleets: Array<{ row: CapacityRow; needs: FleetNeeds[] }>;
  };
}

export async function runCapacitySection(
  ctx: BenchContext,
  flush: FlushSectionResult | undefined,
  cadence?: CadenceSectionResult,
): Promise<CapacitySectionResult> {
  const { settings, out } = ctx;
  let serverCpuUsPerFlush: number | undefined;
  let flushesPerSecond: number | undefined;
  let flushSource: CapacitySectionResult['flushSource'] = 'flush section';
  const measured = flush?.cells.find(
    (c) => c.contender === 'a' && c.replicas === CAPACITY_REPLICAS,
  );
  if (measured) {
    serverCpuUsPerFlush = measured.serverCpuUsPerFlush;
    flushesPerSecond = measured.flushesPerSecond;
  } else {
    flushSource = 'measured here';
    const result = await measureContender(ctx, 'a', CAPACITY_REPLICAS, {
      warmupMs: settings.flushWarmupMs,
      seconds: settings.flushSeconds,
    });
    serverCpuUsPerFlush = result.cpu.serverUsPerOp;
    flushesPerSecond = result.flushesPerSecond;
  }
  const intervalUs = CAPACITY_FLUSH_INTERVAL_SECONDS * 1_000_000;
  const replicasPerCore =
    serverCpuUsPerFlush !== undefined && serverCpuUsPerFlush > 0
      ? intervalUs / serverCpuUsPerFlush
      : undefined;
  const replicasAtMeasuredThroughput =
    flushesPerSecond !== undefined ? flushesPerSecond * CAPACITY_FLUSH_INTERVAL_SECONDS : undefined;
  out.line(
    `  PostgreSQL CPU per default flush in a tight loop ${fmt(serverCpuUsPerFlush)} µs → ${fmt(replicasPerCore)} replicas per core at a ${CAPACITY_FLUSH_INTERVAL_SECONDS} s flush (an upper bound: warm connections, commits grouped)`,
  );
  let cadenceCapacity: CapacitySectionResult['cadence'];
  if (cadence) {
    const rows = capacityRows(cadence.cells, {
      intervalSeconds: CAPACITY_FLUSH_INTERVAL_SECONDS,
      perFlushIdleTimeoutSeconds: DEFAULT_POOL_IDLE_TIMEOUT_MS / 1000,
    });
    cadenceCapacity = {
      perFlushIdleTimeoutMs: DEFAULT_POOL_IDLE_TIMEOUT_MS,
      rows,
      fleets: fleetTable(rows, CAPACITY_FLUSH_INTERVAL_SECONDS),
    };
    out.table(
      `6. Capacity at a ${CAPACITY_FLUSH_INTERVAL_SECONDS} s flush, from section 7`,
      [
        'transport',
        'TLS',
        'pool',
        'replicas / PostgreSQL core',
        'replicas / 1,000 PostgreSQL connections',
        'replicas / PgBouncer core',
      ],
      rows.map((r) => [
        r.transport,
        r.tls ? 'require' : 'off',
        r.pool,
        fmt(r.replicasPerServerCore),
        fmt(r.replicasPerThousandServerConnections),
        fmt(r.replicasPerPoolerCore),
      ]),
    );
  }

  // The hold is what is measured, not whether it fits the defaults' deadlines: on a loaded
  // machine the 1 M-id cutover can outlast the store's 5 s transaction timeout.
  const prisma = createPrismaClient({
    databaseUrl: ctx.db.databaseUrl,
    maxConnections: 2,
    statementDeadlineMs: 120_000,
    transactionOptions: { timeoutMs: 120_000 },
  });
  const store = new BoundaryUsageStore(prisma, { transactionTimeoutMs: 120_000 });
  const lockTimeoutMs = DEFAULT_STORE_OPTIONS.lockTimeoutMs;
  const holds: LockHoldCell[] = [];
  const holdFailures: string[] = [];
  try {
    // Warm the client (connection, query compiler) on an empty table.
    await store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS });
    const cases = [
      ...settings.capacityReplicaRows.map((rows) => ({
        kind: 'replica-rows' as const,
        replicaRows: rows,
        distinctIds: 0,
      })),
      ...settings.capacityDistinctIds.map((ids) => ({
        kind: 'distinct-ids' as const,
        replicaRows: settings.capacityRowsWithIds,
        distinctIds: ids,
      })),
    ];
    for (const c of cases) {
      const holdRounds: number[] = [];
      const callRounds: number[] = [];
      const rounds =
        c.distinctIds >= 1_000_000 ? settings.capacityLargeRounds : settings.capacityRounds;
      try {
        for (let round = 0; round < rounds; round++) {
          ctx.signal.throwIfAborted();
          await ctx.db.reset();
          await fillStats(ctx.db, c.replicaRows);
          if (c.distinctIds > 0) await fillIds(ctx.db, c.distinctIds);
          const started = performance.now();
          const { result, statements } = await timeQueries(() =>
            store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS }),
          );
          const callMs = performance.now() - started;
          if (result.replicas !== c.replicaRows) {
            throw new Error(
              `cutover counted ${result.replicas} replicas, expected ${c.replicaRows}`,
            );
          }
          const hold = exclusiveLockHoldMs(statements);
          if (hold === undefined) {
            throw new Error(
              'could not find the lock statement and COMMIT among what the store sent',
            );
          }
          holdRounds.push(hold);
          callRounds.push(callMs);
        }
      } catch (error) {
        // One size failing (a deadline on a loaded machine) leaves the others and the
        // per-core figures standing.
        if (ctx.signal.aborted) throw error;
        const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
        holdFailures.push(`${fmt(c.replicaRows)} rows + ${fmt(c.distinctIds)} ids: ${message}`);
        out.line(
          `  cutover of ${fmt(c.replicaRows)} rows + ${fmt(c.distinctIds)} ids FAILED: ${message}`,
        );
        continue;
      }
      const cell: LockHoldCell = {
        ...c,
        holdMs: median(holdRounds),
        holdRoundsMs: holdRounds,
        callMs: median(callRounds),
      };
      holds.push(cell);
      out.line(
        `  cutover of ${fmt(c.replicaRows)} rows + ${fmt(c.distinctIds)} ids: lock held ${fmtMs(cell.holdMs)} ms (call ${fmtMs(cell.callMs)} ms)`,
      );
    }
  } finally {
    await prisma.$disconnect();
  }

  const rowsFit = fitHold(
    holds.filter((h) => h.kind === 'replica-rows').map((h) => [h.replicaRows, h.holdMs]),
    lockTimeoutMs,
  );
  const idsFit = fitHold(
    holds.filter((h) => h.kind === 'distinct-ids').map((h) => [h.distinctIds, h.holdMs]),
    lockTimeoutMs,
  );
  out.table(
    `6. Capacity (cutover lock hold, median of ${settings.capacityRounds} rounds, ${settings.capacityLargeRounds} for 1 M ids)`,
    ['replica rows', 'distinct ids', 'lock held ms', 'cutover call ms'],
    holds.map((h) => [fmt(h.replicaRows), fmt(h.distinctIds), fmtMs(h.holdMs), fmtMs(h.callMs)]),
    [
      `replicas per PostgreSQL core at a ${CAPACITY_FLUSH_INTERVAL_SECONDS} s flush: ${fmt(replicasPerCore)}`,
      `hold reaches lock_timeout (${lockTimeoutMs} ms) at ≈ ${fmt(rowsFit?.sizeAtLockTimeout)} replica rows, ≈ ${fmt(idsFit?.sizeAtLockTimeout)} distinct ids`,
    ],
  );
  return {
    flushIntervalSeconds: CAPACITY_FLUSH_INTERVAL_SECONDS,
    flushSource,
    replicas: CAPACITY_REPLICAS,
    serverCpuUsPerFlush,
    flushesPerSecond,
    replicasPerCore,
    replicasAtMeasuredThroughput,
    lockTimeoutMs,
    holds,
    rowsFit,
    idsFit,
    ...(holdFailures.length > 0 ? { holdFailures } : {}),
    ...(cadenceCapacity ? { cadence: cadenceCapacity } : {}),
  };
}

/**
 * A line through the first and last measured (size, hold) points, and where it crosses the
 * lock_timeout. Two points are what we measure; the cutover's work (a DELETE … RETURNING and
 * an aggregate) grows linearly with the rows it deletes, so a line is the honest model.
 */
export function fitHold(
  points: ReadonlyArray<readonly [number, number]>,
  lockTimeoutMs: number,
): LockTimeoutPoint | undefined {
  if (points.length < 2) return undefined;
  const sorted = [...points].sort((x, y) => x[0] - y[0]);
  const [x0, y0] = sorted[0];
  const [x1, y1] = sorted[sorted.length - 1];
  if (x1 === x0) return undefined;
  const slopeMs = (y1 - y0) / (x1 - x0);
  const fixedMs = Math.max(0, y0 - slopeMs * x0);
  if (!(slopeMs > 0))
    return { fixedMs, perUnitUs: Math.max(0, slopeMs * 1000), sizeAtLockTimeout: undefined };
  return {
    fixedMs,
    perUnitUs: slopeMs * 1000,
    sizeAtLockTimeout: Math.max(0, (lockTimeoutMs - fixedMs) / slopeMs),
  };
}
