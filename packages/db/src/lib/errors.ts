/**
 * Typed database errors. Prisma reports every raw-SQL failure as P2010 with the SQLSTATE
 * buried in `meta.driverAdapterError.cause.originalCode`, transaction-manager failures as
 * P2028, and a failure at COMMIT as a bare DriverAdapterError. Callers should not parse any of
 * that: `toDatabaseError()` turns each shape into one class with a stable `code`, the SQLSTATE
 * and the original error as `cause`.
 */

export type DatabaseErrorCode =
  | 'DEADLOCK'
  | 'SERIALIZATION_FAILURE'
  | 'LOCK_TIMEOUT'
  | 'STATEMENT_TIMEOUT'
  | 'CONNECTION_LOST'
  | 'TRANSACTION_TIMEOUT'
  | 'NUMERIC_OVERFLOW'
  | 'DEADLINE_EXCEEDED'
  | 'PERMISSION_DENIED'
  | 'PREPARED_STATEMENT_MISMATCH'
  | 'SERVER_NOT_WRITABLE'
  | 'CLIENT_CLOSED'
  | 'DATABASE_ERROR';

export class DatabaseError extends Error {
  override readonly name: string = 'DatabaseError';
  readonly code: DatabaseErrorCode = 'DATABASE_ERROR';
  /** The SQLSTATE PostgreSQL reported, when there was one. */
  readonly sqlState: string | undefined;
  /**
   * Whether running the same transaction again may succeed. True for deadlocks,
   * serialization failures, lock timeouts and lost connections.
   */
  readonly retryable: boolean = false;
  /**
   * True when the work certainly did not commit, so a retry cannot apply it twice: the
   * server refused it before running it (a connection refused at startup, a read-only
   * server). False means "not known", not "committed": a connection lost during COMMIT, or a
   * deadline that fired, may or may not have committed.
   */
  readonly certainlyNotCommitted: boolean;

  constructor(
    message: string,
    options: { sqlState?: string; cause?: unknown; certainlyNotCommitted?: boolean } = {},
  ) {
    super(message, { cause: options.cause });
    this.sqlState = options.sqlState;
    this.certainlyNotCommitted = options.certainlyNotCommitted ?? false;
  }
}

export class DeadlockError extends DatabaseError {
  override readonly name = 'DeadlockError';
  override readonly code = 'DEADLOCK';
  override readonly retryable = true;
}

export class SerializationError extends DatabaseError {
  override readonly name = 'SerializationError';
  override readonly code = 'SERIALIZATION_FAILURE';
  override readonly retryable = true;
}

/** Our own `lock_timeout` fired while waiting for a lock (SQLSTATE 55P03). */
export class LockTimeoutError extends DatabaseError {
  override readonly name = 'LockTimeoutError';
  override readonly code = 'LOCK_TIMEOUT';
  override readonly retryable = true;
}

/** `statement_timeout` fired or the statement was cancelled (SQLSTATE 57014). */
export class StatementTimeoutError extends DatabaseError {
  override readonly name = 'StatementTimeoutError';
  override readonly code = 'STATEMENT_TIMEOUT';
  override readonly retryable = true;
}

/**
 * The connection broke (terminated backend, server restart, network), or could not be made.
 * Whether a COMMIT that was in flight took effect is unknown, unless the failure came while
 * connecting (connection refused, 57P03 "the database system is starting up / shutting down /
 * in recovery mode", a connect timeout): then `certainlyNotCommitted` is true.
 */
export class ConnectionLostError extends DatabaseError {
  override readonly name = 'ConnectionLostError';
  override readonly code = 'CONNECTION_LOST';
  override readonly retryable = true;
}

/** Prisma's interactive-transaction timer expired (P2028), or no pool slot came in time. */
export class TransactionTimeoutError extends DatabaseError {
  override readonly name = 'TransactionTimeoutError';
  override readonly code = 'TRANSACTION_TIMEOUT';
  override readonly retryable = true;
}

/** A value did not fit its column, e.g. a bigint counter past 2^63 − 1 (SQLSTATE 22003). */
export class NumericOverflowError extends DatabaseError {
  override readonly name = 'NumericOverflowError';
  override readonly code = 'NUMERIC_OVERFLOW';
}

