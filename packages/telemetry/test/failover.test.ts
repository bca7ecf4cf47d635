/**
 * Real failovers under a running fleet (issue 19): a primary and a streaming standby on
 * loopback (@usagekit/testing's startReplicationPair), the fleet on a virtual IP in front
 * (replicas with flush loops, a reporter cutting a period every ~50 ms and delivering to a real
 * HTTP receiver; test/support/fault-fleet.ts). The primary goes away, the standby is promoted,
 * and the old primary comes back in recovery while the VIP still names it, so the fleet's new
 * connections land on a node that refuses every write. Then the VIP moves to the new primary
 * WITHOUT resetting connections already open (a DNS change, a proxy without session
 * shutdown). Nobody helps the fleet: it must recover by itself within 30 s (every loop flushes
 * and the reporter collects again) and account exactly: every request tracked is in exactly
 * one report the receiver accepted.
 *
 * Before issue 19 the reporter never recovered: its interactive transactions handed the
 * connection that had just answered 25006 back to the pool, so it stayed on the demoted node.
 * Each scenario prints one line with the recovery time.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { StoreOptions } from '@usagekit/boundary-usage';
import { migrate, type CreatePrismaClientOptions } from '@usagekit/db';
import {
  installedPostgresBinDir,
  SERVER_URL_ENV,
  serverMajorVersion,
  startReplicationPair,
  waitUntil,
  withAdminClient,
  withDatabase,
  type ReplicationPair,
} from '@usagekit/testing';
import { FaultFleet, type FaultFleetOptions } from './support/fault-fleet.js';
import { expectExact } from './support/expect-exact.js';

const RECOVERY_BOUND_MS = 30_000;
const STORE_OPTIONS: StoreOptions = {
  lockTimeoutMs: 500,
  transactionTimeoutMs: 5_000,
  maxWaitMs: 5_000,
};

const fleetOptions = (
  databaseUrl: string,
  clientOptions: FaultFleetOptions['clientOptions'],
): FaultFleetOptions => ({
  databaseUrl,
  deploymentId: 'failover',
  startsAt: '2026-02-03T12:00:00.000Z',
  store: STORE_OPTIONS,
  replicas: 3,
  traffic: {
    workspaces: 30,
    users: 20,
    everyMs: 5,
    requestsPerTick: 4,
    maxAllowed: 5,
    maxDenied: 2,
  },
  flushLoop: {
    intervalMs: 25,
    retryBackoff: { baseDelayMs: 20, maxDelayMs: 500 },
    finalFlushTimeoutMs: 15_000,
  },
  sleepBetweenCutsMs: 50,
  recoveryTimeoutMs: RECOVERY_BOUND_MS,
  clientOptions,
});

/** A fresh pair with a migrated database, reached through the VIP. */
async function pairWithDatabase(
  synchronous: boolean,
): Promise<{ pair: ReplicationPair; databaseUrl: string }> {
  // The run's major when the distribution has its binaries (CI's PostgreSQL 15 leg), else the
  // embedded ones (18).
  const major = await serverMajorVersion(process.env[SERVER_URL_ENV]!);
  const pair = await startReplicationPair({ synchronous, binDir: installedPostgresBinDir(major) });
  console.log(`[failover] pair of PostgreSQL ${await serverMajorVersion(pair.vipUrl)}`);
  try {
    await withAdminClient(pair.vipUrl, (admin) => admin.query('CREATE DATABASE usagekit_failover'));
    const databaseUrl = withDatabase(pair.vipUrl, 'usagekit_failover');
    await migrate({ databaseUrl });
    return { pair, databaseUrl };
  } catch (error) {
    await pair.stop();
    throw error;
  }
}

/**
 * The old primary (stopped) comes back in recovery; the VIP still names it for `windowMs`, long
 * enough for the fleet to connect there; then the VIP moves without resetting anything.
 * Returns when it moved and how many connections were open to the demoted node then.
 */
