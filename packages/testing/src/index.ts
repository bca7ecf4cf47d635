export { startPostgresServer } from './lib/server.js';
export type { StartPostgresServerOptions } from './lib/server.js';
export type { PostgresServer } from './lib/postgres-server.js';
export {
  containerImageProblem,
  containerRuntimeProblem,
  DEFAULT_POSTGRES_IMAGE,
  startPostgresContainer,
} from './lib/container.js';
export type { PostgresContainer, PostgresContainerOptions } from './lib/container.js';
export {
  CONTAINER_IMAGE_ENV,
  CONTAINER_RUNTIME_ENV,
  requireContainerRuntime,
} from './lib/container-runtime-env.js';
export {
  findProgram,
  requireProgram,
  skipOrThrow,
  REQUIRE_PROGRAMS_ENV,
} from './lib/require-program.js';
export { startEmbeddedPostgres } from './lib/embedded.js';
export { createMigratedTemplate, cloneTemplate, dropTemplate } from './lib/template.js';
export { createTestDatabase, SERVER_URL_ENV, TEMPLATE_ENV } from './lib/test-database.js';
export type { TestDatabase } from './lib/test-database.js';
export { dropDatabase, withAdminClient, quoteIdentifier, serverMajorVersion } from './lib/admin.js';
export { withDatabase, uniqueDatabaseName } from './lib/database-url.js';
export {
  applyLegacyLayout,
  applyLegacyLayoutBesideHost,
  LEGACY_HOST_MIGRATION,
  LEGACY_HOST_TABLE,
} from './lib/legacy-layout.js';
export type { LegacyMigration } from './lib/legacy-layout.js';
export { findFreePort } from './lib/free-port.js';
export { startCommitCuttingProxy } from './lib/commit-cutting-proxy.js';
export type { CommitCuttingProxy } from './lib/commit-cutting-proxy.js';
export { PGBOUNCER_INSTALL_HINT, startPgBouncer } from './lib/pgbouncer.js';
export type { PgBouncer, StartPgBouncerOptions } from './lib/pgbouncer.js';
export { gate, waitUntil } from './lib/wait.js';
export { startFreezingProxy } from './lib/freezing-proxy.js';
export type { FreezingProxy } from './lib/freezing-proxy.js';
export { installedPostgresBinDir, startReplicationPair } from './lib/replication.js';
export type {
  ReplicationNode,
  ReplicationPair,
  ReplicationPairOptions,
  StopMode,
} from './lib/replication.js';
export { startTcpForwarder } from './lib/tcp-forwarder.js';
export type { TcpForwarder } from './lib/tcp-forwarder.js';
