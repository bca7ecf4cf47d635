/**
 * Faults only a container gives, under a running fleet (replicas with their own pools,
 * trackers and flush loops; a reporter on a fake clock cutting a period every few dozen ms and
 * delivering to a sink that keeps what it gets):
 *
 * a. `docker pause` of the database: the server is frozen. Its connections stay open and new
 *    ones are accepted by the kernel, but nothing answers: no error, no FIN, no RST. Every
 *    statement in flight, and every connection attempt, simply waits.
 * b. `docker restart` of the database container: the postmaster and every backend die, the
 *    same data directory comes back on the same host port.
 *
 * After each fault nobody helps: the loops and the reporter must recover by themselves. Then a
 * graceful stop and exact accounting, as in faults.test.ts: every request tracked is in exactly
 * one delivered report (lost = 0, counted twice = 0), nothing left in the tables or the outbox.
 *
 * The library has no client-side statement deadline of its own here, so a call stuck on the
 * frozen server waits until it thaws; the test bounds the freeze itself (it always unpauses,
 * in `finally`) and gives its clients short transaction timeouts, so the test never hangs.
 *
 * Runs where a container runtime answers (the Jest global setup asks once per run); elsewhere
 * it is skipped with one printed line, or fails under USAGEKIT_REQUIRE_PROGRAMS=1 (CI). The
 * database runs in a container of its own, from USAGEKIT_TEST_POSTGRES_IMAGE (default
 * postgres:18-alpine; CI builds one with tools/postgres-image/build.sh).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  startFlushLoop,
  type FlushLoop,
  type StoreOptions,
} from '@usagekit/boundary-usage';
import { createPrismaClient, migrate, type PrismaClient } from '@usagekit/db';
import {
  CONTAINER_IMAGE_ENV,
  DEFAULT_POSTGRES_IMAGE,
  findFreePort,
  requireContainerRuntime,
  startPostgresContainer,
  withAdminClient,
  withDatabase,
  type PostgresContainer,
} from '@usagekit/testing';
import {
  parseJsonInteger,
  TelemetryReporter,
  type OutboxReport,
  type Sink,
  type SnapshotJson,
} from '../src/index.js';
import { clearTables, FakeClock, FREQUENCY_MS, uuid, waitUntil } from './helpers.js';

const describeWithContainers = requireContainerRuntime(
  'container faults (docker pause, container restart)',
  'apt-get install docker.io and start dockerd; with no registry, set ' +
    'USAGEKIT_TEST_POSTGRES_IMAGE to an image from tools/postgres-image/build.sh',
)
  ? describe
  : describe.skip;

const MULTIPLIER = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const REPLICAS = 3;
const WORKSPACES = Array.from({ length: 20 }, () => uuid());
const USERS = Array.from({ length: 10 }, () => uuid());
/** How long the database stays frozen per pause: longer than a transaction timeout below. */
const PAUSE_MS = 2_500;
/**
 * Short, so that a transaction stuck on the frozen server is abandoned by Prisma's timer while
 * it is still frozen; a batch flush (one autocommit statement) has no timer and waits.
 */
const STORE_OPTIONS: StoreOptions = {
  lockTimeoutMs: 200,
  transactionTimeoutMs: 1_500,
  maxWaitMs: 1_500,
};

const randomInt = (max: number): number => Math.floor(Math.random() * (max + 1));
const pick = <T>(items: readonly T[]): T => items[randomInt(items.length - 1)]!;
const codeOf = (error: unknown): string =>
  String((error as { code?: unknown } | undefined)?.code ?? 'UNKNOWN');

/** A receiver in memory that deduplicates by report id, as the sink contract asks. */
class DedupingSink implements Sink {
  readonly firstBodies = new Map<string, string>();
  redelivered = 0;
  conflicting = 0;
  async send(report: OutboxReport): Promise<void> {
    const body = JSON.stringify(report.payload);
    const first = this.firstBodies.get(report.reportId);
    if (first === undefined) this.firstBodies.set(report.reportId, body);
    else {
      this.redelivered++;
      if (first !== body) this.conflicting++;
    }
  }
}

interface Replica {
  prisma: PrismaClient;
  tracker: BoundaryUsageTracker;
  loop: FlushLoop;
  tracked: bigint;
  lastFlushStartedAt: number;
}

class Fleet {
  readonly errors = new Map<string, number>();
  readonly sink = new DedupingSink();
  private readonly replicas: Replica[] = [];
  private readonly clock = new FakeClock('2026-03-04T05:00:00.000Z');
  private readonly reporterClient: PrismaClient;
  private readonly reporter: TelemetryReporter;
  private readonly traffic: NodeJS.Timeout;
  private readonly driving: Promise<void>;
  private running = true;
  private lastCollectStartedAt = 0;
  /** Flushes that wrote something, for "nothing answers while frozen". */
  flushesDone = 0;
  private closed: Promise<void> | undefined;

