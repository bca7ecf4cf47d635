/**
 * Behind PgBouncer in transaction pooling mode: more replicas (PrismaClients, each with its
 * own pool) than server connections. Works because every lock the store takes is
 * transaction-scoped (pg_advisory_xact_lock*), lock_timeout is set with set_config(…, true)
 * (SET LOCAL), and adapter-pg sends unnamed statements. See "Behind PgBouncer" in README.md.
 *
 * The test starts its own pgbouncer (Debian: `apt-get install pgbouncer`; .ci/run installs
 * it) on a free loopback port, in front of this suite's database. Without pgbouncer the suite
 * is skipped with one printed line, except under USAGEKIT_REQUIRE_PROGRAMS=1 (CI), where it
 * fails: it is a supported deployment, not an optional extra.
 */
import { type PrismaClient } from '@usagekit/db';
import { usePgBouncer } from '@usagekit/test-support';
import { PGBOUNCER_INSTALL_HINT, requireProgram } from '@usagekit/testing';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  startFlushLoop,
  type LockMode,
  type StoreOptions,
} from '../src/index.js';
import { clearTables, describeStress, runSeedStress, useDatabase, uuid } from './helpers.js';

// Skipped, with one printed line, where pgbouncer is not installed; CI sets
// USAGEKIT_REQUIRE_PROGRAMS=1, which turns the skip into a failure.
const describeWithPgBouncer = requireProgram('pgbouncer', PGBOUNCER_INSTALL_HINT)
  ? describe
  : describe.skip;

