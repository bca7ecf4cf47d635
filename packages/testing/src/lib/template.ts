import { dropDatabase, quoteIdentifier, withAdminClient } from './admin.js';
import { uniqueDatabaseName, withDatabase } from './database-url.js';

/**
 * Creates a database, applies every migration once (with the `migrate` it is given, normally
 * @usagekit/db's; taking it as a parameter keeps this package free of a dependency cycle with
 * db, whose own tests use it), and marks it as a template, so each
 * suite gets a migrated database by a cheap `CREATE DATABASE … TEMPLATE` instead of migrating
 * again (graphile/worker, trigger.dev). Returns the template's name.
 */
export async function createMigratedTemplate(
  serverUrl: string,
  migrate: (options: { databaseUrl: string }) => Promise<unknown>,
): Promise<string> {
  const name = uniqueDatabaseName('usagekit_template');
  await withAdminClient(serverUrl, (client) =>
    client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
  );
  try {
    // migrate() closes its connection before returning: a template with an open session
    // cannot be copied.
    await migrate({ databaseUrl: withDatabase(serverUrl, name) });
    await withAdminClient(serverUrl, (client) =>
      client.query(`ALTER DATABASE ${quoteIdentifier(name)} WITH IS_TEMPLATE true`),
    );
  } catch (error) {
    await dropTemplate(serverUrl, name).catch(() => undefined);
    throw error;
  }
  return name;
}

export async function dropTemplate(serverUrl: string, name: string): Promise<void> {
  await withAdminClient(serverUrl, (client) =>
    client.query(`ALTER DATABASE ${quoteIdentifier(name)} WITH IS_TEMPLATE false`),
  ).catch(() => undefined);
  await dropDatabase(serverUrl, name);
}

/** A fresh database copied from the template; `drop()` removes it. */
export async function cloneTemplate(
  serverUrl: string,
  template: string,
): Promise<{ name: string; databaseUrl: string }> {
  const name = uniqueDatabaseName('usagekit_test');
  await withAdminClient(serverUrl, async (client) => {
    // FILE_COPY (PostgreSQL 15+) copies a small template much faster than WAL_LOG.
    const { rows } = await client.query<{ v: string }>(
      `SELECT current_setting('server_version_num') AS v`,
    );
    const strategy = Number(rows[0]?.v) >= 150000 ? ' STRATEGY = FILE_COPY' : '';
    await client.query(
      `CREATE DATABASE ${quoteIdentifier(name)} TEMPLATE ${quoteIdentifier(template)}${strategy}`,
    );
  });
  return { name, databaseUrl: withDatabase(serverUrl, name) };
}
