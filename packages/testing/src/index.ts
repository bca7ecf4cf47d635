export { startPostgresServer } from './lib/server.js';
export type { PostgresServer, StartPostgresServerOptions } from './lib/server.js';
export { startEmbeddedPostgres } from './lib/embedded.js';
export { createMigratedTemplate, cloneTemplate, dropTemplate } from './lib/template.js';
export { createTestDatabase, SERVER_URL_ENV, TEMPLATE_ENV } from './lib/test-database.js';
export type { TestDatabase } from './lib/test-database.js';
export { dropDatabase, withAdminClient, quoteIdentifier, serverMajorVersion } from './lib/admin.js';
export { withDatabase, uniqueDatabaseName } from './lib/database-url.js';
export { findFreePort } from './lib/free-port.js';
