import { LockIds, Prisma, type PrismaClient } from '@usagekit/db';
import type { FreezingProxy } from '@usagekit/testing';
import type { TelemetryCollector } from './collector.js';
import type { ProgressView } from './progress.js';

/**
 * When --chaos's timed faults happen, in ms into the traffic phase. The backend terminator
 * and the collector's random refusals run all along; these come one after another so that
 * each alert they should raise has a fault window of its own and time to resolve afterwards.
 */
export interface FaultPlan {
  /** Existing and new replica connections go silent (the proxy holds every byte). */
  partitionAtMs: number;
  /** New connections work again; the old ones stay silent. */
  newConnectionsAtMs: number;
  /** The partition heals: the old, silent connections are dropped (as after a real one). */
  thawAtMs: number;
  /** The collector refuses every POST with 503 (a receiver outage). */
  outageFromMs: number;
  outageToMs: number;
  /** A session takes the exclusive boundary-usage lock and sits on it (a stuck cutover). */
  lockHoldAtMs: number;
  lockHoldMs: number;
  /** One replica is frozen and SIGKILLed. */
  killAtMs: number;
}

/** The default plan for a run of `durationMs` (30 s: partition 3–13.5 s, kill at 27.9 s). */
export function planFaults(durationMs: number): FaultPlan {
  const at = (fraction: number): number => Math.round(durationMs * fraction);
  const partitionAtMs = at(0.1);
  return {
    partitionAtMs,
    // New connections hang for a few seconds: a failover's DNS/VIP switch, a reconnect storm.
    newConnectionsAtMs: partitionAtMs + Math.min(3_000, at(0.1)),
    thawAtMs: at(0.45),
    // The outage starts as the partition heals, when the reports held back by it are due, so
    // every delivery attempt meets it, and lasts long enough (9 s of 30) for the delivery
    // alert's window and `for` (1 + 5 flush intervals). The lock hold comes after it: a
    // reporter whose collection waits on the lock delivers nothing meanwhile, which would
    // thin out the failed attempts the delivery alert needs.
    outageFromMs: at(0.45),
    outageToMs: at(0.75),
    lockHoldAtMs: at(0.75),
    lockHoldMs: at(0.15),
    killAtMs: at(0.93),
  };
}

/** What actually happened and when (ms into the traffic phase), for the report. */
export interface FaultEvents {
  partitionBeganMs?: number;
  /** Replica connections open through the proxy when it froze them. */
  connectionsFrozen?: number;
  newConnectionsMs?: number;
  thawedMs?: number;
  /** Silent connections the thaw dropped. */
  connectionsDropped?: number;
  outageFromMs?: number;
  outageToMs?: number;
  lockHeldFromMs?: number;
  lockHeldToMs?: number;
  lockHoldError?: string;
}

export interface FaultRunner {
  readonly events: FaultEvents;
  /** True while the partition is on (the backend terminator pauses: see run.ts). */
  readonly partitioned: boolean;
  /** Ends every fault at once (thaw, outage off, lock holder awaited) and waits for them. */
  stop(): Promise<void>;
}

export function startFaults(input: {
  plan: FaultPlan;
  proxy: FreezingProxy;
  collector: TelemetryCollector;
  prisma: PrismaClient;
  elapsed: () => number;
  view: ProgressView;
}): FaultRunner {
  const { plan, proxy, collector, prisma, elapsed, view } = input;
  const events: FaultEvents = {};
  const timers: NodeJS.Timeout[] = [];
  let partitioned = false;
  let lockHolder: Promise<void> | undefined;
  const at = (ms: number, action: () => void): void => {
    timers.push(setTimeout(action, Math.max(0, ms - elapsed())));
  };
  const seconds = (ms: number): string => `${(ms / 1_000).toFixed(1)}s`;

  const thaw = (): void => {
    if (!partitioned) return;
    partitioned = false;
    const before = proxy.openConnections();
    proxy.thaw();
    events.thawedMs = elapsed();
    events.connectionsDropped = before - proxy.openConnections();
    view.message(
      `chaos: partition healed at ${seconds(events.thawedMs)}; ${events.connectionsDropped} silent connection(s) dropped`,
    );
  };
  const endOutage = (): void => {
    if (events.outageFromMs === undefined || events.outageToMs !== undefined) return;
    collector.setOutage(false);
    events.outageToMs = elapsed();
  };

  at(plan.partitionAtMs, () => {
    partitioned = true;
    events.connectionsFrozen = proxy.openConnections();
    proxy.freeze({ newConnections: true });
    events.partitionBeganMs = elapsed();
    view.message(
      `chaos: partition at ${seconds(events.partitionBeganMs)}: ${events.connectionsFrozen} replica connection(s) and every new one go silent`,
    );
  });
  at(plan.newConnectionsAtMs, () => {
    if (!partitioned) return;
    // freeze() again freezes whatever is open (the hung new connections included) and lets
    // connections opened from now on through.
    proxy.freeze({ newConnections: false });
    events.newConnectionsMs = elapsed();
    view.message(
      `chaos: new connections work again at ${seconds(events.newConnectionsMs)}; the old ones stay silent`,
    );
  });
  at(plan.thawAtMs, thaw);
  at(plan.outageFromMs, () => {
    collector.setOutage(true);
    events.outageFromMs = elapsed();
    view.message(
      `chaos: collector outage from ${seconds(events.outageFromMs)} (every POST gets 503)`,
    );
  });
  at(plan.outageToMs, endOutage);
  at(plan.lockHoldAtMs, () => {
    lockHolder = holdExclusiveLock(prisma, plan.lockHoldMs, () => {
      events.lockHeldFromMs = elapsed();
      view.message(
        `chaos: holding the exclusive boundary-usage lock from ${seconds(events.lockHeldFromMs)} for ${seconds(plan.lockHoldMs)}`,
      );
    }).then(
      () => {
        events.lockHeldToMs = elapsed();
      },
      (error: unknown) => {
        events.lockHeldToMs = elapsed();
        events.lockHoldError = error instanceof Error ? error.message : String(error);
      },
    );
  });

  return {
    events,
    get partitioned() {
      return partitioned;
    },
    async stop() {
      for (const timer of timers) clearTimeout(timer);
      thaw();
      endOutage();
      await lockHolder;
    },
  };
}

/**
 * The cutover's lock, taken exclusively by the simulator's own connection (not through the
 * proxy) and held: every flush waits lock_timeout (2 s) and fails with LOCK_TIMEOUT, every
 * cutover too, as behind a reporter that stopped in the middle of its transaction.
 */
async function holdExclusiveLock(
  prisma: PrismaClient,
  holdMs: number,
  onLocked: () => void,
): Promise<void> {
  await prisma.$transaction(
    async (tx) => {
      await tx.$queryRaw`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)::text AS locked`;
      onLocked();
      await tx.$queryRaw`SELECT pg_sleep(${holdMs / 1_000}::float8)::text AS slept`;
    },
    {
      isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted,
      maxWait: 5_000,
      timeout: holdMs + 10_000,
    },
  );
}
