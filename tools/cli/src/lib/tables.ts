import { DEFAULT_SCHEMA, quoteIdentifier } from '@usagekit/db';

/**
 * The usagekit objects the CLI reads, qualified by usagekit's schema (default `usagekit`, the
 * one migrate() creates), never found through search_path.
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
  const qualify = (table: string) => `${quoteIdentifier(schema)}.${quoteIdentifier(table)}`;
  return {
    schema,
    migrations: qualify('_prisma_migrations'),
    stats: qualify('boundary_usage_stats'),
    flushSequences: qualify('boundary_usage_flush_sequences'),
    telemetryLocks: qualify('telemetry_locks'),
    telemetryReports: qualify('telemetry_reports'),
  };
}

/** `to_regclass` of a qualified name: null when the table does not exist (not migrated yet). */
export const TABLE_EXISTS = `SELECT to_regclass($1) IS NOT NULL AS exists`;
