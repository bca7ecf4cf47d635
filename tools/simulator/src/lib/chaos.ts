import { setTimeout as sleep } from 'node:timers/promises';
import { schemaTables, usagekitSchemaOf, type PrismaClient } from '@usagekit/db';
import type { ReplicaHandle } from './fleet.js';
import type { ProgressView } from './progress.js';
import { pickRandom } from './random.js';
import { REPLICA_APPLICATION_NAME_PREFIX } from './replica/protocol.js';
import type { KilledReplica } from './report/report.js';

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
  /** While true, no backend is terminated. */
  paused?: () => boolean;
}): BackendTerminator {
  const random = options.random ?? Math.random;
  const stopped = new AbortController();
  let terminated = 0;
  const loop = (async () => {
    while (!stopped.signal.aborted) {
      const delay = options.meanIntervalMs * (0.5 + random());
      await sleep(delay, undefined, { signal: stopped.signal }).catch(() => undefined);
      if (stopped.signal.aborted) break;
      if (options.paused?.()) continue;
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

/**
 * --chaos: freezes one random replica (no more traffic or flushes, in-flight flushes settle),
 * takes its last numbers and SIGKILLs it. What it had tracked but not flushed is the only loss
 * the account allows. If its last flush failed, the database alone knows whether that batch
 * committed: its flush sequence tells, once every backend of the dead replica is gone.
 */
export async function killOneReplica(input: {
  fleet: readonly ReplicaHandle[];
  prisma: PrismaClient;
  view: ProgressView;
  atMs: number;
}): Promise<KilledReplica | undefined> {
  const candidates = input.fleet.filter((replica) => replica.status === 'running' && replica.alive);
  if (candidates.length === 0) return undefined;
  const victim = pickRandom(candidates);
  if (!victim) return undefined;
  const frozen = await victim.freeze(10_000);
  await victim.kill();
  let unconfirmedBatchApplied: boolean | undefined;
  if (frozen.unconfirmedBatch && victim.replicaId) {
    await waitForBackendsGone(
      input.prisma,
      `${REPLICA_APPLICATION_NAME_PREFIX}${victim.index}`,
      10_000,
    );
    const rows = await input.prisma.$queryRaw<{ last_sequence: bigint | string }[]>`
      SELECT last_sequence FROM ${schemaTables(usagekitSchemaOf(input.prisma)).sql.boundary_usage_flush_sequences}
       WHERE replica_id = ${victim.replicaId}::uuid
         AND writer_id = ${frozen.unconfirmedBatch.writerId ?? '00000000-0000-0000-0000-000000000000'}::uuid`;
    const last = rows[0] ? BigInt(rows[0].last_sequence) : undefined;
    unconfirmedBatchApplied = last !== undefined && last >= frozen.unconfirmedBatch.sequence;
  }
  const state = frozen.state;
  const unflushed =
    state.generated.allowed +
    state.generated.denied -
    state.flushed.allowed -
    state.flushed.denied -
    (unconfirmedBatchApplied && frozen.unconfirmedBatch
      ? frozen.unconfirmedBatch.allowed + frozen.unconfirmedBatch.denied
      : 0n);
  input.view.message(
    `chaos: replica ${victim.index} (pid ${victim.pid}) SIGKILLed at ${(input.atMs / 1000).toFixed(1)}s with ${unflushed} requests tracked but not flushed`,
  );
  return {
    index: victim.index,
    replicaId: victim.replicaId,
    atMs: input.atMs,
    state,
    unconfirmedBatch: frozen.unconfirmedBatch,
    unconfirmedBatchApplied,
  };
}

/** A backend that already received COMMIT finishes it before it exits; wait for that. */
async function waitForBackendsGone(
  prisma: PrismaClient,
  applicationName: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const rows = await prisma.$queryRaw<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND application_name = ${applicationName}`;
    if ((rows[0]?.n ?? 0) === 0) return;
    await sleep(50);
  }
  throw new Error(
    `the killed replica's backends (${applicationName}) did not go away within ${timeoutMs / 1000}s`,
  );
}
