import { randomUUID } from 'node:crypto';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import {
  ConnectionLostError,
  createPrismaClient,
  DatabaseError,
  DeadlockError,
  LockTimeoutError,
  NumericOverflowError,
  Prisma,
  sqlStateOf,
  StatementTimeoutError,
  toDatabaseError,
  TransactionTimeoutError,
  type PrismaClient,
} from '../src/index.js';
import { deferred } from './support/deferred.js';

// Every error here is caused for real in PostgreSQL through clients from createPrismaClient,
// then classified by toDatabaseError. The shapes are Prisma 7.10 + adapter-pg's: P2010 for
// raw SQL, P2034/P2020 for model queries, P2028 from the transaction manager, and a bare
// Error from pg once a connection is gone.

let database: TestDatabase;
const clients: PrismaClient[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  await database?.drop();
});

/** A separate client with its own pool: a stand-in for another replica. */
function replica(options: { maxConnections?: number } = {}): PrismaClient {
  const client = createPrismaClient({ databaseUrl: database.databaseUrl, ...options });
  clients.push(client);
  return client;
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject, but it resolved');
}

async function insertStatsRow(prisma: PrismaClient, allowedRequests = 0n): Promise<string> {
  const replicaId = randomUUID();
  await prisma.$executeRaw`
    INSERT INTO usagekit.boundary_usage_stats (replica_id, allowed_requests) VALUES (${replicaId}::uuid, ${allowedRequests}::bigint)`;
  return replicaId;
}

async function allowedRequests(prisma: PrismaClient, replicaId: string): Promise<bigint> {
  const [row] = await prisma.$queryRaw<{ allowed_requests: bigint }[]>`
    SELECT allowed_requests FROM usagekit.boundary_usage_stats WHERE replica_id = ${replicaId}::uuid`;
  return row!.allowed_requests;
}

describe('a real deadlock (40P01)', () => {
  type Update = (tx: Prisma.TransactionClient, replicaId: string) => Promise<unknown>;
  const viaRawSql: Update = (tx, replicaId) =>
    tx.$executeRaw`UPDATE usagekit.boundary_usage_stats SET allowed_requests = allowed_requests + 1 WHERE replica_id = ${replicaId}::uuid`;
  const viaModel: Update = (tx, replicaId) =>
    tx.boundaryUsageStats.update({
      where: { replicaId },
      data: { allowedRequests: { increment: 1 } },
    });

  /**
   * Two transactions on two clients each lock one row, wait until the other holds its row,
   * then ask for the other's: a lock cycle PostgreSQL breaks after deadlock_timeout by
   * aborting one of them.
   */
  async function crossUpdates(update: Update) {
    const [a, b] = [replica(), replica()];
    const [first, second] = [await insertStatsRow(a), await insertStatsRow(a)];
    const aHoldsFirst = deferred();
    const bHoldsSecond = deferred();
    const outcomes = await Promise.allSettled([
      a.$transaction(async (tx) => {
        await update(tx, first);
        aHoldsFirst.resolve();
        await bHoldsSecond.promise;
        await update(tx, second);
      }),
      b.$transaction(async (tx) => {
        await update(tx, second);
        bHoldsSecond.resolve();
        await aHoldsFirst.promise;
        await update(tx, first);
      }),
    ]);
    const rejected = outcomes.filter((outcome) => outcome.status === 'rejected');
    expect(rejected).toHaveLength(1);
    // The survivor committed both increments; the victim's first increment was rolled back.
    expect([await allowedRequests(a, first), await allowedRequests(a, second)]).toEqual([1n, 1n]);
    return (rejected[0] as PromiseRejectedResult).reason as unknown;
  }

  test('through $executeRaw becomes DeadlockError', async () => {
    const raw = await crossUpdates(viaRawSql);
    expect(raw).toMatchObject({ code: 'P2010' });

    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(DeadlockError);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({
      name: 'DeadlockError',
      code: 'DEADLOCK',
      sqlState: '40P01',
      retryable: true,
    });
    expect(error.cause).toBe(raw);
  });

  test('through a model query (P2034) is still a DeadlockError, not a serialization failure', async () => {
    const raw = await crossUpdates(viaModel);
    expect(raw).toMatchObject({ code: 'P2034' });

    expect(toDatabaseError(raw)).toMatchObject({
      code: 'DEADLOCK',
      sqlState: '40P01',
      retryable: true,
    });
  });
});

