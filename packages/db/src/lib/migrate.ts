import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { toDatabaseError } from './errors.js';
import { InvalidInputError } from './invalid-input.js';
import { LockIds } from './lock-ids.js';
import { noopLogger, type Logger } from './logger.js';
import { defaultMigrationsDir } from './migrations-dir.js';
import {
  LEGACY_SCHEMA,
  MigrationLayoutError,
  moveLegacyLayout,
  inTransactionOrLockNotGranted,
  removeLegacyLayout,
  type LegacyRemoval,
} from './legacy-layout.js';
import { quoteIdentifier, validateSchemaName } from './schema.js';

export interface MigrateOptions {
  databaseUrl: string;
  /**
   * The PostgreSQL schema that receives usagekit's tables and its own `_prisma_migrations`
   * (default `usagekit`); created if missing. Give createPrismaClient the same name.
   */
  schema?: string;
  /**
   * Only for a database migrated before usagekit had a schema of its own (its tables in
   * `public`): migrate() moves them into `schema`. With `true` (default) it leaves, in
   * `public`, views named like the old tables and usagekit's rows in `public._prisma_migrations`,
   * so replicas still running the old version keep flushing and reporting into the moved
   * tables during a rolling upgrade; remove them with finishSchemaUpgrade() once every replica
   * runs this version. `false`: nothing of usagekit's stays in `public` (a stopped fleet).
   */
  legacyViews?: boolean;
  /** Defaults to the workspace's `prisma/migrations`. */
  migrationsDir?: string;
  logger?: Logger;
  /**
   * How long one attempt of a migration may wait for a table lock (lock_timeout); default 5 s.
   * DDL such as `ALTER TABLE` queues for an ACCESS EXCLUSIVE lock, and every later statement
   * on that table (every replica's flush) queues behind the DDL, so the wait must be short.
   */
  lockTimeoutMs?: number;
  /** Attempts per migration when its locks are not granted in time; default 5. */
  maxLockAttempts?: number;
  /** Pause before the second attempt, doubled each time up to 15 s, with jitter; default 1 s. */
  lockRetryDelayMs?: number;
  /** Also bounds connecting; default 10 s. */
  connectTimeoutMs?: number;
}

export const DEFAULT_MIGRATE_LOCK_TIMEOUT_MS = 5_000;
export const DEFAULT_MIGRATE_MAX_LOCK_ATTEMPTS = 5;
const MAX_LOCK_RETRY_DELAY_MS = 15_000;

export interface MigrateResult {
  /** Names of the migrations this call applied, in order; empty when all were applied. */
  applied: string[];
  /**
   * Present when this call moved usagekit's tables out of `public` (a database migrated by a
   * version before the schema of its own): the tables moved, and whether compatibility views
   * were left in `public` for replicas still running the old version.
   */
  upgraded?: { tables: string[]; migrations: string[]; legacyViews: boolean };
}

/** A migration that was applied earlier no longer matches its file. */
export class MigrationChecksumMismatchError extends Error {
  override readonly name = 'MigrationChecksumMismatchError';
  readonly code = 'MIGRATION_CHECKSUM_MISMATCH';
  constructor(readonly migrationName: string) {
    super(
      `Migration ${migrationName} was changed after it was applied (its checksum differs from _prisma_migrations). ` +
        'Restore the original migration.sql and put the change in a new migration.',
    );
  }
}

