/**
 * Every wait has a deadline (issue 11 item 1): a connection that goes silent (no FIN, no RST:
 * a partition, a failover, a NAT that dropped the flow) must not hang a call. The freezing
 * proxy from @usagekit/testing makes existing connections silent without closing anything.
 */
import {
  createTestDatabase,
  startFreezingProxy,
  type FreezingProxy,
  type TestDatabase,
} from '@usagekit/testing';
import {
  ConnectionLostError,
  createPrismaClient,
  DeadlineExceededError,
  PermissionDeniedError,
  toDatabaseError,
  type PrismaClient,
} from '../src/index.js';
import { waitUntil } from './support/deferred.js';
import { query } from './support/sql.js';

let database: TestDatabase;
let proxy: FreezingProxy;
const clients: PrismaClient[] = [];
// Short for the test, yet long enough for a healthy query on a busy 2-core CI machine.
const DEADLINE_MS = 2_500;

beforeAll(async () => {
  database = await createTestDatabase();
});

beforeEach(async () => {
  proxy = await startFreezingProxy(database.databaseUrl);
});

afterEach(async () => {
  proxy.thaw();
  await Promise.all(clients.splice(0).map((client) => client.$disconnect().catch(() => undefined)));
  await proxy.close();
});

afterAll(async () => {
  await database?.drop();
});

function throughProxy(options: { maxConnections?: number; applicationName: string }): PrismaClient {
  const url = new URL(proxy.databaseUrl);
  url.searchParams.set('application_name', options.applicationName);
  const client = createPrismaClient({
    databaseUrl: url.toString(),
    maxConnections: options.maxConnections ?? 1,
    statementDeadlineMs: DEADLINE_MS,
    connectTimeoutMs: DEADLINE_MS,
    transactionOptions: { timeoutMs: 60_000 },
  });
  clients.push(client);
  return client;
}

async function backendPid(prisma: PrismaClient): Promise<number> {
  const [row] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
  return row!.pid;
}

/** Settles `promise`, returning its rejection (or failing the test if it resolved) and how long it took. */
async function rejectionWithin(
  promise: Promise<unknown>,
): Promise<{ error: unknown; elapsedMs: number }> {
  const started = Date.now();
  const error = await promise.then(
    () => {
      throw new Error('expected the call to be abandoned, but it succeeded');
    },
    (rejection: unknown) => rejection,
  );
  return { error, elapsedMs: Date.now() - started };
}

test('a query on a connection that went silent is abandoned at the deadline; the next runs on a fresh connection', async () => {
  const prisma = throughProxy({ applicationName: 'deadline_query' });
  const first = await backendPid(prisma);
  proxy.freeze();

  const { error, elapsedMs } = await rejectionWithin(prisma.$queryRaw`SELECT 1 AS one`);
  const typed = toDatabaseError(error);
  expect(typed).toBeInstanceOf(DeadlineExceededError);
  expect(typed).toMatchObject({
    code: 'DEADLINE_EXCEEDED',
    retryable: true,
    deadlineMs: DEADLINE_MS,
  });
  // Generous upper bound: the deadline plus scheduling noise on a busy machine.
  expect(elapsedMs).toBeLessThan(DEADLINE_MS + 10_000);

  // The abandoned connection was destroyed, not returned to the pool: with one pool slot,
  // the next call can only succeed on a new connection (new connections are not frozen).
  const second = await backendPid(prisma);
  expect(second).not.toBe(first);
  // pg_stat_activity: the abandoned backend is gone (its socket was closed), the new one is ours.
  await waitUntil(async () => {
    const rows = await query(
      database.databaseUrl,
      'SELECT 1 FROM pg_stat_activity WHERE pid = $1',
      [first],
    );
    return rows.length === 0;
  }, 'the abandoned backend to end');
  const live = await query<{ pid: number }>(
    database.databaseUrl,
    `SELECT pid FROM pg_stat_activity WHERE application_name = 'deadline_query'`,
  );
  expect(live.map((row) => row.pid)).toEqual([second]);
});