/**
 * A call was abandoned at a client-side deadline: nothing answered in time (a silent network,
 * a frozen server, a lock holder that vanished). Its connection was destroyed, never reused,
 * so the retry runs on a fresh one. Whether a COMMIT in flight took effect is unknown, as
 * with a lost connection.
 */
export class DeadlineExceededError extends DatabaseError {
  override readonly name = 'DeadlineExceededError';
  override readonly code = 'DEADLINE_EXCEEDED';
  override readonly retryable = true;
  /** What was abandoned, e.g. 'statement' or 'flush', and after how long. */
  readonly operation: string;
  readonly deadlineMs: number;

  constructor(operation: string, deadlineMs: number, options: { cause?: unknown } = {}) {
    super(
      `Abandoned the ${operation} after ${deadlineMs} ms without an answer from PostgreSQL (silent network, frozen server or a lock that never came); it is retried on a fresh connection.`,
      options,
    );
    this.operation = operation;
    this.deadlineMs = deadlineMs;
  }
}

/**
 * The role lacks a privilege (SQLSTATE 42501). Never retried: the same statement fails the
 * same way until an operator grants it (packages/db/sql/roles.sql lists what each role needs).
 */
export class PermissionDeniedError extends DatabaseError {
  override readonly name = 'PermissionDeniedError';
  override readonly code = 'PERMISSION_DENIED';
  /** The database role that was refused, when known. */
  readonly role: string | undefined;
  /** The object named by PostgreSQL ("table boundary_usage_stats"), when it named one. */
  readonly object: string | undefined;

  constructor(
    message: string,
    options: { sqlState?: string; cause?: unknown; role?: string; object?: string } = {},
  ) {
    super(message, options);
    this.role = options.role;
    this.object = options.object;
  }
}

/**
 * A named (prepared) statement was missing on the server connection (26000) or already there
 * (42P05): a pooler in transaction mode moved this client to another server connection. The
 * client has switched to unnamed statements for good; a statement outside a transaction was
 * already retried. This one ran inside a transaction, which PostgreSQL has aborted, so run the
 * transaction again (it is retryable: nothing of it was committed).
 */
export class PreparedStatementMismatchError extends DatabaseError {
  override readonly name = 'PreparedStatementMismatchError';
  override readonly code = 'PREPARED_STATEMENT_MISMATCH';
  override readonly retryable = true;
}

/**
 * The server cannot take our writes now (SQLSTATE 25006 read_only_sql_transaction): a hot
 * standby, a demoted primary back in recovery, or `default_transaction_read_only = on` (an
 * operator fencing a primary). Also what a new connection to such a server is refused with at
 * connect, as libpq's `target_session_attrs=read-write` refuses it. The write was refused
 * before it ran, so nothing committed (`certainlyNotCommitted`); the connection is discarded,
 * never handed out again, and the retry runs on a fresh one, which after a failover reaches
 * the new primary.
 */
export class ServerNotWritableError extends DatabaseError {
  override readonly name = 'ServerNotWritableError';
  override readonly code = 'SERVER_NOT_WRITABLE';
  override readonly retryable = true;

  constructor(message: string, options: { sqlState?: string; cause?: unknown } = {}) {
    super(message, { ...options, certainlyNotCommitted: true });
  }
}

/**
 * A createPrismaClient client that was closed for good (`disconnectWithin(prisma, ms,
 * { reconnect: false })`, as startUsageRuntime's stop() does) was asked to connect again.
 * Prisma reopens a disconnected client on its next query; after a shutdown that would be a
 * connection nobody closes, so this client refuses instead. Nothing was sent
 * (`certainlyNotCommitted`); not retryable: create a new client.
 */
export class ClientClosedError extends DatabaseError {
  override readonly name = 'ClientClosedError';
  override readonly code = 'CLIENT_CLOSED';

  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { ...options, certainlyNotCommitted: true });
  }
}

/** The message a closed client refuses with; `where` is the database, redacted. */
export function clientClosedMessage(where: string): string {
  return `${CLIENT_CLOSED_MESSAGE} (${where}); nothing was sent. It was closed by disconnectWithin(…, { reconnect: false }) (a usage runtime's stop()); create a new client with createPrismaClient() to use the database again.`;
}

/** How a closed client says so; toDatabaseError reads it back through Prisma's wrapping. */
export const CLIENT_CLOSED_MESSAGE = 'usagekit: this client is closed for good';

