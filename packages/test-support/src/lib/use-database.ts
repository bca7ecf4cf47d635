import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';

export interface SuiteDatabase {
  /** This suite's database (available from the first beforeAll on). */
  database: () => TestDatabase;
  /** A new PrismaClient on it, with its own pool: one replica. Closed in afterAll. */
  client: (maxConnections?: number) => PrismaClient;
  /**
   * Runs `close` in afterAll, before the clients are closed and the database dropped, also
   * when the test that opened the thing failed half way: a flush loop, a proxy, a server.
   * Deferred closers run last-in first-out, each bounded; idempotent closers (loop.stop())
   * may be called by the test too.
   */
  defer: (close: () => unknown) => void;
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
  const closers: (() => unknown)[] = [];
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    for (const close of closers.splice(0).reverse()) {
      await bounded(async () => close());
    }
    // A client stuck behind a session that never answers cannot disconnect; the drop ends
    // that session on the server, after which its disconnect completes too.
    const disconnected = Promise.all(
      clients.splice(0).map((client) => client.$disconnect().catch(() => undefined)),
    );
    await bounded(() => disconnected, 3_000);
    await database?.drop();
    await bounded(() => disconnected);
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
    defer: (close) => {
      closers.push(close);
    },
  };
}

const CLOSE_TIMEOUT_MS = 10_000;

/**
 * Every closing step gets a deadline and its errors are dropped: $disconnect() waits for the
 * pool's connections to come back, and one stuck in a query that never returns (a test that
 * failed while another session held a lock) would hold it forever. The drop that follows ends
 * those sessions on the server (WITH (FORCE)), which frees the client side too.
 */
async function bounded(close: () => Promise<unknown>, timeoutMs = CLOSE_TIMEOUT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.resolve()
      .then(close)
      .catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

function useDatabaseUrl(database: TestDatabase | undefined): string {
  if (!database) throw new Error('useDatabase(): create clients in beforeAll or in a test');
  return database.databaseUrl;
}
