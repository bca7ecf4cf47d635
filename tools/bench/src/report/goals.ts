/** The goals the bench reports against, each PASS, MISS or NOT MEASURED. */
import { fmt, fmtRatio } from '../lib/output.js';
import type { BenchResults, Goal } from './results.js';

export const GOAL_REPLICAS = 16;

type Inputs = Pick<BenchResults, 'flush' | 'cutover' | 'tracker'>;

export function evaluateGoals(results: Inputs): Goal[] {
  const at16 = results.flush?.ratios.find((r) => r.replicas === GOAL_REPLICAS);
  const cutover100k = results.cutover?.cells.find((c) => c.rows === 100_000);
  const tracker = results.tracker?.status === 'measured' ? results.tracker : undefined;
  return [
    atLeast(
      'flush-ours-vs-raw-pg',
      `flush throughput, ours (a) ÷ raw node-postgres (d), ${GOAL_REPLICAS} replicas`,
      0.8,
      at16?.oursOverRawPg,
      fmtRatio,
    ),
    atLeast(
      'flush-shared-vs-exclusive',
      `flush throughput, shared (a) ÷ exclusive (b), ${GOAL_REPLICAS} replicas`,
      2.5,
      at16?.sharedOverExclusive,
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
      'track-ops-per-second',
      'Tracker.track() calls per CPU-second (1 M calls, 100 k distinct ids)',
      10_000_000,
      tracker?.trackerOpsPerSecond,
      (v) => `${fmt(v / 1e6, 1)} M/s`,
      '≥ 10 M/s',
    ),
    atMost(
      'track-bytes-per-id',
      'Tracker heap bytes per distinct id',
      120,
      tracker?.trackerBytesPerId,
      (v) => `${fmt(v, 1)} B`,
      '≤ 120 B',
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