/** How a connection refused at connect says so; toDatabaseError reads it back through Prisma. */
export const SERVER_NOT_WRITABLE_AT_CONNECT = 'refused at connect: the server cannot take writes';

const CONNECTION_SQLSTATES = new Set([
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '08007',
  '57P01',
  '57P02',
  '57P03',
]);
const CONNECTION_ERRNOS = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const CONNECTION_ADAPTER_KINDS = new Set([
  'ConnectionClosed',
  'DatabaseNotReachable',
  'SocketTimeout',
  'TooManyConnections',
]);
const CONNECTION_PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017']);
// 'timeout expired': node-postgres's connectionTimeoutMillis while connecting; 'timeout exceeded
// when trying to connect': pg-pool's wait for a free slot ran out (connectTimeoutMs).
const CONNECTION_MESSAGES =
  /Connection terminated|timeout expired|timeout exceeded when trying to connect|terminating connection|Client has encountered a connection error|connection is closed|Connection closed|ECONNRESET|ECONNREFUSED|server closed the connection/i;

// Failures that happen before anything was sent: the server was never asked to run a thing.
const CONNECT_SQLSTATES = new Set(['57P03', '08001', '08004']);
const CONNECT_ERRNOS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECT_PRISMA_CODES = new Set(['P1001']);
const CONNECT_MESSAGES =
  /timeout expired|timeout exceeded when trying to connect|due to connection timeout|the database system is (starting up|shutting down|in recovery mode|not yet accepting connections|not accepting connections)|ECONNREFUSED/i;

/**
 * SQLSTATEs after which a connection is never used again (pool code discards it): the server
 * cannot take writes on it now (25006), or is ending it (57P01 admin shutdown, 57P02 crash
 * shutdown, 57P03 cannot connect now), or the connection itself failed (class 08).
 */
const DISCARD_SQLSTATES = new Set(['25006', '57P01', '57P02', '57P03']);
const RECOVERY_MESSAGES =
  /the database system is (starting up|shutting down|in recovery mode|not yet accepting connections|not accepting connections)|in a read-only transaction|during recovery|hot standby/i;

interface ErrorShape {
  code?: unknown;
  message?: unknown;
  errno?: unknown;
  kind?: unknown;
  originalCode?: unknown;
  cause?: unknown;
  meta?: { driverAdapterError?: { cause?: { originalCode?: unknown; kind?: unknown } } };
}

