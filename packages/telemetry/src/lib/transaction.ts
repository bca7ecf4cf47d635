import { Prisma, type PrismaClient } from '@usagekit/db';
import * as sql from './sql.js';

/**
 * Runs the reporter's short statements (delivery, retention) as one READ COMMITTED
 * transaction, whatever the database's default_transaction_isolation. Alone, each would run
 * in autocommit at the default level, and under REPEATABLE READ a lease (FOR UPDATE) or a
 * DELETE of a row that another reporter or a flush changed since the snapshot fails with
 * 40001 instead of re-reading the row. The bounds come first: lock waits end at lock_timeout,
 * and a client that goes silent mid-transaction is ended by the server, its row locks freed.
 */
export async function inReadCommitted(
  settings: {
    prisma: PrismaClient;
    lockTimeoutMs: number;
    idleInTransactionTimeoutMs: number;
  },
  statements: (prisma: PrismaClient) => Prisma.PrismaPromise<unknown>[],
): Promise<unknown[]> {
  const { prisma, lockTimeoutMs, idleInTransactionTimeoutMs } = settings;
  const [, ...results] = await prisma.$transaction(
    [
      prisma.$executeRaw(sql.setTransactionBounds({ lockTimeoutMs, idleInTransactionTimeoutMs })),
      ...statements(prisma),
    ],
    { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted },
  );
  return results;
}
