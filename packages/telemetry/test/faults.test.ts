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
 * multiplies the rounds.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  startFlushLoop,
  type FlushLoop,
  type StoreOptions,
} from '@usagekit/boundary-usage';
import { createPrismaClient, LockIds, migrate, type Logger, type PrismaClient } from '@usagekit/db';
import {
  findFreePort,
  quoteIdentifier,
  startEmbeddedPostgres,
  withAdminClient,
  withDatabase,
  type PostgresServer,
} from '@usagekit/testing';
import { HttpSink, parseJsonInteger, TelemetryReporter, type SnapshotJson } from '../src/index.js';
import {
  ageOutbox,
  clearTables,
  FakeClock,
  FREQUENCY_MS,
  type Receiver,
  startReceiver,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
const MULTIPLIER = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const REPLICAS = 3;
const WORKSPACES = Array.from({ length: 40 }, () => uuid());
const USERS = Array.from({ length: 25 }, () => uuid());
const T0 = '2026-02-03T12:00:00.000Z';
/** Every store's (and so the reporter's) lock_timeout: short, so a held lock fails fast. */
const LOCK_TIMEOUT_MS = 50;
const STORE_OPTIONS: StoreOptions = {
  lockTimeoutMs: LOCK_TIMEOUT_MS,
  transactionTimeoutMs: 3_000,
  maxWaitMs: 3_000,
};

const randomInt = (max: number): number => Math.floor(Math.random() * (max + 1));
const pick = <T>(items: readonly T[]): T => items[randomInt(items.length - 1)]!;
const codeOf = (error: unknown): string =>
  String((error as { code?: unknown } | undefined)?.code ?? 'UNKNOWN');

interface Replica {
  prisma: PrismaClient;
  tracker: BoundaryUsageTracker;
  loop: FlushLoop;
  allowed: bigint;
  denied: bigint;
  /** When the latest flush that wrote something started (Date.now()). */
  lastFlushStartedAt: number;
}

interface Account {
  tracked: { allowed: bigint; denied: bigint };
  reported: { allowed: bigint; denied: bigint };
  /** Still in a tracker after the final flushes (must be 0). */
  pending: bigint;
  lost: bigint;
  countedTwice: bigint;
  reports: number;
  /** Accepted POSTs that repeated a key already accepted (the receiver dropped them). */
  redelivered: number;
  /** Repeated keys whose body differed from the first (must be 0). */
  conflicting: number;
  /** Reports whose unique counts do not fit their requests (must be none). */
  inconsistentUniques: string[];
  /** Σ over reports of the exact unique counts, and the ids tracked at all. */
  uniqueWorkspacesSum: bigint;
  uniqueUsersSum: bigint;
  workspacesTracked: number;
  usersTracked: number;
  staleRequests: bigint;
  /** Rows left in boundary_usage_stats and undelivered reports at the end (must be 0). */
  leftInTable: bigint;
  undelivered: bigint;
  outboxRows: bigint;
  cuts: number;
}

/**
 * The replicas, the reporter, the receiver and the traffic, all running until finish(). Short
 * timeouts everywhere, so that a fault costs milliseconds, not seconds.
 */
class Fleet {
  /** Errors seen by the loops (every failed attempt) and the reporter, by code. */
  readonly errors = new Map<string, number>();
  private readonly replicas: Replica[] = [];
  private readonly workspacesSeen = new Set<string>();
  private readonly usersSeen = new Set<string>();
  private readonly traffic: NodeJS.Timeout;
  private readonly driving: Promise<void>;
  private running = true;
  private cuts = 0;
  private lastCollectStartedAt = 0;

  private constructor(
    databaseUrl: string,
    private readonly receiver: Receiver,
    private readonly clock: FakeClock,
    private readonly reporterClient: PrismaClient,
    private readonly reporter: TelemetryReporter,
  ) {
    for (let index = 0; index < REPLICAS; index++)
      this.replicas.push(this.startReplica(databaseUrl));
    this.traffic = setInterval(() => this.trackSome(), 2);
    this.driving = this.drive();
  }

  static async start(databaseUrl: string): Promise<Fleet> {
    const receiver = await startReceiver();
    const clock = new FakeClock(T0);
    const prisma = createPrismaClient({ databaseUrl, maxConnections: 2 });
    try {
      // Scenarios share the suite's database: each starts from empty tables and elections.
      await clearTables(prisma);
    } catch (error) {
      await prisma.$disconnect();
      await receiver.close();
      throw error;
    }
    const reporter = new TelemetryReporter({
      prisma,
      store: new BoundaryUsageStore(prisma, STORE_OPTIONS),
      deploymentId: 'faults',
      sink: new HttpSink({ url: receiver.url, timeoutMs: 5_000 }),
      clock,
      reportRetentionMs: TEST_RETENTION_MS,
      collectAttempts: 3,
    });
    return new Fleet(databaseUrl, receiver, clock, prisma, reporter);
  }

  private startReplica(databaseUrl: string): Replica {
    const prisma = createPrismaClient({ databaseUrl, maxConnections: 2 });
    const tracker = new BoundaryUsageTracker();
    const replica: Partial<Replica> & Pick<Replica, 'lastFlushStartedAt'> = {
      prisma,
      tracker,
      allowed: 0n,
      denied: 0n,
      lastFlushStartedAt: 0,
    };
    replica.loop = startFlushLoop({
      tracker,
      store: new BoundaryUsageStore(prisma, STORE_OPTIONS),
      replicaId: uuid(),
      intervalMs: 15,
      maxAttempts: 3,
      retryBackoff: { baseDelayMs: 5, maxDelayMs: 50 },
      finalFlushTimeoutMs: 15_000,
      observer: {
        onFlush: (result, durationMs) => {
          if (result.flushed) replica.lastFlushStartedAt = Date.now() - durationMs;
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

  /** A few requests on random replicas, random workspaces and users; never zero requests. */
  private trackSome(): void {
    for (let i = 0; i < 6; i++) {
      const replica = pick(this.replicas);
      const workspace = pick(WORKSPACES);
      const user = pick(USERS);
      const allowed = randomInt(5);
      const denied = allowed === 0 ? 1 + randomInt(2) : randomInt(2);
      replica.tracker.track(workspace, user, allowed, denied);
      replica.allowed += BigInt(allowed);
      replica.denied += BigInt(denied);
      this.workspacesSeen.add(workspace);
      this.usersSeen.add(user);
    }
  }

  /** The reporter, driven by the test: cut a period, deliver; again, until finish(). */
  private async drive(): Promise<void> {
    while (this.running) {
      await sleep(25);
      this.clock.advance(FREQUENCY_MS);
      this.cuts++;
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

  /**
   * Waits until every loop flushed and the reporter collected, each starting after
   * `lastFaultAt`, on their own; then stops gracefully and accounts for every request.
   */
  async finish(lastFaultAt: number): Promise<Account> {
    await waitUntil(
      () =>
        this.replicas.every((replica) => replica.lastFlushStartedAt > lastFaultAt) &&
        this.lastCollectStartedAt > lastFaultAt,
      'every loop flushed and the reporter collected after the last fault',
      30_000,
    );
    clearInterval(this.traffic);
    this.running = false;
    await this.driving;
    // stop() flushes once more: after it, nothing tracked may be left in memory.
    await Promise.all(this.replicas.map((replica) => replica.loop.stop()));
    const pending = this.replicas.reduce((total, replica) => {
      const { allowedRequests, deniedRequests } = replica.tracker.pending();
      return total + allowedRequests + deniedRequests;
    }, 0n);
    this.clock.advance(FREQUENCY_MS);
    this.cuts++;
    const last = await this.reporter.collectSnapshot();
    expect(last.boundaryUsageSummary).toBeDefined();
    // Deliver until the outbox is empty; the outbox ages past any lease or backoff (both are
    // on the database's clock).
    for (let pass = 0; pass < 50 && (await this.undelivered()) > 0n; pass++) {
      await ageOutbox(this.reporterClient, FREQUENCY_MS);
      await this.reporter.deliverPending();
    }
    return this.account(pending);
  }

  private async undelivered(): Promise<bigint> {
    const [row] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM telemetry_reports WHERE delivered_at IS NULL`;
    return row!.n;
  }

  private async account(pending: bigint): Promise<Account> {
    // The receiver's view: the first accepted body per Idempotency-Key.
    const byKey = new Map<string, string>();
    let redelivered = 0;
    let conflicting = 0;
    for (const request of this.receiver.accepted()) {
      const key = String(request.headers['idempotency-key']);
      const first = byKey.get(key);
      if (first === undefined) byKey.set(key, request.body);
      else {
        redelivered++;
        if (first !== request.body) conflicting++;
      }
    }
    const tracked = { allowed: 0n, denied: 0n };
    for (const replica of this.replicas) {
      tracked.allowed += replica.allowed;
      tracked.denied += replica.denied;
    }
    const reported = { allowed: 0n, denied: 0n };
    const inconsistentUniques: string[] = [];
    let uniqueWorkspacesSum = 0n;
    let uniqueUsersSum = 0n;
    let staleRequests = 0n;
    for (const [key, body] of byKey) {
      const summary = (JSON.parse(body) as SnapshotJson).boundary_usage_summary!;
      const allowed = parseJsonInteger(summary.allowed_requests);
      const denied = parseJsonInteger(summary.denied_requests);
      const workspaces = parseJsonInteger(summary.unique_workspaces);
      const users = parseJsonInteger(summary.unique_users);
      reported.allowed += allowed;
      reported.denied += denied;
      uniqueWorkspacesSum += workspaces;
      uniqueUsersSum += users;
      staleRequests +=
        parseJsonInteger(summary.stale_allowed_requests) +
        parseJsonInteger(summary.stale_denied_requests);
      if (!uniquesFit(summary, allowed + denied)) {
        inconsistentUniques.push(`${key}: ${JSON.stringify(summary)}`);
      }
    }
    const [left] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM boundary_usage_stats`;
    const [outbox] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM telemetry_reports`;
    const difference = (a: bigint, b: bigint): bigint => (a > b ? a - b : 0n);
    return {
      tracked,
      reported,
      pending,
      lost:
        difference(tracked.allowed, reported.allowed) + difference(tracked.denied, reported.denied),
      countedTwice:
        difference(reported.allowed, tracked.allowed) + difference(reported.denied, tracked.denied),
      reports: byKey.size,
      redelivered,
      conflicting,
      inconsistentUniques,
      uniqueWorkspacesSum,
      uniqueUsersSum,
      workspacesTracked: this.workspacesSeen.size,
      usersTracked: this.usersSeen.size,
      staleRequests,
      leftInTable: left!.n,
      undelivered: await this.undelivered(),
      outboxRows: outbox!.n,
      cuts: this.cuts,
    };
  }

  /** Idempotent; safe after a failed finish(). */
  async close(): Promise<void> {
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
    await this.receiver.close();
  }
}

/**
 * A report's exact unique counts fit its requests: ids and requests of a flush land together
 * (one statement), and every request carries a workspace and a user, so a report has ids if
 * and only if it has requests; and the exact distinct count never exceeds coder's per-replica
 * sum, nor the ids the traffic uses.
 */
function uniquesFit(
  summary: NonNullable<SnapshotJson['boundary_usage_summary']>,
  requests: bigint,
): boolean {
  const workspaces = parseJsonInteger(summary.unique_workspaces);
  const users = parseJsonInteger(summary.unique_users);
  const workspacesReplicaSum = parseJsonInteger(summary.unique_workspaces_replica_sum);
  const usersReplicaSum = parseJsonInteger(summary.unique_users_replica_sum);
  if (requests === 0n) {
    return workspaces === 0n && users === 0n && summary.replicas === 0;
  }
  return (
    workspaces >= 1n &&
    users >= 1n &&
    workspaces <= workspacesReplicaSum &&
    users <= usersReplicaSum &&
    workspaces <= BigInt(WORKSPACES.length) &&
    users <= BigInt(USERS.length) &&
    summary.replicas >= 1 &&
    summary.replicas <= REPLICAS
  );
}

function formatErrors(errors: Map<string, number>): string {
  return [...errors]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, count]) => `${code}:${count}`)
    .join(',');
}

/** The scenario's one line, then the assertions every scenario shares. */
function expectExactAccount(
  scenario: string,
  rounds: number,
  faults: string,
  fleet: Fleet,
  account: Account,
): void {
  console.log(
    `[faults ${scenario}] rounds=${rounds} ${faults} periods=${account.cuts} reports=${account.reports} ` +
      `redelivered=${account.redelivered} tracked=${account.tracked.allowed}/${account.tracked.denied} ` +
      `reported=${account.reported.allowed}/${account.reported.denied} errors={${formatErrors(fleet.errors)}} ` +
      `lost=${account.lost} counted_twice=${account.countedTwice}`,
  );
  expect(account.tracked.allowed + account.tracked.denied).toBeGreaterThan(0n);
  expect({
    lost: account.lost,
    countedTwice: account.countedTwice,
    pending: account.pending,
    conflicting: account.conflicting,
    inconsistentUniques: account.inconsistentUniques,
    staleRequests: account.staleRequests,
    leftInTable: account.leftInTable,
    undelivered: account.undelivered,
  }).toEqual({
    lost: 0n,
    countedTwice: 0n,
    pending: 0n,
    conflicting: 0,
    inconsistentUniques: [],
    staleRequests: 0n,
    leftInTable: 0n,
    undelivered: 0n,
  });
  expect(account.reported).toEqual(account.tracked);
  // One outbox row per report the receiver has; every id tracked is in some report.
  expect(account.outboxRows).toBe(BigInt(account.reports));
  expect(account.uniqueWorkspacesSum).toBeGreaterThanOrEqual(BigInt(account.workspacesTracked));
  expect(account.uniqueUsersSum).toBeGreaterThanOrEqual(BigInt(account.usersTracked));
}

test('a. pg_terminate_backend on random backends, repeatedly: nothing lost, nothing counted twice', async () => {
  const { databaseUrl } = db.database();
  const fleet = await Fleet.start(databaseUrl);
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
    const account = await fleet.finish(Date.now());
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
  let fleet: Fleet | undefined;
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
    fleet = await Fleet.start(databaseUrl);
    for (let round = 0; round < restarts; round++) {
      await sleep(300);
      const stoppedAt = Date.now();
      await server.stop();
      // Down long enough for flushes, collections and deliveries to fail against it.
      await sleep(150);
      server = await startEmbeddedPostgres({ port, dataDir });
      downMs += Date.now() - stoppedAt;
    }
    const account = await fleet.finish(Date.now());
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
  const fleet = await Fleet.start(databaseUrl);
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
    const account = await fleet.finish(lastFaultAt);
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
  // via: 'direct' skips createPrismaClient's connection probe, which this proxy would kill
  // too: every connection below is then one the pool hands out.
  const prisma = createPrismaClient({
    databaseUrl: proxy.databaseUrl,
    maxConnections: 1,
    logger,
    via: 'direct',
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
