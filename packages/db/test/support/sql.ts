import { withAdminClient } from '@usagekit/testing';

/** One query on a short-lived `pg` connection: what the tests use to look at the database. */
export function query<Row extends Record<string, unknown>>(
  databaseUrl: string,
  text: string,
  values: unknown[] = [],
): Promise<Row[]> {
  return withAdminClient(
    databaseUrl,
    async (client) => (await client.query<Row>(text, values)).rows,
  );
}
