export { createPrismaClient, connectionProfile, usagekitSchemaOf } from './lib/client.js';
export {
  DEFAULT_SCHEMA,
  USAGEKIT_TABLES,
  schemaTables,
  validateSchemaName,
  quoteIdentifier,
} from './lib/schema.js';
export type { SchemaTables, UsagekitTable } from './lib/schema.js';
export type { CreatePrismaClientOptions, ConnectionProfile } from './lib/client.js';
export {
  DEFAULT_TRANSACTION_MAX_WAIT_MS,
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_STATEMENT_DEADLINE_MS,
  DEFAULT_SESSION_LOCK_TIMEOUT_MS,
  DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  DEFAULT_POOL_IDLE_TIMEOUT_MS,
} from './lib/client.js';
export {
  migrate,
  finishSchemaUpgrade,
  migrationChecksum,
  readMigrations,
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  DEFAULT_MIGRATE_LOCK_TIMEOUT_MS,
  DEFAULT_MIGRATE_MAX_LOCK_ATTEMPTS,
} from './lib/migrate.js';
export type {
  MigrateOptions,
  MigrateResult,
  FinishSchemaUpgradeOptions,
  FinishSchemaUpgradeResult,
} from './lib/migrate.js';
export { MigrationLayoutError, LEGACY_SCHEMA } from './lib/legacy-layout.js';
export { disconnectWithin } from './lib/disconnect.js';
export type { DisconnectOptions, DisconnectOutcome } from './lib/disconnect.js';
export { InvalidInputError } from './lib/invalid-input.js';
export { defaultMigrationsDir } from './lib/migrations-dir.js';
export { Deadline } from './lib/deadline.js';
export { LockIds } from './lib/lock-ids.js';
export type { LockId } from './lib/lock-ids.js';
export {
  applyRoles,
  defaultRolesScriptPath,
  UsagekitRoles,
  type ApplyRolesOptions,
} from './lib/roles.js';
export {
  DatabaseError,
  DeadlockError,
  SerializationError,
  LockTimeoutError,
  StatementTimeoutError,
  ConnectionLostError,
  TransactionTimeoutError,
  NumericOverflowError,
  DeadlineExceededError,
  PermissionDeniedError,
  PreparedStatementMismatchError,
  ServerNotWritableError,
  ClientClosedError,
  toDatabaseError,
  sqlStateOf,
} from './lib/errors.js';
export type { DatabaseErrorCode } from './lib/errors.js';
export { noopLogger, redactDatabaseUrl } from './lib/logger.js';
export type { Logger } from './lib/logger.js';
export { Prisma, PrismaClient } from './generated/prisma/client.js';
