import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import {
  createTestDatabase,
  SERVER_URL_ENV,
  TEMPLATE_ENV,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
  type TestDatabase,
} from '../src/index.js';

// What every other suite relies on: a database of its own, so rows and advisory locks of one
// suite can never be seen by another (advisory locks are per database, not per schema).

let first: TestDatabase;
let second: TestDatabase;
const openClients: Client[] = [];

beforeAll(async () => {
  [first, second] = await Promise.all([createTestDatabase(), createTestDatabase()]);
});

afterAll(async () => {
  await Promise.all(openClients.map((client) => client.end().catch(() => undefined)));
  await Promise.all([first?.drop(), second?.drop()]);
});

async function connect(databaseUrl: string): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl });
  // drop() ends sessions with FATAL 57P01; that must not become an unhandled 'error' event.
  client.on('error', () => undefined);
  await client.connect();
  openClients.push(client);
  return client;
}

async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  return withAdminClient(serverUrl, async (client) => {
    const { rows } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    return rows.length === 1;
  });
}

test('two suites get two different databases on the same server', async () => {
  expect(first.name).not.toBe(second.name);
  expect(first.databaseUrl).not.toBe(second.databaseUrl);
  expect(first.serverUrl).toBe(second.serverUrl);
  const [a, b] = await Promise.all([connect(first.databaseUrl), connect(second.databaseUrl)]);
  const [nameA, nameB] = await Promise.all([
    a.query<{ db: string }>('SELECT current_database() AS db'),
    b.query<{ db: string }>('SELECT current_database() AS db'),
  ]);
  expect(nameA.rows[0]!.db).toBe(first.name);
  expect(nameB.rows[0]!.db).toBe(second.name);
});

test('each database is a migrated clone of the template, and the template stays a template', async () => {
  const client = await connect(first.databaseUrl);
  const { rows: migrations } = await client.query(
    'SELECT migration_name FROM usagekit."_prisma_migrations" WHERE finished_at IS NOT NULL',
  );
  expect(migrations.length).toBeGreaterThanOrEqual(3);
  const { rows: tables } = await client.query(
    `SELECT to_regclass('usagekit.boundary_usage_stats') IS NOT NULL AS present,
      to_regclass('public.boundary_usage_stats') IS NULL AS not_in_public`,
  );
  expect(tables[0]).toEqual({ present: true, not_in_public: true });
  const { rows: template } = await client.query(
    'SELECT datistemplate FROM pg_database WHERE datname = $1',
    [process.env[TEMPLATE_ENV]],
  );
  expect(template).toEqual([{ datistemplate: true }]);
});

test('a row written in one database is invisible in the other', async () => {
  const [a, b] = await Promise.all([connect(first.databaseUrl), connect(second.databaseUrl)]);
  const replicaId = randomUUID();
  await a.query(
    'INSERT INTO usagekit.boundary_usage_stats (replica_id, allowed_requests) VALUES ($1, 42)',
    [replicaId],
  );

  const select = 'SELECT allowed_requests FROM usagekit.boundary_usage_stats WHERE replica_id = $1';
  expect((await a.query(select, [replicaId])).rows).toEqual([{ allowed_requests: '42' }]);
  expect((await b.query(select, [replicaId])).rows).toEqual([]);
});

test('an advisory lock held in one database does not block the same key in the other', async () => {
  const key = '8462352787071529729';
  const holder = await connect(first.databaseUrl);
  const sameDatabase = await connect(first.databaseUrl);
  const otherDatabase = await connect(second.databaseUrl);
  await holder.query('SELECT pg_advisory_lock($1::bigint)', [key]);
  try {
    const tryLock = 'SELECT pg_try_advisory_lock($1::bigint) AS locked';
    // Control: on the same database the key is taken, so the check below can fail.
    expect((await sameDatabase.query(tryLock, [key])).rows[0]).toEqual({ locked: false });
    expect((await otherDatabase.query(tryLock, [key])).rows[0]).toEqual({ locked: true });
    await otherDatabase.query('SELECT pg_advisory_unlock($1::bigint)', [key]);
  } finally {
    await holder.query('SELECT pg_advisory_unlock($1::bigint)', [key]);
  }
});

test('drop() removes the database even with a connection still open, and may be called twice', async () => {
  const doomed = await createTestDatabase();
  const client = await connect(doomed.databaseUrl);
  const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
  expect(await databaseExists(doomed.serverUrl, doomed.name)).toBe(true);

  await doomed.drop();

  expect(await databaseExists(doomed.serverUrl, doomed.name)).toBe(false);
  await ended;
  await expect(client.query('SELECT 1')).rejects.toThrow();
  await expect(doomed.drop()).resolves.toBeUndefined();
});

test('createTestDatabase explains itself when the Jest global setup did not run', async () => {
  const saved = { server: process.env[SERVER_URL_ENV], template: process.env[TEMPLATE_ENV] };
  delete process.env[SERVER_URL_ENV];
  delete process.env[TEMPLATE_ENV];
  try {
    await expect(createTestDatabase()).rejects.toThrow(
      /USAGEKIT_TEST_SERVER_URL.*jest\.preset\.js/s,
    );
  } finally {
    process.env[SERVER_URL_ENV] = saved.server;
    process.env[TEMPLATE_ENV] = saved.template;
  }
});

describe('database names and URLs', () => {
  test('uniqueDatabaseName gives distinct names that PostgreSQL will not truncate', () => {
    const names = Array.from({ length: 200 }, () => uniqueDatabaseName('usagekit_template'));
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) {
      // Identifiers longer than NAMEDATALEN - 1 (63 bytes) are silently cut, so two long
      // names could become one database.
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
      expect(name).toMatch(/^[a-z_][a-z0-9_]*$/);
    }
  });

  test('withDatabase swaps only the database of a URL', () => {
    expect(
      withDatabase('postgresql://u:p%40ss@127.0.0.1:5433/postgres?sslmode=disable', 'other_db'),
    ).toBe('postgresql://u:p%40ss@127.0.0.1:5433/other_db?sslmode=disable');
  });
});
