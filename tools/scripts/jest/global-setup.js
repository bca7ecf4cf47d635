// Jest global setup for every project: one PostgreSQL server and one migrated template per
// Jest run. Workers inherit the environment variables set here (they start later); each
// suite then clones the template with createTestDatabase().
// Plain JavaScript on purpose: it runs outside Jest's transform, so it loads the testing
// package's TypeScript through the same swc Jest uses, registered just for this file.
//
// Environment (read here, never inside the packages):
//   TEST_DATABASE_URL             use this server (source 1)
//   USAGEKIT_TEST_POSTGRES_IMAGE  the container image (default postgres:18-alpine)
//   USAGEKIT_TEST_PREFER_EMBEDDED=1  skip the container source even when a runtime answers
process.env.TZ = 'UTC';
const { register } = require('../register-ts.js');

module.exports = async function globalSetup() {
  const restore = register();
  try {
    const testing = require('@usagekit/testing');
    const image = process.env[testing.CONTAINER_IMAGE_ENV] || testing.DEFAULT_POSTGRES_IMAGE;
    const server = await testing.startPostgresServer({
      databaseUrl: process.env.TEST_DATABASE_URL,
      containerImage: image,
      preferEmbedded: process.env.USAGEKIT_TEST_PREFER_EMBEDDED === '1',
    });
    // Suites that need a container of their own (pause, restart) ask requireContainerRuntime(),
    // which reads this: one probe (runtime and image) for the whole run.
    const containerProblem =
      server.source === 'testcontainers' ? undefined : await testing.containerImageProblem(image);
    process.env[testing.CONTAINER_RUNTIME_ENV] = containerProblem ?? 'ok';
    const version = await testing.serverMajorVersion(server.url);
    console.log(
      `\n[usagekit/testing] PostgreSQL ${version} from ${server.source}: ${server.reason}`,
    );
    const { migrate } = require('@usagekit/db');
    const template = await testing.createMigratedTemplate(server.url, migrate);
    process.env[testing.SERVER_URL_ENV] = server.url;
    process.env[testing.TEMPLATE_ENV] = template;
    globalThis.__USAGEKIT_TEST_SERVER__ = { server, template };
  } finally {
    restore();
  }
};
