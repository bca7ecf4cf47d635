import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, type ClientBase, type PoolClient, type PoolConfig } from 'pg';
import { serverParametersOf } from './deadline-client.js';
import { SERVER_NOT_WRITABLE_AT_CONNECT, ServerNotWritableError, sqlStateOf } from './errors.js';
import type { Logger } from './logger.js';
import { NOT_WRITABLE_QUERY, notWritableReason } from './session-settings.js';

export interface WritablePoolSettings {
  /**
   * Refuse a new connection to a server that cannot take writes (in recovery, read-only).
   * Only on a direct connection: behind a pooler the reported settings are the pooler's.
   */
  refuseNotWritable: boolean;
  /** How long one checkout keeps trying for a writable connection (the connect timeout). */
  retryForMs: number;
  logger: Logger;
  where: string;
}

// Between connection attempts refused by a read-only server: a failover (the virtual IP or
// DNS moving) usually completes within seconds, so start short and stay short.
const RETRY_BASE_DELAY_MS = 100;
const RETRY_MAX_DELAY_MS = 1_000;

type ConnectCallback = (
  error: Error | undefined,
  client: PoolClient | undefined,
  done: (release?: Error | boolean) => void,
) => void;

/**
 * A pg.Pool that hands out only connections that can take our writes, as libpq's
 * `target_session_attrs=read-write` does.
 *
 * After a failover, the old primary often comes back in recovery under the name clients
 * still use (a virtual IP not moved yet, a DNS record cached, a proxy that kept its target).
 * A connection to it answers every write with 25006 and, pooled, fails every later
 * transaction the same way. So every new connection is checked as it is made, from the
 * settings the server reported in its startup response (no extra round trip on PostgreSQL
 * 14+), and refused if the server is in recovery or read-only. The checkout then tries a new
 * connection, with a short backoff, until `retryForMs` has passed since it began, the same for
 * 57P03 ("the database system is starting up / shutting down / in recovery mode"): the name
 * may reach the new primary any moment. The last attempt starts at that deadline, so a
 * checkout takes at most `retryForMs` plus one connect. Past that, the checkout fails with
 * ServerNotWritableError (retryable, certainly not committed), and the caller's own retry
 * takes over.
 */
export class WritablePool extends Pool {
  readonly #settings: WritablePoolSettings;

  constructor(config: PoolConfig, settings: WritablePoolSettings) {
    super({
      ...config,
      // pg-pool awaits this hook for every new connection and ends the connection if it throws.
      onConnect: settings.refuseNotWritable
        ? (refuseNotWritable as unknown as PoolConfig['onConnect'])
        : undefined,
    });
    this.#settings = settings;
  }

  readonly #endedListeners: Array<() => void> = [];

  /** Called once end() has finished (every connection closed). */
  onEnded(listener: () => void): void {
    this.#endedListeners.push(listener);
  }

  override end(): Promise<void>;
  override end(callback: () => void): void;
  override end(callback?: () => void): Promise<void> | void {
    const ended = (): void => {
      for (const listener of this.#endedListeners.splice(0)) listener();
    };
    if (callback) {
      super.end(() => {
        ended();
        callback();
      });
      return;
    }
    return super.end().finally(ended);
  }

  override connect(): Promise<PoolClient>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<PoolClient> | void {
    const connected = this.#connectWritable();
    if (!callback) return connected;
    // pool.query() checks out through this callback form.
    connected.then(
      (client) => callback(undefined, client, client.release),
      (error: Error) => callback(error, undefined, () => undefined),
    );
  }

  async #connectWritable(): Promise<PoolClient> {
    const giveUpAt = Date.now() + this.#settings.retryForMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await super.connect();
      } catch (error) {
        if (!refusedForNow(error)) throw error;
        const remainingMs = giveUpAt - Date.now();
        if (remainingMs <= 0) throw error;
        const delayMs = Math.min(RETRY_MAX_DELAY_MS, RETRY_BASE_DELAY_MS * 2 ** attempt);
        // The last attempt comes at the deadline, not a backoff before it.
        const jitteredMs = Math.min(remainingMs, delayMs / 2 + Math.random() * (delayMs / 2));
        this.#settings.logger.debug(
          'usagekit: refused a connection to a server that cannot take writes; trying again',
          {
            database: this.#settings.where,
            attempt: attempt + 1,
            error: (error as Error).message,
          },
        );
        await sleep(jitteredMs);
      }
    }
  }
}

/** Refusals that a moment later, on a new connection, may not happen (the name moved). */
function refusedForNow(error: unknown): boolean {
  return error instanceof ServerNotWritableError || sqlStateOf(error) === '57P03';
}

async function refuseNotWritable(client: ClientBase): Promise<void> {
  let reason = notWritableReason(serverParametersOf(client));
  if (reason === 'unreported') {
    // PostgreSQL 13 and older report neither setting: ask, as libpq does (one round trip per
    // new connection, on those servers only).
    const { rows } = await client.query<{ in_recovery: boolean; read_only: string }>(
      NOT_WRITABLE_QUERY,
    );
    const [row] = rows;
    reason = row?.in_recovery
      ? 'the server is in recovery (pg_is_in_recovery())'
      : row?.read_only === 'on'
        ? 'the server is read-only (transaction_read_only = on)'
        : undefined;
  }
  if (reason) throw new ServerNotWritableError(`${SERVER_NOT_WRITABLE_AT_CONNECT}: ${reason}`);
}
