import { defaultMigrationsDir, readMigrations } from '@usagekit/db';
import type { Client } from 'pg';
import { TABLE_EXISTS, type UsagekitTables } from './tables.js';

export interface AppliedMigration {
  name: string;
  finishedAt: string;
}

export interface FailedMigration {
  name: string;
  startedAt: string;
  /** The first line of the error migrate() or Prisma recorded. */
  error: string | null;
}

export interface MigrationsStatus {
  /** True when every file is applied unchanged and nothing failed. */
  current: boolean;
  applied: AppliedMigration[];
  /** Files not applied yet, in the order migrate applies them. */
  pending: string[];
  /** Started and not finished (failed, or crashed mid-way): migrate refuses to go on. */
  failed: FailedMigration[];
  /** Applied, but the file changed since (checksum mismatch): migrate refuses to go on. */
  changed: string[];
  /** Recorded in the database, absent from the files (a newer release applied them?). */
  unknown: string[];
}

interface MigrationRow {
  migration_name: string;
  checksum: string;
  started_at: Date;
  finished_at: Date | null;
  logs: string | null;
}

/** Compares the migration files with `_prisma_migrations`, as `prisma migrate status` does. */
export async function migrationsStatus(
  client: Client,
  tables: UsagekitTables,
  migrationsDir: string | undefined,
): Promise<MigrationsStatus> {
  const files = readMigrations(migrationsDir ?? defaultMigrationsDir());
  const exists = await client.query<{ exists: boolean }>(TABLE_EXISTS, [tables.migrations]);
  const rows = exists.rows[0]?.exists
    ? (
        await client.query<MigrationRow>(
          `SELECT migration_name, checksum, started_at, finished_at, logs
             FROM ${tables.migrations} WHERE rolled_back_at IS NULL ORDER BY started_at`,
        )
      ).rows
    : [];
  const byName = new Map(rows.map((row) => [row.migration_name, row]));
  const fileNames = new Set(files.map((file) => file.name));
  const applied: AppliedMigration[] = [];
  const pending: string[] = [];
  const changed: string[] = [];
  for (const file of files) {
    const row = byName.get(file.name);
    if (!row) pending.push(file.name);
    else if (row.finished_at === null)
      continue; // listed under failed
    else if (row.checksum !== file.checksum) changed.push(file.name);
    else applied.push({ name: file.name, finishedAt: row.finished_at.toISOString() });
  }
  const failed = rows
    .filter((row) => row.finished_at === null)
    .map((row) => ({
      name: row.migration_name,
      startedAt: row.started_at.toISOString(),
      error: row.logs ? (row.logs.split('\n')[0] ?? null) : null,
    }));
  const unknown = rows
    .filter((row) => row.finished_at !== null && !fileNames.has(row.migration_name))
    .map((row) => row.migration_name);
  return {
    current: pending.length === 0 && failed.length === 0 && changed.length === 0,
    applied,
    pending,
    failed,
    changed,
    unknown,
  };
}
