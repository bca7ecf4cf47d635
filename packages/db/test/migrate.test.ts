import { createHash } from 'node:crypto';
import {
  appendFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import {
  createTestDatabase,
  dropDatabase,
  quoteIdentifier,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
  type TestDatabase,
} from '@usagekit/testing';
import {
  defaultMigrationsDir,
  migrate,
  MigrationChecksumMismatchError,
  MigrationFailedError,
} from '../src/index.js';
import { query } from './support/sql.js';

interface MigrationRow extends Record<string, unknown> {
  id: string;
  checksum: string;
  migration_name: string;
  logs: string | null;
  started_at: Date;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  applied_steps_count: number;
}

let clone: TestDatabase;
const emptyDatabases: string[] = [];
const tempDirs: string[] = [];

beforeAll(async () => {
  clone = await createTestDatabase();
});

afterAll(async () => {
  for (const name of emptyDatabases) await dropDatabase(clone.serverUrl, name);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  await clone.drop();
});

/**
 * A database with nothing in it: no tables, no _prisma_migrations. Not a template clone,
 * which would already be migrated.
 */
async function createEmptyDatabase(): Promise<string> {
  const name = uniqueDatabaseName('usagekit_migrate');
  await withAdminClient(clone.serverUrl, (client) =>
    client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
  );
  emptyDatabases.push(name);
  return withDatabase(clone.serverUrl, name);
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'usagekit-migrations-'));
  tempDirs.push(dir);
  return dir;
}

/** The workspace's migrations, read straight from disk, independently of migrate(). */
function migrationNamesOnDisk(dir = defaultMigrationsDir()): string[] {
  return readdirSync(dir)
    .filter((name) => statSync(join(dir, name)).isDirectory())
    .sort();
}

function writeMigration(dir: string, name: string, sql: string): void {
  mkdirSync(join(dir, name));
  writeFileSync(join(dir, name, 'migration.sql'), sql);
}

function migrationRows(databaseUrl: string): Promise<MigrationRow[]> {
  return query<MigrationRow>(
    databaseUrl,
    'SELECT * FROM usagekit."_prisma_migrations" ORDER BY started_at, migration_name',
  );
}

async function tableExists(databaseUrl: string, table: string): Promise<boolean> {
  const [row] = await query<{ exists: boolean }>(
    databaseUrl,
    'SELECT to_regclass($1) IS NOT NULL AS exists',
    [`usagekit.${table}`],
  );
  return row!.exists;
}