  constructor(private readonly databaseUrl: string) {
    this.reporterClient = createPrismaClient({ databaseUrl, maxConnections: 2 });
    this.reporter = new TelemetryReporter({
      prisma: this.reporterClient,
      store: new BoundaryUsageStore(this.reporterClient, STORE_OPTIONS),
      deploymentId: 'container-faults',
      sink: this.sink,
      clock: this.clock,
      collectAttempts: 3,
    });
    for (let index = 0; index < REPLICAS; index++) this.replicas.push(this.startReplica());
    this.traffic = setInterval(() => this.trackSome(), 3);
    this.driving = this.drive();
  }

  private startReplica(): Replica {
    const prisma = createPrismaClient({ databaseUrl: this.databaseUrl, maxConnections: 2 });
    const tracker = new BoundaryUsageTracker();
    const replica: Omit<Replica, 'loop'> & Partial<Pick<Replica, 'loop'>> = {
      prisma,
      tracker,
      tracked: 0n,
      lastFlushStartedAt: 0,
    };
    replica.loop = startFlushLoop({
      tracker,
      store: new BoundaryUsageStore(prisma, STORE_OPTIONS),
      replicaId: uuid(),
      intervalMs: 20,
      maxAttempts: 3,
      retryBackoff: { baseDelayMs: 10, maxDelayMs: 100 },
      finalFlushTimeoutMs: 20_000,
      observer: {
        onFlush: (result, durationMs) => {
          if (result.flushed) {
            replica.lastFlushStartedAt = Date.now() - durationMs;
            this.flushesDone++;
          }
        },
        onError: (error) => this.noteError(error),
      },
    });
    return replica as Replica;
  }

  private noteError(error: unknown): void {
    const code = codeOf(error);
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  private trackSome(): void {
    for (let i = 0; i < 4; i++) {
      const replica = pick(this.replicas);
      const allowed = randomInt(4);
      const denied = allowed === 0 ? 1 : randomInt(1);
      replica.tracker.track(pick(WORKSPACES), pick(USERS), allowed, denied);
      replica.tracked += BigInt(allowed + denied);
    }
  }

  private async drive(): Promise<void> {
    while (this.running) {
      await sleep(40);
      this.clock.advance(FREQUENCY_MS);
      const startedAt = Date.now();
      try {
        await this.reporter.collectSnapshot();
        this.lastCollectStartedAt = startedAt;
      } catch (error) {
        this.noteError(error);
      }
      await this.reporter.deliverPending().catch((error: unknown) => this.noteError(error));
    }
  }

  /** Until every loop flushed and the reporter collected, each starting after `since`. */
  async recovered(since: number): Promise<void> {
    await waitUntil(
      () =>
        this.replicas.every((replica) => replica.lastFlushStartedAt > since) &&
        this.lastCollectStartedAt > since,
      'every loop flushed and the reporter collected after the fault',
      60_000,
    );
  }

  /** Graceful stop, then the account: what was tracked against what the sink holds. */
  async finish(): Promise<{ tracked: bigint; reported: bigint; pending: bigint; left: bigint }> {
    clearInterval(this.traffic);
    this.running = false;
    await this.driving;
    await Promise.all(this.replicas.map((replica) => replica.loop.stop()));
    let pending = 0n;
    for (const { tracker } of this.replicas) {
      const { allowedRequests, deniedRequests } = tracker.pending();
      pending += allowedRequests + deniedRequests;
    }
    this.clock.advance(FREQUENCY_MS);
    await this.reporter.collectSnapshot();
    for (let pass = 0; pass < 50 && (await this.undelivered()) > 0n; pass++) {
      this.clock.advance(FREQUENCY_MS);
      await this.reporter.deliverPending();
    }
    let reported = 0n;
    for (const body of this.sink.firstBodies.values()) {
      const summary = (JSON.parse(body) as SnapshotJson).boundary_usage_summary;
      if (!summary) continue;
      reported +=
        parseJsonInteger(summary.allowed_requests) + parseJsonInteger(summary.denied_requests);
    }
    const [left] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT (SELECT count(*) FROM boundary_usage_stats)
           + (SELECT count(*) FROM telemetry_reports WHERE delivered_at IS NULL) AS n`;
    const tracked = this.replicas.reduce((sum, replica) => sum + replica.tracked, 0n);
    return { tracked, reported, pending, left: left!.n };
  }

  private async undelivered(): Promise<bigint> {
    const [row] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM telemetry_reports WHERE delivered_at IS NULL`;
    return row!.n;
  }

  /** Idempotent; runs after a failed assertion too, so the suite always lets go. */
  close(): Promise<void> {
    return (this.closed ??= (async () => {
      clearInterval(this.traffic);
      this.running = false;
      await this.driving;
      await Promise.all(this.replicas.map((replica) => replica.loop.stop()));
      await this.reporter.stop();
      await Promise.all(
        [this.reporterClient, ...this.replicas.map((replica) => replica.prisma)].map((client) =>
          client.$disconnect().catch(() => undefined),
        ),
      );
    })());
  }
}

function describeErrors(errors: Map<string, number>): string {
  return [...errors]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, count]) => `${code}:${count}`)
    .join(',');
}

