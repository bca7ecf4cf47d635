/** The goals the bench reports against, each PASS, MISS or NOT MEASURED. */
import { fmtRatio } from '../lib/output.js';
import type { BenchResults, Goal } from './results.js';

export const GOAL_REPLICAS = 16;

type Inputs = Pick<BenchResults, 'flush' | 'cutover' | 'tracker'>;

/**
 * Issue 13's goals, each a ratio within one run (so a busy machine moves both sides): the
 * default flush against coder's protocol written by hand (shared lock, prepared upsert) in
 * throughput and in PostgreSQL CPU per flush, and against the raw single statement, prepared;
 * the cutover against raw node-postgres; track() against a Set.
 */
export function evaluateGoals(results: Inputs): Goal[] {
  const at16 = results.flush?.ratios.find((r) => r.replicas === GOAL_REPLICAS);
  const cutover100k = results.cutover?.cells.find((c) => c.rows === 100_000);
  const tracker = results.tracker?.status === 'measured' ? results.tracker : undefined;
  return [
    atLeast(
      'flush-default-vs-coder-shared',
      `flush throughput, the default (a) ÷ coder's protocol, shared lock, prepared (l), ${GOAL_REPLICAS} replicas`,
      1.0,
      at16?.defaultOverCoderShared,
      fmtRatio,
      '≥ 1.0',
    ),
    atMost(
      'flush-cpu-default-vs-coder-shared',
      `PostgreSQL CPU per flush, the default (a) ÷ coder's protocol, shared (l), ${GOAL_REPLICAS} replicas`,
      1.0,
      at16?.defaultServerCpuOverCoderShared,
      fmtRatio,
      '≤ 1.0',
    ),
    atLeast(
      'flush-default-vs-raw-prepared',
      `flush throughput, the default (a) ÷ raw single statement, prepared (h), ${GOAL_REPLICAS} replicas`,
      0.8,
      at16?.defaultOverRawPrepared,
      fmtRatio,
    ),
    atMost(
      'cutover-100k-vs-raw-pg',
      'cutover latency of 100 k rows, ours ÷ raw node-postgres',
      1.2,
      cutover100k?.oursOverRaw,
      fmtRatio,
    ),
    atLeast(
      'track-vs-set-baseline',
      'Tracker.track() calls per CPU-second ÷ the `Set` baseline (1 M calls, 100 k distinct ids)',
      0.75,
      tracker?.trackerOverBaseline,
      fmtRatio,
    ),
  ];
}

function atLeast(
  id: string,
  description: string,
  target: number,
  actual: number | undefined,
  show: (v: number) => string,
  targetText = `≥ ${target}`,
): Goal {
  return goal(id, description, targetText, actual, show, (v) => v >= target);
}

function atMost(
  id: string,
  description: string,
  target: number,
  actual: number | undefined,
  show: (v: number) => string,
  targetText = `≤ ${target}`,
): Goal {
  return goal(id, description, targetText, actual, show, (v) => v <= target);
}

function goal(
  id: string,
  description: string,
  target: string,
  actual: number | undefined,
  show: (v: number) => string,
  passes: (v: number) => boolean,
): Goal {
  const measured = actual !== undefined && Number.isFinite(actual);
  return {
    id,
    description,
    target,
    actual: measured ? actual : undefined,
    actualText: measured ? show(actual) : '–',
    status: measured ? (passes(actual) ? 'PASS' : 'MISS') : 'NOT MEASURED',
  };
}
