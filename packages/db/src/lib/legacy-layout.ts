/**
 * The upgrade from the layout before issue 17: usagekit's tables in `public` and its history
 * rows in `public._prisma_migrations`, beside whatever a host application keeps there. Run by
 * migrate() (moveLegacyLayout) and finishSchemaUpgrade() (removeLegacyLayout) on their own
 * connection, while they hold Prisma Migrate's advisory lock (72707369), so neither another
 * migrate() nor a `prisma migrate deploy` (ours or the host's) runs meanwhile.
 *
 * What is usagekit's is decided by its history, never by a table name alone: a host may have a
 * `telemetry_reports` of its own. A table moves only if the migration that creates it is
 * recorded as applied in `public._prisma_migrations`; a history row is ours only if its
 * migration name is one of our migration directories, and is removed from `public` only once
 * the row with the same id is in usagekit's own history.
 */
import type { Client } from 'pg';
import type { Logger } from './logger.js';
import { quoteIdentifier, USAGEKIT_TABLES, type UsagekitTable } from './schema.js';

/** Where every version before issue 17 put usagekit's tables (the migrate user's default). */
export const LEGACY_SCHEMA = 'public';

/** Which migration creates each table, so a host's table of the same name is never taken. */
const CREATED_BY: Readonly<Record<UsagekitTable, string>> = {
  boundary_usage_stats: '20260127000000_init',
  telemetry_locks: '20260127000000_init',
  telemetry_reports: '20260127000000_init',
  boundary_usage_ids: '20260201000000_exact_uniques',
  boundary_usage_flush_sequences: '20260202000000_flush_sequences',
};

/**
 * The old flush reads `xmax` (`RETURNING (xmax = 0) AS new_period`, new period or not). A view
 * has no system columns, so the stats view exposes the table's xmax as a column of its own;
 * PostgreSQL maps it back to the row the INSERT … ON CONFLICT wrote.
 */
const VIEW_EXTRA_COLUMNS: Partial<Record<UsagekitTable, string>> = {
  boundary_usage_stats: ', xmax',
};

/** The comment that marks a compatibility view as usagekit's (finishSchemaUpgrade drops only these). */
const VIEW_MARKER = 'usagekit upgrade view';

const HISTORY_COLUMNS =
  'id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count';

/** The database has usagekit's tables both in `public` and in its schema: nothing was moved. */
export class MigrationLayoutError extends Error {
  override readonly name = 'MigrationLayoutError';
  readonly code = 'MIGRATION_LAYOUT_CONFLICT';
  constructor(
    message: string,
    readonly tables: string[],
  ) {
    super(message);
  }
}

export interface LegacyMoveContext {
  schema: string;
  legacySchema: string;
  /** Names of usagekit's migration directories. */
  migrationNames: string[];
  legacyViews: boolean;
  logger: Logger;
  /** Runs the attempt again, with a pause, when it failed with LockNotGrantedError. */
  withLockRetries: (label: string, attempt: () => Promise<void>) => Promise<void>;
  /** Wraps a lock_timeout (or a deadlock with the fleet's statements) for withLockRetries. */
  lockNotGranted: (cause: unknown) => Error;
}

export interface LegacyMoveResult {
  tables: string[];
  migrations: string[];
  legacyViews: boolean;
}

/**
 * Moves a legacy layout into `schema`, in ONE transaction: every statement of the fleet
 * either ran before it (on the table, which keeps its rows, indexes, constraints, comments,
 * grants and its OID) or runs after it, on the same table under its new name. Returns
 * undefined when there is nothing to move (a new database, or one already moved).
 *
 * `ALTER TABLE … SET SCHEMA` takes each table's ACCESS EXCLUSIVE lock under the session's
 * lock_timeout; a flush holds RowExclusive on three tables at once, so the two can also
 * deadlock (40P01). Either way the transaction rolls back whole and withLockRetries runs it
 * again after a pause.
 */
