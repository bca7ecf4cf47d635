/**
 * The raw node-postgres baseline: the store's protocol with nothing between the bench and
 * `pg` — no Prisma client, no query compiler, no adapter, no validation.
 */
import { Pool, type PoolClient } from 'pg';
import {
  CUTOVER,
  FLUSH_AFTER_LOCK,
  FLUSH_WITH_SHARED_LOCK,
  LOCK_KEY,
  LOCK_TIMEOUT,
  SET_LOCK_TIMEOUT,
  TAKE_EXCLUSIVE_LOCK,
  TAKE_SHARED_LOCK,
  flushAfterLockParams,
  flushWithLockParams,
  type FlushValues,
} from './raw-sql.js';

export interface RawFlushRow {
  applied: boolean;
  new_period: boolean | null;
}

/** A pg.Pool like the one createPrismaClient builds: small, with idle errors swallowed. */
export function createRawPool(databaseUrl: string, maxConnections = 2): Pool {
  const pool = new Pool({ connectionString: databaseUrl, max: maxConnections });
  // An idle client dropped by the server must not crash the bench (same as createPrismaClient).
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Contender d: BEGIN, set_config(lock_timeout), pg_advisory_xact_lock_shared, the flush,
 * COMMIT: five round trips, the store's 'interactive' flush without Prisma.
 */
export async function rawFlushInteractive(pool: Pool, values: FlushValues): Promise<RawFlushRow> {
  return inTransaction(pool, async (client) => {
    await client.query(SET_LOCK_TIMEOUT, [LOCK_TIMEOUT]);
    await client.query(TAKE_SHARED_LOCK, [LOCK_KEY]);
    const { rows } = await client.query<RawFlushRow>(
      FLUSH_AFTER_LOCK,
      flushAfterLockParams(values),
    );
    return rows[0];
  });
}

/**
 * Contender f: the store's default flush (one statement that sets lock_timeout, takes the
 * shared lock and writes) sent by node-postgres in autocommit: one round trip. This is what
 * the store's 'single-statement' mode puts on the wire too (Prisma runs a one-element
 * $transaction([...]) batch as a single query, without BEGIN/COMMIT).
 */
export async function rawFlushSingleStatement(
  pool: Pool,
  values: FlushValues,
): Promise<RawFlushRow> {
  const { rows } = await pool.query<RawFlushRow>(
    FLUSH_WITH_SHARED_LOCK,
    flushWithLockParams(values),
  );
  return rows[0];
}

/**
 * Contender h: f as a named prepared statement: parsed and planned once per connection, then
 * only bound and executed. Not something the store does today; it shows what PostgreSQL
 * spends parsing and planning the flush's CTE on every call. (adapter-pg can do the same:
 * its `statementNameGenerator` option names the statements it sends.)
 */
export async function rawFlushPrepared(pool: Pool, values: FlushValues): Promise<RawFlushRow> {
  const { rows } = await pool.query<RawFlushRow>({
    name: 'usagekit_bench_flush',
    text: FLUSH_WITH_SHARED_LOCK,
    values: flushWithLockParams(values),
  });
  return rows[0];
}

export interface RawCutoverRow {
  unique_workspaces: string;
  unique_users: string;
  allowed_requests: string;
  denied_requests: string;
  replicas: string;
}

/** The cutover as the store runs it: BEGIN, lock_timeout, exclusive lock, the statement, COMMIT. */
export async function rawCutover(pool: Pool, maxStalenessMs: number): Promise<RawCutoverRow> {
  return inTransaction(pool, async (client) => {
    await client.query(SET_LOCK_TIMEOUT, [LOCK_TIMEOUT]);
    await client.query(TAKE_EXCLUSIVE_LOCK, [LOCK_KEY]);
    const { rows } = await client.query<RawCutoverRow>(CUTOVER, [maxStalenessMs]);
    return rows[0];
  });
}

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
