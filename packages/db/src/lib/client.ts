import { PrismaClient } from '../generated/prisma/client.js';
import { UsagekitAdapterFactory, type ConnectionProfile } from './adapter-factory.js';
import { InvalidInputError } from './invalid-input.js';
import { noopLogger, redactDatabaseUrl, type Logger } from './logger.js';
import { DEFAULT_SCHEMA, validateSchemaName } from './schema.js';

export type { ConnectionProfile } from './adapter-factory.js';

export interface CreatePrismaClientOptions {
  databaseUrl: string;
  /** Pool size. Each replica needs one per concurrent transaction; default 10. */
  maxConnections?: number;
  /** Defaults for every interactive `$transaction` of this client. */
  transactionOptions?: { maxWaitMs?: number; timeoutMs?: number };
  /** Where pool errors (an idle connection dropped by the server, say) are reported. */
  logger?: Logger;
  /**
   * Send statements as named prepared statements, planned once per connection: the flush's
   * statement then costs PostgreSQL about a third of the CPU (docs/perf). `'auto'` (default):
   * on for a direct connection, off behind a pooler (PgBouncer before 1.21 has no
   * protocol-level prepared statements). Forced on behind a pooler, the first "prepared
   * statement does not exist / already exists" switches the client to unnamed statements for
   * good (a statement outside a transaction is retried once; one inside fails with the
   * retryable PreparedStatementMismatchError). Each distinct SQL text is prepared once per
   * connection, so keep it for clients that run a bounded set of statements, such as usagekit's.
   */
  preparedStatements?: 'auto' | boolean;
  /** Connecting (TCP, TLS, startup) and waiting for a pool slot give up after this long; default 10 s. */
  connectTimeoutMs?: number;
  /**
   * A statement with no answer after this long is abandoned: a cancel request is sent, its
   * connection destroyed (never reused) and the call rejected with DeadlineExceededError
   * (retryable; the retry runs on a fresh connection). Default 15 s. Must exceed every lock
   * wait you allow (lock_timeout) and your longest statement.
   */
  statementDeadlineMs?: number;
  /**
   * Session default `lock_timeout` on a direct connection (default 2 s): it also bounds the
   * table locks PostgreSQL takes while parsing a statement, before a per-statement
   * `set_config('lock_timeout')` can run. Transactions still set their own, locally.
   */
  lockTimeoutMs?: number;
  /**
   * Session `idle_in_transaction_session_timeout` on a direct connection (default 10 s): the
   * server ends a session whose client vanished mid-transaction, releasing its locks.
   */
  idleInTransactionTimeoutMs?: number;
  /**
   * What is on the other end. `'auto'` (default): probed once, with one extra connection, at
   * the first connect (see README "The connection profile"). `'direct'` or `'pooler'` skip the
   * probe: session settings are then sent (direct) or not (pooler) without asking.
   */
  via?: 'auto' | 'direct' | 'pooler';
  /**
   * The PostgreSQL schema that holds usagekit's tables (default `usagekit`; the one migrate()
   * was given). usagekit's statements name their tables qualified by it (no search_path is
   * set, so PgBouncer and the host's sessions are unaffected); the generated model API uses
   * it through adapter-pg's `schema` option. Stores built on this client take it from here.
   */
  schema?: string;
  /**
   * How long a connection may sit idle in the pool before it is closed. Default 1 s: a replica
   * that flushes once a minute connects for each flush and holds no connection between flushes,
   * so a fleet takes a `max_connections` slot only while it flushes (README "Warm or per-flush
   * connections"; docs/perf "Production cadence"). Set it above the flush interval (e.g.
   * 120_000 for a 1-minute flush) to keep a warm connection per replica instead.
   */
  idleTimeoutMs?: number;
  /**
   * A connection is closed after this long, however busy (checked when it is returned to the
   * pool). Default: no limit. With warm connections, bounds how long a replica stays on one
   * backend (its memory, a server behind a VIP that moved).
   */
  maxLifetimeMs?: number;
}

export const DEFAULT_TRANSACTION_MAX_WAIT_MS = 5_000;
export const DEFAULT_TRANSACTION_TIMEOUT_MS = 10_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_STATEMENT_DEADLINE_MS = 15_000;
export const DEFAULT_SESSION_LOCK_TIMEOUT_MS = 2_000;
export const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000;
/**
 * Idle connections close after 1 s: at a 1-minute flush every flush connects afresh, which
 * costs the server a few ms of CPU per replica per minute instead of a backend per replica for
 * good (docs/perf "Production cadence"). A burst of work (a retry, a cutover and its purge)
 * still reuses its connection.
 */
export const DEFAULT_POOL_IDLE_TIMEOUT_MS = 1_000;
/** The CancelRequest sent for an abandoned statement is dropped after this long. */
const CANCEL_TIMEOUT_MS = 2_000;

const factories = new WeakMap<object, UsagekitAdapterFactory>();
/** Also reachable through `$extends`, which returns a proxy that forwards unknown keys. */
const FACTORY = Symbol.for('usagekit.db.adapterFactory');

/**
 * A PrismaClient on `@prisma/adapter-pg` with a pool of our own, built to never hang: every
 * connect, pool wait and statement has a deadline, and on a direct connection every session
 * starts with lock_timeout, idle_in_transaction_session_timeout and read committed (see README "The client"). We own the pool so that an error on an idle connection
 * (pg_terminate_backend, a server restart) is logged instead of crashing the process:
 * `pg.Pool` re-emits it as an 'error' event, and an unhandled 'error' event kills Node.
 */
