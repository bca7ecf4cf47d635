import { migrate, redactDatabaseUrl } from '@usagekit/db';
import {
  dropDatabase,
  quoteIdentifier,
  serverMajorVersion,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
} from '@usagekit/testing';
import { startKeptPostgres, type KeptPostgres } from './postgres-keeper.js';

export interface SimulationDatabase {
  /** A migrated database of the simulator's own. */
  databaseUrl: string;
  databaseName: string;
  /** Where PostgreSQL came from, for the report: "embedded PostgreSQL 18" or the redacted URL. */
  source: string;
  postgresMajorVersion: number;
  /** Drops the database (unless kept) and stops embedded PostgreSQL. Idempotent, never throws. */
  release(): Promise<void>;
}

export interface AcquireDatabaseOptions {
  /** A server to use; without it embedded PostgreSQL is started. */
  serverUrl?: string;
  keepDatabase: boolean;
  /** Progress lines ("starting embedded PostgreSQL…"). */
  onStatus?: (message: string) => void;
}

/**
 * A fresh, migrated database on the given server or on embedded PostgreSQL. The simulator
 * always works in a database it created, so it never reads or deletes anyone else's rows, and
 * a chaos run's pg_terminate_backend can be limited to that database.
 */
export async function acquireSimulationDatabase(
  options: AcquireDatabaseOptions,
): Promise<SimulationDatabase> {
  let kept: KeptPostgres | undefined;
  let serverUrl = options.serverUrl;
  if (!serverUrl) {
    options.onStatus?.('starting embedded PostgreSQL…');
    kept = await startKeptPostgres();
    serverUrl = kept.url;
  }
  const databaseName = uniqueDatabaseName('usagekit_sim');
  let created = false;
  const release = async (): Promise<void> => {
    if (created && !options.keepDatabase) {
      await dropDatabase(serverUrl, databaseName).catch(() => undefined);
    }
    await kept?.stop().catch(() => undefined);
  };
  try {
    const postgresMajorVersion = await serverMajorVersion(serverUrl);
    await withAdminClient(serverUrl, (client) =>
      client.query(`CREATE DATABASE ${quoteIdentifier(databaseName)}`),
    ).catch((error: unknown) => {
      throw new Error(
        `cannot create the simulator's database on ${redactDatabaseUrl(serverUrl)}: ${
          error instanceof Error ? error.message : String(error)
        } (the URL's user needs CREATEDB)`,
        { cause: error },
      );
    });
    created = true;
    const databaseUrl = withDatabase(serverUrl, databaseName);
    options.onStatus?.('migrating…');
    await migrate({ databaseUrl });
    let releasing: Promise<void> | undefined;
    return {
      databaseUrl,
      databaseName,
      source: kept
        ? `embedded PostgreSQL ${postgresMajorVersion}`
        : `PostgreSQL ${postgresMajorVersion} at ${redactDatabaseUrl(serverUrl)}`,
      postgresMajorVersion,
      release: () => (releasing ??= release()),
    };
  } catch (error) {
    await release();
    throw error;
  }
}
