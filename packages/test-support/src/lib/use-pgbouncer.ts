import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { startPgBouncer, type PgBouncer } from '@usagekit/testing';
import type { SuiteDatabase } from './use-database.js';

export interface SuitePgBouncer {
  /** The PgBouncer in front of the suite's database (available from its beforeAll on). */
  bouncer: () => PgBouncer;
  /** A new PrismaClient through PgBouncer, with its own pool: one replica. */
  client: (maxConnections?: number) => PrismaClient;
}

/**
 * A PgBouncer (transaction pooling, at most `serverConnections` server connections) in front
 * of `db`'s database, started in beforeAll. Call it after useDatabase(), in the suite or the
 * describe block that needs it (under requireProgram('pgbouncer', …)).
 *
 * Everything closes through db.defer(), last in first out, even when a test failed: what the
 * tests deferred (their flush loops) stops first, then the clients through PgBouncer
 * disconnect, then PgBouncer stops, so it has let go of its server connections before the
 * database is dropped. No afterAll has to be declared before useDatabase() for that.
 */
export function usePgBouncer(
  db: SuiteDatabase,
  options: { serverConnections?: number } = {},
): SuitePgBouncer {
  let bouncer: PgBouncer | undefined;
  const clients: PrismaClient[] = [];
  beforeAll(async () => {
    const started = await startPgBouncer(db.database().databaseUrl, options);
    bouncer = started;
    // Last in, first out: the clients disconnect (together) before PgBouncer stops, and after
    // whatever the tests deferred later (their flush loops).
    db.defer(() => started.stop());
    db.defer(() =>
      Promise.all(clients.splice(0).map((client) => client.$disconnect().catch(() => undefined))),
    );
  }, 30_000);
  const running = (): PgBouncer => {
    if (!bouncer) throw new Error('usePgBouncer(): PgBouncer runs from beforeAll on');
    return bouncer;
  };
  return {
    bouncer: running,
    client: (maxConnections = 2) => {
      const client = createPrismaClient({ databaseUrl: running().databaseUrl, maxConnections });
      clients.push(client);
      return client;
    },
  };
}
