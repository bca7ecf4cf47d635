/**
 * migrate() must never queue the fleet behind it for long (issue 11 item 3). DDL waits for an
 * ACCESS EXCLUSIVE lock, and every later statement on the table waits behind that request, so
 * one long transaction holding the table would stop every replica's flush for as long as the
 * migration waits. With lock_timeout the migration steps aside and tries again later.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import { defaultMigrationsDir, migrate, MigrationLockTimeoutError } from '../src/index.js';
import { query } from './support/sql.js';

let database: TestDatabase;
let migrationsDir: string;
const NEW_MIGRATION = '29990101000000_add_probe_column';

beforeAll(async () => {
  database = await createTestDatabase();
  // The committed migrations (already applied to the clone) plus one that alters a table.
  migrationsDir = mkdtempSync(join(tmpdir(), 'usagekit-migrations-'));
  cpSync(defaultMigrationsDir(), migrationsDir, { recursive: true });
  mkdirSync(join(migrationsDir, NEW_MIGRATION));
  writeFileSync(
    join(migrationsDir, NEW_MIGRATION, 'migration.sql'),
    'ALTER TABLE "boundary_usage_stats" ADD COLUMN "probe" INTEGER;\n',
  );
});

afterAll(async () => {
  rmSync(migrationsDir, { recursive: true, force: true });
  await database?.drop();
});

test('a migration blocked by a held table lock steps aside, lets the fleet through, retries, and leaves nothing failed', async () => {
  const holder = new Client({ connectionString: database.databaseUrl });
  await holder.connect();
  await holder.query('BEGIN');
  // Any lock conflicts with ALTER TABLE's ACCESS EXCLUSIVE, even a reader's ACCESS SHARE.
  await holder.query('LOCK TABLE usagekit.boundary_usage_stats IN ACCESS SHARE MODE');
  try {
    const migration = migrate({
      databaseUrl: database.databaseUrl,
      migrationsDir,
      lockTimeoutMs: 200,
      maxLockAttempts: 3,
      lockRetryDelayMs: 50,
    }).catch((error: unknown) => error);

    // A replica's read: compatible with the holder, but queued behind the migration's lock
    // request for as long as that request waits. It completes while the holder still holds
    // its lock, which is only possible because the migration gave up its place in the queue.
    await query(database.databaseUrl, 'SELECT count(*) FROM usagekit.boundary_usage_stats');

    const error = await migration;
    expect(error).toBeInstanceOf(MigrationLockTimeoutError);
    expect(error).toMatchObject({
      code: 'MIGRATION_LOCK_TIMEOUT',
      migrationName: NEW_MIGRATION,
      attempts: 3,
    });
  } finally {
    await holder.query('ROLLBACK');
    await holder.end();
  }

  // Not recorded as failed: the next run applies it.
  const rows = await query(
    database.databaseUrl,
    `SELECT 1 FROM usagekit."_prisma_migrations" WHERE migration_name = $1`,
    [NEW_MIGRATION],
  );
  expect(rows).toEqual([]);
  await expect(migrate({ databaseUrl: database.databaseUrl, migrationsDir })).resolves.toEqual({
    applied: [NEW_MIGRATION],
  });
});
