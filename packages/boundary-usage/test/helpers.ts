import { randomUUID } from 'node:crypto';
import { createPrismaClient, LockIds, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';

/**
 * A fresh database for this suite plus any number of PrismaClients on it, each standing for
 * a separate replica (its own pool). Everything is closed and dropped in afterAll.
 */
export function useDatabase(): {
  database: () => TestDatabase;
  client: (maxConnections?: number) => PrismaClient;
} {
  let database: TestDatabase | undefined;
  const clients: PrismaClient[] = [];
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
    await database?.drop();
  });
  return {
    database: () => database!,
    client: (maxConnections = 4) => {
      const client = createPrismaClient({ databaseUrl: database!.databaseUrl, maxConnections });
      clients.push(client);
      return client;
    },
  };
}

export const uuid = (): string => randomUUID();

/** A promise plus its resolver, for holding a transaction open at a chosen point. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Polls until `check` returns true (bounded; throws if it never does). */
export async function waitUntil(
  check: () => Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** True when some backend of this database is waiting for an advisory lock. */
export async function someoneWaitsForAdvisoryLock(observer: PrismaClient): Promise<boolean> {
  const rows = await observer.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM pg_locks
     WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
  return rows[0]!.n > 0n;
}

export async function clearTables(prisma: PrismaClient): Promise<void> {
  await prisma.$executeRaw`TRUNCATE boundary_usage_stats, boundary_usage_ids, boundary_usage_flush_sequences`;
}

/**
 * Holds the boundary-usage lock EXCLUSIVE in an open transaction on `holder`, as a cutover
 * does, until the returned function is called. Resolves once `observer` sees it granted.
 */
export async function holdCutoverLock(
  holder: PrismaClient,
  observer: PrismaClient,
): Promise<() => Promise<void>> {
  const release = gate();
  const held = holder.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)`;
      await release.promise;
    },
    { timeout: 60_000 },
  );
  await waitUntil(async () => {
    const rows = await observer.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
    return rows[0]!.n > 0n;
  }, 'the lock is held');
  return async () => {
    release.open();
    await held;
  };
}