describeWithPgBouncer('the store behind PgBouncer (transaction pooling)', () => {
  let admin: PrismaClient;
  const db = useDatabase();
  const ROUNDS = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
  const HOUR_MS = 3_600_000;
  /** Server connections PgBouncer may open: fewer than the clients below, on purpose. */
  const SERVER_CONNECTIONS = 3;
  const patient = { lockTimeoutMs: 20_000, transactionTimeoutMs: 30_000, maxWaitMs: 30_000 };
  const pgbouncer = usePgBouncer(db, { serverConnections: SERVER_CONNECTIONS });

  beforeAll(() => {
    admin = db.client(1);
  });
  beforeEach(() => clearTables(admin));

  test(`8 replicas share at most ${SERVER_CONNECTIONS} server connections (transaction pooling is on)`, async () => {
    const config = await pgbouncer.bouncer().admin('SHOW CONFIG');
    const setting = (key: string) => config.find((row) => row.key === key)?.value;
    expect([setting('pool_mode'), setting('default_pool_size')]).toEqual([
      'transaction',
      String(SERVER_CONNECTIONS),
    ]);
    const replicas = Array.from({ length: 8 }, () => pgbouncer.client(2));
    const pids = new Set<number>();
    await Promise.all(
      replicas.map(async (prisma) => {
        for (let i = 0; i < 10; i++) {
          const rows = await prisma.$transaction(async (tx) => {
            await tx.$executeRaw`SELECT pg_sleep(0.005)`;
            return tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
          });
          pids.add(rows[0]!.pid);
        }
      }),
    );
    // Without PgBouncer, 8 separate pools would have used at least 8 backends.
    expect(pids.size).toBeGreaterThan(0);
    expect(pids.size).toBeLessThanOrEqual(SERVER_CONNECTIONS);
  });

  describe.each(['single-statement', 'interactive'] as const)(
    '%s flush through PgBouncer',
    (flushMode) => {
      test('upsert and getAndResetSummary from more replicas than server connections', async () => {
        const stores = Array.from(
          { length: 8 },
          () => new BoundaryUsageStore(pgbouncer.client(2), { ...patient, flushMode }),
        );
        const sharedUser = uuid();
        await Promise.all(
          stores.map(async (store, index) => {
            const replicaId = uuid();
            for (let sequence = 1n; sequence <= 5n; sequence++) {
              await store.upsertStats({
                replicaId,
                sequence,
                uniqueWorkspacesDelta: 1,
                uniqueUsersDelta: 1,
                uniqueWorkspacesCount: 1,
                uniqueUsersCount: 1,
                allowedRequests: index + 1,
                deniedRequests: 1,
                workspaceIds: sequence === 1n ? [uuid()] : [],
                userIds: sequence === 1n ? [sharedUser] : [],
              });
            }
          }),
        );
        const summary = await stores[0]!.getAndResetSummary({ maxStalenessMs: HOUR_MS });
        expect(summary).toMatchObject({
          allowedRequests: 5n * (1n + 2n + 3n + 4n + 5n + 6n + 7n + 8n),
          deniedRequests: 40n,
          replicas: 8,
          uniqueWorkspaces: 8n,
          uniqueUsers: 1n,
          uniqueUsersReplicaSum: 8n,
        });
        expect((await stores[1]!.getAndResetSummary({ maxStalenessMs: HOUR_MS })).replicas).toBe(0);
      });
    },
  );

  describe.each<[LockMode, NonNullable<StoreOptions['flushMode']>]>([
    ['shared', 'single-statement'],
    ['shared', 'interactive'],
    ['exclusive', 'single-statement'],
  ])('stress through PgBouncer (%s lock, %s flush)', (lockMode, flushMode) => {
    const WRITERS = 5;
    const CUTOVERS = 5;
    const FLUSHES_PER_WRITER = 40 * ROUNDS;

    test(`${WRITERS} writers and ${CUTOVERS} cutovers: no deadlock, no error, exact conservation`, async () => {
      const result = await runSeedStress({
        client: () => pgbouncer.client(2),
        storeOptions: { ...patient, lockMode, flushMode },
        flushesPerWriter: FLUSHES_PER_WRITER,
        writers: WRITERS,
        cutovers: CUTOVERS,
      });
      console.log(describeStress(`pgbouncer stress ${lockMode}/${flushMode}`, ROUNDS, result));
      expect(result.errors).toEqual([]);
      expect(result.cutovers).toBeGreaterThan(0);
      expect(result.reported).toEqual(result.committed);
    });
  });

  test('tracker + flush loop round trip: exact requests and exact uniques, period after period', async () => {
    const reporter = new BoundaryUsageStore(pgbouncer.client(2), patient);
    const replicas = Array.from({ length: 4 }, () => ({
      replicaId: uuid(),
      tracker: new BoundaryUsageTracker(),
      store: new BoundaryUsageStore(pgbouncer.client(2), patient),
    }));
    const workspacePool = Array.from({ length: 12 }, () => uuid());
    const userPool = Array.from({ length: 7 }, () => uuid());

    for (let period = 0; period < 2; period++) {
      const loops = replicas.map(({ tracker, store, replicaId }) =>
        startFlushLoop({ tracker, store, replicaId, intervalMs: 15 }),
      );
      // Stopped in afterAll too (stop() is idempotent) if the test fails half way.
      for (const loop of loops) db.defer(() => loop.stop());
      const workspaces = new Set<string>();
      const users = new Set<string>();
      let allowed = 0n;
      let denied = 0n;
      for (let i = 0; i < 120; i++) {
        const replica = replicas[i % replicas.length]!;
        // Period 1 uses other ids than period 0, so a leak across the cutover would show.
        const workspaceId = workspacePool[(i * 5 + period * 6) % workspacePool.length]!;
        const userId = userPool[(i * 3 + period) % userPool.length]!;
        replica.tracker.track(workspaceId, userId, i % 9, i % 4);
        workspaces.add(workspaceId);
        users.add(userId);
        allowed += BigInt(i % 9);
        denied += BigInt(i % 4);
        if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await Promise.all(loops.map((loop) => loop.stop()));
      for (const { tracker } of replicas)
        expect(tracker.pending()).toMatchObject({ allowedRequests: 0n, deniedRequests: 0n });
      const summary = await reporter.getAndResetSummary({ maxStalenessMs: HOUR_MS });
      expect({
        allowed: summary.allowedRequests,
        denied: summary.deniedRequests,
        workspaces: summary.uniqueWorkspaces,
        users: summary.uniqueUsers,
      }).toEqual({
        allowed,
        denied,
        workspaces: BigInt(workspaces.size),
        users: BigInt(users.size),
      });
    }
  });

  // The telemetry reporter through PgBouncer (election + cutover + outbox in one transaction,
  // then delivery) is tested in packages/telemetry/test/pgbouncer.test.ts: telemetry depends on
  // this package, not the other way round.
});
