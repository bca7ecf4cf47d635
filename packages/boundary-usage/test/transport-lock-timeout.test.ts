/**
 * lock_timeout covers every lock a flush takes, table locks included (issue 11 item 3).
 * PostgreSQL takes an INSERT's RowExclusive table lock at parse/bind, before any of the
 * statement's own code (its set_config('lock_timeout')) runs, so a queued LOCK TABLE, CREATE
 * INDEX or migration made the one-statement flush wait for as long as the holder held on.
 *
 * Two transports, both tested: a createPrismaClient client on a direct connection (session
 * settings bound the parse-time lock wait; the flush stays one statement) and a PrismaClient
 * of your own, which has no session settings (the flush then runs in a transaction that sets
 * lock_timeout before any statement touches a table).
 */
import { Client } from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  connectionProfile,
  createPrismaClient,
  LockTimeoutError,
  PrismaClient,
} from '@usagekit/db';
import { BoundaryUsageStore, type StoreOptions } from '../src/index.js';
import { useDatabase, uuid } from './helpers.js';

const db = useDatabase();
const own: PrismaClient[] = [];
afterAll(async () => {
  await Promise.all(own.map((client) => client.$disconnect().catch(() => undefined)));
});

const LOCK_TIMEOUT_MS = 300;

const transports = {
  /** createPrismaClient on a direct connection: session settings, one statement per flush. */
  'session settings (createPrismaClient, direct)': () => {
    const prisma = createPrismaClient({
      databaseUrl: db.database().databaseUrl,
      maxConnections: 1,
      lockTimeoutMs: LOCK_TIMEOUT_MS,
    });
    own.push(prisma);
    return prisma;
  },
  /** A PrismaClient built by hand: nothing is known about its sessions. */
  'a transaction (a PrismaClient of your own)': () => {
    const prisma = new PrismaClient({
      adapter: new PrismaPg({ connectionString: db.database().databaseUrl, max: 1 }),
    });
    own.push(prisma);
    return prisma;
  },
};

/** A plain connection that holds `LOCK TABLE … IN SHARE MODE` in an open transaction. */
async function holdTableLock(table: string): Promise<() => Promise<void>> {
  const holder = new Client({ connectionString: db.database().databaseUrl });
  holder.on('error', () => undefined);
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query(`LOCK TABLE usagekit.${table} IN SHARE MODE`);
  return async () => {
    await holder.query('ROLLBACK').catch(() => undefined);
    await holder.end();
  };
}

function flushOf(replicaId: string): Parameters<BoundaryUsageStore['upsertStats']>[0] {
  return {
    replicaId,
    sequence: 1n,
    uniqueWorkspacesDelta: 1,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    allowedRequests: 5,
    deniedRequests: 1,
    workspaceIds: [uuid()],
    userIds: [uuid()],
  };
}

describe.each(Object.entries(transports))('via %s', (label, makeClient) => {
  const storeOptions: StoreOptions = {
    lockTimeoutMs: LOCK_TIMEOUT_MS,
    transactionTimeoutMs: 5_000,
  };

  test('the profile says which transport the store picks', async () => {
    const profile = await connectionProfile(makeClient());
    expect(profile.sessionSettings).toBe(label.startsWith('session settings'));
  });

  test.each(['boundary_usage_stats', 'boundary_usage_ids', 'boundary_usage_flush_sequences'])(
    'a held LOCK TABLE %s IN SHARE MODE fails the default flush with LOCK_TIMEOUT instead of waiting for the holder',
    async (table) => {
      const store = new BoundaryUsageStore(makeClient(), storeOptions);
      await store.upsertStats({ ...flushOf(uuid()), workspaceIds: [], userIds: [] }); // warm: probe, connect
      const release = await holdTableLock(table);
      try {
        const started = Date.now();
        const error = await store.upsertStats(flushOf(uuid())).then(
          () => undefined,
          (rejection: unknown) => rejection,
        );
        // Settled while the holder still holds its lock: it did not wait for the holder.
        expect(error).toBeInstanceOf(LockTimeoutError);
        expect(error).toMatchObject({ code: 'LOCK_TIMEOUT', retryable: true });
        // Generous: lock_timeout plus scheduling noise on a shared machine.
        expect(Date.now() - started).toBeLessThan(LOCK_TIMEOUT_MS + 10_000);
      } finally {
        await release();
      }
    },
  );

  test('the cutover is bounded the same way', async () => {
    const store = new BoundaryUsageStore(makeClient(), storeOptions);
    const release = await holdTableLock('boundary_usage_stats');
    try {
      await expect(store.getAndResetSummary({ maxStalenessMs: 3_600_000 })).rejects.toBeInstanceOf(
        LockTimeoutError,
      );
    } finally {
      await release();
    }
  });
});
