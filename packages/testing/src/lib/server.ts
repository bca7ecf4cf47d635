import {
  containerRuntimeProblem,
  DEFAULT_POSTGRES_IMAGE,
  startPostgresContainer,
} from './container.js';
import { startEmbeddedPostgres } from './embedded.js';
import type { PostgresServer } from './postgres-server.js';

export type { PostgresServer } from './postgres-server.js';

export interface StartPostgresServerOptions {
  /** A server the caller already has; its databases are created and dropped, never reused. */
  databaseUrl?: string;
  /** Skip the container probe (e.g. the simulator, which always wants embedded). */
  preferEmbedded?: boolean;
  /** The container image (default `postgres:18-alpine`); e.g. tools/postgres-image's build. */
  containerImage?: string;
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
  let whyNotContainer = 'containers not wanted (preferEmbedded)';
  if (!options.preferEmbedded) {
    const problem = await containerRuntimeProblem();
    if (!problem) {
      try {
        const image = options.containerImage ?? DEFAULT_POSTGRES_IMAGE;
        const server = await startPostgresContainer({ image });
        const ryuk = server.ryukDisabled ? ', Ryuk disabled' : '';
        return { ...server, reason: `a container runtime answered (image ${image}${ryuk})` };
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
