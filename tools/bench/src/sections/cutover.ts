/**
 * Section 2: cutover latency (getAndResetSummary) with 10, 1,000 and 100,000 replica rows,
 * ours against raw node-postgres replaying the statements the store sent for it. Each measurement starts
 * from a freshly filled table; ours and raw alternate within each round.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import { rotate, type BenchContext } from '../lib/context.js';
import { fillStats, MAX_STALENESS_MS } from '../lib/fill.js';
import { fmt, fmtMs, fmtRatio } from '../lib/output.js';
import { rawCutover } from '../lib/baselines.js';
import { createRawPool } from '../lib/raw-pg.js';
import { median, ratio } from '../lib/stats.js';

export interface CutoverCell {
  rows: number;
  oursMs: number;
  rawMs: number;
  /** ours ÷ raw (latency: lower is better, so ≤ 1.2 is the goal). */
  oursOverRaw: number;
  oursRoundsMs: number[];
  rawRoundsMs: number[];
}

export interface CutoverSectionResult {
  cells: CutoverCell[];
}

type Side = 'ours' | 'raw';

export async function runCutoverSection(ctx: BenchContext): Promise<CutoverSectionResult> {
  const prisma = createPrismaClient({ databaseUrl: ctx.db.databaseUrl, maxConnections: 2 });
  const store = new BoundaryUsageStore(prisma);
  const pool = createRawPool(ctx.db.databaseUrl, 2);
  const cutover: Record<Side, () => Promise<bigint>> = {
    ours: async () =>
      BigInt((await store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS })).replicas),
    raw: async () => BigInt((await rawCutover(pool, ctx.baselines)).replicas),
  };
  try {
    // Warm both clients (connections, Prisma's query compiler) on an empty table.
    for (const side of ['ours', 'raw'] as const) await cutover[side]();
    const cells: CutoverCell[] = [];
    for (const rows of ctx.settings.cutoverSizes) {
      const samples: Record<Side, number[]> = { ours: [], raw: [] };
      for (let round = 0; round < ctx.settings.cutoverRounds; round++) {
        for (const side of rotate(['ours', 'raw'] as const, round)) {
          await ctx.db.reset();
          await fillStats(ctx.db, rows);
          const started = performance.now();
          const counted = await cutover[side]();
          samples[side].push(performance.now() - started);
          if (counted !== BigInt(rows)) {
            throw new Error(`cutover (${side}) counted ${counted} replicas, expected ${rows}`);
          }
        }
      }
      const oursMs = median(samples.ours);
      const rawMs = median(samples.raw);
      cells.push({
        rows,
        oursMs,
        rawMs,
        oursOverRaw: ratio(oursMs, rawMs),
        oursRoundsMs: samples.ours,
        rawRoundsMs: samples.raw,
      });
      ctx.out.line(`  ${fmt(rows)} rows: ours ${fmtMs(oursMs)} ms, raw ${fmtMs(rawMs)} ms`);
    }
    ctx.out.table(
      `2. Cutover latency, getAndResetSummary (median of ${ctx.settings.cutoverRounds} rounds)`,
      ['rows', 'ours ms', 'raw pg ms', 'ours ÷ raw'],
      cells.map((c) => [fmt(c.rows), fmtMs(c.oursMs), fmtMs(c.rawMs), fmtRatio(c.oursOverRaw)]),
    );
    return { cells };
  } finally {
    await prisma.$disconnect();
    await pool.end();
  }
}
