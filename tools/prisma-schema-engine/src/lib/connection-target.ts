import type { PoolConfig } from 'pg';

/** Where the engine connects, as the native engine reads a Prisma connection URL. */
export interface ConnectionTarget {
  /** The URL as given, `schema` included (for messages and for the shadow database). */
  url: string;
  /** The PostgreSQL schema the engine works in: `?schema=`, else `public` (the native default). */
  schema: string;
  /** The database name in the URL's path. */
  database: string;
  /** node-postgres settings for this URL, with the schema as the session's search_path. */
  poolConfig: PoolConfig;
}

const DEFAULT_SCHEMA = 'public';
/** Seconds to wait for a connection when the URL sets no `?connect_timeout=` (the native engine's 5 s). */
const DEFAULT_CONNECT_TIMEOUT_SECONDS = 5;

/**
 * Reads a `postgresql://` URL the way Prisma's native schema engine does: `?schema=` names the
 * schema that migrations run in and that the migrations table lives in. The native engine
 * makes that schema the session's search_path, so an unqualified `CREATE TABLE` in a
 * migration lands there; we pass it as a startup `options` setting, which holds for every
 * connection the pool opens (a SET after connecting would race the first query).
 */
export function parseConnectionTarget(url: string): ConnectionTarget {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new Error('The datasource URL is not a valid URL', { cause });
  }
  if (parsed.protocol !== 'postgresql:' && parsed.protocol !== 'postgres:') {
    throw new Error(
      `The wasm schema engine drives PostgreSQL only; the datasource URL uses ${parsed.protocol}`,
    );
  }
  const schema = parsed.searchParams.get('schema') || DEFAULT_SCHEMA;
  parsed.searchParams.delete('schema');
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  const searchPathOption = `-c search_path=${quoteIdentifier(schema).replace(/ /g, '\\ ')}`;
  const userOptions = parsed.searchParams.get('options');
  parsed.searchParams.delete('options');
  const connectTimeoutSeconds = readConnectTimeout(parsed.searchParams.get('connect_timeout'));
  parsed.searchParams.delete('connect_timeout');
  return {
    url,
    schema,
    database,
    poolConfig: {
      connectionString: parsed.toString(),
      options: userOptions ? `${userOptions} ${searchPathOption}` : searchPathOption,
      // node-postgres waits forever by default (0): a server that accepts TCP and never
      // answers would hang a deploy for the OS's TCP timeout or longer.
      connectionTimeoutMillis: connectTimeoutSeconds * 1000,
    },
  };
}

/**
 * `?connect_timeout=` in seconds, as libpq and Prisma's native engine read it; absent means
 * the native engine's default. 0 means no deadline in libpq; we keep a deadline anyway (the
 * default), since a tool that can hang is worse than one that gives up.
 */
function readConnectTimeout(value: string | null): number {
  if (value === null || value === '') return DEFAULT_CONNECT_TIMEOUT_SECONDS;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new Error(
      `The datasource URL's connect_timeout must be a number of seconds; got ${JSON.stringify(value)}`,
    );
  }
  return seconds > 0 ? seconds : DEFAULT_CONNECT_TIMEOUT_SECONDS;
}

/** The same target in another database on the same server (the shadow database). */
export function inDatabase(target: ConnectionTarget, database: string): ConnectionTarget {
  const parsed = new URL(target.url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parseConnectionTarget(parsed.toString());
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