test('an interactive transaction whose connection goes silent mid-way settles with DeadlineExceededError', async () => {
  const prisma = throughProxy({ applicationName: 'deadline_transaction' });
  const first = await backendPid(prisma);
  const transaction = prisma.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(4242)`;
    proxy.freeze();
    await tx.$queryRaw`SELECT 1 AS one`;
  });
  const { error, elapsedMs } = await rejectionWithin(transaction);
  expect(toDatabaseError(error)).toBeInstanceOf(DeadlineExceededError);
  expect(elapsedMs).toBeLessThan(DEADLINE_MS * 2 + 10_000);
  expect(await backendPid(prisma)).not.toBe(first);
});

test('a COMMIT that gets no answer is abandoned too (its outcome unknown, as with a lost connection)', async () => {
  const prisma = throughProxy({ applicationName: 'deadline_commit' });
  await backendPid(prisma);
  const transaction = prisma.$transaction(async (tx) => {
    await tx.$queryRaw`SELECT 1 AS one`;
    // The callback returns; Prisma's COMMIT goes out on a silent connection.
    proxy.freeze();
  });
  const { error } = await rejectionWithin(transaction);
  expect(toDatabaseError(error)).toBeInstanceOf(DeadlineExceededError);
  await expect(backendPid(prisma)).resolves.toEqual(expect.any(Number));
});

test('a batched transaction and a statement stuck in the server are abandoned too, and the server-side statement is cancelled', async () => {
  const prisma = throughProxy({ applicationName: 'deadline_batch' });
  const first = await backendPid(prisma);
  // The statement reaches the server, then the network goes silent while it runs.
  const batch = prisma.$transaction([prisma.$executeRaw`SELECT pg_sleep(60)`]);
  await waitUntil(async () => {
    const rows = await query(
      database.databaseUrl,
      `SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`,
      [first],
    );
    return rows.length === 1;
  }, 'pg_sleep to run');
  proxy.freeze();
  const { error } = await rejectionWithin(batch);
  expect(toDatabaseError(error)).toBeInstanceOf(DeadlineExceededError);
  // The cancel request (a new connection, which the partition lets through) stopped the
  // server-side statement: no backend runs pg_sleep any more, although 60 s have not passed.
  await waitUntil(async () => {
    const rows = await query(
      database.databaseUrl,
      `SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`,
      [first],
    );
    return rows.length === 0;
  }, 'the abandoned statement to stop');
  expect(await backendPid(prisma)).not.toBe(first);
});

test('connecting to a server that accepts but never answers gives up at connectTimeoutMs', async () => {
  const prisma = throughProxy({ applicationName: 'deadline_connect' });
  proxy.freeze({ newConnections: true });
  const { error, elapsedMs } = await rejectionWithin(prisma.$queryRaw`SELECT 1 AS one`);
  expect(toDatabaseError(error)).toBeInstanceOf(ConnectionLostError);
  expect(elapsedMs).toBeLessThan(DEADLINE_MS * 2 + 10_000);
  proxy.thaw();
  await expect(backendPid(prisma)).resolves.toEqual(expect.any(Number));
});

test('a permission error (42501) names the connecting role through Prisma', async () => {
  const role = `usagekit_nobody_${process.pid}`;
  await query(database.databaseUrl, `DROP ROLE IF EXISTS ${role}`);
  // A password: the embedded server authenticates by password, PostgreSQL 15 here trusts.
  await query(database.databaseUrl, `CREATE ROLE ${role} LOGIN PASSWORD 'usagekit-test'`);
  // The schema it may enter, the table it may not touch.
  await query(database.databaseUrl, `GRANT USAGE ON SCHEMA usagekit TO ${role}`);
  try {
    const url = new URL(database.databaseUrl);
    url.username = role;
    url.password = 'usagekit-test';
    const denied = createPrismaClient({ databaseUrl: url.toString() });
    clients.push(denied);
    for (const attempt of [
      () => denied.$queryRaw`SELECT count(*) FROM usagekit.boundary_usage_stats`,
      () =>
        denied.$transaction(
          async (tx) => tx.$executeRaw`DELETE FROM usagekit.boundary_usage_stats`,
        ),
    ]) {
      const error = toDatabaseError(await attempt().catch((rejection: unknown) => rejection));
      expect(error).toBeInstanceOf(PermissionDeniedError);
      expect(error).toMatchObject({ role, object: 'table boundary_usage_stats', retryable: false });
      expect(error.message).toContain(`role "${role}"`);
    }
    await denied.$disconnect();
  } finally {
    await query(database.databaseUrl, `REVOKE USAGE ON SCHEMA usagekit FROM ${role}`).catch(
      () => undefined,
    );
    await query(database.databaseUrl, `DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
  }
});
