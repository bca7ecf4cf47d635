/**
 * Issue 20 item 5: every public call of @usagekit/db fails with a typed error: bad options
 * with InvalidInputError (INVALID_INPUT, `field`), database trouble with a DatabaseError
 * (never a raw pg error), and an async call rejects instead of throwing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createTestDatabase,
  findFreePort,
  withDatabase,
  type TestDatabase,
} from '@usagekit/testing';
import {
  applyRoles,
  ClientClosedError,
  ConnectionLostError,
  createPrismaClient,
  DatabaseError,
  disconnectWithin,
  finishSchemaUpgrade,
  InvalidInputError,
  migrate,
  schemaTables,
  toDatabaseError,
  type CreatePrismaClientOptions,
} from '../src/index.js';

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.drop();
});

/** Calls `call`, and fails the test if it throws synchronously; returns its promise. */
function asyncOnly(call: () => Promise<unknown>): Promise<unknown> {
  let result: Promise<unknown> | undefined;
  expect(() => {
    result = call();
  }).not.toThrow();
  return result as Promise<unknown>;
}

describe('createPrismaClient rejects bad options with INVALID_INPUT', () => {
  const url = 'postgresql://localhost/x';
  test.each<[string, unknown]>([
    ['options', undefined],
    ['databaseUrl', { databaseUrl: 42 }],
    ['maxConnections', { databaseUrl: url, maxConnections: 0 }],
    ['statementDeadlineMs', { databaseUrl: url, statementDeadlineMs: -1 }],
    ['connectTimeoutMs', { databaseUrl: url, connectTimeoutMs: Number.NaN }],
    ['lockTimeoutMs', { databaseUrl: url, lockTimeoutMs: '2s' }],
    ['via', { databaseUrl: url, via: 'pgbouncer' }],
    ['preparedStatements', { databaseUrl: url, preparedStatements: 'yes' }],
    ['transactionOptions.timeoutMs', { databaseUrl: url, transactionOptions: { timeoutMs: 0 } }],
  ])('%s', (field, options) => {
    let error: unknown;
    try {
      createPrismaClient(options as CreatePrismaClientOptions);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field, retryable: false });
  });
});

