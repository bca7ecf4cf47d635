/**
 * The fleet the fault suites run their faults under (faults.test.ts against a local server,
 * container-faults.test.ts against a container): several replicas, each with its own pool,
 * tracker and flush loop, tracking traffic continuously; a reporter on a fake clock, driven by
 * the test, cutting a period every few dozen ms and delivering to a real HTTP receiver that
 * keeps every request (it dedupes by Idempotency-Key when accounted).
 *
 * After a fault nobody helps: recovered(since) waits until every loop flushed and the reporter
 * collected, each starting after `since`, on their own. finish() then stops gracefully (final
 * flushes, one last period, delivery until the outbox is empty) and returns the account: every
 * request tracked against every report the receiver accepted. The suites decide what to assert
 * and print; the harness asserts nothing.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  startFlushLoop,
  type FlushLoop,
  type StoreOptions,
} from '@usagekit/boundary-usage';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import {
  HttpSink,
  parseJsonInteger,
  TelemetryReporter,
  type SnapshotJson,
} from '../../src/index.js';
import {
  ageOutbox,
  clearTables,
  FakeClock,
  FREQUENCY_MS,
  type Receiver,
  startReceiver,
  TEST_RETENTION_MS,
  uuid,
  waitUntil,
} from '../helpers.js';

export const randomInt = (max: number): number => Math.floor(Math.random() * (max + 1));
const pick = <T>(items: readonly T[]): T => items[randomInt(items.length - 1)]!;
/** The stable code of a typed error ('UNKNOWN' for anything else). */
export const codeOf = (error: unknown): string =>
  String((error as { code?: unknown } | undefined)?.code ?? 'UNKNOWN');

/**
 * What differs between the suites: how hard the traffic runs, how often the reporter cuts, and
 * how short the timeouts are (a fault must cost milliseconds, a frozen container seconds).
 */
export interface FaultFleetOptions {
  databaseUrl: string;
  deploymentId: string;
  /** The fake clock's start (the reporter's periods are cut on it). */
  startsAt: string;
  /** Every store's options, the reporter's included: lock_timeout and transaction timeouts. */
  store: StoreOptions;
  replicas: number;
  traffic: {
    /** Distinct workspace and user ids the traffic picks from. */
    workspaces: number;
    users: number;
    /** Every everyMs, requestsPerTick track() calls on random replicas, ids and counts. */
    everyMs: number;
    requestsPerTick: number;
    /** Per call: 0..maxAllowed allowed and 0..maxDenied denied, one more denied if none allowed. */
    maxAllowed: number;
    maxDenied: number;
  };
  flushLoop: {
    intervalMs: number;
    retryBackoff: { baseDelayMs: number; maxDelayMs: number };
    finalFlushTimeoutMs: number;
  };
  /** The driven reporter's pause between one cut-and-deliver and the next. */
  sleepBetweenCutsMs: number;
  /** recovered()'s deadline. */
  recoveryTimeoutMs: number;
}

interface Replica {
  prisma: PrismaClient;
  tracker: BoundaryUsageTracker;
  loop: FlushLoop;
  allowed: bigint;
  denied: bigint;
  /** When the latest flush that wrote something started (Date.now()). */
  lastFlushStartedAt: number;
}

export interface FleetAccount {
  tracked: { allowed: bigint; denied: bigint };
  reported: { allowed: bigint; denied: bigint };
  /** Still in a tracker after the final flushes (must be 0). */
  pending: bigint;
  /** Per decision: tracked but in no report, and reported beyond what was tracked. */
  lost: bigint;
  countedTwice: bigint;
  /** The last period, cut after the final flushes, was claimed (it carries a summary). */
  finalCutClaimed: boolean;
  /** Distinct report ids (Idempotency-Keys) the receiver accepted. */
  reports: number;
  /** Accepted POSTs that repeated a key already accepted (the receiver dropped them). */
  redelivered: number;
  /** Repeated keys whose body differed from the first (must be 0). */
  conflicting: number;
  /** Accepted reports without a boundary usage summary (must be none). */
  withoutSummary: string[];
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
  /** Periods the reporter cut (the final one included). */
  cuts: number;
}