function asShape(value: unknown): ErrorShape | undefined {
  return typeof value === 'object' && value !== null ? (value as ErrorShape) : undefined;
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Walks an error and its causes, yielding each level (bounded, cycles cannot hang it). */
function* causeChain(error: unknown): Generator<ErrorShape> {
  let current: unknown = error;
  for (let depth = 0; depth < 8; depth++) {
    const shape = asShape(current);
    if (!shape) return;
    yield shape;
    current = shape.cause;
  }
}

/** The SQLSTATE of an error from Prisma, the driver adapter or `pg`, wherever it sits. */
export function sqlStateOf(error: unknown): string | undefined {
  for (const level of causeChain(error)) {
    const fromAdapter = stringOrUndefined(level.meta?.driverAdapterError?.cause?.originalCode);
    if (fromAdapter) return fromAdapter;
    const original = stringOrUndefined(level.originalCode);
    if (original) return original;
    const code = stringOrUndefined(level.code);
    if (code === 'P2034') return '40001';
    // Prisma's own codes (P1xxx–P6xxx) have the same shape as a SQLSTATE; they are not one.
    // PostgreSQL's only P class is P0 (PL/pgSQL: P0001 raise_exception, …).
    if (code && /^P[1-9][0-9]{3}$/.test(code)) continue;
    // So has a socket errno like EPIPE.
    if (code && CONNECTION_ERRNOS.has(code)) continue;
    if (code && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

function looksLikeLostConnection(error: unknown): boolean {
  for (const level of causeChain(error)) {
    const code = stringOrUndefined(level.code);
    if (code && (CONNECTION_ERRNOS.has(code) || CONNECTION_PRISMA_CODES.has(code))) return true;
    const kind =
      stringOrUndefined(level.kind) ??
      stringOrUndefined(level.meta?.driverAdapterError?.cause?.kind);
    if (kind && CONNECTION_ADAPTER_KINDS.has(kind)) return true;
    const message = stringOrUndefined(level.message);
    if (message && CONNECTION_MESSAGES.test(message)) return true;
  }
  return false;
}

/** Whether the error came while connecting, so nothing of the work reached the server. */
function failedWhileConnecting(error: unknown): boolean {
  const sqlState = sqlStateOf(error);
  if (sqlState && CONNECT_SQLSTATES.has(sqlState)) return true;
  for (const level of causeChain(error)) {
    const code = stringOrUndefined(level.code);
    if (code && (CONNECT_ERRNOS.has(code) || CONNECT_PRISMA_CODES.has(code))) return true;
    const kind =
      stringOrUndefined(level.kind) ??
      stringOrUndefined(level.meta?.driverAdapterError?.cause?.kind);
    if (kind === 'DatabaseNotReachable') return true;
    const message = stringOrUndefined(level.message);
    if (message && CONNECT_MESSAGES.test(message)) return true;
  }
  return false;
}

/**
 * Whether the connection that produced `error` must never be reused: the server cannot take
 * our writes on it now, or is ending it (see DISCARD_SQLSTATES). A connection to a server in
 * recovery answers every write with 25006 for as long as it lives; handed back to the pool it
 * would fail every later transaction the same way (issue 19).
 */
export function meansConnectionCannotWrite(error: unknown): boolean {
  const sqlState = sqlStateOf(error);
  if (sqlState && (DISCARD_SQLSTATES.has(sqlState) || sqlState.startsWith('08'))) return true;
  for (const level of causeChain(error)) {
    const message = stringOrUndefined(level.message);
    if (
      message &&
      (RECOVERY_MESSAGES.test(message) || message.includes(SERVER_NOT_WRITABLE_AT_CONNECT))
    )
      return true;
  }
  return false;
}

function isTransactionTimeout(error: unknown): boolean {
  const shape = asShape(error);
  if (!shape || shape.code !== 'P2028') return false;
  const message = stringOrUndefined(shape.message) ?? '';
  // P2028 also covers "Transaction already closed" after the connection died; that case is
  // told apart by the connection checks, which run first.
  return /timeout|expired|Unable to start a transaction in the given time|already closed/i.test(
    message,
  );
}

function describe(error: unknown): string {
  const message = stringOrUndefined(asShape(error)?.message);
  return message ? (message.split('\n').filter(Boolean).slice(-1)[0] ?? message) : String(error);
}

/**
 * Turns anything thrown by Prisma, the driver adapter or `pg` into a {@link DatabaseError}.
 * Errors that already are DatabaseErrors pass through unchanged.
 */
export function toDatabaseError(error: unknown): DatabaseError {
  if (error instanceof DatabaseError) return error;
  const abandoned = deadlineExceededIn(error);
  if (abandoned) return abandoned;
  const refused = refusedAtConnectIn(error);
  if (refused) return refused;
  const closed = clientClosedIn(error);
  if (closed) return closed;
  const sqlState = sqlStateOf(error);
  const detail = describe(error);
  const options = { sqlState, cause: error };
  switch (sqlState) {
    case '25006':
      return new ServerNotWritableError(
        `The server cannot take writes now (read-only: a standby, a demoted primary in recovery, or default_transaction_read_only); nothing was committed, the connection is discarded, retry. (${detail})`,
        options,
      );
    case '40P01':
      return new DeadlockError(`Deadlock detected; retry the transaction. (${detail})`, options);
    case '40001':
      return new SerializationError(
        `Serialization failure; retry the transaction. (${detail})`,
        options,
      );
    case '55P03':
      return new LockTimeoutError(
        `Timed out waiting for a lock (lock_timeout); another transaction held it too long. (${detail})`,
        options,
      );
    case '57014':
      return new StatementTimeoutError(`Statement cancelled or timed out. (${detail})`, options);
    case '22003':
      return new NumericOverflowError(`A value is out of range for its type. (${detail})`, options);
    case '42501':
      return permissionDenied(error, detail, options);
    case '26000':
    case '42P05':
      return new PreparedStatementMismatchError(
        `A prepared statement did not match the server connection (a pooler in transaction mode); the client now sends unnamed statements, retry the transaction. (${detail})`,
        options,
      );
  }
  if ((sqlState && CONNECTION_SQLSTATES.has(sqlState)) || looksLikeLostConnection(error)) {
    if (failedWhileConnecting(error)) {
      return new ConnectionLostError(
        `Could not connect to the database (or it is starting up, shutting down or in recovery); nothing was sent, retry. (${detail})`,
        { ...options, certainlyNotCommitted: true },
      );
    }
    return new ConnectionLostError(
      `Lost the database connection; the transaction's outcome may be unknown. (${detail})`,
      options,
    );
  }
  if (isTransactionTimeout(error)) {
    return new TransactionTimeoutError(
      `The transaction ran past its time limit or could not start in time; raise the transaction timeout or the pool size. (${detail})`,
      options,
    );
  }
  return new DatabaseError(`Database error${sqlState ? ` ${sqlState}` : ''}: ${detail}`, options);
}

/**
 * A DeadlineExceededError, wherever it sits. Our pool's client rejects with one; Prisma then
 * rebuilds it as a PrismaClientKnownRequestError that keeps only its `code` and message (no
 * cause), so the operation and the deadline are read back from the message.
 */
function deadlineExceededIn(error: unknown): DeadlineExceededError | undefined {
  for (const level of causeChain(error)) {
    if (level instanceof DeadlineExceededError) return level;
    if (level.code !== 'DEADLINE_EXCEEDED') continue;
    const message = stringOrUndefined(level.message) ?? '';
    const found = /Abandoned the (\S+) after (\d+) ms/.exec(message);
    return new DeadlineExceededError(found?.[1] ?? 'statement', Number(found?.[2] ?? 0), {
      cause: error,
    });
  }
  return undefined;
}

/**
 * A connection our pool refused at connect (the server is in recovery or read-only), wherever
 * it sits. Like DeadlineExceededError, Prisma may keep only the message, which carries the
 * marker.
 */
function clientClosedIn(error: unknown): ClientClosedError | undefined {
  for (const level of causeChain(error)) {
    if (level instanceof ClientClosedError) return level;
    const message = stringOrUndefined(level.message);
    if (level.code === 'CLIENT_CLOSED' || message?.includes(CLIENT_CLOSED_MESSAGE)) {
      return new ClientClosedError(message ?? CLIENT_CLOSED_MESSAGE, { cause: error });
    }
  }
  return undefined;
}

function refusedAtConnectIn(error: unknown): ServerNotWritableError | undefined {
  for (const level of causeChain(error)) {
    if (level instanceof ServerNotWritableError) return level;
    const message = stringOrUndefined(level.message);
    if (level.code === 'SERVER_NOT_WRITABLE' || message?.includes(SERVER_NOT_WRITABLE_AT_CONNECT)) {
      return new ServerNotWritableError(message ?? SERVER_NOT_WRITABLE_AT_CONNECT, {
        cause: error,
      });
    }
  }
  return undefined;
}

/**
 * Finds the role some layer attached to the error (our pool's client sets `role` and appends
 * `(role "name")` to the message, which is all that survives Prisma's wrapping), if any.
 */
function roleOf(error: unknown): string | undefined {
  for (const level of causeChain(error)) {
    const role = stringOrUndefined((level as { role?: unknown }).role);
    if (role) return role;
    const messages = [
      stringOrUndefined(level.message),
      stringOrUndefined(
        (level.meta?.driverAdapterError?.cause as { originalMessage?: unknown })?.originalMessage,
      ),
    ];
    for (const message of messages) {
      const named = message && /\(role "([^"]+)"\)/.exec(message)?.[1];
      if (named) return named;
    }
  }
  return undefined;
}

function permissionDenied(
  error: unknown,
  detail: string,
  options: { sqlState?: string; cause?: unknown },
): PermissionDeniedError {
  // PostgreSQL says "permission denied for table boundary_usage_stats" (or "… for function",
  // "… for sequence", "… for schema"); the role is not in the message.
  const object = /permission denied for (\w+ "?[\w.]+"?)/i.exec(detail)?.[1];
  const role = roleOf(error);
  const who = role ? `role "${role}"` : 'the connecting role';
  const what = object ?? 'an object';
  return new PermissionDeniedError(
    `Permission denied: ${who} may not use ${what}. Grant it (packages/db/sql/roles.sql lists what usagekit's roles need); not retried. (${detail})`,
    { ...options, role, object },
  );
}
