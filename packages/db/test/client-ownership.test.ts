/**
 * Issue 20 item 3: the host's queries never inherit usagekit's session settings, statement
 * deadline or statement preparation. usagekit's client (createPrismaClient) is usagekit's
 * alone; a host runs its own models on its own PrismaClient, here a plain `PrismaPg` client
 * in the same process, on the same database, while usagekit's client works beside it.
 * usagekit's client is checked too, so the test shows the settings are real and where they are.
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { Client } from 'pg';
import { createTestDatabase, quoteIdentifier, type TestDatabase } from '@usagekit/testing';
import { createPrismaClient, PrismaClient, toDatabaseError } from '../src/index.js';
import { MAX_NAMED_STATEMENTS } from '../src/lib/adapter-factory.js';

let database: TestDatabase;
const clients: PrismaClient[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  // An operator's choice that usagekit pins away on its own sessions only.
  await admin(
    `ALTER DATABASE ${quoteIdentifier(new URL(database.databaseUrl).pathname.slice(1))} SET default_transaction_isolation = 'repeatable read'`,
  );
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  await database?.drop();
});

async function admin(sql: string): Promise<void> {
  const client = new Client({ connectionString: database.databaseUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

interface SessionView {
  lock_timeout: string;
  idle_in_transaction_session_timeout: string;
  transaction_isolation: string;
  prepared: number;
}

async function sessionView(prisma: PrismaClient): Promise<SessionView> {
  const [row] = await prisma.$queryRaw<SessionView[]>`
    SELECT current_setting('lock_timeout') AS lock_timeout,
           current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction_session_timeout,
           current_setting('transaction_isolation') AS transaction_isolation,
           (SELECT count(*)::int FROM pg_prepared_statements) AS prepared`;
  return row as SessionView;
}

function usagekitClient(): PrismaClient {
  const client = createPrismaClient({
    databaseUrl: database.databaseUrl,
    maxConnections: 1,
    statementDeadlineMs: 500,
  });
  clients.push(client);
  return client;
}

function hostClient(): PrismaClient {
  const client = new PrismaClient({
    adapter: new PrismaPg({ connectionString: database.databaseUrl, max: 1 }),
  });
  clients.push(client);
  return client;
}

describe("one process, one database: usagekit's client and the host's own", () => {
  test("the host client gets none of usagekit's session settings, deadline or prepared statements", async () => {
    const usagekit = usagekitClient();
    const host = hostClient();
    // usagekit's connects first (a leak through process-wide defaults would then reach the
    // host's connections), then both work at once, usagekit's with distinct statement texts
    // (prepared by name).
    await usagekit.$queryRaw`SELECT 1 AS one`;
    await Promise.all([
      ...Array.from({ length: 5 }, (_, i) => usagekit.$queryRawUnsafe(`SELECT ${i}::int AS n`)),
      ...Array.from({ length: 5 }, (_, i) => host.$queryRawUnsafe(`SELECT ${i}::int AS n`)),
    ]);

    const ours = await sessionView(usagekit);
    const theirs = await sessionView(host);
    // usagekit's sessions: its bounds and read committed, and its statements prepared by name.
    expect(ours).toMatchObject({
      lock_timeout: '2s',
      idle_in_transaction_session_timeout: '10s',
      transaction_isolation: 'read committed',
    });
    expect(ours.prepared).toBeGreaterThan(0);
    // The host's: the database's own defaults, nothing prepared by name.
    expect(theirs).toEqual({
      lock_timeout: '0',
      idle_in_transaction_session_timeout: '0',
      transaction_isolation: 'repeatable read',
      prepared: 0,
    });

    // usagekit's statement deadline (500 ms here) is its own: the host's 800 ms query runs.
    await expect(host.$queryRaw`SELECT pg_sleep(0.8)::text AS slept`).resolves.toHaveLength(1);
    const abandoned = await usagekit.$queryRaw`SELECT pg_sleep(0.8)::text AS slept`.catch(
      (error: unknown) => toDatabaseError(error),
    );
    expect(abandoned).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  });

  test(`usagekit's client prepares at most ${MAX_NAMED_STATEMENTS} distinct texts per connection, whatever it is sent`, async () => {
    const usagekit = usagekitClient();
    const texts = MAX_NAMED_STATEMENTS + 40;
    for (let i = 0; i < texts; i++) {
      await usagekit.$queryRawUnsafe(`SELECT ${i}::int AS n, 'distinct text ${i}' AS t`);
    }
    // One connection (maxConnections 1): every text above went through it.
    const { prepared } = await sessionView(usagekit);
    expect(prepared).toBeLessThanOrEqual(MAX_NAMED_STATEMENTS);
    expect(prepared).toBeGreaterThan(0);
  });
});
