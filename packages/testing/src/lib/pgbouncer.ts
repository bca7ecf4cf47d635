import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { findFreePort } from './free-port.js';
import { findProgram } from './require-program.js';

export interface PgBouncer {
  /** The suite's database URL, pointed at PgBouncer. */
  databaseUrl: string;
  port: number;
  /** PgBouncer's process id (e.g. to read its CPU and memory from /proc). */
  pid: number | undefined;
  /** PgBouncer's admin console (`SHOW …`), simple-query protocol only. */
  admin(command: string): Promise<Record<string, unknown>[]>;
  stop(): Promise<void>;
}

/** For requireProgram(): how to get pgbouncer. */
export const PGBOUNCER_INSTALL_HINT =
  'apt-get install pgbouncer on Debian/Ubuntu, brew install pgbouncer on macOS';

function findPgBouncer(): string {
  const path = findProgram('pgbouncer');
  if (path) return path;
  throw new Error(
    `pgbouncer is not installed (install: ${PGBOUNCER_INSTALL_HINT}); suites that need it ` +
      "skip with requireProgram('pgbouncer', …) first",
  );
}

/** PgBouncer refuses to run as root; as root we run it as the `postgres` system user. */
function unprivilegedUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('postgres:'));
  if (!line) {
    throw new Error(
      'pgbouncer refuses to run as root and there is no `postgres` user to run it as: ' +
        'create one (`useradd --system postgres`) or run the tests as a normal user.',
    );
  }
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function iniValue(value: string): string {
  if (/[\s'"\\]/.test(value))
    throw new Error(`unexpected character in pgbouncer setting: ${value}`);
  return value;
}

/**
 * Starts pgbouncer in transaction pooling mode on a free loopback port in front of
 * `databaseUrl`'s database, with at most `serverConnections` server connections. As root it
 * runs as the `postgres` system user (pgbouncer refuses root). Throws with install
 * instructions when pgbouncer is missing: a suite that needs it asks
 * `requireProgram('pgbouncer', PGBOUNCER_INSTALL_HINT)` first and skips without it.
 */
export interface StartPgBouncerOptions {
  /** default_pool_size: server connections per database and user; default 3. */
  serverConnections?: number;
  /** max_client_conn; default 500. */
  maxClientConnections?: number;
  /**
   * Offer TLS to clients (`client_tls_sslmode = allow`: a client that asks gets TLS, others
   * connect in plain text). The files must be readable by the user PgBouncer runs as.
   */
  clientTls?: { certFile: string; keyFile: string };
}

export async function startPgBouncer(
  databaseUrl: string,
  options: StartPgBouncerOptions = {},
): Promise<PgBouncer> {
  const serverConnections = options.serverConnections ?? 3;
  const maxClientConnections = options.maxClientConnections ?? 500;
  const binary = findPgBouncer();
  const runAs = unprivilegedUser();
  const target = new URL(databaseUrl);
  const database = decodeURIComponent(target.pathname.slice(1));
  const user = decodeURIComponent(target.username) || 'postgres';
  const password = decodeURIComponent(target.password);
  const port = await findFreePort();
  const dir = mkdtempSync(join(tmpdir(), 'usagekit-pgbouncer-'));
  const ini = join(dir, 'pgbouncer.ini');
  const userlist = join(dir, 'userlist.txt');
  // Clients are trusted (loopback, test only); PgBouncer logs in to PostgreSQL with the
  // password from auth_file, which works for the embedded server's password auth and for a
  // trust server alike. The database keeps its name, so only host and port change.
  writeFileSync(userlist, `"${user.replace(/"/g, '""')}" "${password.replace(/"/g, '""')}"\n`, {
    mode: 0o600,
  });
  writeFileSync(
    ini,
    [
      '[databases]',
      `${iniValue(database)} = host=${iniValue(target.hostname)} port=${iniValue(target.port || '5432')} dbname=${iniValue(database)}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${userlist}`,
      `admin_users = ${iniValue(user)}`,
      'pool_mode = transaction',
      `default_pool_size = ${serverConnections}`,
      'reserve_pool_size = 0',
      'min_pool_size = 0',
      `max_client_conn = ${maxClientConnections}`,
      ...(options.clientTls
        ? [
            'client_tls_sslmode = allow',
            `client_tls_cert_file = ${iniValue(options.clientTls.certFile)}`,
            `client_tls_key_file = ${iniValue(options.clientTls.keyFile)}`,
          ]
        : []),
      // Sent by some drivers at startup; PgBouncer would otherwise refuse the connection.
      'ignore_startup_parameters = extra_float_digits',
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  if (runAs) {
    for (const path of [dir, ini, userlist]) chownSync(path, runAs.uid, runAs.gid);
  }

  let output = '';
  const child: ChildProcess = spawn(binary, [ini], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(runAs ?? {}),
  });
  child.stdout?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-8_000)));
  child.stderr?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-8_000)));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));

  const proxied = new URL(databaseUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);

  async function adminQuery(command: string): Promise<Record<string, unknown>[]> {
    const client = new Client({
      host: '127.0.0.1',
      port,
      user,
      database: 'pgbouncer',
      password: password || undefined,
    });
    client.on('error', () => undefined);
    await client.connect();
    try {
      return (await client.query(command)).rows as Record<string, unknown>[];
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  const stop = async (): Promise<void> => {
    if (exitCode === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  // Ready when a query through it reaches PostgreSQL (bounded).
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exitCode !== undefined) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`pgbouncer exited with code ${exitCode} at startup:\n${output}`);
    }
    const probe = new Client({ connectionString: proxied.toString() });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      await probe.query('SELECT 1');
      await probe.end();
      break;
    } catch (error) {
      await probe.end().catch(() => undefined);
      if (Date.now() > deadline) {
        await stop();
        throw new Error(
          `pgbouncer did not become ready on port ${port}: ${String(error)}\n${output}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { databaseUrl: proxied.toString(), port, pid: child.pid, admin: adminQuery, stop };
}
