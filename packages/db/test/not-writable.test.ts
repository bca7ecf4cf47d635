/**
 * A server that cannot take our writes now (issue 19): a hot standby, a demoted primary back in
 * recovery, or default_transaction_read_only. Caused for real on one server (the replication
 * fixture's failovers are in packages/telemetry/test/failover.test.ts):
 *
 * - 25006 is a typed, retryable SERVER_NOT_WRITABLE, certainly not committed;
 * - the connection that answered it is never handed out again, on every path (a plain
 *   statement, an interactive transaction, a batch transaction);
 * - a new connection to a read-only server is refused at connect and tried again until the
 *   connect timeout, as libpq's target_session_attrs=read-write refuses it;
 * - a connection that could not be made (refused; 57P03 from a server shutting down, retried
 *   until the connect timeout) is a ConnectionLostError marked certainly not committed; one
 *   lost mid-transaction is not.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import {
  createTestDatabase,
  findFreePort,
  quoteIdentifier,
  startEmbeddedPostgres,
  withAdminClient,
  type TestDatabase,
} from '@usagekit/testing';
import {
  ConnectionLostError,
  createPrismaClient,
  ServerNotWritableError,
  toDatabaseError,
  type CreatePrismaClientOptions,
  type PrismaClient,
} from '../src/index.js';

let database: TestDatabase;
const clients: PrismaClient[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  // A table of the test's own: any write will do, and it does not depend on where usagekit's
  // tables live.
  await withAdminClient(database.databaseUrl, (admin) =>
    admin.query('CREATE TABLE not_writable_probe (id uuid PRIMARY KEY)'),
  );
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  await database?.drop();
});

function client(options: Partial<CreatePrismaClientOptions> = {}): PrismaClient {
  const prisma = createPrismaClient({
    databaseUrl: database.databaseUrl,
    maxConnections: 1,
    ...options,
  });
  clients.push(prisma);
  return prisma;
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject, but it resolved');
}

const insertRow = (
  prisma: PrismaClient | Parameters<Parameters<PrismaClient['$transaction']>[0]>[0],
) => prisma.$executeRaw`INSERT INTO not_writable_probe (id) VALUES (${randomUUID()}::uuid)`;

const backendPid = async (prisma: PrismaClient): Promise<number> =>
  (await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid;

/** Makes the client's one pooled connection read-only, as a server in recovery is. */
async function readOnlyConnection(prisma: PrismaClient): Promise<number> {
  await prisma.$executeRawUnsafe('SET default_transaction_read_only = on');
  return backendPid(prisma);
}

async function setDatabaseReadOnly(readOnly: boolean): Promise<void> {
  await withAdminClient(database.serverUrl, (admin) =>
    admin.query(
      `ALTER DATABASE ${quoteIdentifier(database.name)} ${readOnly ? 'SET default_transaction_read_only = on' : 'RESET default_transaction_read_only'}`,
    ),
  );
}

describe('25006 read_only_sql_transaction', () => {
  it('is a retryable SERVER_NOT_WRITABLE, certainly not committed', async () => {
    const prisma = client();
    const error = toDatabaseError(
      await rejectionOf(
        prisma.$transaction(async (tx) => {
          await tx.$executeRaw`SET TRANSACTION READ ONLY`;
          await insertRow(tx);
        }),
      ),
    );
    expect(error).toBeInstanceOf(ServerNotWritableError);
    expect(error).toMatchObject({
      code: 'SERVER_NOT_WRITABLE',
      sqlState: '25006',
      retryable: true,
      certainlyNotCommitted: true,
    });
  });
});

describe('the connection that answered 25006 is discarded', () => {
  it('after an interactive transaction (the reporter, the flush behind a pooler)', async () => {
    const prisma = client();
    const readOnlyPid = await readOnlyConnection(prisma);
    const failure = toDatabaseError(
      await rejectionOf(prisma.$transaction(async (tx) => insertRow(tx))),
    );
    expect(failure.code).toBe('SERVER_NOT_WRITABLE');
    // Before issue 19, ROLLBACK and a plain release() gave it back to the pool, and every
    // later transaction failed the same way on it.
    expect(await backendPid(prisma)).not.toBe(readOnlyPid);
    await expect(prisma.$transaction(async (tx) => insertRow(tx))).resolves.toBe(1);
  });

  it('after a batch transaction (delivery, purge)', async () => {
    const prisma = client();
    const readOnlyPid = await readOnlyConnection(prisma);
    // Two statements, as the reporter's batches have (a single one runs without BEGIN).
    const batch = () => [
      prisma.$executeRaw`SELECT set_config('lock_timeout', '2s', true)`,
      insertRow(prisma),
    ];
    const failure = toDatabaseError(await rejectionOf(prisma.$transaction(batch())));
    expect(failure.code).toBe('SERVER_NOT_WRITABLE');
    expect(await backendPid(prisma)).not.toBe(readOnlyPid);
    await expect(prisma.$transaction(batch())).resolves.toEqual([1, 1]);
  });

  it('after a single statement (the direct flush)', async () => {
    const prisma = client();
    const readOnlyPid = await readOnlyConnection(prisma);
    const failure = toDatabaseError(await rejectionOf(insertRow(prisma)));
    expect(failure.code).toBe('SERVER_NOT_WRITABLE');
    expect(await backendPid(prisma)).not.toBe(readOnlyPid);
    await expect(insertRow(prisma)).resolves.toBe(1);
  });
});

