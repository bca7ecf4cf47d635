import { dropDatabase } from './admin.js';
import { cloneTemplate } from './template.js';

/** Environment the Jest global setup hands to every worker. */
export const SERVER_URL_ENV = 'USAGEKIT_TEST_SERVER_URL';
export const TEMPLATE_ENV = 'USAGEKIT_TEST_TEMPLATE';

export interface TestDatabase {
  /** A URL to a fresh, migrated database that only this suite uses. */
  databaseUrl: string;
  name: string;
  /** The server's URL (for creating more databases or admin work). */
  serverUrl: string;
  /** Drops the database, ending any sessions still connected. Safe to call twice. */
  drop(): Promise<void>;
}

/**
 * A fresh database cloned from the migrated template that the Jest global setup prepared.
 * Advisory locks are per database, so suites cannot see each other's rows or locks.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = process.env[SERVER_URL_ENV];
  const template = process.env[TEMPLATE_ENV];
  if (!serverUrl || !template) {
    throw new Error(
      `createTestDatabase: ${SERVER_URL_ENV} / ${TEMPLATE_ENV} are not set. Run tests through ` +
        'Jest with the workspace preset (jest.preset.js), whose global setup starts PostgreSQL.',
    );
  }
  const { name, databaseUrl } = await cloneTemplate(serverUrl, template);
  let dropped: Promise<void> | undefined;
  return {
    databaseUrl,
    name,
    serverUrl,
    drop: () => (dropped ??= dropDatabase(serverUrl, name).catch(() => undefined)),
  };
}
