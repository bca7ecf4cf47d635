import { containerRuntimeProblem, startPostgresContainer } from './container.js';
import { startEmbeddedPostgres } from './embedded.js';

export interface PostgresServer {
  /** A superuser URL on the server's `postgres` database. */
  url: string;
  source: 'TEST_DATABASE_URL' | 'testcontainers' | 'embedded';
  /** Why this source was chosen, for the one line we print. */
  reason: string;
  stop(): Promise<void>;
}

export interface StartPostgresServerOptions {
  /** A server the caller already has; its databases are created and dropped, never reused. */
  databaseUrl?: string;
  /** Skip the container probe (e.g. the simulator, which always wants embedded). */
  preferEmbedded?: boolean;
  onLog?: (message: string) => void;
}

/**
 * A PostgreSQL server, from the first source that works: the given URL; a container when a
 * container runtime answers; otherwise embedded PostgreSQL. Nobody needs to set anything up.
 */
export async function startPostgresServer(
  options: StartPostgresServerOptions = {},
): Promise<PostgresServer> {
  if (options.databaseUrl) {
    return {
      url: options.databaseUrl,
      source: 'TEST_DATABASE_URL',
      reason: `using ${hidePassword(options.databaseUrl)}`,
      stop: async () => undefined,
    };
  }
  let whyNotContainer = 'skipped';
  if (!options.preferEmbedded) {
    const problem = await containerRuntimeProblem();
    if (!problem) {
      try {
        const server = await startPostgresContainer();
        return { ...server, reason: 'a container runtime answered' };
      } catch (error) {
        whyNotContainer = `container failed to start: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
      }
    } else {
      whyNotContainer = `no container runtime (${problem})`;
    }
  }
  const server = await startEmbeddedPostgres({ onLog: options.onLog });
  return { ...server, reason: `TEST_DATABASE_URL unset; ${whyNotContainer}` };
}

function hidePassword(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparsable URL)';
  }
}