export async function moveLegacyLayout(
  client: Client,
  context: LegacyMoveContext,
): Promise<LegacyMoveResult | undefined> {
  const { schema, legacySchema, migrationNames } = context;
  const legacyHistory = `${quoteIdentifier(legacySchema)}."_prisma_migrations"`;
  const history = `${quoteIdentifier(schema)}."_prisma_migrations"`;
  const { rows: found } = await client.query<{ exists: boolean }>(
    `SELECT to_regclass($1) IS NOT NULL AS exists`,
    [legacyHistory],
  );
  if (!found[0]?.exists) return undefined;
  const { rows: historyRows } = await client.query<{ migration_name: string; applied: boolean }>(
    `SELECT migration_name, bool_or(finished_at IS NOT NULL AND rolled_back_at IS NULL) AS applied
       FROM ${legacyHistory} WHERE migration_name = ANY($1::text[]) GROUP BY migration_name`,
    [migrationNames],
  );
  if (historyRows.length === 0) return undefined;
  const appliedMigrations = new Set(
    historyRows.filter((r) => r.applied).map((r) => r.migration_name),
  );
  const candidates = USAGEKIT_TABLES.filter((table) => appliedMigrations.has(CREATED_BY[table]));
  const tables = await tablesIn(client, legacySchema, candidates, ['r', 'p']);
  if (tables.length === 0) return undefined; // moved already (views or nothing left in public)

  const clashing = await tablesIn(client, schema, tables, ['r', 'p', 'v', 'm', 'f']);
  if (clashing.length > 0) {
    throw new MigrationLayoutError(
      `migrate: usagekit's tables ${tables.join(', ')} are in schema "${legacySchema}" (the layout before ` +
        `usagekit had a schema of its own), but ${clashing.join(', ')} also exist in schema "${schema}". ` +
        'Nothing was moved. Keep the one that holds your data (normally the one in ' +
        `"${legacySchema}") and drop the other, then run migrate() again.`,
      clashing,
    );
  }

  const migrations = historyRows.map((row) => row.migration_name).sort();
  await context.withLockRetries(`move ${tables.length} table(s) to schema ${schema}`, () =>
    inTransactionOrLockNotGranted(client, context.lockNotGranted, async () => {
      await lockForMove(client, legacySchema, tables);
      for (const table of tables) {
        await client.query(
          `ALTER TABLE ${quoteIdentifier(legacySchema)}.${quoteIdentifier(table)} SET SCHEMA ${quoteIdentifier(schema)}`,
        );
      }
      await client.query(
        `INSERT INTO ${history} (${HISTORY_COLUMNS})
         SELECT ${HISTORY_COLUMNS} FROM ${legacyHistory} WHERE migration_name = ANY($1::text[])
         ON CONFLICT (id) DO NOTHING`,
        [migrations],
      );
      await grantSchemaUsageToGrantees(client, schema, tables);
      if (context.legacyViews) {
        for (const table of tables)
          await createCompatibilityView(client, schema, legacySchema, table);
      } else {
        await removeLegacyHistory(client, schema, legacySchema);
      }
    }),
  );
  context.logger.info('migrate: moved usagekit tables into their own schema', {
    schema,
    from: legacySchema,
    tables,
    legacyViews: context.legacyViews,
  });
  return { tables, migrations, legacyViews: context.legacyViews };
}

/**
 * `work` in one transaction; a lock that did not come within lock_timeout (55P03), or a
 * deadlock with the fleet's statements (40P01), rolls it back whole and is thrown as
 * `lockNotGranted(cause)`, which withLockRetries runs again. Any other failure rolls back too.
 */
export async function inTransactionOrLockNotGranted<T>(
  client: Client,
  lockNotGranted: (cause: unknown) => Error,
  work: () => Promise<T>,
): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    const sqlState = (error as { code?: unknown }).code;
    if (sqlState === '55P03' || sqlState === '40P01') throw lockNotGranted(error);
    throw error;
  }
}

export interface LegacyRemoval {
  /** Compatibility views dropped from the legacy schema. */
  views: string[];
  /** usagekit history rows removed from the legacy `_prisma_migrations`. */
  historyRows: number;
  /** Whether the legacy `_prisma_migrations` was dropped (empty and owned by this user). */
  droppedHistoryTable: boolean;
}

/**
 * finishSchemaUpgrade's work, in the caller's transaction: drops the compatibility views
 * migrate() left (only views carrying its marker comment), then removes usagekit's history
 * from the legacy `_prisma_migrations`.
 */
