import { createHash } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  deadlineClientClass,
  destroyConnection,
  discardReasonOf,
  PreparedStatementSwitch,
} from './deadline-client.js';
import { ClientClosedError, clientClosedMessage } from './errors.js';
import type { Logger } from './logger.js';
import {
  combineOptions,
  probeConnection,
  startupOptions,
  type ConnectionVia,
  type ProbeResult,
  type SessionSettings,
} from './session-settings.js';
import { WritablePool } from './writable-pool.js';

/** How a PrismaClient from createPrismaClient reaches PostgreSQL, as found at its first connect. */
export interface ConnectionProfile {
  /** 'direct': PostgreSQL itself; 'pooler': PgBouncer or alike; 'unknown': not our client, or undecided. */
  via: ConnectionVia;
  /**
   * True when every connection starts with usagekit's session settings (lock_timeout,
   * idle_in_transaction_session_timeout, read committed): a single
   * statement is then bounded and isolated even before any of its own code runs.
   */
  sessionSettings: boolean;
  /** True while statements are sent by name (prepared once per connection). */
  preparedStatements: boolean;
}

export interface TransportOptions {
  connectionString: string;
  userOptions: string | undefined;
  maxConnections: number;
  connectTimeoutMs: number;
  statementDeadlineMs: number;
  /** pg-pool's idleTimeoutMillis: an idle connection is closed after this long. */
  idleTimeoutMs: number;
  /** pg-pool's maxLifetimeSeconds (rounded up); undefined: no limit. */
  maxLifetimeMs: number | undefined;
  cancelTimeoutMs: number;
  settings: SessionSettings;
  preparedStatements: 'auto' | boolean;
  /** 'auto': probe; 'direct' / 'pooler': taken as given, no probe. */
  via: 'auto' | 'direct' | 'pooler';
  logger: Logger;
  where: string;
  /** The schema of usagekit's tables: adapter-pg's `schema`, for the generated model API. */
  schema: string;
}

/**
 * The driver adapter factory createPrismaClient hands to Prisma: PrismaPg over a pool we build
 * only once we know what is on the other end. Prisma calls `connect()` lazily (first query or
 * `$connect()`), so the probe is asynchronous and costs one extra connection, once per client.
 */
export class UsagekitAdapterFactory {
  readonly provider = 'postgres' as const;
  readonly adapterName = '@prisma/adapter-pg';
  readonly #options: TransportOptions;
  readonly #prepared: PreparedStatementSwitch;
  #probe: Promise<ProbeResult> | undefined;
  #probed: ProbeResult | undefined;
  /**
   * The SQL texts this client sends by name, at most MAX_NAMED_STATEMENTS of them: each named
   * text is prepared once on every connection and kept there for the connection's life, so a
   * client used for arbitrary queries (a host's own, issue 20) would otherwise grow every
   * backend without bound. usagekit's own statements are few (about 20) and named when they
   * are among the first 64 texts sent; a text beyond the cap is sent unnamed, parsed per call,
   * as a plain client would.
   */
  readonly #namedTexts = new Set<string>();
  /** The pools of this client not yet ended, for destroyConnections() (disconnectWithin). */
  readonly #pools = new Set<WritablePool>();
  /** Set by closeForGood(): connect() refuses from then on. */
  #closed = false;

  /** The schema of usagekit's tables (createPrismaClient's `schema`). */
  get schema(): string {
    return this.#options.schema;
  }