test('lock_timeout on an advisory lock wait becomes LockTimeoutError (55P03)', async () => {
  const [a, b] = [replica(), replica()];
  const key = 0x7573_6167_7465_7374n;
  const held = deferred();
  const release = deferred();
  const holder = a.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${key}::bigint)`;
    held.resolve();
    await release.promise;
  });
  try {
    await held.promise;
    const raw = await rejectionOf(
      b.$transaction(async (tx) => {
        await tx.$queryRaw`SELECT set_config('lock_timeout', '100ms', true)`;
        await tx.$executeRaw`SELECT pg_advisory_xact_lock(${key}::bigint)`;
      }),
    );

    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect(error).toMatchObject({ code: 'LOCK_TIMEOUT', sqlState: '55P03', retryable: true });
    expect(error.cause).toBe(raw);
  } finally {
    release.resolve();
    await holder;
  }
  // Once the holder committed, the same wait succeeds: it was the lock, nothing else.
  await b.$transaction(async (tx) => {
    await tx.$queryRaw`SELECT set_config('lock_timeout', '1s', true)`;
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${key}::bigint)`;
  });
});

describe('a bigint counter past 2^63 - 1 (22003)', () => {
  test('through $executeRaw becomes NumericOverflowError, not retryable, row unchanged', async () => {
    const prisma = replica();
    const max = 2n ** 63n - 1n;
    const replicaId = await insertStatsRow(prisma, max);

    const raw = await rejectionOf(
      prisma.$executeRaw`UPDATE usagekit.boundary_usage_stats SET allowed_requests = allowed_requests + ${1n}::bigint WHERE replica_id = ${replicaId}::uuid`,
    );

    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(NumericOverflowError);
    expect(error).toMatchObject({ code: 'NUMERIC_OVERFLOW', sqlState: '22003', retryable: false });
    expect(error.cause).toBe(raw);
    expect(await allowedRequests(prisma, replicaId)).toBe(max);
  });

  test('through a model query (P2020) too', async () => {
    const prisma = replica();
    const replicaId = await insertStatsRow(prisma, 2n ** 63n - 1n);

    const raw = await rejectionOf(
      prisma.boundaryUsageStats.update({
        where: { replicaId },
        data: { allowedRequests: { increment: 1 } },
      }),
    );

    expect(raw).toMatchObject({ code: 'P2020' });
    expect(toDatabaseError(raw)).toMatchObject({ code: 'NUMERIC_OVERFLOW', sqlState: '22003' });
  });
});

describe('a connection terminated (pg_terminate_backend) while a transaction is open', () => {
  test('between statements becomes ConnectionLostError', async () => {
    const [victim, admin] = [replica(), replica()];
    const replicaId = await insertStatsRow(victim);

    const raw = await rejectionOf(
      victim.$transaction(async (tx) => {
        await tx.$executeRaw`UPDATE usagekit.boundary_usage_stats SET allowed_requests = 5 WHERE replica_id = ${replicaId}::uuid`;
        const [{ pid }] = await tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
        // The second argument waits until the backend has exited, so the next statement
        // always meets a closed connection.
        const [{ terminated }] = await admin.$queryRaw<{ terminated: boolean }[]>`
          SELECT pg_terminate_backend(${pid}::int, 10000) AS terminated`;
        expect(terminated).toBe(true);
        await tx.$queryRaw`SELECT 1`;
      }),
    );

    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(error).toMatchObject({ code: 'CONNECTION_LOST', retryable: true });
    expect(error.cause).toBe(raw);
    // The open transaction died with its connection.
    expect(await allowedRequests(admin, replicaId)).toBe(0n);
  });

  test('in the middle of a statement becomes ConnectionLostError with SQLSTATE 57P01', async () => {
    const [victim, admin] = [replica(), replica()];
    const replicaId = await insertStatsRow(victim);
    const pidKnown = deferred();
    let victimPid = 0;

    const outcome = rejectionOf(
      victim.$transaction(async (tx) => {
        await tx.$executeRaw`UPDATE usagekit.boundary_usage_stats SET allowed_requests = 5 WHERE replica_id = ${replicaId}::uuid`;
        [{ pid: victimPid }] = await tx.$queryRaw<
          { pid: number }[]
        >`SELECT pg_backend_pid() AS pid`;
        pidKnown.resolve();
        await tx.$executeRaw`SELECT pg_sleep(30)`;
      }),
    );
    let settled = false;
    const markSettled = () => (settled = true);
    void outcome.then(markSettled, markSettled);
    await pidKnown.promise;
    // Terminate only once the victim is inside pg_sleep, so the FATAL answers that statement.
    while (!settled) {
      const [{ sleeping }] = await admin.$queryRaw<{ sleeping: boolean }[]>`
        SELECT count(*) > 0 AS sleeping FROM pg_stat_activity
         WHERE pid = ${victimPid}::int AND state = 'active' AND query LIKE '%pg_sleep%'`;
      if (sleeping) break;
    }
    await admin.$queryRaw`SELECT pg_terminate_backend(${victimPid}::int, 10000)`;
    const raw = await outcome;

    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(error).toMatchObject({ code: 'CONNECTION_LOST', sqlState: '57P01', retryable: true });
    expect(await allowedRequests(admin, replicaId)).toBe(0n);
  });
});

