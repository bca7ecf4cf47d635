import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Client } from 'pg';
import { DatabaseError, sqlStateOf, toDatabaseError } from './errors.js';
import { InvalidInputError } from './invalid-input.js';
import { LockIds } from './lock-ids.js';
import { noopLogger, type Logger } from './logger.js';
import { validateSchemaName } from './schema.js';

/** The two group roles packages/db/sql/roles.sql creates (NOLOGIN; grant them to login users). */
export const UsagekitRoles = {
  /** May run the boundary-usage flush and nothing else. */
  writer: 'usagekit_writer',
  /** The writer's rights plus cutover, period election, telemetry outbox and retention. */
  reporter: 'usagekit_reporter',
} as const;

export interface ApplyRolesOptions {
  /** A user with CREATEROLE (or a superuser) that owns the usagekit tables. */
  databaseUrl: string;
  /** Defaults to the workspace's `packages/db/sql/roles.sql`. */
  scriptPath?: string;
  /** The schema of usagekit's tables (the one migrate() was given); default `usagekit`. */
  schema?: string;
  logger?: Logger;
}

/**
 * Finds `packages/db/sql/roles.sql` by walking up from this file, so it works from `src/`
 * (Jest, tools in development) and from `dist/` alike.
 */
export function defaultRolesScriptPath(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, 'sql', 'roles.sql');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) {
      throw new Error(
        `applyRoles: could not find sql/roles.sql above ${resolve(__dirname)}; pass scriptPath`,
      );
    }
  }
}

/**
 * Creates the usagekit_writer and usagekit_reporter roles (cluster-wide, once) and gives them
 * exactly their privileges on this database's usagekit tables, by running
 * `packages/db/sql/roles.sql` in one transaction under the `LockIds.roles` advisory lock.
 * Idempotent and safe to run from several processes at once; run it after migrate(), again
 * after every migration that adds a table.
 *
 * Separate from migrate() on purpose: it needs CREATEROLE (and ownership of the tables),
 * while migrations must keep working for a user who has neither right to spare.
 */
export async function applyRoles(options: ApplyRolesOptions): Promise<void> {
  if (typeof options?.databaseUrl !== 'string' || options.databaseUrl.trim().length === 0) {
    throw new InvalidInputError('databaseUrl', options?.databaseUrl, 'a non-empty postgres:// URL');
  }
  const logger = options.logger ?? noopLogger;
  const schema = validateSchemaName(options.schema);
  const scriptPath = options.scriptPath ?? defaultRolesScriptPath();
  let script: string;
  try {
    script = readFileSync(scriptPath, 'utf8');
  } catch (error) {
    throw Object.assign(new InvalidInputError('scriptPath', scriptPath, 'a readable roles.sql'), {
      cause: error,
    });
  }
  const client = new Client({ connectionString: options.databaseUrl });
  // A dropped connection must reach us as a rejected query, not as a process crash.
  client.on('error', (error) =>
    logger.warn('applyRoles: connection error', { error: error.message }),
  );
  try {
    await client.connect();
    await client.query('BEGIN');
    // The script takes the same lock itself (for psql users); taking it here from the
    // registry keeps applyRoles correct even if a hand-edited script dropped that line.
    await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [LockIds.roles.toString()]);
    // The script reads it to set its (local) search_path to usagekit's schema.
    await client.query(`SELECT set_config('usagekit.schema', $1, true)`, [schema]);
    await client.query(script);
    await client.query('COMMIT');
    logger.info('applyRoles: roles applied', { roles: Object.values(UsagekitRoles), schema });
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw rolesError(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function rolesError(error: unknown): DatabaseError {
  const sqlState = sqlStateOf(error);
  if (sqlState === '42501') {
    const detail = error instanceof Error ? error.message : String(error);
    return new DatabaseError(
      `applyRoles: permission denied (${detail}). It must run as a user with CREATEROLE (or a superuser) ` +
        'that owns the usagekit tables, i.e. the user that ran migrate().',
      { sqlState, cause: error },
    );
  }
  return toDatabaseError(error);
}
