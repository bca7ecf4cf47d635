/**
 * Section 3: writers under contention. 16 replicas flush in tight loops while a reporter cuts
 * over every 100 ms; shared writer locks (a) against exclusive ones (b). What the writers feel
 * is the flush p99: a flush that arrives during a cutover waits for it, and with exclusive
 * locks it also queues behind every other writer.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import { setTimeout as sleep } from 'node:timers/promises';
import { rotate, type BenchContext } from '../lib/context.js';
import { MAX_STALENESS_MS } from '../lib/fill.js';
import { replicaId, runFleet } from '../lib/fleet.js';
import { fmt, fmtMs, fmtRatio } from '../lib/output.js';
import { LatencyRecorder, median, ratio } from '../lib/stats.js';
import { fleetEnv, openFleet } from './flush.js';

export interface ContentionRound {
  flushesPerSecond: number;
  flushP50Ms: number;
  flushP99Ms: number;
  flushMaxMs: number;
  cutovers: number;
  cutoverP50Ms: number;
  cutoverP99Ms: number;
  errors: number;
}

export interface ContentionCell {
  lockMode: 'shared' | 'exclusive';
  contender: 'a' | 'b';
  rounds: ContentionRound[];
  flushesPerSecond: number;
  flushP50Ms: number;
  flushP99Ms: number;
  flushMaxMs: number;
  cutoversPerSecond: number;
  cutoverP50Ms: number;
  cutoverP99Ms: number;
  errors: number;
}

export interface ContentionSectionResult {
  replicas: number;
  cutoverIntervalMs: number;
  cells: ContentionCell[];
  /** Flush p99, exclusive ÷ shared (how much worse the writers' tail is with coder's locks). */
  exclusiveOverSharedP99: number;
  /** Flush throughput, shared ÷ exclusive, under the cutover load. */
  sharedOverExclusiveThroughput: number;
}

export async function runContentionSection(ctx: BenchContext): Promise<ContentionSectionResult> {
  const { settings } = ctx;
  const ids = Array.from({ length: settings.contentionReplicas }, (_, i) =>
    replicaId(ctx.replicaIdPrefix, i),
  );
  const contenders = [
    { contender: 'a', lockMode: 'shared' },
    { contender: 'b', lockMode: 'exclusive' },
  ] as const;
  const rounds: Record<'a' | 'b', ContentionRound[]> = { a: [], b: [] };

  const reporter = createPrismaClient({ databaseUrl: ctx.db.databaseUrl, maxConnections: 2 });
  const reporterStore = new BoundaryUsageStore(reporter);
  try {
    await reporterStore.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS });
    for (let round = 0; round < settings.contentionRounds; round++) {
      for (const { contender } of rotate(contenders, round)) {
        await ctx.db.reset();
        const cutoverLatencies = new LatencyRecorder();
        let measuring = false;
        let stop = false;
        let cutoverErrors = 0;
        // The reporter: one cutover every interval (at once if the last one overran).
        const cutoverLoop = (async () => {
          let next = performance.now();
          while (!stop) {
            const wait = next - performance.now();
            if (wait > 0) await sleep(wait);
            if (stop) break;
            next += settings.cutoverIntervalMs;
            const started = performance.now();
            try {
              await reporterStore.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS });
              if (measuring) cutoverLatencies.add(performance.now() - started);
            } catch {
              if (measuring) cutoverErrors++;
            }
          }
        })();
        const fleet = openFleet(contender, fleetEnv(ctx), ids);
        try {
          const result = await runFleet(fleet, {
            warmupMs: settings.flushWarmupMs,
            durationMs: settings.contentionSeconds * 1000,
            signal: ctx.signal,
            cpu: ctx.cpu,
            onWindow: (open) => {
              measuring = open;
            },
          });
          const cutovers = cutoverLatencies.summary();
          rounds[contender].push({
            flushesPerSecond: result.flushesPerSecond,
            flushP50Ms: result.latency.p50Ms,
            flushP99Ms: result.latency.p99Ms,
            flushMaxMs: result.latency.maxMs,
            cutovers: cutovers.count,
            cutoverP50Ms: cutovers.p50Ms,
            cutoverP99Ms: cutovers.p99Ms,
            errors: result.errors + cutoverErrors,
          });
        } finally {
          stop = true;
          await cutoverLoop;
          await fleet.close();
        }
      }
    }
  } finally {
    await reporter.$disconnect();
  }

  const cells: ContentionCell[] = contenders.map(({ contender, lockMode }) => {
    const r = rounds[contender];
    return {
      contender,
      lockMode,
      rounds: r,
      flushesPerSecond: median(r.map((x) => x.flushesPerSecond)),
      flushP50Ms: median(r.map((x) => x.flushP50Ms)),
      flushP99Ms: median(r.map((x) => x.flushP99Ms)),
      flushMaxMs: median(r.map((x) => x.flushMaxMs)),
      cutoversPerSecond: median(r.map((x) => x.cutovers / settings.contentionSeconds)),
      cutoverP50Ms: median(r.map((x) => x.cutoverP50Ms)),
      cutoverP99Ms: median(r.map((x) => x.cutoverP99Ms)),
      errors: r.reduce((sum, x) => sum + x.errors, 0),
    };
  });
  const [shared, exclusive] = cells as [ContentionCell, ContentionCell];
  const result: ContentionSectionResult = {
    replicas: settings.contentionReplicas,
    cutoverIntervalMs: settings.cutoverIntervalMs,
    cells,
    exclusiveOverSharedP99: ratio(exclusive.flushP99Ms, shared.flushP99Ms),
    sharedOverExclusiveThroughput: ratio(shared.flushesPerSecond, exclusive.flushesPerSecond),
  };
  ctx.out.table(
    `3. Writers under contention: ${settings.contentionReplicas} replicas, a cutover every ${settings.cutoverIntervalMs} ms (median of ${settings.contentionRounds} rounds × ${settings.contentionSeconds} s)`,
    [
      'writer lock',
      'flushes/s',
      'flush p50 ms',
      'flush p99 ms',
      'flush max ms',
      'cutovers/s',
      'cutover p50 ms',
      'cutover p99 ms',
      'errors',
    ],
    cells.map((c) => [
      `${c.contender} ${c.lockMode}`,
      fmt(c.flushesPerSecond),
      fmtMs(c.flushP50Ms),
      fmtMs(c.flushP99Ms),
      fmtMs(c.flushMaxMs),
      fmt(c.cutoversPerSecond, 1),
      fmtMs(c.cutoverP50Ms),
      fmtMs(c.cutoverP99Ms),
      String(c.errors),
    ]),
    [
      `flush p99 exclusive ÷ shared: ${fmtRatio(result.exclusiveOverSharedP99)}; throughput shared ÷ exclusive: ${fmtRatio(result.sharedOverExclusiveThroughput)}`,
    ],
  );
  return result;
}