  constructor(options: TransportOptions) {
    this.#options = options;
    this.#prepared = new PreparedStatementSwitch(options.preparedStatements !== false, (reason) =>
      options.logger.warn(
        'usagekit: named prepared statements do not work on this connection; switching to unnamed statements for good',
        { database: options.where, reason },
      ),
    );
  }

  /** Probes once; a failed probe (server unreachable) is forgotten so the next call tries again. */
  probe(): Promise<ProbeResult> {
    const given = this.#options.via;
    this.#probe ??= (
      given === 'auto'
        ? probeConnection({
            connectionString: this.#options.connectionString,
            userOptions: this.#options.userOptions,
            settings: this.#options.settings,
            connectTimeoutMs: this.#options.connectTimeoutMs,
            statementDeadlineMs: this.#options.statementDeadlineMs,
          })
        : Promise.resolve({ via: given, sessionSettings: given === 'direct' })
    ).then(
      (result) => {
        this.#probed = result;
        // 'auto': prepared only where they are known to work. Forced on behind a pooler,
        // the client still survives it (PreparedStatementSwitch).
        if (this.#options.preparedStatements === 'auto' && result.via !== 'direct') {
          this.#prepared.disable(`auto: ${result.via} connection`, true);
        }
        this.#options.logger.info('usagekit: database connection profile', {
          database: this.#options.where,
          ...result,
          preparedStatements: this.#prepared.enabled,
        });
        return result;
      },
      (error: unknown) => {
        this.#probe = undefined;
        throw error;
      },
    );
    return this.#probe;
  }

  async profile(): Promise<ConnectionProfile> {
    const probed = await this.probe();
    return { ...probed, preparedStatements: this.#prepared.enabled };
  }

  async connect(): ReturnType<PrismaPg['connect']> {
    this.#refuseIfClosed();
    const probed = this.#probed ?? (await this.probe());
    this.#refuseIfClosed();
    return this.#adapterFor(probed).connect();
  }

  async connectToShadowDb(): ReturnType<PrismaPg['connectToShadowDb']> {
    this.#refuseIfClosed();
    const probed = this.#probed ?? (await this.probe());
    this.#refuseIfClosed();
    return this.#adapterFor(probed).connectToShadowDb();
  }

  /**
   * From now on connect() refuses with ClientClosedError. Prisma reopens a disconnected client
   * on its next query; a shutdown that must leave nothing open behind it (disconnectWithin with
   * `reconnect: false`) closes the door first, so a late call cannot.
   */
  closeForGood(): void {
    this.#closed = true;
  }

  #refuseIfClosed(): void {
    if (this.#closed) throw new ClientClosedError(clientClosedMessage(this.#options.where));
  }

  /**
   * Destroys the socket of every connection of this client's pools, busy ones included, as the
   * statement deadline does for one: their statements reject with "Connection terminated",
   * pg-pool drops them, and a `$disconnect()` waiting for them completes. Returns how many
   * were destroyed. For disconnectWithin(), when a shutdown cannot wait for an abandoned
   * statement's own deadline.
   */
  destroyConnections(): number {
    let destroyed = 0;
    for (const pool of this.#pools) {
      const clients = (pool as unknown as { _clients?: unknown[] })._clients ?? [];
      for (const client of clients) {
        destroyConnection(client);
        destroyed++;
      }
    }
    return destroyed;
  }

  #boundedName(sql: string): string {
    if (!this.#namedTexts.has(sql)) {
      if (this.#namedTexts.size >= MAX_NAMED_STATEMENTS) return undefined as unknown as string;
      this.#namedTexts.add(sql);
    }
    return statementName(sql);
  }

  #adapterFor(probed: ProbeResult): PrismaPg {
    const options = this.#options;
    const { logger, where } = options;
    const pool = new WritablePool(
      {
        connectionString: options.connectionString,
        max: options.maxConnections,
        // Every wait has a deadline: connecting (TCP, TLS, startup) …
        connectionTimeoutMillis: options.connectTimeoutMs,
        // Warm or per-flush connections (client.ts, DEFAULT_POOL_IDLE_TIMEOUT_MS).
        idleTimeoutMillis: options.idleTimeoutMs,
        maxLifetimeSeconds:
          options.maxLifetimeMs === undefined ? 0 : Math.ceil(options.maxLifetimeMs / 1000),
        // … an idle connection whose peer vanished is noticed by TCP, not at its next query
        // (probes start after 10 s idle instead of the kernel's default two hours) …
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
        // … and every statement (see deadline-client.ts).
        Client: deadlineClientClass({
          statementDeadlineMs: options.statementDeadlineMs,
          cancelTimeoutMs: options.cancelTimeoutMs,
          prepared: this.#prepared,
          logger,
          where,
        }),
        options: combineOptions(
          probed.sessionSettings ? startupOptions(options.settings) : undefined,
          options.userOptions,
        ),
      },
      {
        // A new connection to a server in recovery or read-only is refused and tried again
        // (writable-pool.ts). Direct connections only: a pooler reports its own cached
        // settings; behind one, the first write's 25006 is the check (discarded below).
        refuseNotWritable: probed.via === 'direct',
        retryForMs: options.connectTimeoutMs,
        logger,
        where,
      },
    );
    this.#pools.add(pool);
    // Prisma builds a new pool at every reconnect (after `$disconnect()`): forget a pool once
    // it has ended (not when end() starts: destroyConnections() is for pools still ending).
    pool.onEnded(() => this.#pools.delete(pool));
    pool.on('error', (error) => {
      logger.warn('usagekit: idle database connection failed; the pool replaces it', {
        database: where,
        error: error.message,
      });
    });
    // pg-pool drops its own 'error' listener from a connection as it hands it out, and
    // adapter-pg adds one only once `await pool.connect()` has resumed. A FATAL that arrives in
    // the same read as the new connection's ReadyForQuery (its backend terminated, or the server
    // shutting down, just as it became ready) is emitted in between, to nobody: Node turns an
    // unhandled 'error' event into an exception that kills the process, and every count not yet
    // flushed dies with it (found by packages/telemetry/test/faults.test.ts). So each connection
    // keeps a listener of its own for life; the connection is unusable afterwards, and the next
    // query on it fails with ConnectionLostError, which callers retry. The same listener takes
    // the 'error' of a connection the deadline abandoned.
    pool.on('connect', (connection) => {
      connection.on('error', (error) => {
        // The pool or the adapter also listens, and reports it.
        if (connection.listenerCount('error') > 1) return;
        logger.warn('usagekit: database connection failed while being handed out', {
          database: where,
          error: error.message,
        });
      });
    });
    // A connection on which the server said it cannot take our writes now (25006 on a server
    // in recovery or read-only, 57P01–57P03) is never handed out again. pg-pool already drops
    // a connection whose plain query failed (pool.query releases it with the error), but an
    // interactive or batch transaction (the reporter's collection, delivery and purge; the
    // flush behind a pooler) ends with ROLLBACK and a release() without one, so without this
    // it went back to the pool, failing every later transaction the same way (issue 19).
    // pg-pool checks `_queryable` right after emitting 'release' and ends the connection.
    pool.on('release', (_error, connection) => {
      const reason = discardReasonOf(connection);
      if (reason === undefined) return;
      (connection as unknown as { _queryable: boolean })._queryable = false;
      logger.warn('usagekit: discarded a connection to a server that cannot take writes now', {
        database: where,
        reason,
      });
    });
    const prepared = this.#prepared;
    return new PrismaPg(pool, {
      disposeExternalPool: true,
      // Model queries (prisma.boundaryUsageStats…) name this schema; usagekit's own raw SQL
      // qualifies its tables itself (@usagekit/db schemaTables).
      schema: this.#options.schema,
      // Asked for every statement. Unnamed (undefined, which adapter-pg passes on as pg's
      // `name`) once prepared statements are off; the type insists on a string.
      statementNameGenerator: (query) =>
        prepared.enabled ? this.#boundedName(query.sql) : (undefined as unknown as string),
      // A connection that breaks while checked out: the caller gets ConnectionLostError; this
      // leaves a trace in the logs too.
      onConnectionError: (error) =>
        logger.warn('usagekit: database connection failed during a query', {
          database: where,
          error: error.message,
        }),
    });
  }
}

/** Distinct SQL texts one client prepares by name (per connection), at most; see #namedTexts. */
export const MAX_NAMED_STATEMENTS = 64;

const statementNames = new Map<string, string>();

/**
 * A name per distinct SQL text: node-postgres prepares it once per connection, then reuses it.
 * Memoised, because hashing the flush's text on every call costs more than the lookup.
 */
function statementName(sql: string): string {
  let name = statementNames.get(sql);
  if (name === undefined) {
    name = `usagekit_${createHash('sha1').update(sql).digest('hex').slice(0, 24)}`;
    // Bounded: a client that runs unbounded distinct texts only loses the memo, not names.
    if (statementNames.size >= 1_000) statementNames.clear();
    statementNames.set(sql, name);
  }
  return name;
}
