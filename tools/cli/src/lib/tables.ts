/**
 * The usagekit objects the CLI reads, schema-qualified. `schema` undefined means "as the
 * session's search_path finds them" (public on a default database).
 */
export interface UsagekitTables {
  schema: string | undefined;
  migrations: string;
  stats: string;
  flushSequences: string;
  telemetryLocks: string;
  telemetryReports: string;
}

export function usagekitTables(schema?: string): UsagekitTables {
  const qualify = (table: string) =>
    schema === undefined ? `"${table}"` : `${quoteIdentifier(schema)}."${table}"`;
  return {
    schema,
    migrations: qualify('_prisma_migrations'),
    stats: qualify('boundary_usage_stats'),
    flushSequences: qualify('boundary_usage_flush_sequences'),
    telemetryLocks: qualify('telemetry_locks'),
    telemetryReports: qualify('telemetry_reports'),
  };
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `to_regclass` of a qualified name: null when the table does not exist (not migrated yet). */
export const TABLE_EXISTS = `SELECT to_regclass($1) IS NOT NULL AS exists`;
