import { DEFAULT_SCHEMA, quoteIdentifier, schemaTables } from '@usagekit/db';

/**
 * The usagekit objects the CLI reads, qualified by usagekit's schema (default `usagekit`, the
 * one migrate() creates), never found through search_path. The table names come from
 * @usagekit/db's schemaTables, the same the runtime uses, so the two cannot drift apart.
 */
export interface UsagekitTables {
  schema: string;
  migrations: string;
  stats: string;
  flushSequences: string;
  telemetryLocks: string;
  telemetryReports: string;
}

export function usagekitTables(schema: string = DEFAULT_SCHEMA): UsagekitTables {
  const tables = schemaTables(schema);
  return {
    schema: tables.schema,
    // Prisma's history table is not one of usagekit's own tables (schemaTables lists those).
    migrations: `${tables.quotedSchema}.${quoteIdentifier('_prisma_migrations')}`,
    stats: tables.text.boundary_usage_stats,
    flushSequences: tables.text.boundary_usage_flush_sequences,
    telemetryLocks: tables.text.telemetry_locks,
    telemetryReports: tables.text.telemetry_reports,
  };
}

/** `to_regclass` of a qualified name: null when the table does not exist (not migrated yet). */
export const TABLE_EXISTS = `SELECT to_regclass($1) IS NOT NULL AS exists`;