describe('migrate()', () => {
  test('applies every migration into an empty database, in name order, and reports their names', async () => {
    const names = migrationNamesOnDisk();
    expect(names[0]).toBe('20260127000000_init');
    expect(names.length).toBeGreaterThanOrEqual(3);
    const databaseUrl = await createEmptyDatabase();
    expect(await tableExists(databaseUrl, '_prisma_migrations')).toBe(false);

    const result = await migrate({ databaseUrl });

    expect(result.applied).toEqual(names);
    expect((await migrationRows(databaseUrl)).map((row) => row.migration_name)).toEqual(names);
    for (const table of [
      'boundary_usage_stats',
      'telemetry_locks',
      'telemetry_reports',
      'boundary_usage_ids',
      'boundary_usage_flush_sequences',
    ]) {
      expect(await tableExists(databaseUrl, table)).toBe(true);
    }
    // Nothing of usagekit's in public: a host's Prisma owns that schema (issue 17).
    expect(
      await query(
        databaseUrl,
        `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public'`,
      ),
    ).toEqual([]);
  });

  test('is idempotent: a second call applies nothing and changes no row', async () => {
    const databaseUrl = await createEmptyDatabase();
    await migrate({ databaseUrl });
    const before = await migrationRows(databaseUrl);

    await expect(migrate({ databaseUrl })).resolves.toEqual({ applied: [] });

    expect(await migrationRows(databaseUrl)).toEqual(before);
  });

  test('finds nothing to do in a clone of the test template (migrated by the global setup)', async () => {
    await expect(migrate({ databaseUrl: clone.databaseUrl })).resolves.toEqual({ applied: [] });
  });

  test('records migrations in _prisma_migrations exactly as Prisma Migrate does', async () => {
    const databaseUrl = await createEmptyDatabase();
    await migrate({ databaseUrl });

    const columns = await query(
      databaseUrl,
      `SELECT column_name, data_type, character_maximum_length, is_nullable, column_default
         FROM information_schema.columns
        WHERE table_schema = 'usagekit' AND table_name = '_prisma_migrations'
        ORDER BY ordinal_position`,
    );
    // prisma-engines (sql-schema-connector, postgres flavour) creates exactly this table.
    expect(columns).toEqual([
      {
        column_name: 'id',
        data_type: 'character varying',
        character_maximum_length: 36,
        is_nullable: 'NO',
        column_default: null,
      },
      {
        column_name: 'checksum',
        data_type: 'character varying',
        character_maximum_length: 64,
        is_nullable: 'NO',
        column_default: null,
      },
      {
        column_name: 'finished_at',
        data_type: 'timestamp with time zone',
        character_maximum_length: null,
        is_nullable: 'YES',
        column_default: null,
      },
      {
        column_name: 'migration_name',
        data_type: 'character varying',
        character_maximum_length: 255,
        is_nullable: 'NO',
        column_default: null,
      },
      {
        column_name: 'logs',
        data_type: 'text',
        character_maximum_length: null,
        is_nullable: 'YES',
        column_default: null,
      },
      {
        column_name: 'rolled_back_at',
        data_type: 'timestamp with time zone',
        character_maximum_length: null,
        is_nullable: 'YES',
        column_default: null,
      },
      {
        column_name: 'started_at',
        data_type: 'timestamp with time zone',
        character_maximum_length: null,
        is_nullable: 'NO',
        column_default: 'now()',
      },
      {
        column_name: 'applied_steps_count',
        data_type: 'integer',
        character_maximum_length: null,
        is_nullable: 'NO',
        column_default: '0',
      },
    ]);
    const primaryKey = await query<{ column_name: string }>(
      databaseUrl,
      `SELECT kcu.column_name
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage kcu
           ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
        WHERE tc.table_schema = 'usagekit' AND tc.table_name = '_prisma_migrations'
          AND tc.constraint_type = 'PRIMARY KEY'`,
    );
    expect(primaryKey.map((row) => row.column_name)).toEqual(['id']);

    const rows = await migrationRows(databaseUrl);
    expect(rows.map((row) => row.migration_name)).toEqual(migrationNamesOnDisk());
    for (const row of rows) {
      const bytes = readFileSync(join(defaultMigrationsDir(), row.migration_name, 'migration.sql'));
      expect(row.checksum).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
      expect(row.rolled_back_at).toBeNull();
      expect(row.finished_at).toBeInstanceOf(Date);
      expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
    }
    expect(new Set(rows.map((row) => row.id)).size).toBe(rows.length);
  });

  test('two migrate() calls at once apply each migration exactly once', async () => {
    const databaseUrl = await createEmptyDatabase();
    const names = migrationNamesOnDisk();

    // Two calls, two connections: without the advisory lock both would see an empty
    // _prisma_migrations and run every migration (the second CREATE TABLE fails).
    const results = await Promise.all([migrate({ databaseUrl }), migrate({ databaseUrl })]);

    const applied = results.map((result) => result.applied).sort((a, b) => a.length - b.length);
    expect(applied).toEqual([[], names]);
    const counts = await query<{ migration_name: string; rows: number }>(
      databaseUrl,
      `SELECT migration_name, count(*)::int AS rows FROM usagekit."_prisma_migrations"
        GROUP BY migration_name ORDER BY migration_name`,
    );
    expect(counts).toEqual(names.map((name) => ({ migration_name: name, rows: 1 })));
  });

  test("waits for Prisma Migrate's advisory lock, taken the way prisma migrate deploy takes it", async () => {
    const databaseUrl = await createEmptyDatabase();
    const prismaMigrate = new Client({ connectionString: databaseUrl });
    prismaMigrate.on('error', () => undefined);
    await prismaMigrate.connect();
    try {
      // The statement prisma-engines runs before it touches _prisma_migrations.
      await prismaMigrate.query('SELECT pg_advisory_lock(72707369)');
      let settled = false;
      const running = migrate({ databaseUrl }).finally(() => (settled = true));

      // A single-bigint advisory key shows in pg_locks as classid (high half), objid (low half).
      const waiting = `SELECT count(*)::int AS n FROM pg_locks
         WHERE locktype = 'advisory' AND classid = 0 AND objid = 72707369 AND objsubid = 1
           AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      while ((await query<{ n: number }>(databaseUrl, waiting))[0]!.n === 0) {
        if (settled) throw new Error('migrate() finished without waiting for the lock');
      }
      expect(await tableExists(databaseUrl, '_prisma_migrations')).toBe(false);

      await prismaMigrate.query('SELECT pg_advisory_unlock(72707369)');
      await expect(running).resolves.toEqual({ applied: migrationNamesOnDisk() });
    } finally {
      await prismaMigrate.end();
    }
  });

  test('applies only the migrations added since the last run', async () => {
    const migrationsDir = tempDir();
    cpSync(defaultMigrationsDir(), migrationsDir, { recursive: true });
    const databaseUrl = await createEmptyDatabase();
    await migrate({ databaseUrl, migrationsDir });

    writeMigration(
      migrationsDir,
      '29990101000000_add_note',
      'ALTER TABLE "telemetry_reports" ADD COLUMN "note" TEXT;',
    );
    await expect(migrate({ databaseUrl, migrationsDir })).resolves.toEqual({
      applied: ['29990101000000_add_note'],
    });
    const [column] = await query(
      databaseUrl,
      `SELECT 1 FROM information_schema.columns WHERE table_schema = 'usagekit' AND table_name = 'telemetry_reports' AND column_name = 'note'`,
    );
    expect(column).toBeDefined();
  });

  test('refuses a migration.sql that changed after it was applied, naming it', async () => {
    const migrationsDir = tempDir();
    cpSync(defaultMigrationsDir(), migrationsDir, { recursive: true });
    const databaseUrl = await createEmptyDatabase();
    await migrate({ databaseUrl, migrationsDir });
    const before = await migrationRows(databaseUrl);
    const edited = migrationNamesOnDisk(migrationsDir)[1]!;

    appendFileSync(join(migrationsDir, edited, 'migration.sql'), '\n-- an innocent-looking edit\n');

    const error = await migrate({ databaseUrl, migrationsDir }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MigrationChecksumMismatchError);
    expect(error).toMatchObject({ code: 'MIGRATION_CHECKSUM_MISMATCH', migrationName: edited });
    expect((error as Error).message).toContain(edited);
    expect(await migrationRows(databaseUrl)).toEqual(before);
  });

  describe('a failing migration', () => {
    const good = '20990101000000_good';
    const bad = '20990102000000_bad';
    const after = '20990103000000_after';
    let migrationsDir: string;
    let databaseUrl: string;
    let firstError: unknown;

    beforeAll(async () => {
      migrationsDir = tempDir();
      writeMigration(migrationsDir, good, 'CREATE TABLE "good_table" ("id" INTEGER);');
      // Two statements succeed before the third fails: all of it must roll back.
      writeMigration(
        migrationsDir,
        bad,
        'CREATE TABLE "half_done" ("id" INTEGER);\n' +
          'INSERT INTO "good_table" VALUES (1);\n' +
          'SELECT 1 / 0;\n',
      );
      writeMigration(migrationsDir, after, 'CREATE TABLE "after_table" ("id" INTEGER);');
      databaseUrl = await createEmptyDatabase();
      firstError = await migrate({ databaseUrl, migrationsDir }).catch((caught: unknown) => caught);
    });

    test('throws MigrationFailedError naming it, with the database error as cause', () => {
      expect(firstError).toBeInstanceOf(MigrationFailedError);
      expect(firstError).toMatchObject({ code: 'MIGRATION_FAILED', migrationName: bad });
      expect((firstError as Error).message).toContain('division by zero');
      expect((firstError as Error).cause).toMatchObject({ code: '22012' });
    });

    test('records it unfinished with its logs, and stops before the next migration', async () => {
      const rows = await migrationRows(databaseUrl);
      expect(rows.map((row) => row.migration_name)).toEqual([good, bad]);
      expect(rows[0]).toMatchObject({ applied_steps_count: 1, logs: null });
      expect(rows[0]!.finished_at).not.toBeNull();
      expect(rows[1]).toMatchObject({
        finished_at: null,
        rolled_back_at: null,
        applied_steps_count: 0,
      });
      expect(rows[1]!.logs).toContain('division by zero');
      expect(await tableExists(databaseUrl, 'after_table')).toBe(false);
    });

    test('rolls back its own changes and keeps the earlier migration', async () => {
      expect(await tableExists(databaseUrl, 'half_done')).toBe(false);
      expect(await tableExists(databaseUrl, 'good_table')).toBe(true);
      expect(await query(databaseUrl, 'SELECT * FROM usagekit."good_table"')).toEqual([]);
    });

    test('makes the next migrate() refuse until it is resolved, like prisma migrate deploy (P3009)', async () => {
      const error = await migrate({ databaseUrl, migrationsDir }).catch(
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(MigrationFailedError);
      expect(error).toMatchObject({ migrationName: bad });
      expect(await tableExists(databaseUrl, 'after_table')).toBe(false);
      expect(await migrationRows(databaseUrl)).toHaveLength(2);

      // `prisma migrate resolve --rolled-back` sets rolled_back_at; with the file fixed the
      // migration is applied afresh in a new row, and the rest follow.
      await query(
        databaseUrl,
        'UPDATE usagekit."_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = $1',
        [bad],
      );
      writeFileSync(
        join(migrationsDir, bad, 'migration.sql'),
        'CREATE TABLE "half_done" ("id" INTEGER);\n',
      );

      await expect(migrate({ databaseUrl, migrationsDir })).resolves.toEqual({
        applied: [bad, after],
      });
      const rows = await migrationRows(databaseUrl);
      expect(rows.map((row) => [row.migration_name, row.rolled_back_at === null])).toEqual([
        [good, true],
        [bad, false],
        [bad, true],
        [after, true],
      ]);
      // The rolled-back row keeps the old checksum; it is history, not a mismatch
      // (prisma/prisma#9829 is the warning Prisma prints forever in this state).
      await expect(migrate({ databaseUrl, migrationsDir })).resolves.toEqual({ applied: [] });
    });
  });
});
