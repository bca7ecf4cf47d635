import type { PrismaClient } from '../generated/prisma/client.js';
import { adapterFactoryOf } from './client.js';
import { InvalidInputError } from './invalid-input.js';

export interface DisconnectOutcome {
  /**
   * 'disconnected': `$disconnect()` finished in time. 'forced': it did not; every connection of
   * a createPrismaClient client was destroyed (statements in flight fail, the server ends their
   * backends: a CancelRequest is not waited for) and `$disconnect()` then finished.
   * 'abandoned': it still had not finished at `timeoutMs` (a client of your own, or Prisma
   * stuck elsewhere); it is left running, and the process may exit regardless.
   */
  outcome: 'disconnected' | 'forced' | 'abandoned';
  /** Connections destroyed when forced. */
  destroyedConnections: number;
  elapsedMs: number;
}

export interface DisconnectOptions {
  /**
   * false: the client is closed for good, a createPrismaClient client refuses every later
   * query with ClientClosedError (CLIENT_CLOSED) instead of reconnecting, as Prisma otherwise
   * does on the next query. For a shutdown after which nothing may open a connection (late
   * retries, work queued behind a stuck call). Default true: Prisma's own behaviour. A client
   * of your own cannot be closed this way.
   */
  reconnect?: boolean;
}

/** Of the time given, what is kept for `$disconnect()` to finish after forcing: at most this. */
const AFTER_FORCE_MS = 500;

/**
 * `prisma.$disconnect()`, bounded. `$disconnect()` waits for every connection to come back to
 * the pool, and a connection stuck in a statement (a frozen server, a partition: no FIN, no
 * RST) comes back only at the client's statement deadline (15 s by default), later than a
 * shutdown budget allows. So at `timeoutMs` minus a short reserve the remaining connections
 * of a createPrismaClient client are destroyed, which ends their statements at once; resolves
 * within `timeoutMs` in every case, never rejects for the database's sake (a failed
 * `$disconnect()` counts as disconnected: nothing more can be done with the client).
 * Rejects with InvalidInputError (INVALID_INPUT) for a bad argument.
 */
export async function disconnectWithin(
  prisma: PrismaClient,
  timeoutMs: number,
  options: DisconnectOptions = {},
): Promise<DisconnectOutcome> {
  if (typeof (prisma as Partial<PrismaClient> | undefined)?.$disconnect !== 'function') {
    throw new InvalidInputError('prisma', prisma, 'a PrismaClient');
  }
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new InvalidInputError('timeoutMs', timeoutMs, 'a positive number of milliseconds');
  }
  const reconnect = options?.reconnect ?? true;
  if (typeof reconnect !== 'boolean') {
    throw new InvalidInputError('reconnect', reconnect, 'a boolean');
  }
  const startedAt = performance.now();
  const factory = adapterFactoryOf(prisma);
  // Before $disconnect(): a call that is only waiting for its turn must not reopen it.
  if (!reconnect) factory?.closeForGood();
  const disconnected = prisma.$disconnect().then(
    () => true as const,
    () => true as const,
  );
  const forceAfterMs = factory
    ? Math.max(0, timeoutMs - Math.min(AFTER_FORCE_MS, timeoutMs / 2))
    : timeoutMs;
  if (await within(disconnected, forceAfterMs)) {
    return { outcome: 'disconnected', destroyedConnections: 0, elapsedMs: elapsed(startedAt) };
  }
  if (!factory)
    return { outcome: 'abandoned', destroyedConnections: 0, elapsedMs: elapsed(startedAt) };
  const destroyedConnections = factory.destroyConnections();
  const finished = await within(disconnected, Math.max(0, timeoutMs - elapsed(startedAt)));
  return {
    outcome: finished ? 'forced' : 'abandoned',
    destroyedConnections,
    elapsedMs: elapsed(startedAt),
  };
}

async function within(work: Promise<true>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([work, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

function elapsed(startedAt: number): number {
  return Math.round(performance.now() - startedAt);
}
