/**
 * Session settings on a direct connection, the connection profile, and prepared statements
 * behind PgBouncer (issue 11 items 3 and 6, issue 13's "through PgBouncer with no
 * configuration").
 */
import { Client } from 'pg';
import {
  createTestDatabase,
  PGBOUNCER_INSTALL_HINT,
  quoteIdentifier,
  requireProgram,
  startPgBouncer,
  type PgBouncer,
  type TestDatabase,
} from '@usagekit/testing';
import {
  connectionProfile,
  createPrismaClient,
  LockTimeoutError,
  PrismaClient,
  PreparedStatementMismatchError,
  toDatabaseError,
  type CreatePrismaClientOptions,
} from '../src/index.js';
import { PrismaPg } from '@prisma/adapter-pg';

let database: TestDatabase;
const clients: PrismaClient[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  await database?.drop();
});

function client(options: Partial<CreatePrismaClientOptions> = {}): PrismaClient {
  const prisma = createPrismaClient({
    databaseUrl: database.databaseUrl,
    maxConnections: 1,
    ...options,
  });
  clients.push(prisma);
  return prisma;
}

async function settings(prisma: PrismaClient): Promise<Record<string, string>> {
  const [row] = await prisma.$queryRaw<Record<string, string>[]>`
    SELECT current_setting('lock_timeout') AS lock_timeout,
           current_setting('idle_in_transaction_session_timeout') AS idle,
           current_setting('statement_timeout') AS statement_timeout,
           current_setting('default_transaction_isolation') AS isolation,
           current_setting('transaction_isolation') AS current_isolation`;
  return row!;
}

/** Opens a transaction on a plain pg connection that holds `lock` until the returned function runs. */
async function holdInTransaction(sql: string): Promise<() => Promise<void>> {
  const holder = new Client({ connectionString: database.databaseUrl });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query(sql);
  return async () => {
    await holder.query('ROLLBACK').catch(() => undefined);
    await holder.end();
  };
}

describe('a direct connection', () => {
  test('is probed as direct: session settings on, prepared statements on (auto)', async () => {
    const prisma = client();
    await expect(connectionProfile(prisma)).resolves.toEqual({
      via: 'direct',
      sessionSettings: true,
      preparedStatements: true,
    });
    expect(await settings(prisma)).toEqual({
      lock_timeout: '2s',
      idle: '10s',
      // Not ours to set: an operator's ALTER DATABASE … SET statement_timeout stays in force.
      statement_timeout: '0',
      isolation: 'read committed',
      current_isolation: 'read committed',
    });
  });

  test("via: 'direct' or 'pooler' skips the probe and is taken as given", async () => {
    const direct = client({ via: 'direct' });
    await expect(connectionProfile(direct)).resolves.toEqual({
      via: 'direct',
      sessionSettings: true,
      preparedStatements: true,
    });
    expect((await settings(direct)).lock_timeout).toBe('2s');
    const pooled = client({ via: 'pooler' });
    await expect(connectionProfile(pooled)).resolves.toEqual({
      via: 'pooler',
      sessionSettings: false,
      preparedStatements: false,
    });
    expect((await settings(pooled)).lock_timeout).toBe('0');
  });

  test('the profile is found through $extends too', async () => {
    const extended = client().$extends({});
    expect(await connectionProfile(extended)).toMatchObject({
      via: 'direct',
      sessionSettings: true,
    });
  });

  test('a PrismaClient that createPrismaClient did not make is unknown', async () => {
    const plain = new PrismaClient({
      adapter: new PrismaPg({ connectionString: database.databaseUrl }),
    });
    await expect(connectionProfile(plain)).resolves.toEqual({
      via: 'unknown',
      sessionSettings: false,
      preparedStatements: false,
    });
    await plain.$disconnect();
  });

  test("the user's own options in the URL win, and the profile then does not count on the session", async () => {
    const url = new URL(database.databaseUrl);
    url.searchParams.set('options', '-c lock_timeout=5000');
    const prisma = createPrismaClient({ databaseUrl: url.toString(), maxConnections: 1 });
    clients.push(prisma);
    expect(await connectionProfile(prisma)).toMatchObject({
      via: 'direct',
      sessionSettings: false,
    });
    expect((await settings(prisma)).lock_timeout).toBe('5s');
  });

  test('lock_timeout bounds the table lock a statement takes while it is parsed (a queued LOCK TABLE)', async () => {
    const prisma = client({ lockTimeoutMs: 300 });
    await prisma.$queryRaw`SELECT 1 AS warm`;
    const release = await holdInTransaction(
      'LOCK TABLE usagekit.boundary_usage_stats IN SHARE MODE',
    );
    try {
      // The statement's own set_config comes too late: the RowExclusive lock on the table is
      // requested at parse/bind, under the session's lock_timeout, before the CTE runs.
      const error = await prisma.$executeRaw`
        WITH config AS MATERIALIZED (SELECT set_config('lock_timeout', '60s', true) AS v)
        INSERT INTO usagekit.boundary_usage_stats (replica_id) SELECT gen_random_uuid() FROM config`.then(
        () => undefined,
        (rejection: unknown) => toDatabaseError(rejection),
      );
      expect(error).toBeInstanceOf(LockTimeoutError);
    } finally {
      await release();
    }
  });

  test('read committed even when the database default is serializable', async () => {
    const name = quoteIdentifier(database.name);
    const admin = client();
    await admin.$executeRawUnsafe(
      `ALTER DATABASE ${name} SET default_transaction_isolation = 'serializable'`,
    );
    try {
      // Settings of ALTER DATABASE apply to new sessions: a new client.
      const prisma = client();
      const plain = new Client({ connectionString: database.databaseUrl });
      await plain.connect();
      const [{ isolation: plainIsolation }] = (
        await plain.query<{ isolation: string }>(
          `SELECT current_setting('transaction_isolation') AS isolation`,
        )
      ).rows as [{ isolation: string }];
      await plain.end();
      expect(plainIsolation).toBe('serializable');
      expect((await settings(prisma)).current_isolation).toBe('read committed');
      const inTransaction = await prisma.$transaction(
        async (tx) =>
          tx.$queryRaw<
            { isolation: string }[]
          >`SELECT current_setting('transaction_isolation') AS isolation`,
      );
      expect(inTransaction[0]!.isolation).toBe('read committed');
    } finally {
      await admin.$executeRawUnsafe(`ALTER DATABASE ${name} RESET default_transaction_isolation`);
    }
  });

  test('a prepared-statement mismatch (26000) is its own retryable error', async () => {
    const prisma = client({ preparedStatements: false });
    const error = toDatabaseError(
      await prisma
        .$executeRawUnsafe('EXECUTE usagekit_never_prepared')
        .catch((rejection: unknown) => rejection),
    );
    expect(error).toBeInstanceOf(PreparedStatementMismatchError);
    expect(error).toMatchObject({ sqlState: '26000', retryable: true });
  });
});