export async function removeLegacyLayout(
  client: Client,
  schema: string,
  legacySchema: string,
): Promise<LegacyRemoval> {
  const { rows } = await client.query<{ relname: string }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'v' AND c.relname = ANY($2::text[])
        AND obj_description(c.oid, 'pg_class') LIKE $3`,
    [legacySchema, [...USAGEKIT_TABLES], `${VIEW_MARKER}%`],
  );
  const views = rows.map((row) => row.relname).sort();
  for (const view of views) {
    await client.query(`DROP VIEW ${quoteIdentifier(legacySchema)}.${quoteIdentifier(view)}`);
  }
  return { views, ...(await removeLegacyHistory(client, schema, legacySchema)) };
}

/**
 * Deletes from the legacy `_prisma_migrations` exactly the rows that are also in usagekit's
 * own history (same id: they were copied there), never a host's row. Drops the table only if
 * that leaves it empty and this user owns it: then no host migration is recorded in it, and
 * the host's Prisma creates it again on its next migrate. A table the host's user owns stays.
 */
async function removeLegacyHistory(
  client: Client,
  schema: string,
  legacySchema: string,
): Promise<Omit<LegacyRemoval, 'views'>> {
  const legacyHistory = `${quoteIdentifier(legacySchema)}."_prisma_migrations"`;
  const { rows: found } = await client.query<{ exists: boolean }>(
    `SELECT to_regclass($1) IS NOT NULL AS exists`,
    [legacyHistory],
  );
  if (!found[0]?.exists) return { historyRows: 0, droppedHistoryTable: false };
  const removed = await client.query(
    `DELETE FROM ${legacyHistory} l
      USING ${quoteIdentifier(schema)}."_prisma_migrations" u
      WHERE l.id = u.id AND l.migration_name = u.migration_name AND l.checksum = u.checksum`,
  );
  const { rows } = await client.query<{ droppable: boolean }>(
    `SELECT NOT EXISTS (SELECT 1 FROM ${legacyHistory})
            AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = $1::regclass), 'USAGE')
            AS droppable`,
    [legacyHistory],
  );
  const droppedHistoryTable = rows[0]?.droppable === true;
  if (droppedHistoryTable) await client.query(`DROP TABLE ${legacyHistory}`);
  return { historyRows: removed.rowCount ?? 0, droppedHistoryTable };
}

/**
 * The order the fleet's flush statement takes its tables in (sequences, ids, stats: the order
 * of its CTEs), then the telemetry tables. Taking ours in the same order, in one LOCK TABLE,
 * the move can never hold a table a flush waits for while waiting for one that flush holds.
 */
const LOCK_ORDER: readonly UsagekitTable[] = [
  'boundary_usage_flush_sequences',
  'boundary_usage_ids',
  'boundary_usage_stats',
  'telemetry_locks',
  'telemetry_reports',
];

/**
 * Takes every table's ACCESS EXCLUSIVE lock up front. The cutover's transaction takes stats
 * before ids, the opposite order, so the move can still close a cycle with a cutover; PostgreSQL
 * then aborts whichever session runs its deadlock check first, after deadlock_timeout. The
 * move waits at most half of deadlock_timeout here (and never longer than its lock_timeout),
 * so it gives up (55P03, retried after a pause) before any replica's check fires: a replica is
 * never the one aborted, and its flushes wait behind the move at most that long per attempt.
 */
async function lockForMove(
  client: Client,
  legacySchema: string,
  tables: readonly UsagekitTable[],
): Promise<void> {
  await client.query(
    `SELECT set_config('lock_timeout', (extract(epoch FROM least(
       current_setting('lock_timeout')::interval,
       greatest(current_setting('deadlock_timeout')::interval / 2, interval '10 milliseconds'))) * 1000)::bigint || 'ms',
       true)`,
  );
  const ordered = LOCK_ORDER.filter((table) => tables.includes(table));
  await client.query(
    `LOCK TABLE ${ordered.map((t) => `${quoteIdentifier(legacySchema)}.${quoteIdentifier(t)}`).join(', ')} IN ACCESS EXCLUSIVE MODE`,
  );
}

/**
 * A view in the legacy schema named like the moved table, over it. It is a simple view, so
 * PostgreSQL makes it auto-updatable: the old version's INSERT … ON CONFLICT, UPDATE,
 * DELETE … RETURNING and FOR UPDATE SKIP LOCKED all reach the table. The old replicas keep
 * taking the same advisory locks, so old and new writers and cutovers still exclude each
 * other exactly as before. The table's grants are copied, so an old replica running as
 * usagekit_writer or usagekit_reporter keeps its rights (the view reads the table with its
 * owner's, as views do).
 */
async function createCompatibilityView(
  client: Client,
  schema: string,
  legacySchema: string,
  table: UsagekitTable,
): Promise<void> {
  const view = `${quoteIdentifier(legacySchema)}.${quoteIdentifier(table)}`;
  const target = `${quoteIdentifier(schema)}.${quoteIdentifier(table)}`;
  await client.query(
    `CREATE VIEW ${view} AS SELECT *${VIEW_EXTRA_COLUMNS[table] ?? ''} FROM ${target}`,
  );
  await client.query(
    `COMMENT ON VIEW ${view} IS '${VIEW_MARKER}: the table moved to ${target}; this view keeps replicas of the previous version working. finishSchemaUpgrade() drops it.'`,
  );
  // The table's grants (relacl) and column grants (attacl, xmax included), copied by name.
  const { rows } = await client.query<{ statement: string }>(
    `WITH t AS (SELECT $1::regclass AS oid), v AS (SELECT $2::regclass AS oid),
     table_grants AS (
       SELECT a.privilege_type, a.grantee, a.is_grantable, NULL::name AS column_name
         FROM pg_class c, t, aclexplode(c.relacl) a
        WHERE c.oid = t.oid AND a.grantee <> c.relowner
     ),
     column_grants AS (
       SELECT a.privilege_type, a.grantee, a.is_grantable, att.attname AS column_name
         FROM pg_attribute att, t, aclexplode(att.attacl) a
        WHERE att.attrelid = t.oid AND att.attacl IS NOT NULL
          AND EXISTS (SELECT 1 FROM pg_attribute va, v
                       WHERE va.attrelid = v.oid AND va.attname = att.attname AND va.attnum > 0)
     )
     SELECT format('GRANT %s%s ON %s TO %s%s', g.privilege_type,
                   CASE WHEN g.column_name IS NULL THEN '' ELSE format(' (%I)', g.column_name) END,
                   $2, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
                   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) AS statement
       FROM (SELECT * FROM table_grants UNION ALL SELECT * FROM column_grants) g
       LEFT JOIN pg_roles r ON r.oid = g.grantee`,
    [target, view],
  );
  for (const row of rows) await client.query(row.statement);
}

/**
 * Roles that were granted rights on the moved tables (usagekit_writer, usagekit_reporter, a
 * DBA's own) need USAGE on the new schema to reach them; given here so that a fleet running as
 * those roles keeps working before applyRoles() runs again.
 */
async function grantSchemaUsageToGrantees(
  client: Client,
  schema: string,
  tables: readonly string[],
): Promise<void> {
  const { rows } = await client.query<{ grantee: string }>(
    `WITH moved AS (
       SELECT c.oid, c.relowner, c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
     ), grantees AS (
       SELECT a.grantee, m.relowner FROM moved m, aclexplode(m.relacl) a
       UNION
       SELECT a.grantee, m.relowner FROM moved m
         JOIN pg_attribute att ON att.attrelid = m.oid AND att.attacl IS NOT NULL,
         aclexplode(att.attacl) a
     )
     SELECT DISTINCT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee
       FROM grantees g LEFT JOIN pg_roles r ON r.oid = g.grantee
      WHERE g.grantee <> g.relowner`,
    [schema, tables],
  );
  for (const row of rows) {
    await client.query(`GRANT USAGE ON SCHEMA ${quoteIdentifier(schema)} TO ${row.grantee}`);
  }
}

/** Which of `tables` exist in `schema` with one of `kinds` (pg_class.relkind). */
async function tablesIn(
  client: Client,
  schema: string,
  tables: readonly string[],
  kinds: readonly string[],
): Promise<UsagekitTable[]> {
  const { rows } = await client.query<{ relname: UsagekitTable }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind = ANY($3::"char"[])`,
    [schema, tables, kinds],
  );
  const present = new Set(rows.map((row) => row.relname));
  return USAGEKIT_TABLES.filter((table) => present.has(table));
}
