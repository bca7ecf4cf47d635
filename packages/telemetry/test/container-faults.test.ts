/**
 * Faults only a container gives, under a running fleet (replicas with their own pools,
 * trackers and flush loops; a reporter on a fake clock cutting a period every few dozen ms and
 * delivering to a real HTTP receiver; the fleet is test/support/fault-fleet.ts, shared with
 * faults.test.ts):
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
import { type StoreOptions } from '@usagekit/boundary-usage';
import { migrate } from '@usagekit/db';
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
import { FaultFleet, type FaultFleetOptions } from './support/fault-fleet.js';

const describeWithContainers = requireContainerRuntime(
  'container faults (docker pause, container restart)',
  'apt-get install docker.io and start dockerd; with no registry, set ' +
    'USAGEKIT_TEST_POSTGRES_IMAGE to an image from tools/postgres-image/build.sh',
)
  ? describe
  : describe.skip;

const MULTIPLIER = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
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

/**
 * Slower traffic and loops than faults.test.ts's, and a longer recovery deadline: these faults
 * last seconds (a 2.5 s freeze; a container restart with crash recovery), not milliseconds.
 */
const fleetOptions = (databaseUrl: string): FaultFleetOptions => ({
  databaseUrl,
  deploymentId: 'container-faults',
  startsAt: '2026-03-04T05:00:00.000Z',
  store: STORE_OPTIONS,
  replicas: 3,
  traffic: {
    workspaces: 20,
    users: 10,
    everyMs: 3,
    requestsPerTick: 4,
    maxAllowed: 4,
    maxDenied: 1,
  },
  flushLoop: {
    intervalMs: 20,
    retryBackoff: { baseDelayMs: 10, maxDelayMs: 100 },
    finalFlushTimeoutMs: 20_000,
  },
  sleepBetweenCutsMs: 40,
  recoveryTimeoutMs: 60_000,
});

describeWithContainers('faults only a container gives', () => {
  let container: PostgresContainer | undefined;
  let databaseUrl: string;
  const fleets: FaultFleet[] = [];
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

  async function startFleet(): Promise<FaultFleet> {
    const fleet = await FaultFleet.start(fleetOptions(databaseUrl));
    fleets.push(fleet);
    return fleet;
  }

  async function expectExactAccount(scenario: string, faults: string, fleet: FaultFleet) {
    const account = await fleet.finish();
    const tracked = account.tracked.allowed + account.tracked.denied;
    const reported = account.reported.allowed + account.reported.denied;
    console.log(
      `[container faults ${scenario}] ${faults} reports=${account.reports} ` +
        `redelivered=${account.redelivered} tracked=${tracked} reported=${reported} ` +
        `errors={${fleet.describeErrors()}} lost=${account.lost} counted_twice=${account.countedTwice}`,
    );
    expect(tracked).toBeGreaterThan(0n);
    expect({
      reported: account.reported,
      pending: account.pending,
      left: account.leftInTable + account.undelivered,
      conflicting: account.conflicting,
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
