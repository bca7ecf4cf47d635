import { randomUUID } from 'node:crypto';
import { LockIds, type PrismaClient } from '@usagekit/db';
import { useDatabase } from '@usagekit/test-support';
import { BoundaryUsageStore, type StoreOptions } from '../src/index.js';
import { gate, waitUntil } from '@usagekit/testing';

export { gate, waitUntil };

// One useDatabase() for every package's suites (closes clients and drops the database even
// when a test fails): @usagekit/test-support.
export { useDatabase };

export const uuid = (): string => randomUUID();

/** True when some backend of this database is waiting for an advisory lock. */
export async function someoneWaitsForAdvisoryLock(observer: PrismaClient): Promise<boolean> {
  const rows = await observer.$queryRaw<{ n: bigint }[]>`
    SELECT count(*) AS n FROM pg_locks
     WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
  return rows[0]!.n > 0n;
}

export async function clearTables(prisma: PrismaClient): Promise<void> {
  await prisma.$executeRaw`TRUNCATE usagekit.boundary_usage_stats, usagekit.boundary_usage_ids, usagekit.boundary_usage_flush_sequences`;
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

export interface SeedStressResult {
  flushes: number;
  cutovers: number;
  /** Error codes of every failed flush or cutover (must stay empty). */
  errors: string[];
  committed: { allowed: bigint; denied: bigint };
  /** Everything the cutovers returned, plus one final cutover after the writers stopped. */
  reported: { allowed: bigint; denied: bigint };
}

/**
 * The seed's stress shape (hugodutka's test on coder PR #21907, which deadlocked): `writers`
 * replicas flush known deltas while `cutovers` loops get-and-reset concurrently. Each writer
 * and each loop gets its own client from `client()`.
 */
export async function runSeedStress(options: {
  client: () => PrismaClient;
  storeOptions: StoreOptions;
  flushesPerWriter: number;
  writers?: number;
  cutovers?: number;
}): Promise<SeedStressResult> {
  const { client, storeOptions, flushesPerWriter, writers = 5, cutovers = 5 } = options;
  const result: SeedStressResult = {
    flushes: writers * flushesPerWriter,
    cutovers: 0,
    errors: [],
    committed: { allowed: 0n, denied: 0n },
    reported: { allowed: 0n, denied: 0n },
  };
  const codeOf = (error: unknown) => String((error as { code?: unknown })?.code ?? error);
  const report = (summary: { allowedRequests: bigint; deniedRequests: bigint }) => {
    result.reported.allowed += summary.allowedRequests;
    result.reported.denied += summary.deniedRequests;
  };
  let writing = true;
  const writing$ = Array.from({ length: writers }, async (_, w) => {
    const store = new BoundaryUsageStore(client(), storeOptions);
    const replicaId = uuid();
    for (let i = 0; i < flushesPerWriter; i++) {
      const allowed = BigInt(1 + ((i * 7 + w) % 13));
      const denied = BigInt((i + w) % 5);
      try {
        await store.upsertStats({
          replicaId,
          sequence: BigInt(i + 1),
          uniqueWorkspacesDelta: 1,
          uniqueUsersDelta: 1,
          uniqueWorkspacesCount: 1,
          uniqueUsersCount: 1,
          allowedRequests: allowed,
          deniedRequests: denied,
        });
        result.committed.allowed += allowed;
        result.committed.denied += denied;
      } catch (error) {
        result.errors.push(codeOf(error));
      }
    }
  });
  const cutting$ = Array.from({ length: cutovers }, async () => {
    const store = new BoundaryUsageStore(client(), storeOptions);
    while (writing) {
      try {
        report(await store.getAndResetSummary({ maxStalenessMs: 3_600_000 }));
        result.cutovers++;
      } catch (error) {
        result.errors.push(codeOf(error));
      }
    }
  });
  await Promise.all(writing$);
  writing = false;
  await Promise.all(cutting$);
  report(
    await new BoundaryUsageStore(client(), storeOptions).getAndResetSummary({
      maxStalenessMs: 3_600_000,
    }),
  );
  return result;
}

export function describeStress(label: string, rounds: number, result: SeedStressResult): string {
  const deadlocks = result.errors.filter((code) => code === 'DEADLOCK').length;
  return (
    `[${label}] rounds=${rounds} flushes=${result.flushes} cutovers=${result.cutovers} ` +
    `errors=${result.errors.length} deadlocks=${deadlocks} ` +
    `committed=${result.committed.allowed}/${result.committed.denied} ` +
    `reported=${result.reported.allowed}/${result.reported.denied}`
  );
}
