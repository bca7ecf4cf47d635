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
  const adapter = new PrismaPg(pool, {
    disposeExternalPool: true,
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
