import { Client } from 'pg';

/** Runs `work` with a short-lived admin connection and always closes it. */
export async function withAdminClient<T>(
  serverUrl: string,
  work: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client({ connectionString: serverUrl });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The server's major version, e.g. 15 or 18. */
export async function serverMajorVersion(serverUrl: string): Promise<number> {
  return withAdminClient(serverUrl, async (client) => {
    const { rows } = await client.query<{ v: string }>(
      `SELECT current_setting('server_version_num') AS v`,
    );
    return Math.floor(Number(rows[0]?.v) / 10_000);
  });
}

export async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  await withAdminClient(serverUrl, async (client) => {
    // WITH (FORCE) ends sessions a test left open (a leaked pool, a killed replica).
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(name)} WITH (FORCE)`);
  });
}
