/**
 * usagekit's own schema and migrations through the real Prisma CLI (issue 17, items 3–4): the
 * schema engine is the native one where it is installed, else this tool's wasm build of the
 * same engine. DATABASE_URL goes through the repository's prisma.config.ts, which adds
 * `?schema=usagekit` the way a user's own `prisma migrate deploy` must.
 */
import { finishSchemaUpgrade, migrate } from '@usagekit/db';
import {
  expectExit,
  query,
  Sandbox,
  tablesBySchema,
  usagekitPrisma,
} from './support/prisma-harness.js';

const USAGEKIT_TABLES = [
  '_prisma_migrations',
  'boundary_usage_flush_sequences',
  'boundary_usage_ids',
  'boundary_usage_stats',
  'telemetry_locks',
  'telemetry_reports',
];

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanUp());

jest.setTimeout(300_000);

test('prisma migrate diff from the migrations to schema.prisma is empty (migrate dev would write nothing)', async () => {
  const databaseUrl = await sandbox.emptyDatabase();
  const result = await usagekitPrisma(
    [
      'migrate',
      'diff',
      '--from-migrations',
      'prisma/migrations',
      '--to-schema',
      'prisma/schema.prisma',
      '--exit-code',
    ],
    databaseUrl,
  );
  expectExit(result, 0);
  expect(result.stdout).toContain('No difference detected.');
  // The shadow database the diff replayed the migrations into is gone again.
  const shadows = await query(
    databaseUrl,
    `SELECT datname FROM pg_database WHERE datname LIKE 'prisma_migrate_shadow_db_%'`,
  );
  expect(shadows).toEqual([]);
});

test('prisma migrate deploy, then migrate(): the same history, nothing applied twice, status clean, nothing in public', async () => {
  const databaseUrl = await sandbox.emptyDatabase();
  const deploy = expectExit(await usagekitPrisma(['migrate', 'deploy'], databaseUrl), 0);
  expect(deploy.stdout).toContain('All migrations have been successfully applied.');

  await expect(migrate({ databaseUrl })).resolves.toMatchObject({ applied: [] });

  const status = expectExit(await usagekitPrisma(['migrate', 'status'], databaseUrl), 0);
  expect(status.stdout).toContain('Database schema is up to date!');
  expect(await tablesBySchema(databaseUrl)).toEqual({ usagekit: USAGEKIT_TABLES });
});

test('migrate(), then prisma migrate deploy: Prisma finds nothing to apply and status is clean', async () => {
  const databaseUrl = await sandbox.emptyDatabase();
  const { applied } = await migrate({ databaseUrl });
  expect(applied.length).toBeGreaterThan(0);

  const deploy = expectExit(await usagekitPrisma(['migrate', 'deploy'], databaseUrl), 0);
  expect(deploy.stdout).toContain('No pending migrations to apply.');
  const status = expectExit(await usagekitPrisma(['migrate', 'status'], databaseUrl), 0);
  expect(status.stdout).toContain('Database schema is up to date!');
  // What migrate() built is exactly what the schema describes (indexes, defaults, types).
  const diff = await usagekitPrisma(
    [
      'migrate',
      'diff',
      '--from-config-datasource',
      '--to-schema',
      'prisma/schema.prisma',
      '--exit-code',
    ],
    databaseUrl,
  );
  expectExit(diff, 0);
  expect(await tablesBySchema(databaseUrl)).toEqual({ usagekit: USAGEKIT_TABLES });
});

test("upgrade from today's layout (prisma migrate deploy into public, with rows): migrate() moves it; Prisma sees a clean usagekit schema and, once finished, nothing of usagekit in public", async () => {
  const databaseUrl = await sandbox.emptyDatabase();
  const publicUrl = withSchema(databaseUrl, 'public');
  // Today's layout, made the way today's users make it: the CLI with no schema in the URL.
  expectExit(await usagekitPrisma(['migrate', 'deploy'], publicUrl), 0);
  await query(
    databaseUrl,
    `INSERT INTO public.boundary_usage_stats (replica_id, allowed_requests, denied_requests)
       VALUES ('11111111-1111-1111-1111-111111111111', 7, 2);
     INSERT INTO public.boundary_usage_ids (kind, id) VALUES ('user', '22222222-2222-2222-2222-222222222222');
     INSERT INTO public.boundary_usage_flush_sequences (replica_id, writer_id, last_sequence)
       VALUES ('11111111-1111-1111-1111-111111111111', '33333333-3333-3333-3333-333333333333', 41);
     INSERT INTO public.telemetry_locks (event_type, period_ending_at) VALUES ('boundary_usage', now());
     INSERT INTO public.telemetry_reports (report_id, event_type, period_starting_at, period_duration_ms, payload)
       VALUES ('44444444-4444-4444-4444-444444444444', 'boundary_usage', now(), 1800000, '{"pending": true}')`,
  );

  const { upgraded } = await migrate({ databaseUrl });
  expect(upgraded?.tables.length).toBe(5);

  const status = expectExit(await usagekitPrisma(['migrate', 'status'], databaseUrl), 0);
  expect(status.stdout).toContain('Database schema is up to date!');
  const diff = await usagekitPrisma(
    [
      'migrate',
      'diff',
      '--from-config-datasource',
      '--to-schema',
      'prisma/schema.prisma',
      '--exit-code',
    ],
    databaseUrl,
  );
  expectExit(diff, 0);
  const [rows] = await query<Record<string, string>>(
    databaseUrl,
    `SELECT (SELECT allowed_requests FROM usagekit.boundary_usage_stats)::text AS allowed,
            (SELECT count(*) FROM usagekit.boundary_usage_ids)::text AS ids,
            (SELECT last_sequence FROM usagekit.boundary_usage_flush_sequences)::text AS sequence,
            (SELECT count(*) FROM usagekit.telemetry_locks)::text AS locks,
            (SELECT payload->>'pending' FROM usagekit.telemetry_reports WHERE delivered_at IS NULL) AS pending`,
  );
  expect(rows).toEqual({ allowed: '7', ids: '1', sequence: '41', locks: '1', pending: 'true' });

  await finishSchemaUpgrade({ databaseUrl });
  // Prisma pointed at public (a host's view) finds an empty schema and no history.
  const publicDiff = await usagekitPrisma(
    ['migrate', 'diff', '--from-config-datasource', '--to-empty', '--exit-code'],
    publicUrl,
  );
  expectExit(publicDiff, 0);
  expect((await tablesBySchema(databaseUrl)).public).toBeUndefined();
});

function withSchema(databaseUrl: string, schema: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('schema', schema);
  return url.toString();
}
