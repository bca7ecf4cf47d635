/**
 * Faults under a running fleet: several replicas (each its own pool, tracker and flush loop)
 * track traffic continuously while a reporter on a fake clock cuts a period every few dozen
 * milliseconds and delivers to a real HTTP receiver that dedupes by Idempotency-Key. Then:
 *
 * a. pg_terminate_backend on random backends of the database, every few ms;
 * b. the PostgreSQL server itself stopped and started again (same port, same data);
 * c. lock timeouts (the boundary-usage lock held exclusively) and statement timeouts
 *    (statement_timeout set on the database);
 * d. the worst moment of (a) made deterministic: a connection whose FATAL arrives in the same
 *    read as its ReadyForQuery, as the pool hands it out. That one used to kill the process.
 *
 * After the faults nobody helps: the loops and the reporter must recover by themselves (each
 * loop flushes again, the reporter collects again). Then a graceful stop (final flushes, one
 * last period, delivery until the outbox is empty) and exact accounting: every request
 * tracked is in exactly one report the receiver accepted. One line per scenario is printed:
 * faults injected, rounds, lost and counted twice (both must be 0). USAGEKIT_STRESS_ROUNDS
 * multiplies the rounds. The fleet is test/support/fault-fleet.ts (container-faults.test.ts
 * runs it too).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BoundaryUsageStore, type StoreOptions } from '@usagekit/boundary-usage';
import { createPrismaClient, LockIds, migrate, type Logger } from '@usagekit/db';
import {
  findFreePort,
  quoteIdentifier,
  startEmbeddedPostgres,
  withAdminClient,
  withDatabase,
  type PostgresServer,
} from '@usagekit/testing';
import { FREQUENCY_MS, useDatabase } from './helpers.js';
import {
  codeOf,
  FaultFleet,
  randomInt,
  type FaultFleetOptions,
  type FleetAccount,
} from './support/fault-fleet.js';
import { expectExact } from './support/expect-exact.js';

const db = useDatabase();
const MULTIPLIER = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const T0 = '2026-02-03T12:00:00.000Z';
/** Every store's (and so the reporter's) lock_timeout: short, so a held lock fails fast. */
const LOCK_TIMEOUT_MS = 50;
const STORE_OPTIONS: StoreOptions = {
  lockTimeoutMs: LOCK_TIMEOUT_MS,
  transactionTimeoutMs: 3_000,
  maxWaitMs: 3_000,
};

/** Short timeouts everywhere, so that a fault costs milliseconds, not seconds. */
const fleetOptions = (databaseUrl: string): FaultFleetOptions => ({
  databaseUrl,
  deploymentId: 'faults',
  startsAt: T0,
  store: STORE_OPTIONS,
  replicas: 3,
  traffic: {
    workspaces: 40,
    users: 25,
    everyMs: 2,
    requestsPerTick: 6,
    maxAllowed: 5,
    maxDenied: 2,
  },
  flushLoop: {
    intervalMs: 15,
    retryBackoff: { baseDelayMs: 5, maxDelayMs: 50 },
    finalFlushTimeoutMs: 15_000,
  },
  sleepBetweenCutsMs: 25,
  recoveryTimeoutMs: 30_000,
});

/** The scenario's one line, then the assertions every scenario shares. */
function expectExactAccount(
  scenario: string,
  rounds: number,
  faults: string,
  fleet: FaultFleet,
  account: FleetAccount,
): void {
  console.log(
    `[faults ${scenario}] rounds=${rounds} ${faults} periods=${account.cuts} reports=${account.reports} ` +
      `redelivered=${account.redelivered} tracked=${account.tracked.allowed}/${account.tracked.denied} ` +
      `reported=${account.reported.allowed}/${account.reported.denied} errors={${fleet.describeErrors()}} ` +
      `lost=${account.lost} counted_twice=${account.countedTwice}`,
  );
  expectExact(account);
}

