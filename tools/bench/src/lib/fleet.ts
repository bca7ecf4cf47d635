/**
 * The measurement loop for flush contenders: N replicas, each flushing its own replica_id in
 * a tight loop (one flush at a time, as a replica's flush loop does), for a warm-up and then
 * a fixed window. Throughput counts flushes *completed* inside the window, whenever they
 * started, which is unbiased in steady state; latencies are those same flushes'.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuPerOperation, type CpuPerOperation, type CpuProbe } from './cpu.js';
import { LatencyRecorder, type LatencySummary } from './stats.js';

/** Flushes once with the given sequence number (1, 2, 3, … per replica). */
export type FlushFn = (sequence: bigint) => Promise<unknown>;

export interface Fleet {
  flushers: FlushFn[];
  close(): Promise<void>;
}

export interface FleetTiming {
  warmupMs: number;
  durationMs: number;
}

export interface SegmentResult {
  flushes: number;
  seconds: number;
  flushesPerSecond: number;
  latency: LatencySummary;
  errors: number;
  firstError: string | undefined;
  cpu: CpuPerOperation;
}

export interface RunFleetOptions extends FleetTiming {
  signal: AbortSignal;
  cpu: CpuProbe;
  /** Called when the measured window opens and closes (e.g. to time a background cutover loop). */
  onWindow?: (open: boolean) => void;
}

/** Replica ids of one run: a random prefix and the replica's index, so pgbench can build the same ones. */
export function replicaIdPrefix(uuid: string): string {
  return uuid.slice(0, 24);
}

export function replicaId(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(12, '0')}`;
}

export async function runFleet(fleet: Fleet, options: RunFleetOptions): Promise<SegmentResult> {
  const { signal, cpu } = options;
  // Prime: every replica connects and writes its first row before any timing starts.
  await Promise.all(fleet.flushers.map((flush) => flush(1n)));

  const latencies = new LatencyRecorder();
  let measuring = false;
  let stopped = false;
  let errors = 0;
  let firstError: string | undefined;

  const loops = fleet.flushers.map(async (flush) => {
    let sequence = 1n;
    while (!stopped) {
      sequence++;
      const started = performance.now();
      try {
        await flush(sequence);
      } catch (error) {
        if (measuring) errors++;
        firstError ??= error instanceof Error ? error.message.split('\n')[0] : String(error);
        // A failing replica must not spin: back off a little, as the flush loop would.
        await sleep(5);
        continue;
      }
      if (measuring) latencies.add(performance.now() - started);
    }
  });

  try {
    await sleep(options.warmupMs, undefined, { signal });
    const cpuStart = cpu.sample();
    const windowStart = performance.now();
    measuring = true;
    options.onWindow?.(true);
    await sleep(options.durationMs, undefined, { signal });
    measuring = false;
    const windowEnd = performance.now();
    const cpuEnd = cpu.sample();
    options.onWindow?.(false);
    stopped = true;
    await Promise.all(loops);
    const seconds = (windowEnd - windowStart) / 1000;
    return {
      flushes: latencies.count,
      seconds,
      flushesPerSecond: latencies.count / seconds,
      latency: latencies.summary(),
      errors,
      firstError,
      cpu: cpuPerOperation(cpuStart, cpuEnd, latencies.count),
    };
  } finally {
    stopped = true;
    await Promise.allSettled(loops);
  }
}
