import { setTimeout as sleep } from 'node:timers/promises';
import type { PrismaClient } from '@usagekit/db';
import { pickRandom } from './random.js';
import { REPLICA_APPLICATION_NAME_PREFIX } from './replica/protocol.js';

export interface BackendTerminator {
  /** Backends terminated so far. */
  readonly terminated: number;
  /** Stops after the termination in progress, if any. */
  stop(): Promise<void>;
}

/**
 * --chaos: every `meanIntervalMs` (±50 %), terminates one replica backend of the simulation
 * database with pg_terminate_backend, a busy one when there is one. Whatever it was doing (a
 * flush, a cutover, a delivery's bookkeeping, or idling in the pool) fails with a lost
 * connection; the account must still balance. Only connections whose application_name marks
 * them as a replica's are candidates, so the simulator's own connection survives.
 */
export function startBackendTerminator(options: {
  prisma: PrismaClient;
  meanIntervalMs: number;
  random?: () => number;
  onError?: (error: unknown) => void;
}): BackendTerminator {
  const random = options.random ?? Math.random;
  const stopped = new AbortController();
  let terminated = 0;
  const loop = (async () => {
    while (!stopped.signal.aborted) {
      const delay = options.meanIntervalMs * (0.5 + random());
      await sleep(delay, undefined, { signal: stopped.signal }).catch(() => undefined);
      if (stopped.signal.aborted) break;
      try {
        const candidates = await options.prisma.$queryRaw<{ pid: number; busy: boolean }[]>`
          SELECT pid, state IS DISTINCT FROM 'idle' AS busy FROM pg_stat_activity
           WHERE datname = current_database()
             AND application_name LIKE ${`${REPLICA_APPLICATION_NAME_PREFIX}%`}
             AND pid <> pg_backend_pid()`;
        // A backend in the middle of a flush or a cutover is the interesting victim (its
        // client cannot know whether the commit happened); idle ones are the fallback.
        const busy = candidates.filter((candidate) => candidate.busy);
        const victim = pickRandom(busy.length > 0 ? busy : candidates, random);
        if (!victim) continue;
        const rows = await options.prisma.$queryRaw<{ terminated: boolean }[]>`
          SELECT pg_terminate_backend(${victim.pid}::int) AS terminated`;
        if (rows[0]?.terminated) terminated++;
      } catch (error) {
        options.onError?.(error);
      }
    }
  })();
  return {
    get terminated() {
      return terminated;
    },
    stop: async () => {
      stopped.abort();
      await loop;
    },
  };
}
