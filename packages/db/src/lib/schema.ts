import { Prisma } from '../generated/prisma/client.js';
import { InvalidInputError } from './invalid-input.js';

/**
 * The PostgreSQL schema that holds every usagekit table and usagekit's own
 * `_prisma_migrations`, so a host application's Prisma (which owns `public`) never sees them
 * (issue 17). Configurable per database; the same name must reach migrate(), applyRoles(),
 * createPrismaClient() (or the store's `schema` option) and a `prisma migrate deploy` run
 * with `?schema=` in its URL.
 */
export const DEFAULT_SCHEMA = 'usagekit';

/** The tables usagekit owns, as the migrations name them (unqualified). */
export const USAGEKIT_TABLES = [
  'boundary_usage_stats',
  'boundary_usage_ids',
  'boundary_usage_flush_sequences',
  'telemetry_locks',
  'telemetry_reports',
] as const;

export type UsagekitTable = (typeof USAGEKIT_TABLES)[number];

/**
 * Lower-case letters, digits and underscores, starting with a letter or underscore, at most 63
 * bytes (NAMEDATALEN − 1): a name that reads the same quoted or not, in SQL, in psql and in a
 * `?schema=` URL parameter. `public` is refused (usagekit's point is to stay out of it), and
 * so are PostgreSQL's own schemas.
 */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Returns `value` if it is a schema name usagekit accepts; throws InvalidInputError (code
 * INVALID_INPUT, `field` as given) saying why not, so every public call that takes a schema
 * rejects bad input the same way.
 */
export function validateSchemaName(value: unknown, field = 'schema'): string {
  if (value === undefined) return DEFAULT_SCHEMA;
  if (typeof value !== 'string' || !SCHEMA_NAME.test(value)) {
    throw new InvalidInputError(
      field,
      value,
      'a lower-case identifier (letters, digits, _; at most 63 characters)',
    );
  }
  if (value === 'public' || value === 'information_schema' || value.startsWith('pg_')) {
    throw new InvalidInputError(
      field,
      value,
      `a schema of usagekit's own (default "${DEFAULT_SCHEMA}"), not public or a system schema`,
    );
  }
  return value;
}

/** `"name"`: an identifier quoted for SQL (the validated names need no escaping, but are quoted anyway). */
export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * The qualified, quoted name of every usagekit table in one schema, as text and as a
 * `Prisma.Sql` fragment (no bound values, so a statement built with it keeps one text per
 * shape). Runtime SQL names its tables through these and never relies on search_path: a
 * stock PgBouncer in transaction mode refuses a startup `search_path`, and a host's session
 * settings are not ours to change.
 */
export interface SchemaTables {
  schema: string;
  /** `"usagekit"` */
  quotedSchema: string;
  text: Readonly<Record<UsagekitTable, string>>;
  sql: Readonly<Record<UsagekitTable, Prisma.Sql>>;
}

const tablesBySchema = new Map<string, SchemaTables>();

/** {@link SchemaTables} for `schema` (validated), built once per schema name. */
export function schemaTables(schema: string = DEFAULT_SCHEMA): SchemaTables {
  let tables = tablesBySchema.get(schema);
  if (tables === undefined) {
    const name = validateSchemaName(schema);
    const quotedSchema = quoteIdentifier(name);
    const text = {} as Record<UsagekitTable, string>;
    const sql = {} as Record<UsagekitTable, Prisma.Sql>;
    for (const table of USAGEKIT_TABLES) {
      text[table] = `${quotedSchema}.${quoteIdentifier(table)}`;
      sql[table] = Prisma.raw(text[table]);
    }
    tables = Object.freeze({
      schema: name,
      quotedSchema,
      text: Object.freeze(text),
      sql: Object.freeze(sql),
    });
    tablesBySchema.set(schema, tables);
  }
  return tables;
}
