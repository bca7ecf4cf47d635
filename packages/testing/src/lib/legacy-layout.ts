/**
 * A database as usagekit left it before it had a schema of its own (issue 17): its migrations
 * applied unqualified into `public`, its history in `public._prisma_migrations`, beside a host
 * application's table and history row. Built by the upgrade tests (@usagekit/telemetry's
 * schema-upgrade test, the CLI's finish-upgrade test) to upgrade from.
 *
 * The migrations are a parameter (what @usagekit/db's readMigrations() returns) so this
 * package does not depend on @usagekit/db's runtime, as template.ts does with migrate().
 */
import { randomUUID } from 'node:crypto';
import type { Client } from 'pg';

/** One migration directory: what readMigrations() from @usagekit/db returns for it. */
export interface LegacyMigration {
  name: string;
  sql: string;
  checksum: string;
}

/** The host application's own history row, which no upgrade step may touch. */
export const LEGACY_HOST_MIGRATION = '20250101000000_host_items';
/** The host application's own table in public, with one row (1, 'kept'). */
export const LEGACY_HOST_TABLE = 'host_items';

/**
 * The previous version's migrate(), reduced to what it wrote: each migration not yet recorded
 * applied unqualified (the connection's search_path, normally public) in its own transaction,
 * its history row in `_prisma_migrations` with the same checksum. Returns the names applied.
 */
export async function applyLegacyLayout(
  client: Client,
  migrations: readonly LegacyMigration[],
): Promise<string[]> {
  await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ, "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ, "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0)`);
  const { rows } = await client.query<{ migration_name: string }>(
    `SELECT migration_name FROM "_prisma_migrations" WHERE rolled_back_at IS NULL`,
  );
  const done = new Set(rows.map((row) => row.migration_name));
  const applied: string[] = [];
  for (const migration of migrations) {
    if (done.has(migration.name)) continue;
    const id = randomUUID();
    await client.query(
      `INSERT INTO "_prisma_migrations" (id, checksum, migration_name) VALUES ($1, $2, $3)`,
      [id, migration.checksum, migration.name],
    );
    await client.query('BEGIN');
    await client.query(migration.sql);
    await client.query(
      `UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1`,
      [id],
    );
    await client.query('COMMIT');
    applied.push(migration.name);
  }
  return applied;
}

/**
 * applyLegacyLayout() on a database a host application already uses: first the host's table
 * public.host_items with the row (1, 'kept'), then usagekit's migrations, then the host's
 * history row LEGACY_HOST_MIGRATION in the shared public._prisma_migrations.
 */
export async function applyLegacyLayoutBesideHost(
  client: Client,
  migrations: readonly LegacyMigration[],
): Promise<string[]> {
  await client.query(
    `CREATE TABLE public.${LEGACY_HOST_TABLE} (id int PRIMARY KEY, name text NOT NULL)`,
  );
  await client.query(`INSERT INTO public.${LEGACY_HOST_TABLE} VALUES (1, 'kept')`);
  const applied = await applyLegacyLayout(client, migrations);
  await client.query(
    `INSERT INTO public."_prisma_migrations" (id, checksum, migration_name, finished_at, applied_steps_count)
     VALUES ($1, 'host-checksum', $2, now(), 1)`,
    [randomUUID(), LEGACY_HOST_MIGRATION],
  );
  return applied;
}
