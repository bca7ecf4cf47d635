/**
 * The bench's PostgreSQL: embedded PostgreSQL 18 by default, or a server the user names
 * (--database-url / DATABASE_URL), where the bench creates its own migrated databases from a
 * template and drops them afterwards. Nothing outside those databases is touched.
 */
import { migrate, schemaTables } from '@usagekit/db';
import {
  cloneTemplate,
  createMigratedTemplate,
  dropDatabase,
  dropTemplate,
  startEmbeddedPostgres,
  startPostgresServer,
  withAdminClient,
  type PostgresServer,
} from '@usagekit/testing';
import { Client } from 'pg';
import { postmasterPidFromDataDirectory } from './cpu.js';
import { createServerCertificate, type ServerCertificate } from './tls.js';

export interface ServerInfo {
  /** `SELECT version()`. */
  version: string;
  /** e.g. "18.1". */
  serverVersion: string;
  source: PostgresServer['source'] | 'database-url';
  /**
   * Which server the run measured: the embedded one, durable (the default) or with durability
   * off (--fast-server), or the one --database-url named (its settings are its own).
   */
  kind: ServerKind;
  /**
   * True when a commit waits for its WAL to reach the disk (fsync, synchronous_commit and
   * full_page_writes on), as on a production server: only then are commit costs real.
   */
  durable: boolean;
  /** Settings that change what the numbers mean (durability off on embedded, for one). */
  settings: Record<string, string>;
  /** The postmaster's pid when the server runs on this machine and we may read its files. */
  postmasterPid: number | undefined;
  /** The server accepts TLS connections (`ssl = on`). */
  tls: boolean;
}

export interface BenchDatabase {
  serverUrl: string;
  /** A fresh, migrated database for this run. */
  databaseUrl: string;
  info: ServerInfo;
  /**
   * The certificate the embedded server serves (PgBouncer can serve it too); undefined for a
   * --database-url server (which has TLS or not: info.tls) or when openssl is missing.
   */
  certificate: ServerCertificate | undefined;
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

export type ServerKind = 'embedded-durable' | 'embedded-fast' | 'database-url';

/**
 * The embedded server's settings on top of @usagekit/testing's throwaway ones. Durable (the
 * default): every commit waits for its WAL flush, as production does; the measured costs of
 * a commit are then the ones users pay. Fast (--fast-server): durability off, as the bench ran
 * before issue 13; commits cost almost nothing, which flatters designs with many commits.
 */
export const EMBEDDED_SETTINGS: Record<Exclude<ServerKind, 'database-url'>, readonly string[]> = {
  'embedded-durable': ['fsync=on', 'synchronous_commit=on', 'full_page_writes=on'],
  'embedded-fast': ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off'],
};

const REPORTED_SETTINGS = [
  'fsync',
  'synchronous_commit',
  'full_page_writes',
  'shared_buffers',
  'max_connections',
  'wal_level',
  'wal_sync_method',
  'max_locks_per_transaction',
  'ssl',
  'superuser_reserved_connections',
];

export async function openBenchDatabase(options: {
  databaseUrl: string | undefined;
  /** Embedded server with durability off (ignored with databaseUrl). */
  fastServer?: boolean;
  log: (line: string) => void;
}): Promise<BenchDatabase> {
  const kind: ServerKind = options.databaseUrl
    ? 'database-url'
    : options.fastServer
      ? 'embedded-fast'
      : 'embedded-durable';
  // TLS on the embedded server (section 7 measures connections with and without it); a
  // client that does not ask for TLS is unaffected.
  const certificate = kind === 'database-url' ? undefined : createServerCertificate();
  const tlsSettings = certificate
    ? ['ssl=on', `ssl_cert_file=${certificate.certFile}`, `ssl_key_file=${certificate.keyFile}`]
    : [];
  let server: PostgresServer;
  try {
    server =
      kind === 'database-url'
        ? await startPostgresServer({ databaseUrl: options.databaseUrl })
        : await startEmbeddedPostgres({ settings: [...EMBEDDED_SETTINGS[kind], ...tlsSettings] });
  } catch (error) {
    certificate?.remove();
    throw error;
  }
  const cleanups: Array<() => Promise<unknown>> = [
    async () => certificate?.remove(),
    () => server.stop(),
  ];
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

    const info = await readServerInfo(server, kind);
    options.log(
      `PostgreSQL ${info.serverVersion} (${describeServer(info)}${kind === 'database-url' ? ` at ${redact(server.url)}` : ', started for this run'}); database ${name}`,
    );
    return {
      serverUrl: server.url,
      databaseUrl,
      info,
      certificate,
      reset: async () => {
        const tables = schemaTables().text;
        await admin.query(
          `TRUNCATE ${tables.boundary_usage_stats}, ${tables.boundary_usage_ids}, ${tables.boundary_usage_flush_sequences}`,
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

/** "embedded, durable (fsync=on, synchronous_commit=on)" and the like, for logs and the README. */
export function describeServer(info: Pick<ServerInfo, 'kind' | 'durable' | 'settings'>): string {
  const where = info.kind === 'database-url' ? '--database-url' : 'embedded';
  const durability = ['fsync', 'synchronous_commit', 'full_page_writes']
    .filter((name) => info.settings[name] !== undefined)
    .map((name) => `${name}=${info.settings[name]}`)
    .join(', ');
  return `${where}, ${info.durable ? 'durable' : 'NOT durable'}${durability ? ` (${durability})` : ''}`;
}

/** Whether commits wait for the disk: fsync, full_page_writes and a synchronous commit. */
export function isDurable(settings: Record<string, string>): boolean {
  return (
    settings['fsync'] === 'on' &&
    settings['full_page_writes'] === 'on' &&
    settings['synchronous_commit'] !== undefined &&
    settings['synchronous_commit'] !== 'off'
  );
}

async function readServerInfo(server: PostgresServer, kind: ServerKind): Promise<ServerInfo> {
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
      source: kind === 'database-url' ? 'database-url' : server.source,
      kind,
      durable: isDurable(settings),
      settings,
      postmasterPid: postmasterPidFromDataDirectory(dataDirectory),
      tls: settings['ssl'] === 'on',
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
