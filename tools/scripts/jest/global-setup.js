// Jest global setup for every project: one PostgreSQL server and one migrated template per
// Jest run. Workers inherit the two environment variables set here (they start later);
// each suite then clones the template with createTestDatabase().
// Plain JavaScript on purpose: it runs outside Jest's transform, so it loads the testing
// package's TypeScript through the same swc Jest uses, registered just for this file.
process.env.TZ = 'UTC';
const { register } = require('../register-ts.js');

module.exports = async function globalSetup() {
  const restore = register();
  try {
    const { startPostgresServer, createMigratedTemplate, SERVER_URL_ENV, TEMPLATE_ENV } =
      require('@usagekit/testing');
    const server = await startPostgresServer({ databaseUrl: process.env.TEST_DATABASE_URL });
    const version = await require('@usagekit/testing').serverMajorVersion(server.url);
    console.log(`\n[usagekit/testing] PostgreSQL ${version} from ${server.source}: ${server.reason}`);
    const { migrate } = require('@usagekit/db');
    const template = await createMigratedTemplate(server.url, migrate);
    process.env[SERVER_URL_ENV] = server.url;
    process.env[TEMPLATE_ENV] = template;
    globalThis.__USAGEKIT_TEST_SERVER__ = { server, template };
  } finally {
    restore();
  }
};