describeWithContainers('faults only a container gives', () => {
  let container: PostgresContainer | undefined;
  let databaseUrl: string;
  const fleets: Fleet[] = [];
  /** Always thawed again, even when a test fails mid-pause: nothing may stay frozen. */
  let paused = false;

  beforeAll(async () => {
    // A fixed host port: a restarted container keeps it, and the clients' URL stays valid.
    container = await startPostgresContainer({
      image: process.env[CONTAINER_IMAGE_ENV] || DEFAULT_POSTGRES_IMAGE,
      hostPort: await findFreePort(),
    });
    await withAdminClient(container.url, (admin) =>
      admin.query('CREATE DATABASE usagekit_container_faults'),
    );
    databaseUrl = withDatabase(container.url, 'usagekit_container_faults');
    await migrate({ databaseUrl });
  }, 180_000);

  afterAll(async () => {
    if (paused) await container?.unpause().catch(() => undefined);
    await Promise.all(fleets.map((fleet) => fleet.close()));
    await container?.stop();
  }, 60_000);

  async function startFleet(): Promise<Fleet> {
    const admin = createPrismaClient({ databaseUrl, maxConnections: 1 });
    try {
      await clearTables(admin);
    } finally {
      await admin.$disconnect();
    }
    const fleet = new Fleet(databaseUrl);
    fleets.push(fleet);
    return fleet;
  }

  async function expectExactAccount(scenario: string, faults: string, fleet: Fleet) {
    const account = await fleet.finish();
    console.log(
      `[container faults ${scenario}] ${faults} reports=${fleet.sink.firstBodies.size} ` +
        `redelivered=${fleet.sink.redelivered} tracked=${account.tracked} reported=${account.reported} ` +
        `errors={${describeErrors(fleet.errors)}} lost=${account.tracked > account.reported ? account.tracked - account.reported : 0n} ` +
        `counted_twice=${account.reported > account.tracked ? account.reported - account.tracked : 0n}`,
    );
    expect(account.tracked).toBeGreaterThan(0n);
    expect({
      reported: account.reported,
      pending: account.pending,
      left: account.left,
      conflicting: fleet.sink.conflicting,
    }).toEqual({ reported: account.tracked, pending: 0n, left: 0n, conflicting: 0 });
  }

  test('a. docker pause (frozen server, connections open, nothing answers): recovers after unpause, exact totals', async () => {
    const fleet = await startFleet();
    const rounds = 2 * MULTIPLIER;
    let lastThawAt = 0;
    /** Flushes that completed while the server was frozen (after a short settling time). */
    let flushedWhileFrozen = 0;
    for (let round = 0; round < rounds; round++) {
      await sleep(400);
      paused = true;
      await container!.pause();
      try {
        // A reply already on its way when the freezer struck may still land; then silence.
        await sleep(200);
        const before = fleet.flushesDone;
        await sleep(PAUSE_MS);
        flushedWhileFrozen += fleet.flushesDone - before;
      } finally {
        await container!.unpause();
        paused = false;
      }
      lastThawAt = Date.now();
    }
    await fleet.recovered(lastThawAt);
    await expectExactAccount(
      'pause',
      `rounds=${rounds} faults=${rounds} pauses of ${PAUSE_MS} ms`,
      fleet,
    );
    // The fault was real: a frozen server answered nothing, and yet nothing was lost.
    expect(flushedWhileFrozen).toBe(0);
  }, 120_000);

  test('b. docker restart of the database container (same port, same data): recovers by itself, exact totals', async () => {
    const fleet = await startFleet();
    const rounds = 2 * MULTIPLIER;
    let lastRestartAt = 0;
    for (let round = 0; round < rounds; round++) {
      await sleep(400);
      // t=0: SIGKILL, like a crashed host; PostgreSQL runs crash recovery on the way back.
      await container!.restart({ stopTimeoutS: 0 });
      lastRestartAt = Date.now();
    }
    await fleet.recovered(lastRestartAt);
    await expectExactAccount('restart', `rounds=${rounds} faults=${rounds} restarts`, fleet);
    expect(fleet.errors.size).toBeGreaterThan(0);
  }, 120_000);
});
