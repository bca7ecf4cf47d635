import { setTimeout as sleep } from 'node:timers/promises';
import type { PrismaClient } from '@usagekit/db';

export interface LockWaitSummary {
  /** Time between two samples (plus the query's own time). */
  intervalMs: number;
  /** pg_locks samples taken. */
  samples: number;
  /** Samples in which at least one backend waited for an advisory lock. */
  samplesWithWaiters: number;
  /** Most backends seen waiting at once. */
  maxWaiting: number;
  /** Average backends waiting per sample. */
  meanWaiting: number;
}

export interface LockSampler {
  summary(): LockWaitSummary;
  stop(): Promise<void>;
}

/**
 * Samples pg_locks every `intervalMs` for advisory locks of the simulation database that are
 * requested but not granted: backends queued behind the boundary usage lock. With
 * --lock-mode shared, flushes never wait for each other, only for a cutover; with exclusive
 * (coder's protocol) every flush queues behind every other one. Waits shorter than the
 * interval are mostly missed (a flush holds the lock for a few milliseconds); the flush
 * latency includes every wait, so the two read together.
 */
export function startLockSampler(options: {
  prisma: PrismaClient;
  intervalMs: number;
}): LockSampler {
  const stopped = new AbortController();
  let samples = 0;
  let samplesWithWaiters = 0;
  let maxWaiting = 0;
  let totalWaiting = 0;
  const loop = (async () => {
    while (!stopped.signal.aborted) {
      try {
        const rows = await options.prisma.$queryRaw<{ waiting: number }[]>`
          SELECT count(*)::int AS waiting FROM pg_locks
           WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
        const waiting = rows[0]?.waiting ?? 0;
        samples++;
        totalWaiting += waiting;
        if (waiting > 0) samplesWithWaiters++;
        maxWaiting = Math.max(maxWaiting, waiting);
      } catch {
        // A sample lost to a busy server is not worth a report line.
      }
      await sleep(options.intervalMs, undefined, { signal: stopped.signal }).catch(() => undefined);
    }
  })();
  return {
    summary: () => ({
      intervalMs: options.intervalMs,
      samples,
      samplesWithWaiters,
      maxWaiting,
      meanWaiting: samples === 0 ? 0 : totalWaiting / samples,
    }),
    stop: async () => {
      stopped.abort();
      await loop;
    },
  };
}