describe('a new connection to a read-only server', () => {
  afterEach(() => setDatabaseReadOnly(false));

  it('is refused at connect and tried again until the connect timeout', async () => {
    await setDatabaseReadOnly(true);
    const prisma = client({ connectTimeoutMs: 1_500 });
    const startedAt = Date.now();
    const failure = toDatabaseError(await rejectionOf(insertRow(prisma)));
    const elapsedMs = Date.now() - startedAt;
    expect(failure).toBeInstanceOf(ServerNotWritableError);
    expect(failure.message).toMatch(/refused at connect.*default_transaction_read_only/);
    expect(failure.certainlyNotCommitted).toBe(true);
    // It kept trying (a write that reached the server would fail at once with 25006) and
    // gave up at the connect timeout, not later.
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    expect(elapsedMs).toBeLessThan(6_000);
  });

  it('is retried until the server takes writes, and the write then succeeds', async () => {
    await setDatabaseReadOnly(true);
    const prisma = client({ connectTimeoutMs: 10_000 });
    // The probe connects once first; make sure the pool's own connect meets the read-only server.
    const writing = prisma.$transaction(async (tx) => insertRow(tx));
    await new Promise((resolve) => setTimeout(resolve, 500));
    await setDatabaseReadOnly(false);
    await expect(writing).resolves.toBe(1);
  });
});

describe('lost connections', () => {
  it('one that could not be made is certainly not committed', async () => {
    const port = await findFreePort();
    const prisma = createPrismaClient({
      databaseUrl: `postgresql://postgres@127.0.0.1:${port}/postgres`,
      connectTimeoutMs: 2_000,
    });
    clients.push(prisma);
    const failure = toDatabaseError(await rejectionOf(prisma.$queryRaw`SELECT 1`));
    expect(failure).toBeInstanceOf(ConnectionLostError);
    expect(failure).toMatchObject({ retryable: true, certainlyNotCommitted: true });
  });

  it('57P03 (the database system is shutting down) is retried at connect, then certainly not committed', async () => {
    // A server of this test's own, in a smart shutdown: it keeps serving the session it has
    // and refuses new ones with 57P03 until that session ends.
    const parent = mkdtempSync(join(tmpdir(), 'usagekit-57p03-'));
    chmodSync(parent, 0o755);
    const dataDir = join(parent, 'data');
    const server = await startEmbeddedPostgres({ dataDir });
    const holder = new Client({ connectionString: server.url });
    holder.on('error', () => undefined);
    try {
      await holder.connect();
      const postmaster = Number(
        readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0],
      );
      process.kill(postmaster, 'SIGTERM');
      // via 'direct': no probe, so the pool's own connect meets the refusal.
      const prisma = createPrismaClient({
        databaseUrl: server.url,
        via: 'direct',
        connectTimeoutMs: 1_500,
      });
      clients.push(prisma);
      const startedAt = Date.now();
      const failure = toDatabaseError(await rejectionOf(prisma.$queryRaw`SELECT 1`));
      const elapsedMs = Date.now() - startedAt;
      expect(failure).toBeInstanceOf(ConnectionLostError);
      expect(failure).toMatchObject({
        sqlState: '57P03',
        retryable: true,
        certainlyNotCommitted: true,
      });
      // Retried until the connect timeout, as a refusal for being read-only is.
      expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
      expect(elapsedMs).toBeLessThan(6_000);
    } finally {
      // stop() turns the smart shutdown into a fast one, which ends the holder too.
      await server.stop();
      await holder.end().catch(() => undefined);
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('one lost mid-transaction is not known to be uncommitted', async () => {
    const prisma = client();
    const failure = toDatabaseError(
      await rejectionOf(
        prisma.$transaction(async (tx) => {
          await tx.$executeRaw`SELECT pg_terminate_backend(pg_backend_pid())`;
        }),
      ),
    );
    expect(failure).toBeInstanceOf(ConnectionLostError);
    expect(failure).toMatchObject({ retryable: true, certainlyNotCommitted: false });
  });
});