async function demotedNodeNamedByTheVip(
  pair: ReplicationPair,
  windowMs: number,
  waitForOpenConnections: boolean,
): Promise<{ movedAt: number; leftOpen: number }> {
  await pair.promoteStandby();
  await pair.startStandby();
  expect(await pair.standby.isInRecovery()).toBe(true);
  const demoted = pair.vip.target();
  await sleep(windowMs);
  // Behind a pooler the fleet's connections come and go there (each is discarded at its first
  // write): move while some are open, so the move leaves them behind.
  if (waitForOpenConnections) {
    await waitUntil(
      () => (pair.vip.openConnections().get(demoted) ?? 0) > 0,
      'a connection open on the demoted node',
      10_000,
    );
  }
  const leftOpen = pair.vip.openConnections().get(demoted) ?? 0;
  pair.vip.pointTo(pair.primary.url, { resetConnections: false });
  return { movedAt: Date.now(), leftOpen };
}

async function runScenario(
  name: string,
  options: {
    synchronous: boolean;
    clientOptions?: Partial<CreatePrismaClientOptions>;
    failPrimary: (pair: ReplicationPair) => Promise<string>;
    /**
     * Direct connections: new connections to the demoted node are refused at connect and
     * retried (the VIP moves well within the 10 s connect timeout), so no write ever reaches
     * it and nobody sees SERVER_NOT_WRITABLE. Behind a pooler nothing checks at connect: the
     * connections stay open there until a write is refused with 25006 and they are discarded.
     */
    direct: boolean;
  },
): Promise<void> {
  const { pair, databaseUrl } = await pairWithDatabase(options.synchronous);
  let fleet: FaultFleet | undefined;
  try {
    fleet = await FaultFleet.start(fleetOptions(databaseUrl, options.clientOptions));
    // Traffic flowing: flushes and collections before anything goes wrong.
    await waitUntil(() => fleet!.flushesDone >= 20, 'the fleet flushing', 20_000);
    const failure = await options.failPrimary(pair);
    const { movedAt, leftOpen } = await demotedNodeNamedByTheVip(pair, 1_500, !options.direct);
    await fleet.recovered(movedAt);
    const recoveryMs = Date.now() - movedAt;
    const account = await fleet.finish();
    console.log(
      `[failover ${name}] ${failure}; connections left open on the demoted node at the VIP move: ${leftOpen}; ` +
        `recovered ${recoveryMs} ms after the VIP moved; periods=${account.cuts} reports=${account.reports} ` +
        `tracked=${account.tracked.allowed}/${account.tracked.denied} reported=${account.reported.allowed}/${account.reported.denied} ` +
        `errors={${fleet.describeErrors()}} lost=${account.lost} counted_twice=${account.countedTwice}`,
    );
    expectExact(account);
    expect(recoveryMs).toBeLessThan(RECOVERY_BOUND_MS);
    if (options.direct) {
      expect(fleet.errors.get('SERVER_NOT_WRITABLE') ?? 0).toBe(0);
    } else {
      expect(leftOpen).toBeGreaterThan(0);
      expect(fleet.errors.get('SERVER_NOT_WRITABLE') ?? 0).toBeGreaterThan(0);
    }
  } finally {
    await fleet?.close();
    await pair.stop();
  }
}

/** Crashes the primary while commits wait for the synchronous standby's flush. */
async function crashWithCommitsInFlight(pair: ReplicationPair): Promise<string> {
  pair.replicationLink.pause();
  let waiting = 0;
  await waitUntil(
    async () => {
      const [row] = await pair.primary.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
      );
      waiting = row!.n;
      return waiting >= 1;
    },
    'commits waiting for the synchronous standby',
    20_000,
  );
  await pair.stopPrimary('immediate');
  return `primary crashed with ${waiting} commits waiting for the standby`;
}

test('synchronous replication, a crash with commits in flight, the demoted node named by the VIP: exact, recovered within 30 s', async () => {
  await runScenario('synchronous crash', {
    synchronous: true,
    failPrimary: crashWithCommitsInFlight,
    direct: true,
  });
}, 90_000);

test('pooler mode (nothing checks at connect): connections left open on the demoted node across the VIP move are discarded, exact, recovered within 30 s', async () => {
  await runScenario('pooler mode, switchover', {
    synchronous: false,
    clientOptions: { via: 'pooler' },
    failPrimary: async (pair) => {
      // A clean switchover: a fast stop streams everything to the standby first.
      await pair.stopPrimary('fast');
      return 'primary stopped (fast)';
    },
    direct: false,
  });
}, 90_000);
