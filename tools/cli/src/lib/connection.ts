import {
  ConnectionLostError,
  Deadline,
  DeadlineExceededError,
  redactDatabaseUrl,
} from '@usagekit/db';
import { Client } from 'pg';

/**
 * The database could not be reached or refused us (exit 2). The message names the database
 * with its password replaced, never the URL as given.
 */
export class UnreachableError extends Error {
  override readonly name = 'UnreachableError';
  readonly code = 'UNREACHABLE';
}

export interface ConnectOptions {
  databaseUrl: string;
  connectTimeoutMs: number;
}

// SQLSTATEs that mean "we never got a usable session": wrong password or role (28xxx), no
// such database (3D000), the server starting up or shutting down (57P03, 57P01).
const UNREACHABLE_SQLSTATES = /^(28|3D000|57P0[13]|08)/;
const UNREACHABLE_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
]);

/**
 * Whether an error means the database is unreachable, as opposed to a failure of ours. Looks
 * through `cause` too: migrate() wraps pg's error in a typed DatabaseError.
 */
export function isUnreachable(error: unknown, depth = 0): boolean {
  if (error instanceof UnreachableError || error instanceof DeadlineExceededError) return true;
  if (error instanceof ConnectionLostError) return true;
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  if (cause !== undefined && depth < 5 && isUnreachable(cause, depth + 1)) return true;
  const sqlState = (error as { sqlState?: unknown } | undefined)?.sqlState;
  if (typeof sqlState === 'string' && UNREACHABLE_SQLSTATES.test(sqlState)) return true;
  const code = (error as { code?: unknown } | undefined)?.code;
  if (
    typeof code === 'string' &&
    (UNREACHABLE_ERRNOS.has(code) || UNREACHABLE_SQLSTATES.test(code))
  )
    return true;
  const message = error instanceof Error ? error.message : '';
  return /timeout expired|Connection terminated|connection timeout/i.test(message);
}

/**
 * One connection for the whole command, each step bounded: connecting by connectTimeoutMs
 * (pg's own timer), every query by the command's deadline (which the caller races). The
 * session reads only: status and list take no locks; retry updates rows by key.
 */
export async function connect(options: ConnectOptions, deadline: Deadline): Promise<Client> {
  const client = new Client({
    connectionString: options.databaseUrl,
    connectionTimeoutMillis: options.connectTimeoutMs,
    keepAlive: true,
    application_name: 'usagekit-cli',
  });
  // A connection dropped between queries must surface as a rejected query, not a crash.
  client.on('error', () => undefined);
  try {
    await deadline.race(client.connect());
  } catch (error) {
    void client.end().catch(() => undefined);
    throw new UnreachableError(
      `cannot connect to ${redactDatabaseUrl(options.databaseUrl)}: ${describe(error, options.databaseUrl)}`,
      { cause: error },
    );
  }
  return client;
}

/** An error's message with the database URL's password removed, should pg echo it. */
export function describe(error: unknown, databaseUrl: string): string {
  const message = error instanceof Error ? error.message || String(error.name) : String(error);
  // Our own errors' codes add nothing; a driver's (ECONNREFUSED, 28P01) says what happened.
  const code =
    error instanceof UnreachableError ? undefined : (error as { code?: unknown } | undefined)?.code;
  const text =
    typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
  return scrubPassword(text, databaseUrl);
}

/** Removes the URL's password (raw and decoded) from any text we print. */
export function scrubPassword(text: string, databaseUrl: string): string {
  let password: string | undefined;
  try {
    password = new URL(databaseUrl).password || undefined;
  } catch {
    password = /\/\/[^:/@]+:([^@/]*)@/.exec(databaseUrl)?.[1];
  }
  if (!password) return text;
  let scrubbed = text.split(databaseUrl).join(redactDatabaseUrl(databaseUrl));
  for (const secret of new Set([password, safeDecode(password)])) {
    if (secret) scrubbed = scrubbed.split(secret).join('***');
  }
  return scrubbed;
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
