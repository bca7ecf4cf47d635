/**
 * Issue 17: the schema is configurable. One name, given to migrate(), createPrismaClient() and
 * applyRoles(), reaches everything: the migrations and their history, the flush, the cutover,
 * the election and the outbox (raw SQL, qualified, no search_path), the generated model API
 * (adapter-pg's `schema`), and the roles. Nothing lands in `public` or in the default schema.
 * A PrismaClient of your own reaches it through the store's `schema` option.
 */
import { randomUUID } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import { Client } from 'pg';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  InvalidInputError,
} from '@usagekit/boundary-usage';
import {
  applyRoles,
  createPrismaClient,
  defaultMigrationsDir,
  migrate,
  MigrationLayoutError,
  PrismaClient,
  readMigrations,
  usagekitSchemaOf,
} from '@usagekit/db';
import {
  createTestDatabase,
  dropDatabase,
  quoteIdentifier,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
  type TestDatabase,
} from '@usagekit/testing';
import { CollectingSink, FakeClock, reporter } from './helpers.js';

const SCHEMA = 'usagekit_custom';
let server: TestDatabase;
let databaseUrl: string;
const clients: PrismaClient[] = [];
const admins: Client[] = [];
const databases: string[] = [];

async function emptyDatabase(): Promise<string> {
  const name = uniqueDatabaseName('usagekit_schema');
  await withAdminClient(server.serverUrl, (client) =>
    client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
  );
  databases.push(name);
  return withDatabase(server.serverUrl, name);
}

async function admin(url = databaseUrl): Promise<Client> {
  const client = new Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  admins.push(client);
  return client;
}

beforeAll(async () => {
  server = await createTestDatabase();
  databaseUrl = await emptyDatabase();
});

afterAll(async () => {
  for (const client of clients) await client.$disconnect().catch(() => undefined);
  for (const client of admins) await client.end().catch(() => undefined);
  for (const name of databases) await dropDatabase(server.serverUrl, name);
  await server.drop();
});

test('migrate({ schema }) puts the tables and the history there, and nowhere else', async () => {
  const names = readMigrations(defaultMigrationsDir()).map((m) => m.name);
  await expect(migrate({ databaseUrl, schema: SCHEMA })).resolves.toEqual({ applied: names });
  const client = await admin();
  const { rows } = await client.query<{ nspname: string; relname: string }>(
    `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      ORDER BY 1, 2`,
  );
  expect(rows).toEqual(
    [
      '_prisma_migrations',
      'boundary_usage_flush_sequences',
      'boundary_usage_ids',
      'boundary_usage_stats',
      'telemetry_locks',
      'telemetry_reports',
    ].map((relname) => ({ nspname: SCHEMA, relname })),
  );
  const { rows: history } = await client.query(
    `SELECT migration_name FROM ${SCHEMA}."_prisma_migrations" WHERE finished_at IS NOT NULL ORDER BY 1`,
  );
  expect(history.map((row) => row.migration_name)).toEqual(names);
  await expect(migrate({ databaseUrl, schema: SCHEMA })).resolves.toEqual({ applied: [] });
});

test('a store, tracker and reporter on createPrismaClient({ schema }) flush, cut over and deliver in that schema; the model API reads it too', async () => {
  const prisma = createPrismaClient({ databaseUrl, schema: SCHEMA });
  clients.push(prisma);
  expect(usagekitSchemaOf(prisma)).toBe(SCHEMA);
  const store = new BoundaryUsageStore(prisma);
  expect(store.options.schema).toBe(SCHEMA);
  const tracker = new BoundaryUsageTracker();
  const replicaId = randomUUID();
  tracker.track(randomUUID(), randomUUID(), 3, 1);
  await tracker.flush(store, replicaId);

  const rows = await prisma.boundaryUsageStats.findMany();
  expect(rows.map((row) => [row.replicaId, row.allowedRequests])).toEqual([[replicaId, 3n]]);

  const sink = new CollectingSink();
  const telemetry = reporter(prisma, new FakeClock(new Date()), sink, { store });
  const snapshot = await telemetry.collectSnapshot();
  expect(snapshot.boundaryUsageSummary).toMatchObject({
    allowedRequests: 3n,
    deniedRequests: 1n,
    uniqueUsers: 1n,
  });
  await telemetry.deliverPending();
  expect(sink.sent).toHaveLength(1);
  expect(await prisma.telemetryReport.count({ where: { deliveredAt: { not: null } } })).toBe(1);
  expect(await prisma.boundaryUsageStats.count()).toBe(0);
});

