import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import {
  createPrismaClient,
  redactDatabaseUrl,
  TransactionTimeoutError,
  toDatabaseError,
  type Logger,
  type PrismaClient,
} from '../src/index.js';
import { deferred, waitUntil } from './support/deferred.js';
import { query } from './support/sql.js';

let database: TestDatabase;
const clients: PrismaClient[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  await database?.drop();
});

function track(client: PrismaClient): PrismaClient {
  clients.push(client);
  return client;
}

/** A logger that remembers its warn calls. */
function recordingLogger(): Logger & { warnings: [string, Record<string, unknown> | undefined][] } {
  const warnings: [string, Record<string, unknown> | undefined][] = [];
  const ignore = () => undefined;
  return {
    warnings,
    debug: ignore,
    info: ignore,
    error: ignore,
    warn: (message, meta) => warnings.push([message, meta]),
  };
}

describe('createPrismaClient options', () => {
  test.each([[''], [undefined as unknown as string]])(
    'rejects the databaseUrl %p',
    (databaseUrl) => {
      expect(() => createPrismaClient({ databaseUrl })).toThrow(TypeError);
      expect(() => createPrismaClient({ databaseUrl })).toThrow(
        expect.objectContaining({ code: 'INVALID_INPUT', field: 'databaseUrl' }),
      );
    },
  );

  test.each([[0], [-1], [1.5], [Number.NaN]])('rejects maxConnections %p', (maxConnections) => {
    expect(() =>
      createPrismaClient({ databaseUrl: 'postgresql://localhost/x', maxConnections }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', field: 'maxConnections' }));
    expect(() =>
      createPrismaClient({ databaseUrl: 'postgresql://localhost/x', maxConnections }),
    ).toThrow(`Invalid maxConnections: expected a positive integer, got ${String(maxConnections)}`);
  });

  test('maxConnections bounds the pool: a third transaction cannot start while two are open', async () => {
    const url = new URL(database.databaseUrl);
    url.searchParams.set('application_name', 'pool_of_two');
    const prisma = track(createPrismaClient({ databaseUrl: url.toString(), maxConnections: 2 }));
    const bothOpen = [deferred(), deferred()];
    const release = deferred();
    const holders = bothOpen.map((open) =>
      prisma.$transaction(async () => {
        open.resolve();
        await release.promise;
      }),
    );
    try {
      await Promise.all(bothOpen.map((open) => open.promise));
      const [{ backends }] = await query<{ backends: number }>(
        database.databaseUrl,
        `SELECT count(*)::int AS backends FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'pool_of_two'`,
      );
      expect(backends).toBe(2);
      const third = await prisma
        .$transaction(async () => undefined, { maxWait: 200 })
        .catch(toDatabaseError);
      expect(third).toBeInstanceOf(TransactionTimeoutError);
    } finally {
      release.resolve();
      await Promise.all(holders);
    }
  });

  test('transactionOptions.timeoutMs becomes the default interactive-transaction timeout', async () => {
    const prisma = track(
      createPrismaClient({
        databaseUrl: database.databaseUrl,
        transactionOptions: { timeoutMs: 200 },
      }),
    );
    const error = await prisma
      .$transaction(async (tx) => {
        await tx.$executeRaw`SELECT pg_sleep(1)`;
      })
      .catch(toDatabaseError);
    expect(error).toBeInstanceOf(TransactionTimeoutError);
    expect((error as TransactionTimeoutError).message).toContain('200 ms');
  });
});

describe('idle connections: per-flush by default, warm on request', () => {
  test.each([
    ['idleTimeoutMs', 0],
    ['idleTimeoutMs', -5],
    ['idleTimeoutMs', Number.NaN],
    ['maxLifetimeMs', 0],
    ['maxLifetimeMs', Number.POSITIVE_INFINITY],
  ])('rejects %s %p', (name, value) => {
    expect(() =>
      createPrismaClient({ databaseUrl: 'postgresql://localhost/x', [name]: value }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', field: name }));
    expect(() =>
      createPrismaClient({ databaseUrl: 'postgresql://localhost/x', [name]: value }),
    ).toThrow(`Invalid ${name}: expected a positive number of milliseconds, got ${String(value)}`);
  });

  async function backends(applicationName: string): Promise<number> {
    const [{ n }] = await query<{ n: number }>(
      database.databaseUrl,
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = $1`,
      [applicationName],
    );
    return n;
  }

  function urlNamed(applicationName: string): string {
    const url = new URL(database.databaseUrl);
    url.searchParams.set('application_name', applicationName);
    return url.toString();
  }

  test('by default an idle connection closes within about a second: the next call connects anew', async () => {
    const prisma = track(
      createPrismaClient({ databaseUrl: urlNamed('idle_default'), maxConnections: 1 }),
    );
    const [first] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    const returned = performance.now();
    expect(await backends('idle_default')).toBe(1);
    // Closed by the pool (not by the server, nor by an error): the backend goes away.
    await waitUntil(
      async () => (await backends('idle_default')) === 0,
      'the idle connection to close',
      5_000,
    );
    expect(performance.now() - returned).toBeGreaterThanOrEqual(900);
    const [next] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    expect(next!.pid).not.toBe(first!.pid);
  });

  test('idleTimeoutMs longer than the interval keeps the connection warm', async () => {
    const prisma = track(
      createPrismaClient({
        databaseUrl: urlNamed('idle_warm'),
        maxConnections: 1,
        idleTimeoutMs: 60_000,
      }),
    );
    const [first] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(await backends('idle_warm')).toBe(1);
    const [next] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    expect(next!.pid).toBe(first!.pid);
  });

  test('maxLifetimeMs retires a connection after its lifetime, however it is used', async () => {
    const prisma = track(
      createPrismaClient({
        databaseUrl: urlNamed('lifetime'),
        maxConnections: 1,
        idleTimeoutMs: 60_000,
        maxLifetimeMs: 1_000,
      }),
    );
    const [first] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    await waitUntil(
      async () => (await backends('lifetime')) === 0,
      'the connection to retire',
      5_000,
    );
    const [next] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    expect(next!.pid).not.toBe(first!.pid);
  });
});

test('an idle pooled connection killed by the server is logged and replaced, not fatal', async () => {
  const logger = recordingLogger();
  // One connection, so the next query cannot dodge the dead one by taking another.
  const prisma = track(
    // Kept idle for a minute: the default (1 s) might close it before the server kills it.
    createPrismaClient({
      databaseUrl: database.databaseUrl,
      maxConnections: 1,
      logger,
      idleTimeoutMs: 60_000,
    }),
  );
  const [{ pid }] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;

  // The connection is idle in the pool now. Without an 'error' listener on the pool, the
  // FATAL the server sends would be an unhandled 'error' event and kill the process.
  await query(database.databaseUrl, 'SELECT pg_terminate_backend($1, 10000)', [pid]);
  await waitUntil(() => logger.warnings.length > 0, "the pool's error event");

  const [next] = await prisma.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
  expect(next!.pid).not.toBe(pid);
  expect(logger.warnings).toHaveLength(1);
  const [message, meta] = logger.warnings[0]!;
  expect(message).toMatch(/idle database connection failed/);
  expect(meta?.['error']).toMatch(/terminating connection due to administrator command/);
  // The logged URL names the database but never carries a password.
  const logged = new URL(String(meta?.['database']));
  expect(logged.pathname).toBe(`/${database.name}`);
  expect(['', '***']).toContain(logged.password);
});

describe('redactDatabaseUrl', () => {
  test('hides the password and keeps everything else', () => {
    const redacted = redactDatabaseUrl(
      'postgresql://usagekit:s3cr%40t@db.internal:6432/usage?sslmode=require',
    );
    expect(redacted).toBe('postgresql://usagekit:***@db.internal:6432/usage?sslmode=require');
    expect(redacted).not.toContain('s3cr');
  });

  test('leaves a URL without a password alone', () => {
    expect(redactDatabaseUrl('postgresql://usagekit@localhost/usage')).toBe(
      'postgresql://usagekit@localhost/usage',
    );
  });

  test('still hides the password of a string URL cannot parse', () => {
    const redacted = redactDatabaseUrl('postgres://admin:hunter2@[not-a-host/db');
    expect(redacted).not.toContain('hunter2');
    expect(redacted).toContain('admin:***@');
  });
});

describe('preparedStatements', () => {
  // pg_prepared_statements lists the statements prepared in the current session; with one
  // pooled connection every query below runs in the same session.
  async function preparedInSession(client: PrismaClient): Promise<string[]> {
    const rows = await client.$queryRaw<
      { name: string }[]
    >`SELECT name FROM pg_prepared_statements ORDER BY name`;
    return rows.map((row) => row.name);
  }

  test('on: each distinct statement is prepared once per connection and reused', async () => {
    const client = track(
      createPrismaClient({
        databaseUrl: database.databaseUrl,
        maxConnections: 1,
        preparedStatements: true,
      }),
    );
    for (let i = 0; i < 3; i++) await client.$queryRaw`SELECT ${i}::int AS n`;
    const names = await preparedInSession(client);
    // The SELECT above (three runs, one statement) and the pg_prepared_statements query.
    expect(names.filter((name) => name.startsWith('usagekit_'))).toHaveLength(2);
  });

  test('auto (the default) on a direct connection: prepared, like on', async () => {
    const client = track(
      createPrismaClient({ databaseUrl: database.databaseUrl, maxConnections: 1 }),
    );
    await client.$queryRaw`SELECT 1 AS n`;
    const names = await preparedInSession(client);
    expect(names.filter((name) => name.startsWith('usagekit_'))).toHaveLength(2);
  });

  test('off: nothing is prepared by name', async () => {
    const client = track(
      createPrismaClient({
        databaseUrl: database.databaseUrl,
        maxConnections: 1,
        preparedStatements: false,
      }),
    );
    await client.$queryRaw`SELECT 1 AS n`;
    expect(await preparedInSession(client)).toEqual([]);
  });
});