describe('migrate() rejects with typed errors', () => {
  test('databaseUrl undefined: INVALID_INPUT, not pg\'s "no PostgreSQL user name specified"', async () => {
    await expect(
      asyncOnly(() => migrate({ databaseUrl: undefined as unknown as string })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'databaseUrl' });
    await expect(asyncOnly(() => migrate(undefined as never))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'options',
    });
  });

  test('a bad lock policy or migrations directory: INVALID_INPUT', async () => {
    await expect(
      asyncOnly(() => migrate({ databaseUrl: database.databaseUrl, lockTimeoutMs: 0 })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    const missing = join(tmpdir(), 'usagekit-no-such-migrations-dir');
    await expect(
      asyncOnly(() => migrate({ databaseUrl: database.databaseUrl, migrationsDir: missing })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'migrationsDir' });
  });

  test('nothing listening: ConnectionLostError with the pg error as cause', async () => {
    const port = await findFreePort();
    const error = await asyncOnly(() =>
      migrate({ databaseUrl: `postgresql://postgres@127.0.0.1:${port}/postgres` }),
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConnectionLostError);
    expect(error).toMatchObject({ code: 'CONNECTION_LOST', retryable: true });
    expect((error as Error).cause).toBeDefined();
  });

  test('a database that does not exist: a DatabaseError with its SQLSTATE (3D000)', async () => {
    const error = await asyncOnly(() =>
      migrate({ databaseUrl: withDatabase(database.databaseUrl, 'usagekit_no_such_database') }),
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(error).toMatchObject({ sqlState: '3D000' });
  });

  test('an empty migrations directory on a real database still works', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'usagekit-empty-migrations-'));
    try {
      await expect(
        migrate({ databaseUrl: database.databaseUrl, migrationsDir: dir }),
      ).resolves.toEqual({
        applied: [],
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('finishSchemaUpgrade() rejects with typed errors, as migrate() does', () => {
  test('options or databaseUrl missing: INVALID_INPUT, never a synchronous throw', async () => {
    await expect(asyncOnly(() => finishSchemaUpgrade(undefined as never))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'options',
    });
    await expect(
      asyncOnly(() => finishSchemaUpgrade({ databaseUrl: undefined as unknown as string })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'databaseUrl' });
  });

  test('nothing listening: ConnectionLostError; a missing database: its SQLSTATE', async () => {
    const port = await findFreePort();
    const refused = await asyncOnly(() =>
      finishSchemaUpgrade({ databaseUrl: `postgresql://postgres@127.0.0.1:${port}/postgres` }),
    ).catch((caught: unknown) => caught);
    expect(refused).toBeInstanceOf(ConnectionLostError);
    const missing = await asyncOnly(() =>
      finishSchemaUpgrade({
        databaseUrl: withDatabase(database.databaseUrl, 'usagekit_no_such_database'),
      }),
    ).catch((caught: unknown) => caught);
    expect(missing).toBeInstanceOf(DatabaseError);
    expect(missing).toMatchObject({ sqlState: '3D000' });
  });
});

describe('a bad schema name is INVALID_INPUT (field schema) wherever it is given', () => {
  const url = 'postgresql://localhost/x';
  test.each(['public', 'Usagekit', 'pg_usage', 'a-b'])('%s', async (schema) => {
    const expected = { code: 'INVALID_INPUT', field: 'schema', value: schema };
    expect(() => createPrismaClient({ databaseUrl: url, schema })).toThrow(
      expect.objectContaining(expected),
    );
    expect(() => schemaTables(schema)).toThrow(expect.objectContaining(expected));
    await expect(asyncOnly(() => migrate({ databaseUrl: url, schema }))).rejects.toMatchObject(
      expected,
    );
    await expect(
      asyncOnly(() => finishSchemaUpgrade({ databaseUrl: url, schema })),
    ).rejects.toMatchObject(expected);
    await expect(asyncOnly(() => applyRoles({ databaseUrl: url, schema }))).rejects.toMatchObject(
      expected,
    );
  });
});

describe('applyRoles() rejects with typed errors', () => {
  test('databaseUrl undefined or an unreadable script: INVALID_INPUT', async () => {
    await expect(
      asyncOnly(() => applyRoles({ databaseUrl: undefined as unknown as string })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'databaseUrl' });
    await expect(
      asyncOnly(() =>
        applyRoles({ databaseUrl: database.databaseUrl, scriptPath: '/nonexistent/roles.sql' }),
      ),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'scriptPath' });
  });
});

describe('disconnectWithin', () => {
  test('rejects bad arguments with INVALID_INPUT', async () => {
    await expect(
      asyncOnly(() => disconnectWithin(undefined as never, 1_000)),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'prisma',
    });
    const prisma = createPrismaClient({ databaseUrl: database.databaseUrl });
    await expect(asyncOnly(() => disconnectWithin(prisma, 0))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'timeoutMs',
    });
    await expect(
      asyncOnly(() => disconnectWithin(prisma, 1_000, { reconnect: 'no' as never })),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'reconnect' });
    await expect(disconnectWithin(prisma, 2_000)).resolves.toMatchObject({
      outcome: 'disconnected',
    });
  });

  test("by default the client reconnects on its next query (Prisma's behaviour); reconnect: false closes it for good with CLIENT_CLOSED", async () => {
    const prisma = createPrismaClient({ databaseUrl: database.databaseUrl });
    await prisma.$queryRaw`SELECT 1`;
    await disconnectWithin(prisma, 2_000);
    await expect(prisma.$queryRaw`SELECT 2 AS two`).resolves.toEqual([{ two: 2 }]);

    await expect(disconnectWithin(prisma, 2_000, { reconnect: false })).resolves.toMatchObject({
      outcome: 'disconnected',
    });
    const [query, batch, interactive] = await Promise.all(
      [
        prisma.$queryRaw`SELECT 3`,
        prisma.$transaction([prisma.$queryRaw`SELECT 4`]),
        prisma.$transaction((tx) => tx.$queryRaw`SELECT 5`),
      ].map((call) => Promise.resolve(call).then(() => undefined, toDatabaseError)),
    );
    for (const error of [query, batch, interactive]) {
      expect(error).toBeInstanceOf(ClientClosedError);
      expect(error).toMatchObject({
        code: 'CLIENT_CLOSED',
        retryable: false,
        certainlyNotCommitted: true,
      });
      expect((error as Error).message).toContain('create a new client');
    }
  });
});
