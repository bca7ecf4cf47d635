import type { PostgresServer } from './server.js';

/**
 * Asks testcontainers for a container runtime. Returns a reason instead of throwing, since
 * "no runtime" is the normal case on machines without Docker.
 */
export async function containerRuntimeProblem(): Promise<string | undefined> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message.split('\n')[0] : String(error);
  }
}

export async function startPostgresContainer(
  image = 'postgres:18-alpine',
): Promise<PostgresServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(image)
    .withDatabase('postgres')
    .withUsername('postgres')
    .withPassword('usagekit')
    .withCommand(['postgres', '-c', 'fsync=off', '-c', 'max_connections=400'])
    .start();
  let stopped: Promise<void> | undefined;
  return {
    url: container.getConnectionUri(),
    source: 'testcontainers',
    reason: '',
    stop: () => (stopped ??= container.stop().then(() => undefined)),
  };
}
