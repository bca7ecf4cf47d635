/**
 * usagekit in a database that a Prisma application already owns (issue 17): a host app with
 * its own schema.prisma, migrations and table in public (test/fixtures/host-app), usagekit
 * installed before or after it. The host's own Prisma CLI must see only its own schema: no
 * drift, no reset, no DROP of usagekit's tables; and a failed migration on either side must
 * not block the other's.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrate, MigrationFailedError, readMigrations, defaultMigrationsDir } from '@usagekit/db';
import {
  expectExit,
  hostPrisma,
  query,
  Sandbox,
  tablesBySchema,
} from './support/prisma-harness.js';

const sandbox = new Sandbox();
afterAll(() => sandbox.cleanUp());

jest.setTimeout(300_000);

const PROBE = 'coexistence_probe';

describe.each([
  ['usagekit first, then the host', 'usagekit-first'],
  ['the host first, then usagekit', 'host-first'],
] as const)('%s', (_title, order) => {
  test("the host's deploy works, its migrate dev finds no drift and proposes no reset, its diff is empty; usagekit's migrate() runs again cleanly", async () => {
    const databaseUrl = await sandbox.emptyDatabase('usagekit_host');
    const app = sandbox.hostApp();
    if (order === 'usagekit-first') await migrate({ databaseUrl });
    const deploy = expectExit(await hostPrisma(app, ['migrate', 'deploy'], databaseUrl), 0);
    expect(deploy.stdout).toContain('20250101000000_init');
    if (order === 'host-first') await migrate({ databaseUrl });

    const dev = await hostPrisma(
      app,
      ['migrate', 'dev', '--create-only', '--name', PROBE],
      databaseUrl,
    );
    expectExit(dev, 0);
    expect(dev.stdout).not.toContain('Drift detected');
    expect(dev.stdout).not.toMatch(/reset/i);
    // --create-only always writes a migration; with nothing to change it is empty.
    expect(readProbeMigration(app)).toBe('-- This is an empty migration.');

    const diff = await hostPrisma(
      app,
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
    expect(diff.stdout).not.toContain('DROP');

    await expect(migrate({ databaseUrl })).resolves.toEqual({ applied: [] });
    const tables = await tablesBySchema(databaseUrl);
    expect(tables.public).toEqual(['_prisma_migrations', 'customers']);
    expect(tables.usagekit).toContain('boundary_usage_stats');
  });
});

test("a failed host migration does not stop usagekit's migrate()", async () => {
  const databaseUrl = await sandbox.emptyDatabase('usagekit_host');
  const app = sandbox.hostApp();
  addMigration(
    app,
    '20250201000000_broken',
    'ALTER TABLE "customers" ADD COLUMN "tier" no_such_type;\n',
  );
  const deploy = expectExit(await hostPrisma(app, ['migrate', 'deploy'], databaseUrl), 1);
  expect(deploy.stderr + deploy.stdout).toContain('20250201000000_broken');

  const { applied } = await migrate({ databaseUrl });
  expect(applied).toEqual(readMigrations(defaultMigrationsDir()).map((m) => m.name));
  await expect(migrate({ databaseUrl })).resolves.toEqual({ applied: [] });
});

test("a failed usagekit migration does not stop the host's prisma migrate deploy", async () => {
  const databaseUrl = await sandbox.emptyDatabase('usagekit_host');
  const app = sandbox.hostApp();
  const migrationsDir = copyOfUsagekitMigrations();
  addMigrationTo(migrationsDir, '20991231000000_broken', 'CREATE TABLE broken (x no_such_type);\n');
  await expect(migrate({ databaseUrl, migrationsDir })).rejects.toBeInstanceOf(
    MigrationFailedError,
  );
  const deploy = expectExit(await hostPrisma(app, ['migrate', 'deploy'], databaseUrl), 0);
  expect(deploy.stdout).toContain('All migrations have been successfully applied.');
  const status = expectExit(await hostPrisma(app, ['migrate', 'status'], databaseUrl), 0);
  expect(status.stdout).toContain('Database schema is up to date!');
  // The failure is recorded, in usagekit's own history.
  const failed = await query(
    databaseUrl,
    `SELECT migration_name FROM usagekit._prisma_migrations WHERE finished_at IS NULL`,
  );
  expect(failed).toEqual([{ migration_name: '20991231000000_broken' }]);
});

function readProbeMigration(app: string): string {
  const dir = join(app, 'prisma', 'migrations');
  const probe = readdirSync(dir).find((name) => name.endsWith(`_${PROBE}`));
  if (!probe) throw new Error(`migrate dev --create-only wrote no ${PROBE} migration in ${dir}`);
  return readFileSync(join(dir, probe, 'migration.sql'), 'utf8').trim();
}

function addMigration(app: string, name: string, sql: string): void {
  addMigrationTo(join(app, 'prisma', 'migrations'), name, sql);
}

function addMigrationTo(migrationsDir: string, name: string, sql: string): void {
  mkdirSync(join(migrationsDir, name));
  writeFileSync(join(migrationsDir, name, 'migration.sql'), sql);
}

function copyOfUsagekitMigrations(): string {
  const dir = sandbox.tempDir();
  for (const migration of readMigrations(defaultMigrationsDir())) {
    addMigrationTo(dir, migration.name, migration.sql);
  }
  return dir;
}