test("a PrismaClient of your own reaches the schema through the store's schema option", async () => {
  const own = new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
  clients.push(own);
  expect(usagekitSchemaOf(own)).toBe('usagekit');
  // Without the option it names the default schema, which this database does not have.
  await expect(
    new BoundaryUsageStore(own).upsertStats({
      replicaId: randomUUID(),
      uniqueWorkspacesDelta: 0,
      uniqueUsersDelta: 0,
      uniqueWorkspacesCount: 0,
      uniqueUsersCount: 0,
      allowedRequests: 1,
      deniedRequests: 0,
    }),
  ).rejects.toMatchObject({ sqlState: '42P01' });
  const store = new BoundaryUsageStore(own, { schema: SCHEMA });
  await store.upsertStats({
    replicaId: randomUUID(),
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 0,
    uniqueWorkspacesCount: 0,
    uniqueUsersCount: 0,
    allowedRequests: 4,
    deniedRequests: 0,
  });
  const summary = await store.getAndResetSummary({ maxStalenessMs: 3_600_000 });
  expect(summary.allowedRequests).toBe(4n);
});

test('applyRoles({ schema }) grants USAGE on that schema and the table privileges there', async () => {
  await applyRoles({ databaseUrl, schema: SCHEMA });
  const client = await admin();
  const { rows } = await client.query(
    `SELECT has_schema_privilege('usagekit_writer', $1, 'USAGE') AS writer_usage,
            has_schema_privilege('usagekit_reporter', $1, 'USAGE') AS reporter_usage,
            has_table_privilege('usagekit_reporter', $2, 'INSERT') AS reporter_outbox,
            has_table_privilege('usagekit_writer', $2, 'SELECT') AS writer_outbox,
            has_table_privilege('usagekit_reporter', $3, 'SELECT') AS reporter_history`,
    [SCHEMA, `${SCHEMA}.telemetry_reports`, `${SCHEMA}._prisma_migrations`],
  );
  expect(rows[0]).toEqual({
    writer_usage: true,
    reporter_usage: true,
    reporter_outbox: true,
    writer_outbox: false,
    reporter_history: false,
  });
  // The default schema does not exist here: applyRoles says so instead of granting nothing.
  await expect(applyRoles({ databaseUrl })).rejects.toMatchObject({ sqlState: '3F000' });
});

test('bad schema names are refused with a clear error before anything runs', async () => {
  for (const schema of ['public', 'Usagekit', 'pg_usagekit', 'a"b', '', 'x'.repeat(64)]) {
    expect(() => createPrismaClient({ databaseUrl, schema })).toThrow(TypeError);
    await expect(migrate({ databaseUrl, schema })).rejects.toThrow(TypeError);
    expect(
      () =>
        new BoundaryUsageStore(createPrismaClient({ databaseUrl }), {
          schema,
        }),
    ).toThrow(InvalidInputError);
  }
});

test('tables of usagekit in public and in its schema at once: MigrationLayoutError, nothing moved', async () => {
  const url = await emptyDatabase();
  await migrate({ databaseUrl: url });
  const client = await admin(url);
  // The layout before the schema, beside it: usagekit's init migration applied in public too.
  const init = readMigrations(defaultMigrationsDir())[0]!;
  await client.query(`SET search_path TO public`);
  await client.query(init.sql);
  await client.query(
    `CREATE TABLE public."_prisma_migrations" (LIKE usagekit."_prisma_migrations" INCLUDING ALL)`,
  );
  await client.query(
    `INSERT INTO public."_prisma_migrations" (id, checksum, migration_name, finished_at, applied_steps_count)
     VALUES (gen_random_uuid()::text, $1, $2, now(), 1)`,
    [init.checksum, init.name],
  );
  const error = await migrate({ databaseUrl: url }).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(MigrationLayoutError);
  expect(error).toMatchObject({
    code: 'MIGRATION_LAYOUT_CONFLICT',
    tables: ['boundary_usage_stats', 'telemetry_locks', 'telemetry_reports'],
  });
  const { rows } = await client.query(
    `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind = 'r'`,
  );
  expect(rows).toEqual([{ n: 4 }]);
});
