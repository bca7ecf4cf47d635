import { type ConnectionTarget, inDatabase, quoteIdentifier } from './connection-target.js';
import { withClient } from './pg-adapter-factory.js';
import { toConnectionError } from './pg-errors.js';

/** `can-connect-to-database`: connect, run one query, disconnect. */
export async function checkConnection(target: ConnectionTarget): Promise<void> {
  try {
    await withClient(target, (client) => client.query('SELECT 1'));
  } catch (error) {
    throw toConnectionError(error, target);
  }
}

/**
 * `create-database`: CREATE DATABASE through the server's maintenance database, as the native
 * engine does (`postgres`, else `template1`), then make sure the URL's schema exists.
 */
export async function createDatabase(target: ConnectionTarget): Promise<string> {
  let lastError: unknown;
  for (const maintenance of ['postgres', 'template1']) {
    try {
      await withClient(inDatabase(target, maintenance), (client) =>
        client.query(`CREATE DATABASE ${quoteIdentifier(target.database)}`),
      );
      lastError = undefined;
      break;
    } catch (error) {
      lastError = error;
      if ((error as { code?: string }).code !== '3D000') break;
    }
  }
  if (lastError) throw toConnectionError(lastError, target);
  if (target.schema !== 'public') {
    try {
      await withClient(target, (client) =>
        client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(target.schema)}`),
      );
    } catch (error) {
      throw toConnectionError(error, target);
    }
  }
  return target.database;
}

/** `drop-database`. */
export async function dropDatabase(target: ConnectionTarget): Promise<void> {
  try {
    await withClient(inDatabase(target, 'postgres'), (client) =>
      client.query(`DROP DATABASE ${quoteIdentifier(target.database)}`),
    );
  } catch (error) {
    throw toConnectionError(error, target);
  }
}