/** The replicas, the reporter, the receiver and the traffic, all running until finish(). */
export class FaultFleet {
  /** Errors seen by the loops (every failed attempt) and the reporter, by code. */
  readonly errors = new Map<string, number>();
  /** Flushes that wrote something, for "nothing answers while frozen". */
  flushesDone = 0;
  private readonly workspaces: string[];
  private readonly users: string[];
  private readonly replicas: Replica[] = [];
  private readonly workspacesSeen = new Set<string>();
  private readonly usersSeen = new Set<string>();
  private readonly traffic: NodeJS.Timeout;
  private readonly driving: Promise<void>;
  private running = true;
  private cuts = 0;
  private lastCollectStartedAt = 0;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly options: FaultFleetOptions,
    private readonly receiver: Receiver,
    private readonly clock: FakeClock,
    private readonly reporterClient: PrismaClient,
    private readonly reporter: TelemetryReporter,
  ) {
    this.workspaces = Array.from({ length: options.traffic.workspaces }, () => uuid());
    this.users = Array.from({ length: options.traffic.users }, () => uuid());
    for (let index = 0; index < options.replicas; index++) this.replicas.push(this.startReplica());
    this.traffic = setInterval(() => this.trackSome(), options.traffic.everyMs);
    this.driving = this.drive();
  }

  static async start(options: FaultFleetOptions): Promise<FaultFleet> {
    const { databaseUrl } = options;
    const receiver = await startReceiver();
    const clock = new FakeClock(options.startsAt);
    const prisma = createPrismaClient({ databaseUrl, maxConnections: 2 });
    try {
      // Scenarios share a database: each starts from empty tables and elections.
      await clearTables(prisma);
    } catch (error) {
      await prisma.$disconnect();
      await receiver.close();
      throw error;
    }
    const reporter = new TelemetryReporter({
      prisma,
      store: new BoundaryUsageStore(prisma, options.store),
      deploymentId: options.deploymentId,
      sink: new HttpSink({ url: receiver.url, timeoutMs: 5_000 }),
      clock,
      // The fake clock reads a fixed date, months behind the database's: see TEST_RETENTION_MS.
      reportRetentionMs: TEST_RETENTION_MS,
      collectAttempts: 3,
    });
    return new FaultFleet(options, receiver, clock, prisma, reporter);
  }

  private startReplica(): Replica {
    const prisma = createPrismaClient({
      databaseUrl: this.options.databaseUrl,
      maxConnections: 2,
    });
    const tracker = new BoundaryUsageTracker();
    const replica: Omit<Replica, 'loop'> & Partial<Pick<Replica, 'loop'>> = {
      prisma,
      tracker,
      allowed: 0n,
      denied: 0n,
      lastFlushStartedAt: 0,
    };
    replica.loop = startFlushLoop({
      tracker,
      store: new BoundaryUsageStore(prisma, this.options.store),
      replicaId: uuid(),
      intervalMs: this.options.flushLoop.intervalMs,
      maxAttempts: 3,
      retryBackoff: this.options.flushLoop.retryBackoff,
      finalFlushTimeoutMs: this.options.flushLoop.finalFlushTimeoutMs,
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

  /** `CODE:count,…` sorted by code, for the suites' one line. */
  describeErrors(): string {
    return [...this.errors]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([code, count]) => `${code}:${count}`)
      .join(',');
  }

  /** A few requests on random replicas, random workspaces and users; never zero requests. */
  private trackSome(): void {
    const { requestsPerTick, maxAllowed, maxDenied } = this.options.traffic;
    for (let i = 0; i < requestsPerTick; i++) {
      const replica = pick(this.replicas);
      const workspace = pick(this.workspaces);
      const user = pick(this.users);
      const allowed = randomInt(maxAllowed);
      const denied = randomInt(maxDenied) + (allowed === 0 ? 1 : 0);
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
      await sleep(this.options.sleepBetweenCutsMs);
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

  /** Until every loop flushed and the reporter collected, each starting after `since`. */
  async recovered(since: number): Promise<void> {
    await waitUntil(
      () =>
        this.replicas.every((replica) => replica.lastFlushStartedAt > since) &&
        this.lastCollectStartedAt > since,
      'every loop flushed and the reporter collected after the last fault',
      this.options.recoveryTimeoutMs,
    );
  }

  /** Stops gracefully, then accounts for every request tracked. */
  async finish(): Promise<FleetAccount> {
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
    // Deliver until the outbox is empty; the outbox ages past any lease or backoff (both are
    // on the database's clock, which the fake clock does not move).
    for (let pass = 0; pass < 50 && (await this.undelivered()) > 0n; pass++) {
      await ageOutbox(this.reporterClient, FREQUENCY_MS);
      await this.reporter.deliverPending();
    }
    return this.account(pending, last.boundaryUsageSummary !== undefined);
  }

  private async undelivered(): Promise<bigint> {
    const [row] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM usagekit.telemetry_reports WHERE delivered_at IS NULL`;
    return row!.n;
  }

  private async account(pending: bigint, finalCutClaimed: boolean): Promise<FleetAccount> {
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
    const withoutSummary: string[] = [];
    const inconsistentUniques: string[] = [];
    let uniqueWorkspacesSum = 0n;
    let uniqueUsersSum = 0n;
    let staleRequests = 0n;
    for (const [key, body] of byKey) {
      const summary = (JSON.parse(body) as SnapshotJson).boundary_usage_summary;
      if (!summary) {
        withoutSummary.push(`${key}: ${body}`);
        continue;
      }
      const allowed = parseJsonInteger(summary.allowed_requests);
      const denied = parseJsonInteger(summary.denied_requests);
      reported.allowed += allowed;
      reported.denied += denied;
      uniqueWorkspacesSum += parseJsonInteger(summary.unique_workspaces);
      uniqueUsersSum += parseJsonInteger(summary.unique_users);
      staleRequests +=
        parseJsonInteger(summary.stale_allowed_requests) +
        parseJsonInteger(summary.stale_denied_requests);
      if (!this.uniquesFit(summary, allowed + denied)) {
        inconsistentUniques.push(`${key}: ${JSON.stringify(summary)}`);
      }
    }
    const [left] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM usagekit.boundary_usage_stats`;
    const [outbox] = await this.reporterClient.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM usagekit.telemetry_reports`;
    const difference = (a: bigint, b: bigint): bigint => (a > b ? a - b : 0n);
    return {
      tracked,
      reported,
      pending,
      lost:
        difference(tracked.allowed, reported.allowed) + difference(tracked.denied, reported.denied),
      countedTwice:
        difference(reported.allowed, tracked.allowed) + difference(reported.denied, tracked.denied),
      finalCutClaimed,
      reports: byKey.size,
      redelivered,
      conflicting,
      withoutSummary,
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

  /**
   * A report's exact unique counts fit its requests: ids and requests of a flush land together
   * (one statement), and every request carries a workspace and a user, so a report has ids if
   * and only if it has requests; and the exact distinct count never exceeds coder's per-replica
   * sum, nor the ids the traffic uses.
   */
  private uniquesFit(
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
      workspaces <= BigInt(this.workspaces.length) &&
      users <= BigInt(this.users.length) &&
      summary.replicas >= 1 &&
      summary.replicas <= this.replicas.length
    );
  }

  /** Idempotent; safe after a failed finish() or assertion, so a suite always lets go. */
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
      await this.receiver.close();
    })());
  }
}
