import { createHash } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import { Pool } from 'pg';
import { PrismaClient } from '../generated/prisma/client.js';
import { noopLogger, redactDatabaseUrl, type Logger } from './logger.js';

export interface CreatePrismaClientOptions {
  databaseUrl: string;
  /** Pool size. Each replica needs one per concurrent transaction; default 10. */
  maxConnections?: number;
  /** Defaults for every interactive `$transaction` of this client. */
  transactionOptions?: { maxWaitMs?: number; timeoutMs?: number };
  /** Where pool errors (an idle connection dropped by the server, say) are reported. */
  logger?: Logger;
  /**
   * Send every statement as a named prepared statement, planned once per connection. The
   * flush's statement then costs PostgreSQL about a third of the CPU (docs/perf: 2.2× the
   * flush throughput at 16 replicas). Off by default: named statements do not survive
   * PgBouncer in transaction mode before 1.21 (and need max_prepared_statements after it).
   * Each distinct SQL text is prepared once per connection, so enable it for clients that
   * run a bounded set of statements, such as usagekit's.
   */
  preparedStatements?: boolean;
}

export const DEFAULT_TRANSACTION_MAX_WAIT_MS = 5_000;
export const DEFAULT_TRANSACTION_TIMEOUT_MS = 10_000;

/**
 * A PrismaClient on `@prisma/adapter-pg` with a pool of our own. We own the pool so that an
 * error on an idle connection (pg_terminate_backend, a server restart) is logged instead of
 * crashing the process: `pg.Pool` re-emits it as an 'error' event, and an unhandled 'error'
 * event kills Node.
 */
export function createPrismaClient(options: CreatePrismaClientOptions): PrismaClient {
  const { databaseUrl, maxConnections = 10, logger = noopLogger } = options;
  if (typeof databaseUrl !== 'string' || databaseUrl.length === 0) {
    throw new TypeError('createPrismaClient: databaseUrl must be a non-empty postgres:// URL');
  }
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
    throw new RangeError(
      `createPrismaClient: maxConnections must be a positive integer, got ${String(maxConnections)}`,
    );
  }
  const pool = new Pool({ connectionString: databaseUrl, max: maxConnections });
  const where = redactDatabaseUrl(databaseUrl);
  pool.on('error', (error) => {
    logger.warn('usagekit: idle database connection failed; the pool replaces it', {
      database: where,
      error: error.message,
    });
  });
  // pg-pool drops its own 'error' listener from a connection as it hands it out, and
  // adapter-pg adds one only once `await pool.connect()` has resumed. A FATAL that arrives in
  // the same read as the new connection's ReadyForQuery (its backend terminated, or the server
  // shutting down, just as it became ready) is emitted in between, to nobody: Node turns an
  // unhandled 'error' event into an exception that kills the process, and every count not yet
  // flushed dies with it (found by packages/telemetry/test/faults.test.ts). So each connection
  // keeps a listener of its own for life; the connection is unusable afterwards, and the next
  // query on it fails with ConnectionLostError, which callers retry.
  pool.on('connect', (connection) => {
    connection.on('error', (error) => {
      // The pool or the adapter also listens, and reports it.
      if (connection.listenerCount('error') > 1) return;
      logger.warn('usagekit: database connection failed while being handed out', {
        database: where,
        error: error.message,
      });
    });
  });
  const adapter = new PrismaPg(pool, {
    disposeExternalPool: true,
    statementNameGenerator: options.preparedStatements ? statementName : undefined,
    // A connection that breaks while checked out: the caller gets ConnectionLostError; this
    // leaves a trace in the logs too.
    onConnectionError: (error) =>
      logger.warn('usagekit: database connection failed during a query', {
        database: where,
        error: error.message,
      }),
  });
  return new PrismaClient({
    adapter,
    transactionOptions: {
      maxWait: options.transactionOptions?.maxWaitMs ?? DEFAULT_TRANSACTION_MAX_WAIT_MS,
      timeout: options.transactionOptions?.timeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS,
    },
  });
}

/** A name per distinct SQL text: node-postgres prepares it once per connection, then reuses it. */
function statementName(query: { sql: string }): string {
  return `usagekit_${createHash('sha1').update(query.sql).digest('hex').slice(0, 24)}`;
}
