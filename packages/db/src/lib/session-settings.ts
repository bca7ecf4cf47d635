import { randomBytes } from 'node:crypto';
import { Client } from 'pg';

/**
 * What every session of a direct connection starts with, sent in the startup packet's
 * `options` (`-c name=value`, as libpq's PGOPTIONS). A startup setting outranks
 * `ALTER DATABASE/ROLE … SET` and postgresql.conf, and unlike a per-statement `set_config` it
 * is in force while PostgreSQL parses and binds a statement: that is when a statement takes
 * its table locks (RowExclusive for an INSERT), before any of its own code runs.
 *
 * Deliberately not statement_timeout: it would override an operator's stricter
 * `ALTER DATABASE … SET statement_timeout`, and the client-side deadline bounds statements
 * anyway. (lock_timeout and idle_in_transaction_session_timeout do override the database's;
 * the stores set both locally in every transaction regardless.)
 */
export interface SessionSettings {
  /** `lock_timeout`: bounds every lock wait, table locks taken at parse/bind included. */
  lockTimeoutMs: number;
  /** `idle_in_transaction_session_timeout`: a client that vanished mid-transaction loses its locks. */
  idleInTransactionTimeoutMs: number;
}

/** The startup `options` string for `settings` (PostgreSQL splits it on unescaped spaces). */
export function startupOptions(settings: SessionSettings, marker?: string): string {
  const parts = [
    `-c lock_timeout=${settings.lockTimeoutMs}`,
    `-c idle_in_transaction_session_timeout=${settings.idleInTransactionTimeoutMs}`,
    // The database default may be repeatable read or serializable (an operator's choice); the
    // flush and the cutover are written for read committed (issue 11 item 6). The backslash
    // escapes the space for PostgreSQL's option splitter (pg_split_opts).
    '-c default_transaction_isolation=read\\ committed',
  ];
  if (marker) parts.push(`-c usagekit.probe=${marker}`);
  return parts.join(' ');
}

/** Joins the user's own `options` (from the URL) after ours, so an explicit choice wins. */
export function combineOptions(
  ours: string | undefined,
  theirs: string | undefined,
): string | undefined {
  const joined = [ours, theirs].filter((part) => part && part.trim().length > 0).join(' ');
  return joined.length > 0 ? joined : undefined;
}

export type ConnectionVia = 'direct' | 'pooler' | 'unknown';

export interface ProbeResult {
  via: ConnectionVia;
  /** The startup settings reached the server and are in force on every connection. */
  sessionSettings: boolean;
}

export interface ProbeOptions {
  /** The database URL without its `options` parameter. */
  connectionString: string;
  /** The user's own `options`, from the URL. */
  userOptions: string | undefined;
  settings: SessionSettings;
  connectTimeoutMs: number;
  statementDeadlineMs: number;
}

/**
 * Finds out, once, whether startup settings work on this URL. PostgreSQL applies them;
 * PgBouncer (1.18, Debian's) refuses the connection ("unsupported startup parameter:
 * options"), or, with `ignore_startup_parameters = options`, accepts and silently drops them.
 * So: connect with our settings plus a random marker setting and read the marker back. Read
 * back → a direct connection. Refused for that reason, or accepted but dropped → a pooler.
 * Refused for another reason while a plain connection works → unknown (no session settings).
 * Both refused → the server is unreachable: the error is thrown, and the next call probes again.
 */
export async function probeConnection(options: ProbeOptions): Promise<ProbeResult> {
  const marker = randomBytes(8).toString('hex');
  const withSettings = combineOptions(
    startupOptions(options.settings, marker),
    options.userOptions,
  );
  let refusal: unknown;
  try {
    const rows = await probeQuery(options, withSettings);
    const row = rows[0] ?? {};
    if (row['marker'] !== marker) return { via: 'pooler', sessionSettings: false };
    const inForce =
      row['lock_timeout'] === String(options.settings.lockTimeoutMs) &&
      row['idle'] === String(options.settings.idleInTransactionTimeoutMs) &&
      row['isolation'] === 'read committed';
    // The user's own options overrode ours: respect them, but don't rely on the session.
    return { via: 'direct', sessionSettings: inForce };
  } catch (error) {
    // Unreachable, or the connection died: not an answer about the settings. Fail this
    // connect (Prisma connects again at the next call, and the probe runs again) rather
    // than open another connection to a server that is struggling.
    if (!answeredByServer(error)) throw error;
    refusal = error;
  }
  // Throws when the server cannot be reached at all.
  await probeQuery(options, options.userOptions);
  const message = refusal instanceof Error ? refusal.message : String(refusal);
  return {
    via: /unsupported startup parameter/i.test(message) ? 'pooler' : 'unknown',
    sessionSettings: false,
  };
}

/**
 * An ErrorResponse about the startup itself (PgBouncer's 08P01 "unsupported startup
 * parameter", PostgreSQL's 22023 / 42704 for a bad setting), as opposed to a socket error, a
 * timeout or a terminated backend.
 */
function answeredByServer(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return false;
  return !code.startsWith('57P') && code !== '08006' && code !== '08003';
}

async function probeQuery(
  options: ProbeOptions,
  startup: string | undefined,
): Promise<Record<string, string | null>[]> {
  const client = new Client({
    connectionString: options.connectionString,
    options: startup,
    connectionTimeoutMillis: options.connectTimeoutMs,
    query_timeout: options.statementDeadlineMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const result = await client.query<Record<string, string | null>>(
      // pg_settings gives milliseconds ('2000'); current_setting would say '2s'.
      `SELECT current_setting('usagekit.probe', true) AS marker,
              (SELECT setting FROM pg_settings WHERE name = 'lock_timeout') AS lock_timeout,
              (SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout') AS idle,
              current_setting('default_transaction_isolation', true) AS isolation`,
    );
    return result.rows;
  } finally {
    // A probe that failed mid-way may have a dead socket: end() then destroys it.
    await Promise.race([
      client.end(),
      new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]).catch(() => undefined);
  }
}

/**
 * Why a new connection cannot take our writes, from what the server reported in its startup
 * response (ParameterStatus), or undefined when it can: the check libpq's
 * `target_session_attrs=read-write` makes, folded into the handshake that already runs (no
 * round trip). PostgreSQL 14 and later report `in_hot_standby` (on while in recovery: a
 * standby, or a demoted primary brought back as one) and `default_transaction_read_only` (an
 * operator fencing a primary). `'unreported'`: an older server, which must be asked.
 *
 * Only meaningful on a direct connection: a pooler sends its own cached startup values, from
 * whichever server connection it opened first.
 */
export function notWritableReason(
  reported: ReadonlyMap<string, string>,
): string | 'unreported' | undefined {
  const inHotStandby = reported.get('in_hot_standby');
  const readOnly = reported.get('default_transaction_read_only');
  if (inHotStandby === undefined && readOnly === undefined) return 'unreported';
  if (inHotStandby === 'on') return 'the server is in recovery (in_hot_standby = on)';
  if (readOnly === 'on') return 'the server is read-only (default_transaction_read_only = on)';
  return undefined;
}

/** What an older server (no in_hot_standby report) is asked instead, as libpq asks it. */
export const NOT_WRITABLE_QUERY = `SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('transaction_read_only') AS read_only`;