test('a. pg_terminate_backend on random backends, repeatedly: nothing lost, nothing counted twice', async () => {
  const { databaseUrl } = db.database();
  const fleet = await FaultFleet.start(fleetOptions(databaseUrl));
  const rounds = 150 * MULTIPLIER;
  let terminated = 0;
  let busy = 0;
  try {
    await sleep(150);
    await withAdminClient(databaseUrl, async (admin) => {
      for (let round = 0; round < rounds; round++) {
        // Up to two victims, busy backends first (mid-statement or mid-transaction).
        const { rows } = await admin.query<{ terminated: boolean; busy: boolean }>(
          `SELECT pg_terminate_backend(pid) AS terminated, state <> 'idle' AS busy
             FROM (SELECT pid, state FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend'
                    ORDER BY state = 'idle', random() LIMIT 2) AS victims`,
        );
        for (const row of rows) {
          if (row.terminated) terminated++;
          if (row.terminated && row.busy) busy++;
        }
        await sleep(3 + randomInt(12));
      }
    });
    await fleet.recovered(Date.now());
    const account = await fleet.finish();
    expectExactAccount('terminate', rounds, `faults=${terminated} (busy=${busy})`, fleet, account);
    expect(terminated).toBeGreaterThan(0);
    expect(fleet.errors.get('CONNECTION_LOST') ?? 0).toBeGreaterThan(0);
  } finally {
    await fleet.close();
  }
});

test('b. the PostgreSQL server restarted under the fleet (same port and data): recovers by itself, exact totals', async () => {
  // A server of this test's own: restarting the run's shared one would break other suites.
  const parent = mkdtempSync(join(tmpdir(), 'usagekit-faults-'));
  // As root the server runs as `postgres`, which must be able to enter the parent directory.
  chmodSync(parent, 0o755);
  const dataDir = join(parent, 'data');
  const port = await findFreePort();
  let server: PostgresServer | undefined;
  let fleet: FaultFleet | undefined;
  const restarts = 2 * MULTIPLIER;
  let downMs = 0;
  try {
    server = await startEmbeddedPostgres({ port, dataDir });
    const name = 'usagekit_faults';
    await withAdminClient(server.url, (admin) =>
      admin.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
    );
    const databaseUrl = withDatabase(server.url, name);
    await migrate({ databaseUrl });
    fleet = await FaultFleet.start(fleetOptions(databaseUrl));
    for (let round = 0; round < restarts; round++) {
      await sleep(300);
      const stoppedAt = Date.now();
      await server.stop();
      // Down long enough for flushes, collections and deliveries to fail against it.
      await sleep(150);
      server = await startEmbeddedPostgres({ port, dataDir });
      downMs += Date.now() - stoppedAt;
    }
    await fleet.recovered(Date.now());
    const account = await fleet.finish();
    expectExactAccount(
      'restart',
      restarts,
      `faults=${restarts} restarts (down ${downMs} ms in total)`,
      fleet,
      account,
    );
    expect(fleet.errors.get('CONNECTION_LOST') ?? 0).toBeGreaterThan(0);
  } finally {
    await fleet?.close();
    await server?.stop();
    rmSync(parent, { recursive: true, force: true });
  }
});

test('c. lock timeouts and statement timeouts: nothing lost, nothing counted twice', async () => {
  const { databaseUrl, name } = db.database();
  const fleet = await FaultFleet.start(fleetOptions(databaseUrl));
  const rounds = 8 * MULTIPLIER;
  let locksHeld = 0;
  let lastFaultAt = 0;
  try {
    await sleep(150);
    await withAdminClient(databaseUrl, async (holder) => {
      // The holder itself must never time out, whatever the database's default says.
      await holder.query(`SET statement_timeout = 0`);
      const holdLock = async (): Promise<void> => {
        await holder.query('BEGIN');
        await holder.query(`SELECT pg_advisory_xact_lock(${LockIds.boundaryUsageStats}::bigint)`);
        // Several times every lock_timeout: flushes and cutovers waiting for it fail.
        await sleep(4 * LOCK_TIMEOUT_MS + randomInt(100));
        await holder.query('COMMIT');
        locksHeld++;
        await sleep(30 + randomInt(40));
      };
      for (let round = 0; round < rounds; round++) await holdLock();
      // Statement timeouts: below lock_timeout, so a wait for the held lock ends in 57014.
      // Sessions read the database default when they start: end the pools' sessions.
      await holder.query(`ALTER DATABASE ${quoteIdentifier(name)} SET statement_timeout = '20ms'`);
      await terminateOthers(holder);
      for (let round = 0; round < rounds; round++) await holdLock();
      await holder.query(`ALTER DATABASE ${quoteIdentifier(name)} RESET statement_timeout`);
      await terminateOthers(holder);
      lastFaultAt = Date.now();
    });
    await fleet.recovered(lastFaultAt);
    const account = await fleet.finish();
    expectExactAccount(
      'timeouts',
      rounds,
      `faults=${locksHeld} exclusive lock holds (${rounds} with statement_timeout=20ms)`,
      fleet,
      account,
    );
    expect(fleet.errors.get('LOCK_TIMEOUT') ?? 0).toBeGreaterThan(0);
    expect(fleet.errors.get('STATEMENT_TIMEOUT') ?? 0).toBeGreaterThan(0);
  } finally {
    await fleet.close();
  }
});

