import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';

export interface SuiteDatabase {
  /** This suite's database (available from the first beforeAll on). */
  database: () => TestDatabase;
  /** A new PrismaClient on it, with its own pool: one replica. Closed in afterAll. */
  client: (maxConnections?: number) => PrismaClient;
}

/**
 * A fresh database for this suite plus any number of PrismaClients on it, each standing for
 * a separate replica (its own pool). Call it at the top of a suite (or a describe block).
 *
 * afterAll closes every client and then drops the database WITH (FORCE), which ends whatever
 * session a failed test left open (an open transaction, a held lock, a client the test never
 * reached its cleanup for). So a failing suite still releases everything and Jest exits by
 * itself. Every step is bounded and independent: one client that cannot disconnect does not
 * keep the others, or the drop, from running.
 */
export function useDatabase(): SuiteDatabase {
  let database: TestDatabase | undefined;
  const clients: PrismaClient[] = [];
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all(clients.splice(0).map((client) => disconnectBounded(client)));
    await database?.drop();
  });
  return {
    database: () => {
      if (!database) throw new Error('useDatabase(): the database exists from beforeAll on');
      return database;
    },
    client: (maxConnections = 4) => {
      const client = createPrismaClient({
        databaseUrl: useDatabaseUrl(database),
        maxConnections,
      });
      clients.push(client);
      return client;
    },
  };
}

const DISCONNECT_TIMEOUT_MS = 10_000;

/**
 * $disconnect() waits for the pool's clients to be released; a client stuck in a query that
 * never returns (a test that failed mid-lock) would hold it forever. The drop below ends
 * those sessions, so after the deadline we go on without it.
 */
async function disconnectBounded(client: PrismaClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.$disconnect().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, DISCONNECT_TIMEOUT_MS);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

function useDatabaseUrl(database: TestDatabase | undefined): string {
  if (!database) throw new Error('useDatabase(): create clients in beforeAll or in a test');
  return database.databaseUrl;
}
