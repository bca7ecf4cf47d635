/**
 * `usagekit migrate --finish-upgrade`, the last step of the rolling upgrade from the layout
 * before usagekit had a schema of its own, on a real legacy database (usagekit's tables and
 * history in public beside a host application's, built by @usagekit/testing's
 * applyLegacyLayoutBesideHost): `migrate` moves the tables and leaves views in public, then
 * `migrate --finish-upgrade` drops those views and usagekit's public history rows, never the
 * host's table or row; again, it drops nothing. It waits for another migrate only until its
 * deadline, and never prints the password.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_SCHEMA, defaultMigrationsDir, LockIds, readMigrations } from '@usagekit/db';
import {
  applyLegacyLayout,
  applyLegacyLayoutBesideHost,
  dropDatabase,
  LEGACY_HOST_MIGRATION,
  LEGACY_HOST_TABLE,
  SERVER_URL_ENV,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
} from '@usagekit/testing';
import { Client } from 'pg';
import { runCliProcess, type CliRun } from './run-cli.js';

const TABLES = [
  'boundary_usage_flush_sequences',
  'boundary_usage_ids',
  'boundary_usage_stats',
  'telemetry_locks',
  'telemetry_reports',
];

const serverUrl = process.env[SERVER_URL_ENV]!;
const databaseName = uniqueDatabaseName('cli_legacy');
const role = uniqueDatabaseName('cli_legacy_role');
const password = `pw-${randomBytes(12).toString('hex')}`;
const aloneName = uniqueDatabaseName('cli_legacy_alone');
function roleUrl(name: string): string {
  const url = new URL(withDatabase(serverUrl, name));
  url.username = role;
  url.password = password;
  return url.toString();
}
const databaseUrl = roleUrl(databaseName);
const migrationNames = readMigrations(defaultMigrationsDir()).map((m) => m.name);

const outputs: string[] = [];
const clients: Client[] = [];

interface FinishedJson {
  database: string;
  schema: string;
  finished: { views: string[]; historyRows: number; droppedHistoryTable: boolean };
}

async function cli(...args: string[]): Promise<CliRun> {
  const run = await runCliProcess(args);
  outputs.push(run.stdout, run.stderr);
  return run;
}

async function connect(url = databaseUrl): Promise<Client> {
  const client = new Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  clients.push(client);
  return client;
}

async function publicRelations(client: Client): Promise<string[]> {
  const { rows } = await client.query<{ r: string }>(
    `SELECT c.relname || ':' || c.relkind::text AS r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p') ORDER BY 1`,
  );
  return rows.map((row) => row.r);
}

async function historyNames(client: Client, schema: string): Promise<string[]> {
  const { rows } = await client.query<{ migration_name: string }>(
    `SELECT migration_name FROM "${schema}"."_prisma_migrations" ORDER BY migration_name`,
  );
  return rows.map((row) => row.migration_name);
}

let client: Client;

beforeAll(async () => {
  await withAdminClient(serverUrl, async (admin) => {
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await admin.query(`CREATE DATABASE ${databaseName} OWNER ${role}`);
    await admin.query(`CREATE DATABASE ${aloneName} OWNER ${role}`);
  });
  client = await connect();
  await applyLegacyLayoutBesideHost(client, readMigrations(defaultMigrationsDir()));
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await dropDatabase(serverUrl, databaseName);
  await dropDatabase(serverUrl, aloneName);
  await withAdminClient(serverUrl, (admin) => admin.query(`DROP ROLE IF EXISTS ${role}`));
});

test('the legacy database is what the previous version left: usagekit and the host in public', async () => {
  expect(await publicRelations(client)).toEqual(
    ['_prisma_migrations:r', `${LEGACY_HOST_TABLE}:r`, ...TABLES.map((t) => `${t}:r`)].sort(),
  );
  expect(await historyNames(client, 'public')).toEqual(
    [LEGACY_HOST_MIGRATION, ...migrationNames].sort(),
  );
});

test('migrate moves the tables into the schema and leaves views in public; it points at --finish-upgrade', async () => {
  const run = await cli('migrate', '--database-url', databaseUrl);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  expect(run.stdout).toContain(`moved ${TABLES.length} table(s) from public into schema`);
  expect(run.stdout).toContain('usagekit migrate --finish-upgrade');
  expect(await publicRelations(client)).toEqual(
    ['_prisma_migrations:r', `${LEGACY_HOST_TABLE}:r`, ...TABLES.map((t) => `${t}:v`)].sort(),
  );
});

test('migrate --finish-upgrade waits for another migrate only until its deadline: exit 2, nothing dropped', async () => {
  const other = await connect();
  await other.query('SELECT pg_advisory_lock($1::bigint)', [LockIds.migrate.toString()]);
  try {
    const run = await cli(
      'migrate',
      '--finish-upgrade',
      '--database-url',
      databaseUrl,
      '--timeout-ms',
      '1500',
    );
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^usagekit migrate: .*1500/);
    expect(run.stderr).toContain(`${role}:***@`);
    expect(run.elapsedMs).toBeGreaterThanOrEqual(1_500);
    expect(run.elapsedMs).toBeLessThan(15_000);
  } finally {
    await other.query('SELECT pg_advisory_unlock($1::bigint)', [LockIds.migrate.toString()]);
  }
  expect(await publicRelations(client)).toContain('telemetry_reports:v');
});

test('migrate --finish-upgrade --json drops the views and usagekit’s public history, keeps the host’s table and row: exit 0', async () => {
  const run = await cli('migrate', '--finish-upgrade', '--database-url', databaseUrl, '--json');
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  const result = JSON.parse(run.stdout) as FinishedJson;
  expect(result).toEqual({
    database: expect.stringContaining(`${role}:***@`),
    schema: DEFAULT_SCHEMA,
    finished: {
      views: [...TABLES],
      historyRows: migrationNames.length,
      droppedHistoryTable: false,
    },
  });

  expect(await publicRelations(client)).toEqual(['_prisma_migrations:r', `${LEGACY_HOST_TABLE}:r`]);
  expect(await historyNames(client, 'public')).toEqual([LEGACY_HOST_MIGRATION]);
  expect((await client.query(`SELECT * FROM public.${LEGACY_HOST_TABLE}`)).rows).toEqual([
    { id: 1, name: 'kept' },
  ]);
  // usagekit's own history is intact, so the fleet's migrate still finds nothing to apply.
  expect(await historyNames(client, DEFAULT_SCHEMA)).toEqual(migrationNames);
  const migrateAgain = await cli('migrate', '--database-url', databaseUrl, '--json');
  expect(migrateAgain.code).toBe(0);
  expect((JSON.parse(migrateAgain.stdout) as { applied: string[] }).applied).toEqual([]);
});

test('a second migrate --finish-upgrade drops nothing: exit 0, in text and JSON', async () => {
  const text = await cli('migrate', '--finish-upgrade', '--database-url', databaseUrl);
  expect(text.stderr).toBe('');
  expect(text.code).toBe(0);
  expect(text.stdout).toMatch(/upgrade already finished, nothing left in public to drop/);

  const json = await cli('migrate', '--finish-upgrade', '--database-url', databaseUrl, '--json');
  expect(json.code).toBe(0);
  expect((JSON.parse(json.stdout) as FinishedJson).finished).toEqual({
    views: [],
    historyRows: 0,
    droppedHistoryTable: false,
  });
  expect(await publicRelations(client)).toEqual(['_prisma_migrations:r', `${LEGACY_HOST_TABLE}:r`]);
  expect(await historyNames(client, 'public')).toEqual([LEGACY_HOST_MIGRATION]);
});

test('in text, migrate --finish-upgrade says what it dropped; a public._prisma_migrations that held only usagekit’s rows goes too', async () => {
  const alone = await connect(roleUrl(aloneName));
  await applyLegacyLayout(alone, readMigrations(defaultMigrationsDir()));
  expect((await cli('migrate', '--database-url', roleUrl(aloneName))).code).toBe(0);

  const run = await cli('migrate', '--finish-upgrade', '--database-url', roleUrl(aloneName));
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  expect(run.stdout).toContain(`${role}:***@`);
  expect(run.stdout).toContain(`dropped ${TABLES.length} compatibility view(s) from public`);
  for (const table of TABLES) expect(run.stdout).toContain(`public.${table}\n`);
  expect(run.stdout).toContain(
    `removed ${migrationNames.length} usagekit row(s) from public._prisma_migrations`,
  );
  expect(run.stdout).toContain('dropped public._prisma_migrations');
  expect(await publicRelations(alone)).toEqual([]);
});

test('--finish-upgrade is migrate’s alone, and applies no migrations: exit 1', async () => {
  const status = await cli('status', '--finish-upgrade', '--database-url', databaseUrl);
  expect(status.code).toBe(1);
  expect(status.stderr).toContain('--finish-upgrade belongs to migrate');
  const withDir = await cli(
    'migrate',
    '--finish-upgrade',
    '--migrations-dir',
    defaultMigrationsDir(),
    '--database-url',
    databaseUrl,
  );
  expect(withDir.code).toBe(1);
  const help = await cli('--help');
  expect(help.stdout).toContain('usagekit migrate --finish-upgrade');
});

test('no output of any run in this file contained the password', () => {
  expect(outputs.length).toBeGreaterThan(10);
  for (const text of outputs) expect(text).not.toContain(password);
});