/** A migration failed, now or in an earlier run (Prisma's P3009 / P3018). */
export class MigrationFailedError extends Error {
  override readonly name = 'MigrationFailedError';
  readonly code = 'MIGRATION_FAILED';
  constructor(
    readonly migrationName: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A migration could not get its locks within `maxLockAttempts` attempts of `lockTimeoutMs`
 * each: something held the table the whole time (a long transaction, a stuck session).
 * Nothing of it was applied and nothing is recorded as failed; run migrate() again later.
 */
export class MigrationLockTimeoutError extends Error {
  override readonly name = 'MigrationLockTimeoutError';
  readonly code = 'MIGRATION_LOCK_TIMEOUT';
  constructor(
    readonly migrationName: string,
    readonly attempts: number,
    lockTimeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(
      `Migration ${migrationName} could not get its table locks in ${attempts} attempt(s) of ${lockTimeoutMs} ms ` +
        '(lock_timeout): another session held them throughout. Nothing was applied; find the holder ' +
        '(pg_locks, pg_stat_activity) or run migrate() again later.',
      options,
    );
  }
}

interface LockPolicy {
  lockTimeoutMs: number;
  maxLockAttempts: number;
  lockRetryDelayMs: number;
}

export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

interface AppliedRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  logs: string | null;
}

// The table exactly as Prisma Migrate creates it (prisma-engines, sql-migration-connector),
// in usagekit's schema: where Prisma's engine puts it for a URL with `?schema=`.
const createMigrationsTable = (history: string): string => `
CREATE TABLE IF NOT EXISTS ${history} (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

/** Prisma's checksum: the sha256 of migration.sql's bytes, lower-case hex. */
export function migrationChecksum(sql: string | Buffer): string {
  return createHash('sha256').update(sql).digest('hex');
}

export function readMigrations(migrationsDir: string): MigrationFile[] {
  return readdirSync(migrationsDir)
    .filter((name) => statSync(join(migrationsDir, name)).isDirectory())
    .sort()
    .map((name) => {
      const bytes = readFileSync(join(migrationsDir, name, 'migration.sql'));
      return { name, sql: bytes.toString('utf8'), checksum: migrationChecksum(bytes) };
    });
}

/**
 * Applies `prisma/migrations` the way `prisma migrate deploy` does for a URL with
 * `?schema=<schema>`, without Prisma's native schema engine: in usagekit's own schema (created
 * if missing; search_path set to it for the migration files, whose names are unqualified), in
 * name order, each in its own transaction, recorded in `<schema>._prisma_migrations` with the
 * same columns and checksums, so `prisma migrate status` agrees with us and either tool can
 * take over. A database migrated before usagekit had a schema of its own is moved first
 * (MigrateOptions.legacyViews, finishSchemaUpgrade). Holds Prisma Migrate's own session advisory lock on a dedicated
 * connection, so concurrent migrate() calls, and `prisma migrate deploy`, run one at a time.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  return withTypedErrors(options, () => migrateChecked(options));
}

/**
 * The contract of migrate() and finishSchemaUpgrade(): bad options reject with
 * InvalidInputError before anything connects, and every failure is typed: ours pass through,
 * anything from pg becomes a DatabaseError (ConnectionLostError for an unreachable server,
 * PermissionDeniedError, …) with the pg error as its cause.
 */
async function withTypedErrors<T>(
  options: Partial<MigrateOptions> | undefined,
  run: () => Promise<T>,
): Promise<T> {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidInputError('options', options, 'an options object with a databaseUrl');
  }
  if (typeof options.databaseUrl !== 'string' || options.databaseUrl.trim().length === 0) {
    // pg would otherwise try a socket with no user ("no PostgreSQL user name specified in
    // startup packet", issue 20).
    throw new InvalidInputError('databaseUrl', options.databaseUrl, 'a non-empty postgres:// URL');
  }
  try {
    return await run();
  } catch (error) {
    if (
      error instanceof MigrationChecksumMismatchError ||
      error instanceof MigrationFailedError ||
      error instanceof MigrationLockTimeoutError ||
      error instanceof InvalidInputError ||
      error instanceof MigrationLayoutError
    ) {
      throw error;
    }
    throw toDatabaseError(error);
  }
}

async function migrateChecked(options: MigrateOptions): Promise<MigrateResult> {
  const logger = options.logger ?? noopLogger;
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  let migrations: MigrationFile[];
  try {
    migrations = readMigrations(migrationsDir);
  } catch (error) {
    throw Object.assign(
      new InvalidInputError(
        'migrationsDir',
        migrationsDir,
        'a readable directory of <name>/migration.sql',
      ),
      { cause: error },
    );
  }
  const policy = lockPolicy(options);
  const schema = validateSchemaName(options.schema);
  const legacyViews = options.legacyViews ?? true;
  return withMigrationSession(options, logger, policy, async (client) => {
    const history = await prepareSchema(client, schema);
    const legacy = await moveLegacyLayout(client, {
      schema,
      legacySchema: LEGACY_SCHEMA,
      migrationNames: migrations.map((migration) => migration.name),
      legacyViews,
      logger,
      withLockRetries: (label, attempt) => withLockRetries(label, attempt, logger, policy),
      lockNotGranted: (cause) => new LockNotGrantedError({ cause }),
    });
    return {
      applied: await applyPending(client, history, migrations, logger, policy),
      ...(legacy === undefined ? {} : { upgraded: legacy }),
    };
  });
}

export type FinishSchemaUpgradeOptions = Pick<
  MigrateOptions,
  | 'databaseUrl'
  | 'schema'
  | 'logger'
  | 'lockTimeoutMs'
  | 'maxLockAttempts'
  | 'lockRetryDelayMs'
  | 'connectTimeoutMs'
>;

export type FinishSchemaUpgradeResult = LegacyRemoval;

/**
 * The last step of an upgrade from the layout before usagekit had a schema of its own, once
 * every replica runs a version that names the schema: drops the compatibility views migrate()
 * left in `public`, and removes usagekit's rows from `public._prisma_migrations` (the copies
 * in `<schema>._prisma_migrations` stay), dropping that table if nothing else is left in it
 * and this user owns it. One transaction, under Prisma Migrate's advisory lock, with
 * migrate()'s lock_timeout retries. Idempotent: a second call finds nothing to do.
 *
 * Run it too early and a replica of the old version fails every flush and report ("relation
 * does not exist"), keeping its counts in memory until it is replaced (see README "Upgrading
 * to a schema of its own").
 */
export async function finishSchemaUpgrade(
  options: FinishSchemaUpgradeOptions,
): Promise<FinishSchemaUpgradeResult> {
  return withTypedErrors(options, () => finishSchemaUpgradeChecked(options));
}

async function finishSchemaUpgradeChecked(
  options: FinishSchemaUpgradeOptions,
): Promise<FinishSchemaUpgradeResult> {
  const logger = options.logger ?? noopLogger;
  const policy = lockPolicy(options);
  const schema = validateSchemaName(options.schema);
  return withMigrationSession(options, logger, policy, async (client) => {
    let result: LegacyRemoval | undefined;
    await withLockRetries(
      'finish schema upgrade',
      async () => {
        result = await inTransactionOrLockNotGranted(
          client,
          (cause) => new LockNotGrantedError({ cause }),
          () => removeLegacyLayout(client, schema, LEGACY_SCHEMA),
        );
      },
      logger,
      policy,
    );
    logger.info('finishSchemaUpgrade: legacy layout removed', { ...result });
    return result as LegacyRemoval;
  });
}

function lockPolicy(options: Partial<MigrateOptions>): LockPolicy {
  const policy: LockPolicy = {
    lockTimeoutMs: options.lockTimeoutMs ?? DEFAULT_MIGRATE_LOCK_TIMEOUT_MS,
    maxLockAttempts: options.maxLockAttempts ?? DEFAULT_MIGRATE_MAX_LOCK_ATTEMPTS,
    lockRetryDelayMs: options.lockRetryDelayMs ?? 1_000,
  };
  if (
    !(policy.lockTimeoutMs > 0) ||
    !Number.isSafeInteger(policy.maxLockAttempts) ||
    policy.maxLockAttempts < 1
  ) {
    throw new InvalidInputError(
      'lockTimeoutMs',
      { lockTimeoutMs: policy.lockTimeoutMs, maxLockAttempts: policy.maxLockAttempts },
      'lockTimeoutMs positive and maxLockAttempts a positive integer',
    );
  }
  return policy;
}

/**
 * A dedicated connection holding Prisma Migrate's session advisory lock while `work` runs,
 * with the session's lock_timeout set for every statement after it.
 */
async function withMigrationSession<T>(
  options: Pick<MigrateOptions, 'databaseUrl' | 'connectTimeoutMs'>,
  logger: Logger,
  policy: LockPolicy,
  work: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client({
    connectionString: options.databaseUrl,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    keepAlive: true,
  });
  // A dropped connection must reach us as a rejected query, not as a process crash.
  client.on('error', (error) => logger.warn('migrate: connection error', { error: error.message }));
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1::bigint)', [LockIds.migrate.toString()]);
    try {
      // Set after the advisory lock, which waits for another migrate() on purpose. From here
      // on every statement of the session, the DDL included, waits for a table lock at most
      // this long; withLockRetries() retries a migration that timed out.
      await client.query(`SELECT set_config('lock_timeout', $1, false)`, [
        `${policy.lockTimeoutMs}ms`,
      ]);
      return await work(client);
    } finally {
      await client.query('SELECT pg_advisory_unlock($1::bigint)', [LockIds.migrate.toString()]);
    }
  } finally {
    await client.end();
  }
}

/**
 * Creates the schema if it is missing, makes it the session's search_path (the migration files
 * name their tables unqualified, as Prisma writes them, and Prisma's engine runs them the same
 * way for `?schema=`), and creates its `_prisma_migrations`. Returns that table's qualified name.
 *
 * The schema is created only when missing: CREATE SCHEMA IF NOT EXISTS checks the CREATE right
 * on the database before it looks, and a DBA may have created the schema for a user without it.
 */
async function prepareSchema(client: Client, schema: string): Promise<string> {
  const quoted = quoteIdentifier(schema);
  const { rows } = await client.query<{ exists: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS exists`,
    [schema],
  );
  if (!rows[0]?.exists) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoted}`);
  await client.query(`SELECT set_config('search_path', $1, false)`, [quoted]);
  const history = `${quoted}."_prisma_migrations"`;
  await client.query(createMigrationsTable(history));
  return history;
}

async function applyPending(
  client: Client,
  history: string,
  migrations: MigrationFile[],
  logger: Logger,
  policy: LockPolicy,
): Promise<string[]> {
  const { rows } = await client.query<AppliedRow>(
    `SELECT migration_name, checksum, finished_at, rolled_back_at, logs
       FROM ${history} ORDER BY started_at`,
  );
  const live = rows.filter((row) => row.rolled_back_at === null);
  const failed = live.find((row) => row.finished_at === null);
  if (failed) {
    throw new MigrationFailedError(
      failed.migration_name,
      `Migration ${failed.migration_name} failed earlier and is recorded as failed in _prisma_migrations` +
        `${failed.logs ? ` (${failed.logs.split('\n')[0]})` : ''}. Fix the database, then mark it with ` +
        '`prisma migrate resolve --rolled-back` (or set rolled_back_at) and run migrate again.',
    );
  }
  const appliedByName = new Map(live.map((row) => [row.migration_name, row]));
  const applied: string[] = [];
  for (const migration of migrations) {
    const previous = appliedByName.get(migration.name);
    if (previous) {
      if (previous.checksum !== migration.checksum) {
        throw new MigrationChecksumMismatchError(migration.name);
      }
      continue;
    }
    await withLockRetries(
      migration.name,
      () => applyOne(client, history, migration),
      logger,
      policy,
    );
    logger.info('migrate: applied', { migration: migration.name });
    applied.push(migration.name);
  }
  return applied;
}

/**
 * Runs `attempt` (applyOne, or the move of a legacy layout), and again with a growing, jittered
 * pause when its locks did not come within lock_timeout: the fleet's statements queued behind
 * the DDL's lock request then run in the pause instead of waiting for the holder.
 */
async function withLockRetries(
  label: string,
  run: () => Promise<void>,
  logger: Logger,
  policy: LockPolicy,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run();
      return;
    } catch (error) {
      if (!(error instanceof LockNotGrantedError)) throw error;
      if (attempt >= policy.maxLockAttempts) {
        throw new MigrationLockTimeoutError(label, attempt, policy.lockTimeoutMs, {
          cause: error.cause,
        });
      }
      const ceiling = Math.min(
        MAX_LOCK_RETRY_DELAY_MS,
        policy.lockRetryDelayMs * 2 ** (attempt - 1),
      );
      const delayMs = ceiling / 2 + Math.random() * (ceiling / 2);
      logger.warn('migrate: a table lock was not granted in time; retrying', {
        migration: label,
        attempt,
        lockTimeoutMs: policy.lockTimeoutMs,
        delayMs: Math.round(delayMs),
      });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** applyOne's lock_timeout (55P03): rolled back and unrecorded, so it can simply run again. */
export class LockNotGrantedError extends Error {
  constructor(options: { cause: unknown }) {
    super('lock not granted within lock_timeout', options);
  }
}

async function applyOne(client: Client, history: string, migration: MigrationFile): Promise<void> {
  const id = randomUUID();
  // Recorded before it runs, as Prisma does, so a crash leaves a visible unfinished row.
  await client.query(
    `INSERT INTO ${history} (id, checksum, migration_name, started_at, applied_steps_count)
     VALUES ($1, $2, $3, now(), 0)`,
    [id, migration.checksum, migration.name],
  );
  try {
    await client.query('BEGIN');
    await client.query(migration.sql);
    await client.query(
      `UPDATE ${history} SET finished_at = clock_timestamp(), applied_steps_count = 1
        WHERE id = $1`,
      [id],
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    if ((error as { code?: unknown }).code === '55P03') {
      // Not a failed migration, just a busy table: forget the attempt entirely, so neither
      // we nor `prisma migrate deploy` later refuse to run it as failed (P3009).
      const forgotten = await client
        .query(`DELETE FROM ${history} WHERE id = $1`, [id])
        .then(() => true)
        .catch(() => false);
      if (forgotten) throw new LockNotGrantedError({ cause: error });
    }
    const message = error instanceof Error ? error.message : String(error);
    await client
      .query(`UPDATE ${history} SET logs = $2 WHERE id = $1`, [id, message])
      .catch(() => undefined);
    throw new MigrationFailedError(
      migration.name,
      `Migration ${migration.name} failed and was rolled back: ${message}`,
      { cause: error },
    );
  }
}
