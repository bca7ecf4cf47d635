/**
 * node-postgres with nothing between the bench and `pg` — no Prisma client, no query
 * compiler, no adapter, no validation: the pools of the raw contenders and their
 * transaction helper. What they send is recorded from the store (./baselines.ts) or is
 * coder's (./coder.ts).
 */
import { Pool, type PoolClient } from 'pg';

/** A pg.Pool like the one createPrismaClient builds: small, with idle errors swallowed. */
export function createRawPool(databaseUrl: string, maxConnections = 2): Pool {
  const pool = new Pool({ connectionString: databaseUrl, max: maxConnections });
  // An idle client dropped by the server must not crash the bench (same as createPrismaClient).
  pool.on('error', () => undefined);
  return pool;
}

/** BEGIN, `work`, COMMIT on one pooled connection; ROLLBACK (and destroy if that fails) on error. */
export async function inTransaction<T>(
  pool: Pool,
  work: (client: PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: unknown) => {
      broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
    });
    throw error;
  } finally {
    // A client whose ROLLBACK failed is in an unknown state: destroy it instead of reusing it.
    client.release(broken);
  }
}
