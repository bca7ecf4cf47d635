import { Client, type ClientConfig } from 'pg';
import { sendCancelRequest } from './cancel-request.js';
import { DeadlineExceededError, meansConnectionCannotWrite } from './errors.js';
import type { Logger } from './logger.js';

/**
 * Whether statements are still sent by name (prepared once per connection). Shared by every
 * connection of one PrismaClient and switched off for good the first time the server says a
 * named statement is missing or already there: a transaction-mode pooler we did not detect is
 * moving us between server connections, and named statements cannot work behind it.
 */
export class PreparedStatementSwitch {
  #enabled: boolean;
  #onDisable: (reason: string) => void;

  constructor(enabled: boolean, onDisable: (reason: string) => void = () => undefined) {
    this.#enabled = enabled;
    this.#onDisable = onDisable;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  /** `expected`: switched off by configuration ('auto' behind a pooler), not by a failure: not reported. */
  disable(reason: string, expected = false): void {
    if (!this.#enabled) return;
    this.#enabled = false;
    if (!expected) this.#onDisable(reason);
  }
}

// Per connection, filled by the DeadlineClient: what the server reported at startup
// (ParameterStatus: server_version, in_hot_standby, default_transaction_read_only, …), and
// why the connection must not be reused, once it must not.
const reportedParameters = new WeakMap<object, Map<string, string>>();
const discardReasons = new WeakMap<object, string>();

/** The ParameterStatus values the server sent this connection (empty for another client class). */
export function serverParametersOf(connection: object): ReadonlyMap<string, string> {
  return reportedParameters.get(connection) ?? new Map();
}

/**
 * Why this connection must be discarded instead of returned to the pool: a statement on it
 * failed in a way that says the server cannot take our writes now (25006 on a server in
 * recovery or read-only, 57P01–57P03, a connection failure). Undefined while it is healthy.
 */
export function discardReasonOf(connection: object): string | undefined {
  return discardReasons.get(connection);
}

/** 26000 invalid_sql_statement_name ("prepared statement … does not exist"), 42P05 duplicate_prepared_statement. */
const PREPARED_STATEMENT_MISMATCH = new Set(['26000', '42P05']);

export interface DeadlineClientSettings {
  /** A statement with no answer after this long is abandoned (its connection destroyed). */
  statementDeadlineMs: number;
  /** How long the fire-and-forget CancelRequest may take before it is dropped. */
  cancelTimeoutMs: number;
  prepared: PreparedStatementSwitch;
  logger: Logger;
  /** The redacted database URL, for logs. */
  where: string;
}

type QueryConfig = { text: string; name?: string; values?: unknown[] } & Record<string, unknown>;
type Callback = (error: Error | null, result?: unknown) => void;

/** The parts of pg.Client's internals we touch; pg-pool reads the same `_queryable` flag. */
interface ClientInternals {
  _queryable: boolean;
  connection: {
    stream: { destroy(): void };
    on(event: string, listener: (...args: never[]) => void): unknown;
  };
  processID: number | null;
  secretKey: number | null;
}

/**
 * A `pg.Client` class for our pool whose every query has a client-side deadline.
 *
 * Why: a connection that goes silent (a partition, a failover, a NAT or load balancer that
 * dropped the flow: no FIN, no RST) leaves node-postgres waiting for ever, and Prisma's
 * transaction timer only queues its ROLLBACK behind the stuck query. A statement that gets no
 * answer within `statementDeadlineMs` is abandoned instead: a CancelRequest goes out on a new
 * socket (bounded, fire and forget), the connection is marked unusable and its socket
 * destroyed, so pg-pool never hands it out again, and the caller gets DeadlineExceededError
 * (retryable: the retry runs on a fresh connection). node-postgres's own `query_timeout` is no
 * substitute: it rejects but keeps the connection, whose next query then waits behind the
 * stuck one.
 *
 * It also names the connecting role on permission errors (42501), turns named statements
 * off for good when a pooler proves them unusable (26000 / 42P05), retrying that statement
 * once, unnamed, when it ran outside a transaction block, records the settings the server
 * reported at startup (serverParametersOf), and marks itself for discarding when the server
 * cannot take writes on it (discardReasonOf).
 */
export function deadlineClientClass(settings: DeadlineClientSettings): typeof Client {
  class DeadlineClient extends Client {
    constructor(config?: string | ClientConfig) {
      super(config);
      // The startup response carries the server's reported settings before ReadyForQuery, so
      // the pool's connect hook can refuse a read-only server without a round trip.
      const parameters = new Map<string, string>();
      reportedParameters.set(this, parameters);
      (this as unknown as ClientInternals).connection.on(
        'parameterStatus',
        (message: { parameterName: string; parameterValue: string }) =>
          parameters.set(message.parameterName, message.parameterValue),
      );
    }

    override query(...args: unknown[]): never {
      const [config, second, third] = args;
      // Cursors, streams and other Submittables manage their own lifecycle; pass them through.
      if (
        config === null ||
        config === undefined ||
        typeof (config as { submit?: unknown }).submit === 'function'
      ) {
        return (super.query as (...a: unknown[]) => never)(...args);
      }
      let values = second as unknown[] | undefined;
      let callback = third as Callback | undefined;
      if (typeof second === 'function') {
        callback = second as Callback;
        values = undefined;
      }
      const queryConfig: QueryConfig =
        typeof config === 'string' ? { text: config } : { ...(config as QueryConfig) };
      if (values !== undefined) queryConfig.values = values;
      const result = this.#queryWithFallback(queryConfig);
      if (callback) {
        const cb = callback;
        result.then(
          (value) => cb(null, value),
          (error: Error) => cb(error),
        );
        return undefined as never;
      }
      return result as never;
    }

    async #queryWithFallback(config: QueryConfig): Promise<unknown> {
      const named = config.name !== undefined && settings.prepared.enabled;
      if (!named) delete config.name;
      // The transaction status before this statement: 'I' (or null: nothing ran on this
      // connection since the handshake) means it runs as its own transaction, so if it fails
      // at Parse/Bind nothing at all happened.
      const statusBefore = this.getTransactionStatus();
      const outsideTransaction = statusBefore === 'I' || statusBefore === null;
      try {
        return await this.#queryWithDeadline(config);
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (named && typeof code === 'string' && PREPARED_STATEMENT_MISMATCH.has(code)) {
          settings.prepared.disable(
            `${code}: ${(error as Error).message} (a pooler in transaction mode moves this client between server connections)`,
          );
          // Retrying is safe: the server refused the statement at Parse/Bind, before running
          // it, and outside a transaction block the failure ended nothing else. (The flush also
          // carries a sequence, so even a repeated flush would be recognised and not counted
          // twice.) Inside a transaction the block is now aborted: the error goes to the
          // caller, as a retryable PreparedStatementMismatchError, and its retry runs unnamed.
          if (outsideTransaction) {
            delete config.name;
            return await this.#queryWithDeadline(config);
          }
        }
        if (code === '42501') nameTheRole(error, this.user);
        // Not now: inside a transaction Prisma still sends ROLLBACK on it, then releases it;
        // the pool's 'release' listener (adapter-factory.ts) discards it then.
        if (!discardReasons.has(this) && meansConnectionCannotWrite(error)) {
          discardReasons.set(this, `${String(code ?? '')} ${(error as Error).message}`.trim());
        }
        throw error;
      }
    }

    #queryWithDeadline(config: QueryConfig): Promise<unknown> {
      // One value arms the timer and names it in the error and the log: a message must say
      // which deadline fired (the statement's, never the cancel request's).
      const deadlineMs = settings.statementDeadlineMs;
      const pending = (super.query as (config: QueryConfig) => Promise<unknown>)(config);
      return new Promise((resolve, reject) => {
        let settled = false;
        const timer = setTimeout(() => {
          if (settled) return;
          settled = true;
          this.#abandon(deadlineMs);
          reject(new DeadlineExceededError('statement', deadlineMs));
        }, deadlineMs);
        pending.then(
          (value) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve(value);
          },
          (error: unknown) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            reject(error);
          },
        );
      });
    }

    /** Never reuse this connection: cancel its statement (best effort) and destroy it. */
    #abandon(deadlineMs: number): void {
      const { processID, secretKey } = this as unknown as ClientInternals;
      if (processID !== null && secretKey !== null && this.host) {
        void sendCancelRequest(
          { host: this.host, port: this.port, processID, secretKey },
          settings.cancelTimeoutMs,
        );
      }
      settings.logger.warn(
        'usagekit: abandoned a statement with no answer from PostgreSQL; its connection is destroyed and a cancel request sent',
        {
          database: settings.where,
          deadlineMs,
          backendPid: processID,
        },
      );
      // Ends every query on it (they reject with "Connection terminated"); the 'error' the
      // client then emits is handled by the listener createPrismaClient keeps on it. Destroyed
      // here and now, not left to the pool: a connection abandoned inside a transaction is
      // released only when the transaction ends, and a polite close (FIN) never completes
      // across a partition, so the socket, its file descriptor and the pending query would
      // linger (deadline.test.ts counts the process's TCP sockets to prove it).
      destroyConnection(this);
    }
  }
  return DeadlineClient as unknown as typeof Client;
}

/**
 * Ends a connection for good, busy or not: pg-pool will not hand it out again (`_queryable`,
 * which it checks on release) and its socket is destroyed now, so every query on it rejects
 * with "Connection terminated" and no polite close has to cross a dead network. For the
 * statement deadline and for disconnectWithin's forced close.
 */
export function destroyConnection(client: unknown): void {
  const internals = client as Partial<ClientInternals>;
  internals._queryable = false;
  internals.connection?.stream?.destroy();
}

/**
 * PostgreSQL's "permission denied for table x" never says who was refused. The message and a
 * `role` property carry it: Prisma copies only the message into its own error, and
 * `toDatabaseError` reads the role back for PermissionDeniedError.
 */
function nameTheRole(error: unknown, role: string | undefined): void {
  if (!role || typeof error !== 'object' || error === null) return;
  const target = error as { role?: string; message?: string };
  if (target.role) return;
  target.role = role;
  if (typeof target.message === 'string' && !target.message.includes('(role "')) {
    target.message = `${target.message} (role "${role}")`;
  }
}