describe("Prisma's interactive-transaction limits (P2028)", () => {
  test('a transaction that outlives its timeout becomes TransactionTimeoutError', async () => {
    const prisma = replica();
    const raw = await rejectionOf(
      prisma.$transaction(
        async (tx) => {
          await tx.$executeRaw`SELECT pg_sleep(1)`;
        },
        { timeout: 200 },
      ),
    );

    expect(raw).toMatchObject({ code: 'P2028' });
    const error = toDatabaseError(raw);
    expect(error).toBeInstanceOf(TransactionTimeoutError);
    // P2028 is Prisma's code, not a SQLSTATE.
    expect(error).toMatchObject({
      code: 'TRANSACTION_TIMEOUT',
      sqlState: undefined,
      retryable: true,
    });
    expect(error.cause).toBe(raw);
  });

  test('no pool connection within maxWait becomes TransactionTimeoutError', async () => {
    const prisma = replica({ maxConnections: 1 });
    const started = deferred();
    const release = deferred();
    const holder = prisma.$transaction(async () => {
      started.resolve();
      await release.promise;
    });
    try {
      await started.promise;
      const raw = await rejectionOf(prisma.$transaction(async () => undefined, { maxWait: 200 }));
      expect((raw as Error).message).toMatch(/Unable to start a transaction in the given time/);
      expect(toDatabaseError(raw)).toMatchObject({
        code: 'TRANSACTION_TIMEOUT',
        sqlState: undefined,
      });
    } finally {
      release.resolve();
      await holder;
    }
  });
});

test('statement_timeout becomes StatementTimeoutError (57014)', async () => {
  const prisma = replica();
  const raw = await rejectionOf(
    prisma.$transaction(async (tx) => {
      await tx.$queryRaw`SELECT set_config('statement_timeout', '100ms', true)`;
      await tx.$executeRaw`SELECT pg_sleep(5)`;
    }),
  );

  const error = toDatabaseError(raw);
  expect(error).toBeInstanceOf(StatementTimeoutError);
  expect(error).toMatchObject({ code: 'STATEMENT_TIMEOUT', sqlState: '57014', retryable: true });
});

test('any other failure is a plain DatabaseError with its SQLSTATE, not retryable', async () => {
  const prisma = replica();
  const raw = await rejectionOf(prisma.$executeRawUnsafe('SELEC 1'));

  const error = toDatabaseError(raw);
  expect(error.constructor).toBe(DatabaseError);
  expect(error).toMatchObject({
    name: 'DatabaseError',
    code: 'DATABASE_ERROR',
    sqlState: '42601',
    retryable: false,
  });
  expect(error.message).toContain('syntax error');
  expect(error.cause).toBe(raw);
  expect(sqlStateOf(raw)).toBe('42601');
});

test('toDatabaseError passes a DatabaseError through unchanged', async () => {
  const error = toDatabaseError(await rejectionOf(replica().$executeRawUnsafe('SELECT 1 / 0')));
  expect(error.sqlState).toBe('22012');
  expect(toDatabaseError(error)).toBe(error);
});
