/**
 * The bench's PostgreSQL: embedded PostgreSQL 18 by default, or a server the user names
 * (--database-url / DATABASE_URL), where the bench creates its own migrated databases from a
 * template and drops them afterwards. Nothing outside those databases is touched.
 */
import { migrate } from '@usagekit/db';
import {
  cloneTemplate,
  createMigratedTemplate,
  dropDatabase,
  dropTemplate,
  startPostgresServer,
  withAdminClient,
  type PostgresServer,
} from '@usagekit/testing';
import { Client } from 'pg';
import { postmasterPidFromDataDirectory } from './cpu.js';

export interface ServerInfo {
  /** `SELECT version()`. */
  version: string;
  /** e.g. "18.1". */
  serverVersion: string;
  source: PostgresServer['source'] | 'database-url';
  /** Settings that change what the numbers mean (durability off on embedded, for one). */
  settings: Record<string, string>;
  /** The postmaster's pid when the server runs on this machine and we may read its files. */
  postmasterPid: number | undefined;
}

export interface BenchDatabase {
  serverUrl: string;
  /** A fresh, migrated database for this run. */
  databaseUrl: string;
  info: ServerInfo;
  /** Empties the tables a section writes (TRUNCATE, so no dead rows carry over). */
  reset(): Promise<void>;
  /** Runs one statement on the bench database with a dedicated admin connection. */
  query<R extends Record<string, unknown> = Record<string, unknown>>(
    text: string,
    values?: unknown[],
  ): Promise<R[]>;
  /** Drops the run's databases and stops an embedded server. Idempotent. */
  close(): Promise<void>;
}

const REPORTED_SETTINGS = [
  'fsync',
  'synchronous_commit',
  'full_page_writes',
  'shared_buffers',
  'max_connections',
  'wal_level',
];

export async function openBenchDatabase(options: {
  databaseUrl: string | undefined;
  log: (line: string) => void;
}): Promise<BenchDatabase> {
  const server = await startPostgresServer({
    databaseUrl: options.databaseUrl,
    preferEmbedded: true,
  });
  const cleanups: Array<() => Promise<unknown>> = [() => server.stop()];
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    })());

  try {
    const template = await createMigratedTemplate(server.url, migrate);
    cleanups.push(() => dropTemplate(server.url, template));
    const { name, databaseUrl } = await cloneTemplate(server.url, template);
    cleanups.push(() => dropDatabase(server.url, name));

    const admin = new Client({ connectionString: databaseUrl });
    admin.on('error', () => undefined);
    await admin.connect();
    cleanups.push(() => admin.end());

    const info = await readServerInfo(server, options.databaseUrl !== undefined);
    options.log(
      `PostgreSQL ${info.serverVersion} (${info.source === 'embedded' ? 'embedded, started for this run' : `at ${redact(server.url)}`}); database ${name}`,
    );
    return {
      serverUrl: server.url,
      databaseUrl,
      info,
      reset: async () => {
        await admin.query(
          'TRUNCATE boundary_usage_stats, boundary_usage_ids, boundary_usage_flush_sequences',
        );
      },
      query: async <R extends Record<string, unknown>>(text: string, values: unknown[] = []) =>
        (await admin.query<R>(text, values)).rows,
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

async function readServerInfo(server: PostgresServer, external: boolean): Promise<ServerInfo> {
  return withAdminClient(server.url, async (client) => {
    const version = (await client.query<{ v: string }>('SELECT version() AS v')).rows[0].v;
    const serverVersion = (
      await client.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)
    ).rows[0].v;
    const { rows } = await client.query<{ name: string; setting: string; unit: string | null }>(
      'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)',
      [REPORTED_SETTINGS],
    );
    const settings: Record<string, string> = {};
    for (const row of rows) settings[row.name] = formatSetting(row.setting, row.unit);
    // data_directory is readable by superusers only; without it we just skip server CPU.
    const dataDirectory = await client
      .query<{ v: string }>(`SELECT current_setting('data_directory') AS v`)
      .then((r) => r.rows[0]?.v)
      .catch(() => undefined);
    return {
      version,
      serverVersion,
      source: external ? 'database-url' : server.source,
      settings,
      postmasterPid: postmasterPidFromDataDirectory(dataDirectory),
    };
  });
}

function formatSetting(setting: string, unit: string | null): string {
  if (unit === '8kB') {
    const bytes = Number(setting) * 8192;
    return bytes >= 1 << 20
      ? `${Math.round(bytes / (1 << 20))}MB`
      : `${Math.round(bytes / 1024)}kB`;
  }
  return unit ? `${setting}${unit}` : setting;
}

export function redact(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparsable URL)';
  }
}