async function terminateOthers(admin: { query(sql: string): Promise<unknown> }): Promise<void> {
  await admin.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
  );
}

test('d. a connection killed as the pool hands it out fails the transaction, not the process', async () => {
  const { databaseUrl } = db.database();
  const proxy = await startHandoverKiller(databaseUrl);
  const warnings: string[] = [];
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (message) => warnings.push(message),
    error: () => undefined,
  };
  // via: 'pooler' skips createPrismaClient's connection probe, which this proxy would kill
  // too: every connection below is then one the pool hands out. (Not 'direct': there the
  // pool's connect hook, the writable check, runs between ReadyForQuery and the hand-out, so
  // the FATAL reaches the pool's idle listener instead; the window is the pooler path's.)
  const prisma = createPrismaClient({
    databaseUrl: proxy.databaseUrl,
    maxConnections: 1,
    logger,
    via: 'pooler',
  });
  const store = new BoundaryUsageStore(prisma, STORE_OPTIONS);
  const rounds = 5 * MULTIPLIER;
  const codes: string[] = [];
  try {
    // Interactive transactions take their connection with `await pool.connect()`: the window.
    for (let round = 0; round < rounds; round++) {
      codes.push(
        await store.getAndResetSummary({ maxStalenessMs: FREQUENCY_MS }).then(
          () => 'OK',
          (error: unknown) => codeOf(error),
        ),
      );
    }
  } finally {
    await prisma.$disconnect().catch(() => undefined);
    await proxy.close();
  }
  console.log(
    `[faults handover] rounds=${rounds} faults=${proxy.killed()} connections killed at hand-over; ` +
      `outcomes=${[...new Set(codes)].join(',')} process alive`,
  );
  expect(proxy.killed()).toBe(rounds);
  // Every attempt failed as a lost connection (retryable), and the stray error was logged.
  expect(codes).toEqual(Array.from({ length: rounds }, () => 'CONNECTION_LOST'));
  expect(warnings).toContain('usagekit: database connection failed while being handed out');
});

/**
 * A loopback proxy that lets each new connection start up, then sends its first
 * ReadyForQuery and a FATAL 57P01 (what pg_terminate_backend sends) in ONE write, and closes:
 * the client reads both in the same 'data' event, so the error is emitted while pg-pool hands
 * the connection out and before its taker can listen for errors.
 */
async function startHandoverKiller(
  databaseUrl: string,
): Promise<{ databaseUrl: string; killed: () => number; close: () => Promise<void> }> {
  const target = new URL(databaseUrl);
  const sockets = new Set<Socket>();
  let killed = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    let pending = Buffer.alloc(0);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    upstream.on('data', (chunk: Buffer) => {
      // Backend messages: type byte, int32 length (which counts itself), body.
      pending = Buffer.concat([pending, chunk]);
      let offset = 0;
      while (offset + 5 <= pending.length) {
        const end = offset + 1 + pending.readInt32BE(offset + 1);
        if (end > pending.length) break;
        if (pending[offset] === 0x5a /* ReadyForQuery */) {
          killed++;
          client.end(Buffer.concat([pending.subarray(0, end), terminatingError()]));
          upstream.destroy();
          return;
        }
        offset = end;
      }
      // Authentication and parameter messages before it go through as they come.
      client.write(pending.subarray(0, offset));
      pending = pending.subarray(offset);
    });
  });
  const port = await findFreePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const proxied = new URL(databaseUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(port);
  return {
    databaseUrl: proxied.toString(),
    killed: () => killed,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** ErrorResponse: FATAL 57P01, as a backend ended by pg_terminate_backend sends it. */
function terminatingError(): Buffer {
  const fields = Buffer.concat([
    ...[
      ['S', 'FATAL'],
      ['V', 'FATAL'],
      ['C', '57P01'],
      ['M', 'terminating connection due to administrator command'],
    ].map(([code, text]) => Buffer.from(`${code}${text}\0`, 'utf8')),
    Buffer.from([0]),
  ]);
  const header = Buffer.alloc(5);
  header.write('E', 0, 'ascii');
  header.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([header, fields]);
}
