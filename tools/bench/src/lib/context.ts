import type { CpuProbe } from './cpu.js';
import type { BenchDatabase } from './database.js';
import type { Baselines } from './baselines.js';
import type { Output } from './output.js';

/** Durations, sizes and rounds of one run; {@link settingsFor} picks them. */
export interface BenchSettings {
  concurrencies: readonly number[];
  flushRounds: number;
  flushWarmupMs: number;
  /** Whole seconds: pgbench's --time takes no fractions. */
  flushSeconds: number;
  cutoverSizes: readonly number[];
  cutoverRounds: number;
  contentionReplicas: number;
  contentionRounds: number;
  contentionSeconds: number;
  cutoverIntervalMs: number;
  trackerCalls: number;
  trackerDistinctIds: number;
  trackerRounds: number;
  uniquesDistinctIds: number;
  uniquesRounds: number;
  profileReplicas: number;
  profileSeconds: number;
  /** Capacity: replica rows and distinct ids whose cutover lock hold is measured. */
  capacityReplicaRows: readonly number[];
  capacityDistinctIds: readonly number[];
  /** Replica rows beside the ids in the distinct-id cutovers. */
  capacityRowsWithIds: number;
  capacityRounds: number;
  /** Rounds for the sizes that take seconds to fill (1 M ids). */
  capacityLargeRounds: number;
  /** Production cadence: replicas, the compressed flush interval, intervals per cell, rounds. */
  cadenceReplicas: number;
  cadenceIntervalMs: number;
  cadenceIntervals: number;
  cadenceRounds: number;
  /** How long the idle CPU of server, Node and PgBouncer is measured before each round. */
  cadenceIdleWindowMs: number;
}

export function settingsFor(quick: boolean): BenchSettings {
  return {
    // Quick: 1 and 16 replicas (the goals' concurrency); the full run adds 4 and 64.
    concurrencies: quick ? [1, 16] : [1, 4, 16, 64],
    flushRounds: quick ? 2 : 4,
    flushWarmupMs: quick ? 200 : 500,
    flushSeconds: quick ? 1 : 3,
    cutoverSizes: [10, 1_000, 100_000],
    cutoverRounds: quick ? 3 : 7,
    contentionReplicas: 16,
    contentionRounds: quick ? 2 : 4,
    contentionSeconds: quick ? 1 : 5,
    cutoverIntervalMs: 100,
    trackerCalls: 1_000_000,
    trackerDistinctIds: 100_000,
    trackerRounds: quick ? 3 : 7,
    uniquesDistinctIds: 100_000,
    uniquesRounds: quick ? 1 : 5,
    profileReplicas: 16,
    profileSeconds: quick ? 1 : 3,
    capacityReplicaRows: [1_000, 10_000],
    capacityDistinctIds: [100_000, 1_000_000],
    capacityRowsWithIds: 16,
    capacityRounds: quick ? 3 : 5,
    capacityLargeRounds: quick ? 1 : 3,
    cadenceReplicas: 32,
    cadenceIntervalMs: 500,
    cadenceIntervals: quick ? 6 : 12,
    cadenceRounds: quick ? 1 : 3,
    cadenceIdleWindowMs: quick ? 1_000 : 2_000,
  };
}

export interface BenchContext {
  db: BenchDatabase;
  out: Output;
  settings: BenchSettings;
  cpu: CpuProbe;
  signal: AbortSignal;
  /** The run's replica ids are `${replicaIdPrefix}${index, 12 digits}`. */
  replicaIdPrefix: string;
  pgbench: string | undefined;
  /** The store's statements recorded from the wire, replayed by the raw contenders. */
  baselines: Baselines;
}

/** Contender order for a round: rotated each round so no contender always runs first (or last). */
export function rotate<T>(items: readonly T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
