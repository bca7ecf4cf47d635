import { EngineUserError } from './engine-errors.js';
import type { ConnectionTarget } from './connection-target.js';

/**
 * Connection failures as the native engine reports them (user-facing error codes P1000,
 * P1001, P1003, P1009), so that the CLI's own handling holds: on P1003 from
 * `can-connect-to-database`, `migrate dev` and `deploy` create the database and go on.
 */
export function toConnectionError(error: unknown, target: ConnectionTarget): unknown {
  const { code } = (error ?? {}) as { code?: string };
  const url = new URL(target.url);
  const location = `${url.hostname}:${url.port || '5432'}`;
  switch (code) {
    case '3D000':
      return new EngineUserError(
        'P1003',
        `Database \`${target.database}\` does not exist on the database server at \`${location}\`.`,
        { database_name: target.database, database_host: url.hostname, database_port: url.port },
      );
    case '42P04':
      return new EngineUserError(
        'P1009',
        `Database \`${target.database}\` already exists on the database server at \`${location}\``,
      );
    case '28P01':
    case '28000':
      return new EngineUserError(
        'P1000',
        `Authentication failed against database server, the provided database credentials for \`${decodeURIComponent(url.username)}\` are not valid.\n\n` +
          'Please make sure to provide valid database credentials for the database server at the configured address.',
      );
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
      return new EngineUserError(
        'P1001',
        `Can't reach database server at \`${location}\`\n\nPlease make sure your database server is running at \`${location}\`.`,
      );
    default:
      if (error instanceof Error && /timeout expired|Connection terminated/i.test(error.message)) {
        return new EngineUserError(
          'P1001',
          `Can't reach database server at \`${location}\`\n\nPlease make sure your database server is running at \`${location}\`.`,
        );
      }
      return error;
  }
}
