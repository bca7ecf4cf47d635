/**
 * The seed's stress shape (hugodutka's test on coder PR #21907, which deadlocked): writers
 * and concurrent get-and-reset loops, many rounds, in both lock modes. Proves invariants 1-2
 * of DESIGN.md: no deadlock, and exact conservation. USAGEKIT_STRESS_ROUNDS multiplies the
 * rounds (default 1 keeps `npm test` short).
 */
import type { PrismaClient } from '@usagekit/db';
import { BoundaryUsageStore, type LockMode } from '../src/index.js';
import { clearTables, describeStress, runSeedStress, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
const ROUNDS = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const HOUR_MS = 3_600_000;
const WRITERS = 5;
const CUTOVERS = 5;
const FLUSHES_PER_WRITER = 40 * ROUNDS;
const patient = { lockTimeoutMs: 20_000, transactionTimeoutMs: 30_000, maxWaitMs: 30_000 };

let admin: PrismaClient;
beforeAll(() => {
  admin = db.client(1);
});
beforeEach(() => clearTables(admin));

function errorCode(error: unknown): string {
  return String((error as { code?: unknown })?.code ?? 'UNKNOWN');
}

describe.each<[LockMode]>([['shared'], ['exclusive']])('%s lock mode', (lockMode) => {
  test(`${WRITERS} writers and ${CUTOVERS} concurrent cutovers: no deadlock, exact conservation`, async () => {
    const result = await runSeedStress({
      client: () => db.client(2),
      storeOptions: { ...patient, lockMode },
      flushesPerWriter: FLUSHES_PER_WRITER,
      writers: WRITERS,
      cutovers: CUTOVERS,
    });
    console.log(describeStress(`stress ${lockMode}`, ROUNDS, result));
    expect(result.errors).toEqual([]);
    expect(result.cutovers).toBeGreaterThan(0);
    expect(result.reported).toEqual(result.committed);
  });
});

test('exact uniques under concurrency: each period counts exactly the distinct ids its flushes carried', async () => {
  // Which period a flush lands in is recorded inside its own transaction, under the writer
  // lock: the generation can only move when a cutover holds the exclusive lock.
  await admin.$executeRaw`CREATE TABLE IF NOT EXISTS test_generation (gen int NOT NULL)`;
  await admin.$executeRaw`TRUNCATE test_generation`;
  await admin.$executeRaw`INSERT INTO test_generation VALUES (0)`;
  const pool = Array.from({ length: 60 }, () => uuid());
  const carried = new Map<number, { workspaces: Set<string>; users: Set<string> }>();
  const reported = new Map<number, { workspaces: bigint; users: bigint }>();
  let writing = true;

  const writers = Array.from({ length: 4 }, async (_, w) => {
    const client = db.client(2);
    const store = new BoundaryUsageStore(client, patient);
    const replicaId = uuid();
    for (let i = 0; i < 25 * ROUNDS; i++) {
      // Overlapping pools: writer w draws from a window of the shared pool.
      const workspaceIds = [pool[(w * 7 + i) % 60]!, pool[(w * 11 + i * 3) % 60]!];
      const userIds = [pool[(w * 5 + i * 2) % 30]!];
      const gen = await client.$transaction(
        async (tx) => {
          await store.upsertStatsInTransaction(tx, {
            replicaId,
            uniqueWorkspacesDelta: 0,
            uniqueUsersDelta: 0,
            uniqueWorkspacesCount: 0,
            uniqueUsersCount: 0,
            allowedRequests: 1,
            deniedRequests: 0,
            workspaceIds,
            userIds,
          });
          const rows = await tx.$queryRaw<{ gen: number }[]>`SELECT gen FROM test_generation`;
          return rows[0]!.gen;
        },
        { timeout: 30_000 },
      );
      const period = carried.get(gen) ?? { workspaces: new Set(), users: new Set() };
      workspaceIds.forEach((id) => period.workspaces.add(id));
      userIds.forEach((id) => period.users.add(id));
      carried.set(gen, period);
    }
  });
  const cutover = async (client: PrismaClient) => {
    const store = new BoundaryUsageStore(client, patient);
    await client.$transaction(
      async (tx) => {
        const summary = await store.getAndResetSummaryInTransaction(tx, {
          maxStalenessMs: HOUR_MS,
        });
        const rows = await tx.$queryRaw<
          { gen: number }[]
        >`UPDATE test_generation SET gen = gen + 1 RETURNING gen - 1 AS gen`;
        reported.set(rows[0]!.gen, {
          workspaces: summary.uniqueWorkspaces,
          users: summary.uniqueUsers,
        });
      },
      { timeout: 30_000 },
    );
  };
  const readers = Array.from({ length: 2 }, async () => {
    const client = db.client(1);
    while (writing) await cutover(client);
  });
  await Promise.all(writers);
  writing = false;
  await Promise.all(readers);
  await cutover(admin);

  expect(carried.size).toBeGreaterThan(1);
  for (const [gen, ids] of carried) {
    expect({ gen, ...reported.get(gen) }).toEqual({
      gen,
      workspaces: BigInt(ids.workspaces.size),
      users: BigInt(ids.users.size),
    });
  }
  for (const [gen, counts] of reported) {
    if (!carried.has(gen)) expect({ gen, ...counts }).toEqual({ gen, workspaces: 0n, users: 0n });
  }
});

test('flushes carrying the same new ids in opposite orders never deadlock', async () => {
  // Two replicas insert the same new ids into boundary_usage_ids at the same moment. Unordered,
  // each can hold one id's speculative insert while waiting for the other's: 40P01.
  const errors: string[] = [];
  const stores = [0, 1].map(() => new BoundaryUsageStore(db.client(1), patient));
  for (let round = 0; round < 20 * ROUNDS; round++) {
    const ids = Array.from({ length: 200 }, () => uuid());
    await Promise.all(
      [ids, [...ids].reverse()].map(async (order, i) => {
        try {
          await stores[i]!.upsertStats({
            replicaId: uuid(),
            uniqueWorkspacesDelta: 0,
            uniqueUsersDelta: 0,
            uniqueWorkspacesCount: 0,
            uniqueUsersCount: 0,
            allowedRequests: 1,
            deniedRequests: 0,
            workspaceIds: order,
            userIds: order,
          });
        } catch (error) {
          errors.push(errorCode(error));
        }
      }),
    );
  }
  expect(errors).toEqual([]);
});
