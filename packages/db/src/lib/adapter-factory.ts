import { createHash } from 'node:crypto';
import { PrismaPg } from '@prisma/adapter-pg';
import { Pool } from 'pg';
import { deadlineClientClass, PreparedStatementSwitch } from './deadline-client.js';
import type { Logger } from './logger.js';
import {
  combineOptions,
  probeConnection,
  startupOptions,
  type ConnectionVia,
  type ProbeResult,
  type SessionSettings,
} from './session-settings.js';

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
    const probed = this.#probed ?? (await this.probe());
    return this.#adapterFor(probed).connect();
  }

  async connectToShadowDb(): ReturnType<PrismaPg['connectToShadowDb']> {
    const probed = this.#probed ?? (await this.probe());
    return this.#adapterFor(probed).connectToShadowDb();
  }

  #adapterFor(probed: ProbeResult): PrismaPg {
    const options = this.#options;
    const { logger, where } = options;
    const pool = new Pool({
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
    });
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
    const prepared = this.#prepared;
    return new PrismaPg(pool, {
      disposeExternalPool: true,
      // Asked for every statement. Unnamed (undefined, which adapter-pg passes on as pg's
      // `name`) once prepared statements are off; the type insists on a string.
      statementNameGenerator: (query) =>
        prepared.enabled ? statementName(query.sql) : (undefined as unknown as string),
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
