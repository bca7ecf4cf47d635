import { SERVER_URL_ENV, withAdminClient } from '@usagekit/testing';

/**
 * The PostgreSQL server the Jest global setup started. The simulator gets it as its
 * --database-url and creates (and drops) a database of its own there, instead of starting
 * another embedded PostgreSQL.
 */
export function testServerUrl(): string {
  const url = process.env[SERVER_URL_ENV];
  if (!url)
    throw new Error(`${SERVER_URL_ENV} is not set; run through Jest with the workspace preset`);
  return url;
}

export async function databaseExists(serverUrl: string, name: string): Promise<boolean> {
  return withAdminClient(serverUrl, async (client) => {
    const { rows } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    return rows.length > 0;
  });
}