export function createPrismaClient(options: CreatePrismaClientOptions): PrismaClient {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidInputError('options', options, 'an options object with a databaseUrl');
  }
  const { databaseUrl, maxConnections = 10, logger = noopLogger } = options;
  if (typeof databaseUrl !== 'string' || databaseUrl.length === 0) {
    throw new InvalidInputError('databaseUrl', databaseUrl, 'a non-empty postgres:// URL');
  }
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
    throw new InvalidInputError('maxConnections', maxConnections, 'a positive integer');
  }
  const connectTimeoutMs = positiveMs(
    'connectTimeoutMs',
    options.connectTimeoutMs,
    DEFAULT_CONNECT_TIMEOUT_MS,
  );
  const statementDeadlineMs = positiveMs(
    'statementDeadlineMs',
    options.statementDeadlineMs,
    DEFAULT_STATEMENT_DEADLINE_MS,
  );
  const settings = {
    lockTimeoutMs: positiveMs(
      'lockTimeoutMs',
      options.lockTimeoutMs,
      DEFAULT_SESSION_LOCK_TIMEOUT_MS,
    ),
    idleInTransactionTimeoutMs: positiveMs(
      'idleInTransactionTimeoutMs',
      options.idleInTransactionTimeoutMs,
      DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    ),
  };
  const idleTimeoutMs = positiveMs(
    'idleTimeoutMs',
    options.idleTimeoutMs,
    DEFAULT_POOL_IDLE_TIMEOUT_MS,
  );
  const maxLifetimeMs =
    options.maxLifetimeMs === undefined
      ? undefined
      : positiveMs('maxLifetimeMs', options.maxLifetimeMs, 0);
  const via = options.via ?? 'auto';
  if (via !== 'auto' && via !== 'direct' && via !== 'pooler') {
    throw new InvalidInputError('via', via, "'auto', 'direct' or 'pooler'");
  }
  const schema = validateSchemaName(options.schema);
  const preparedStatements = options.preparedStatements ?? 'auto';
  if (preparedStatements !== 'auto' && typeof preparedStatements !== 'boolean') {
    throw new InvalidInputError('preparedStatements', preparedStatements, "'auto', true or false");
  }
  // node-postgres lets the URL's parameters override explicit options, so a user's own
  // `options=` is taken out of the URL and joined after ours (theirs wins on a conflict).
  const { connectionString, userOptions } = splitOptions(databaseUrl);
  const factory = new UsagekitAdapterFactory({
    connectionString,
    userOptions,
    maxConnections,
    connectTimeoutMs,
    statementDeadlineMs,
    idleTimeoutMs,
    maxLifetimeMs,
    cancelTimeoutMs: CANCEL_TIMEOUT_MS,
    settings,
    preparedStatements,
    via,
    logger,
    where: redactDatabaseUrl(databaseUrl),
    schema,
  });
  const client = new PrismaClient({
    adapter: factory,
    // What NODE_ENV=production gives: without it Prisma captures a call site (`new Error()`,
    // a stack trace) for every query and batch, only to decorate the message of an error,
    // which costs the default flush about a quarter of its Node CPU (docs/perf, issue 13).
    // Our errors carry codes and causes (toDatabaseError), not call sites.
    errorFormat: 'minimal',
    transactionOptions: {
      maxWait: positiveMs(
        'transactionOptions.maxWaitMs',
        options.transactionOptions?.maxWaitMs,
        DEFAULT_TRANSACTION_MAX_WAIT_MS,
      ),
      timeout: positiveMs(
        'transactionOptions.timeoutMs',
        options.transactionOptions?.timeoutMs,
        DEFAULT_TRANSACTION_TIMEOUT_MS,
      ),
    },
  });
  factories.set(client, factory);
  Object.defineProperty(client, FACTORY, { value: factory, enumerable: false });
  return client;
}

/**
 * The schema of usagekit's tables for `prisma`: the `schema` option of createPrismaClient, or
 * `usagekit` (DEFAULT_SCHEMA) for a PrismaClient that createPrismaClient did not make (give
 * such a client's store the `schema` option instead).
 */
export function usagekitSchemaOf(prisma: object): string {
  return factoryOf(prisma)?.schema ?? DEFAULT_SCHEMA;
}

function factoryOf(prisma: object): UsagekitAdapterFactory | undefined {
  const factory =
    factories.get(prisma) ??
    ((prisma as Record<symbol, unknown>)[FACTORY] as UsagekitAdapterFactory | undefined);
  return factory instanceof UsagekitAdapterFactory ? factory : undefined;
}

/**
 * How `prisma` reaches PostgreSQL: probed once per client (one extra connection), at its first
 * connect or at this call. For a PrismaClient that createPrismaClient did not make:
 * `{ via: 'unknown', sessionSettings: false, preparedStatements: false }`. Rejects when the
 * server cannot be reached (the next call probes again).
 */
export async function connectionProfile(prisma: object): Promise<ConnectionProfile> {
  const factory = factoryOf(prisma);
  if (factory === undefined) {
    return { via: 'unknown', sessionSettings: false, preparedStatements: false };
  }
  return factory.profile();
}

/** The adapter factory behind a client from createPrismaClient (also through `$extends`). */
export function adapterFactoryOf(prisma: object): UsagekitAdapterFactory | undefined {
  return factoryOf(prisma);
}

function positiveMs(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidInputError(name, value, 'a positive number of milliseconds');
  }
  return Math.ceil(value);
}

function splitOptions(databaseUrl: string): {
  connectionString: string;
  userOptions: string | undefined;
} {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    return { connectionString: databaseUrl, userOptions: undefined };
  }
  const userOptions = url.searchParams.get('options') ?? undefined;
  if (userOptions === undefined) return { connectionString: databaseUrl, userOptions };
  url.searchParams.delete('options');
  return { connectionString: url.toString(), userOptions };
}
