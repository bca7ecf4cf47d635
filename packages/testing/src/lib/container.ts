import type { PostgresServer } from './postgres-server.js';

/** The image used when the caller names none: the production major version, from Docker Hub. */
export const DEFAULT_POSTGRES_IMAGE = 'postgres:18-alpine';
const PASSWORD = 'usagekit';
const POSTGRES_PORT = 5432;

/**
 * Published ports are bound to 127.0.0.1 only, so the host testcontainers connects to must be
 * the loopback too. With a local runtime (a unix socket) testcontainers would otherwise pick
 * the bridge's gateway (172.17.0.1) whenever /.dockerenv exists, as it does in many CI VMs,
 * and wait forever for a port that is not published there. Must run before testcontainers
 * creates (and caches) its client; a remote DOCKER_HOST, or an override, is left alone.
 */
function reachContainersThroughLoopback(): void {
  const dockerHost = process.env.DOCKER_HOST;
  if (process.env.TESTCONTAINERS_HOST_OVERRIDE !== undefined) return;
  if (dockerHost === undefined || dockerHost === '' || dockerHost.startsWith('unix:')) {
    process.env.TESTCONTAINERS_HOST_OVERRIDE = '127.0.0.1';
  }
}

async function loadTestcontainers(): Promise<typeof import('testcontainers')> {
  reachContainersThroughLoopback();
  return import('testcontainers');
}

/**
 * Asks testcontainers for a container runtime. Returns a reason instead of throwing, since
 * "no runtime" is the normal case on machines without Docker.
 */
export async function containerRuntimeProblem(): Promise<string | undefined> {
  try {
    const { getContainerRuntimeClient } = await loadTestcontainers();
    await getContainerRuntimeClient();
    return undefined;
  } catch (error) {
    return firstLine(error);
  }
}

/**
 * Whether a container of `image` can be started here: a runtime answers, and the image is
 * present or can be pulled (with no registry it cannot: then a local build is needed, see
 * tools/postgres-image). Returns the reason it cannot, or undefined. Pulls at most once.
 */
export async function containerImageProblem(image: string): Promise<string | undefined> {
  try {
    const { getContainerRuntimeClient, ImageName } = await loadTestcontainers();
    const client = await getContainerRuntimeClient();
    const name = ImageName.fromString(image);
    if (await client.image.exists(name)) return undefined;
    try {
      await client.image.pull(name);
      return undefined;
    } catch (error) {
      return `image ${image} is not here and cannot be pulled: ${firstLine(error)}`;
    }
  } catch (error) {
    return firstLine(error);
  }
}

export interface PostgresContainerOptions {
  /** Any image with the official image's interface (POSTGRES_* env, `postgres -c …` args). */
  image?: string;
  /**
   * Publish on this host port instead of a free one. A fault test that restarts the container
   * needs it: Docker may give a restarted container another ephemeral port.
   */
  hostPort?: number;
}

export interface PostgresContainer extends PostgresServer {
  /** The container id, for `docker pause` and friends. */
  id: string;
  image: string;
  /** Whether Ryuk (testcontainers' reaper) was turned off because its image was unavailable. */
  ryukDisabled: boolean;
  /**
   * `docker pause`: every process of the container frozen (cgroup freezer). Its TCP
   * connections stay open and new ones are still accepted by the kernel, but nothing answers.
   */
  pause(): Promise<void>;
  unpause(): Promise<void>;
  /**
   * `docker restart`: PostgreSQL is killed after `stopTimeoutS` (0: SIGKILL at once, a
   * crash; it runs crash recovery on the way back) and started again on the same data and,
   * with `hostPort`, on the same host port.
   */
  restart(options?: { stopTimeoutS?: number }): Promise<void>;
}

/**
 * A throwaway PostgreSQL in a container, its port published on 127.0.0.1 only (never on every
 * interface of the host), reached through the loopback. When the first start fails (e.g.
 * Ryuk's image cannot be pulled: no registry), it is retried once with
 * TESTCONTAINERS_RYUK_DISABLED=true: stop() still removes the container, only a killed run
 * would leave it behind.
 */
export async function startPostgresContainer(
  options: PostgresContainerOptions = {},
): Promise<PostgresContainer> {
  const image = options.image ?? DEFAULT_POSTGRES_IMAGE;
  let ryukDisabled = process.env.TESTCONTAINERS_RYUK_DISABLED === 'true';
  try {
    return await startOnce(image, options.hostPort, ryukDisabled);
  } catch (error) {
    // A container that started but never became ready would fail the same way again.
    if (ryukDisabled || /not bound|health ?check|timed? ?out/i.test(String(error))) throw error;
    // testcontainers pulls the image first, then starts Ryuk, whose image it must pull too;
    // without a registry that fails even when the PostgreSQL image is local. Its error does
    // not name Ryuk, so retry once without it. testcontainers reads the variable each time
    // it looks for a reaper and caches only a reaper that started.
    process.env.TESTCONTAINERS_RYUK_DISABLED = 'true';
    ryukDisabled = true;
    return await startOnce(image, options.hostPort, ryukDisabled);
  }
}

async function startOnce(
  image: string,
  hostPort: number | undefined,
  ryukDisabled: boolean,
): Promise<PostgresContainer> {
  reachContainersThroughLoopback();
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  /** Publishes 5432 on 127.0.0.1 only; testcontainers itself binds every interface. */
  class LoopbackPostgreSqlContainer extends PostgreSqlContainer {
    constructor() {
      super(image);
      if (hostPort !== undefined)
        this.withExposedPorts({ container: POSTGRES_PORT, host: hostPort });
      const bindings = this.hostConfig.PortBindings as Record<string, { HostPort?: string }[]>;
      for (const [key, list] of Object.entries(bindings)) {
        bindings[key] = list.map((binding) => ({ ...binding, HostIp: '127.0.0.1' }));
      }
    }
  }
  const container = await new LoopbackPostgreSqlContainer()
    .withDatabase('postgres')
    .withUsername('postgres')
    .withPassword(PASSWORD)
    .withCommand(['postgres', '-c', 'fsync=off', '-c', 'max_connections=400'])
    .start();
  let stopped: Promise<void> | undefined;
  // testcontainers wraps only start/stop/restart; pause is the runtime's (dockerode's) own.
  const control = async () => {
    const { getContainerRuntimeClient } = await loadTestcontainers();
    return (await getContainerRuntimeClient()).container.getById(container.getId());
  };
  const port = container.getMappedPort(POSTGRES_PORT);
  return {
    // 127.0.0.1, not testcontainers' "localhost", which may resolve to ::1 where nothing listens.
    url: `postgresql://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
    source: 'testcontainers',
    reason: '',
    id: container.getId(),
    image,
    ryukDisabled,
    pause: async () => {
      await (await control()).pause();
    },
    unpause: async () => {
      await (await control()).unpause();
    },
    restart: async ({ stopTimeoutS = 0 } = {}) => {
      await (await control()).restart({ t: stopTimeoutS });
    },
    stop: () => (stopped ??= container.stop().then(() => undefined)),
  };
}

function firstLine(error: unknown): string {
  return error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error);
}