// Skipped, with one printed line, where pgbouncer is not installed; CI sets
// USAGEKIT_REQUIRE_PROGRAMS=1, which turns the skip into a failure.
const describeWithPgBouncer = requireProgram('pgbouncer', PGBOUNCER_INSTALL_HINT)
  ? describe
  : describe.skip;

describeWithPgBouncer('behind PgBouncer 1.18 in transaction mode', () => {
  let bouncer: PgBouncer;
  beforeAll(async () => {
    // One server connection: two client connections then meet the same server session, so a
    // named statement one of them prepared is "already there" for the other (42P05).
    bouncer = await startPgBouncer(database.databaseUrl, { serverConnections: 1 });
  }, 30_000);
  afterAll(async () => {
    await Promise.all(
      clients.splice(0).map((prisma) => prisma.$disconnect().catch(() => undefined)),
    );
    await bouncer?.stop();
  });

  function bounced(options: Partial<CreatePrismaClientOptions> = {}): PrismaClient {
    const prisma = createPrismaClient({
      databaseUrl: bouncer.databaseUrl,
      maxConnections: 2,
      ...options,
    });
    clients.push(prisma);
    return prisma;
  }

  test('is detected: no session settings, prepared statements off (auto), and everything works', async () => {
    const prisma = bounced();
    await expect(connectionProfile(prisma)).resolves.toEqual({
      via: 'pooler',
      sessionSettings: false,
      preparedStatements: false,
    });
    const results = await Promise.all(
      Array.from(
        { length: 6 },
        (_, i) =>
          prisma.$queryRaw<{ n: number }[]>`SELECT ${i}::int AS n, pg_sleep(0.05)::text AS slept`,
      ),
    );
    expect(results.map((rows) => rows[0]!.n)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test('forced on, the client survives: the first mismatch switches it to unnamed statements and retries', async () => {
    const prisma = bounced({ preparedStatements: true });
    expect(await connectionProfile(prisma)).toEqual({
      via: 'pooler',
      sessionSettings: false,
      preparedStatements: true,
    });
    // Two client connections, one server connection: both prepare the same name there.
    const rounds = [];
    for (let round = 0; round < 3; round++) {
      rounds.push(
        ...(await Promise.all(
          Array.from(
            { length: 4 },
            (_, i) =>
              prisma.$queryRaw<
                { n: number }[]
              >`SELECT ${round * 4 + i}::int AS n, pg_sleep(0.05)::text AS slept`,
          ),
        )),
      );
    }
    expect(rounds.map((rows) => rows[0]!.n)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect((await connectionProfile(prisma)).preparedStatements).toBe(false);
    // Transactions after the switch run unnamed, on whatever server connection they get.
    const counts = await Promise.all(
      Array.from({ length: 4 }, () =>
        prisma.$transaction(async (tx) => {
          await tx.$executeRaw`SELECT pg_advisory_xact_lock_shared(77)`;
          return tx.$queryRaw<
            { n: bigint }[]
          >`SELECT count(*) AS n FROM usagekit.boundary_usage_stats`;
        }),
      ),
    );
    expect(counts.map((rows) => rows[0]!.n)).toEqual([0n, 0n, 0n, 0n]);
  });
});
