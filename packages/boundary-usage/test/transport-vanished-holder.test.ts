/**
 * A reporter that vanishes while holding the exclusive lock must not block the fleet
 * (issue 11 item 2). Its connection goes silent right after the cutover took the lock: the
 * server keeps the session "idle in transaction", lock held, until something ends it. The
 * store sets idle_in_transaction_session_timeout locally in every lock-taking transaction, so
 * the server ends that session and releases the lock; the vanished caller's own promise settles
 * at its client-side deadline with DeadlineExceededError.
 */
import { createPrismaClient, Prisma, toDatabaseError } from '@usagekit/db';
import { startFreezingProxy, type FreezingProxy } from '@usagekit/testing';
import { BoundaryUsageStore } from '../src/index.js';
import { gate, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
let proxy: FreezingProxy;
afterAll(async () => {
  proxy?.thaw();
  await proxy?.close();
});

const IDLE_IN_TRANSACTION_MS = 1_000;
/** Long on purpose: only the server-side timeout can free the lock within this test. */
const HOLDER_DEADLINE_MS = 60_000;

test('writers flush again once the server ends the vanished holder’s session, long before the holder itself would give up', async () => {
  proxy = await startFreezingProxy(db.database().databaseUrl);
  const holderClient = createPrismaClient({
    databaseUrl: proxy.databaseUrl,
    maxConnections: 1,
    statementDeadlineMs: HOLDER_DEADLINE_MS,
  });
  const holderStore = new BoundaryUsageStore(holderClient, {
    idleInTransactionTimeoutMs: IDLE_IN_TRANSACTION_MS,
  });
  const writerClient = db.client(2);
  const writer = new BoundaryUsageStore(writerClient, { lockTimeoutMs: 300 });
  const replicaId = uuid();
  try {
    let holderPid: number | undefined;
    const frozen = gate();
    const holding = holderClient
      .$transaction(
        async (tx) => {
          await holderStore.getAndResetSummaryInTransaction(tx, { maxStalenessMs: 3_600_000 });
          const [backend] = await tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
          holderPid = backend!.pid;
          // The lock is held; now the network goes silent (no FIN, no RST).
          proxy.freeze();
          frozen.open();
          await tx.$queryRaw`SELECT 1 AS one`;
        },
        { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted, timeout: 60_000 },
      )
      .then(
        () => undefined,
        (error: unknown) => error,
      );

    // Writers fail with LOCK_TIMEOUT while the lock is held, then succeed once the server has
    // ended the idle session. 20 attempts of at least 300 ms: well past the store's 1 s, well
    // short of the 10 s session default that createPrismaClient would also apply.
    await frozen.promise;
    let flushed = false;
    for (let attempt = 0; attempt < 20; attempt++) {
      const result = await writer
        .upsertStats({
          replicaId,
          sequence: BigInt(attempt + 1),
          uniqueWorkspacesDelta: 0,
          uniqueUsersDelta: 0,
          uniqueWorkspacesCount: 0,
          uniqueUsersCount: 0,
          allowedRequests: 1,
          deniedRequests: 0,
        })
        .then(
          () => 'flushed' as const,
          (error: unknown) => toDatabaseError(error).code,
        );
      if (result === 'flushed') {
        flushed = true;
        break;
      }
      expect(result).toBe('LOCK_TIMEOUT');
    }
    // The server released the lock (the holder's own deadline is a minute away).
    expect(flushed).toBe(true);
    // pg_stat_activity: the server ended the holder's backend ("idle in transaction" timeout).
    expect(holderPid).toEqual(expect.any(Number));
    const rows = await writerClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ${holderPid}::int`;
    expect(rows[0]!.n).toBe(0n);

    // And the vanished caller's promise settles with a typed, retryable error: here the proxy
    // passes on the close of the server's end, so it is CONNECTION_LOST; in a real partition
    // nothing arrives and it is DEADLINE_EXCEEDED at statementDeadlineMs (packages/db tests).
    const error = toDatabaseError(await holding);
    expect(['CONNECTION_LOST', 'DEADLINE_EXCEEDED']).toContain(error.code);
    expect(error.retryable).toBe(true);
  } finally {
    proxy.thaw();
    await holderClient.$disconnect().catch(() => undefined);
  }
});
