import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import { findFreePort } from '@usagekit/testing';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  InvalidInputError,
  type UpsertStatsParams,
  type UpsertStatsResult,
} from '../src/index.js';
import { clearTables, holdCutoverLock, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const HOUR_MS = 3_600_000;

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

const summarize = () => store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
const counts = async () => {
  const s = await summarize();
  return [
    s.uniqueWorkspacesReplicaSum,
    s.uniqueUsersReplicaSum,
    s.allowedRequests,
    s.deniedRequests,
  ];
};

/** A real store that runs a hook just before each upsert reaches the database. */
class HookedStore extends BoundaryUsageStore {
  constructor(
    client: PrismaClient,
    private readonly hook: () => void | Promise<void>,
  ) {
    super(client);
  }
  override async upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
    await this.hook();
    return super.upsertStats(params);
  }
}

/** A store whose database is not there: every call fails with a lost connection. */
async function unreachableStore(): Promise<BoundaryUsageStore> {
  const port = await findFreePort();
  return new BoundaryUsageStore(
    createPrismaClient({ databaseUrl: `postgresql://nobody@127.0.0.1:${port}/none` }),
  );
}

describe('coder tracker cases', () => {
  // coder TrackAndFlush {2, 2, 8, 3}
  test('two distinct pairs', async () => {
    const tracker = new BoundaryUsageTracker();
    tracker.track(uuid(), uuid(), 5, 2);
    tracker.track(uuid(), uuid(), 3, 1);
    await tracker.flush(store, uuid());
    expect(await counts()).toEqual([2n, 2n, 8n, 3n]);
  });

  // coder DeduplicatesSameWorkspaceAndUser {1, 1, 8, 3}
  test('the same pair twice counts once', async () => {
    const tracker = new BoundaryUsageTracker();
    const [ws, user] = [uuid(), uuid()];
    tracker.track(ws, user, 5, 2);
    tracker.track(ws, user, 3, 1);
    await tracker.flush(store, uuid());
    expect(await counts()).toEqual([1n, 1n, 8n, 3n]);
  });

  // coder Track_MultipleWorkspacesUsers {3, 2, 6, 3}; workspaces and users are separate sets.
  test('three workspaces, two users', async () => {
    const tracker = new BoundaryUsageTracker();
    const [u1, u2] = [uuid(), uuid()];
    tracker.track(uuid(), u1, 2, 1);
    tracker.track(uuid(), u1, 2, 1);
    tracker.track(uuid(), u2, 2, 1);
    await tracker.flush(store, uuid());
    expect(await counts()).toEqual([3n, 2n, 6n, 3n]);
  });

  // coder FlushToDB_Accumulates after #21805: 5+2+3 allowed, 3+1+2 denied (v1 expected 5/3: the bug).
  test('request counts add up across flushes: 10 and 6', async () => {
    const tracker = new BoundaryUsageTracker();
    const [ws, user, replica] = [uuid(), uuid(), uuid()];
    for (const [allowed, denied] of [
      [5, 3],
      [2, 1],
      [3, 2],
    ] as const) {
      tracker.track(ws, user, allowed, denied);
      await tracker.flush(store, replica);
    }
    expect(await counts()).toEqual([1n, 1n, 10n, 6n]);
  });

  // coder Track_Concurrent {100, 100, 1000, 1000}
  test('100 concurrent trackers of 10 calls each', async () => {
    const tracker = new BoundaryUsageTracker();
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        const [ws, user] = [uuid(), uuid()];
        for (let i = 0; i < 10; i++) {
          await Promise.resolve();
          tracker.track(ws, user, 1, 1);
        }
      }),
    );
    await tracker.flush(store, uuid());
    expect(await counts()).toEqual([100n, 100n, 1000n, 1000n]);
  });

  // coder FlushToDB_NewPeriod: only the new data {1, 1, 3, 1}
  test('after a cutover only new data is flushed', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    tracker.track(uuid(), uuid(), 5, 2);
    await tracker.flush(store, replica);
    await summarize();
    tracker.track(uuid(), uuid(), 3, 1);
    const result = await tracker.flush(store, replica);
    expect(result.newPeriod).toBe(true);
    expect(await counts()).toEqual([1n, 1n, 3n, 1n]);
  });

  // coder FlushToDB_NoActivity / NoStaleDataAfterReset: no activity, no database call.
  test('no activity since the last flush: no database call, nothing resurrected', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    tracker.track(uuid(), uuid(), 1, 1);
    await tracker.flush(store, replica);
    await summarize();
    // The store below cannot reach any database: a database call would reject.
    const result = await tracker.flush(await unreachableStore(), replica);
    expect(result).toMatchObject({ flushed: false, batches: 0 });
    expect(await counts()).toEqual([0n, 0n, 0n, 0n]);
  });

  // coder TrackDuringFlush: 10 allowed first, then 10 + 20.
  test('usage tracked during a flush goes to the next flush', async () => {
    const tracker = new BoundaryUsageTracker();
    const [ws, user, replica] = [uuid(), uuid(), uuid()];
    let calls = 0;
    const hooked = new HookedStore(prisma, () => {
      if (calls++ === 0) tracker.track(ws, user, 20, 10);
    });
    tracker.track(ws, user, 10, 5);
    await tracker.flush(hooked, replica);
    const first = await prisma.$queryRaw<
      { allowed_requests: bigint; denied_requests: bigint }[]
    >`SELECT allowed_requests, denied_requests FROM usagekit.boundary_usage_stats`;
    expect([first[0]!.allowed_requests, first[0]!.denied_requests]).toEqual([10n, 5n]);
    await tracker.flush(hooked, replica);
    expect(await counts()).toEqual([1n, 1n, 30n, 15n]);
  });
});

describe('beyond coder', () => {
  test('uniques are cumulative over the period: A then B in two flushes gives 2 (coder v4 gives 1)', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    tracker.track(uuid(), uuid(), 1, 0);
    await tracker.flush(store, replica);
    tracker.track(uuid(), uuid(), 1, 0);
    await tracker.flush(store, replica);
    const summary = await summarize();
    expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueUsersReplicaSum]).toEqual([2n, 2n]);
    expect([summary.uniqueWorkspaces, summary.uniqueUsers]).toEqual([2n, 2n]);
  });

  test('after a new period the sets restart from what the insert carried plus what was tracked during the call', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    const [a, b, c, user] = [uuid(), uuid(), uuid(), uuid()];
    tracker.track(a, user, 1, 0);
    await tracker.flush(store, replica);
    await summarize(); // cutover: the tracker does not know yet
    tracker.track(b, user, 1, 0);
    let calls = 0;
    const hooked = new HookedStore(prisma, () => {
      if (calls++ === 0) tracker.track(c, user, 1, 0);
    });
    expect((await tracker.flush(hooked, replica)).newPeriod).toBe(true);
    await tracker.flush(store, replica); // carries c; cumulative count must be {b, c} = 2, not 3
    const summary = await summarize();
    expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueUsersReplicaSum]).toEqual([2n, 1n]);
    expect([summary.uniqueWorkspaces, summary.uniqueUsers]).toEqual([2n, 1n]);
  });

  test('an id seen in the previous period and again after an unseen cutover is counted in the new one', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    const [ws, user] = [uuid(), uuid()];
    tracker.track(ws, user, 1, 0);
    await tracker.flush(store, replica);
    await summarize();
    tracker.track(ws, user, 1, 0);
    await tracker.flush(store, replica);
    const summary = await summarize();
    expect([
      summary.uniqueWorkspaces,
      summary.uniqueUsers,
      summary.uniqueWorkspacesReplicaSum,
      summary.allowedRequests,
    ]).toEqual([1n, 1n, 1n, 1n]);
  });

  test('a failed flush keeps its counts and ids; the retry counts them once', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    const releaseLock = await holdCutoverLock(db.client(1), db.client(1));
    const impatient = new BoundaryUsageStore(db.client(1), { lockTimeoutMs: 100 });
    const [ws, user] = [uuid(), uuid()];
    tracker.track(ws, user, 7, 3);
    await expect(tracker.flush(impatient, replica)).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    tracker.track(uuid(), user, 1, 1);
    expect(tracker.pending()).toMatchObject({
      allowedRequests: 8n,
      deniedRequests: 4n,
      unconfirmedBatch: true,
    });
    await releaseLock();
    const result = await tracker.flush(store, replica);
    expect(result).toMatchObject({
      batches: 2,
      duplicates: 0,
      allowedRequests: 8n,
      deniedRequests: 4n,
    });
    expect(tracker.pending()).toMatchObject({
      allowedRequests: 0n,
      deniedRequests: 0n,
      unconfirmedBatch: false,
    });
    expect(tracker.confirmed()).toEqual({
      allowedRequests: 8n,
      deniedRequests: 4n,
      batches: 2,
      duplicates: 0,
    });
    const summary = await summarize();
    expect([
      summary.uniqueWorkspaces,
      summary.uniqueUsers,
      summary.allowedRequests,
      summary.deniedRequests,
    ]).toEqual([2n, 1n, 8n, 4n]);
    expect([summary.uniqueWorkspacesReplicaSum, summary.uniqueUsersReplicaSum]).toEqual([2n, 1n]);
  });

  test('a database that is down gives a typed error and loses nothing', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    tracker.track(uuid(), uuid(), 4, 1);
    await expect(tracker.flush(await unreachableStore(), replica)).rejects.toMatchObject({
      code: 'CONNECTION_LOST',
      retryable: true,
    });
    await tracker.flush(store, replica);
    expect(await counts()).toEqual([1n, 1n, 4n, 1n]);
  });

  test('concurrent flush() calls never overlap', async () => {
    const tracker = new BoundaryUsageTracker();
    const replica = uuid();
    let inFlight = 0;
    let maxInFlight = 0;
    class Counting extends BoundaryUsageStore {
      override async upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        try {
          return await super.upsertStats(params);
        } finally {
          inFlight--;
        }
      }
    }
    const counting = new Counting(prisma);
    const flushes: Promise<unknown>[] = [];
    for (let i = 0; i < 10; i++) {
      tracker.track(uuid(), uuid(), 1, 0);
      flushes.push(tracker.flush(counting, replica));
    }
    await Promise.all(flushes);
    expect(maxInFlight).toBe(1);
    expect((await summarize()).allowedRequests).toBe(10n);
  });

  test.each([
    ['workspaceId', () => ['nope', uuid(), 1, 0]],
    ['ownerId', () => [uuid(), "x' OR 1=1 --", 1, 0]],
    ['allowed', () => [uuid(), uuid(), -1, 0]],
    ['allowed', () => [uuid(), uuid(), 0.5, 0]],
    ['denied', () => [uuid(), uuid(), 0, Number.MAX_SAFE_INTEGER + 2]],
    ['denied', () => [uuid(), uuid(), 0, Number.NaN]],
  ] as const)('bad %s is rejected and counts nothing', async (field, args) => {
    const tracker = new BoundaryUsageTracker();
    const [ws, owner, allowed, denied] = args();
    expect(() =>
      tracker.track(ws as string, owner as string, allowed as number, denied as number),
    ).toThrow(InvalidInputError);
    try {
      tracker.track(ws as string, owner as string, allowed as number, denied as number);
    } catch (error) {
      expect(error).toMatchObject({ code: 'INVALID_INPUT', field });
    }
    expect(tracker.pending()).toMatchObject({ allowedRequests: 0n, deniedRequests: 0n });
    const result = await tracker.flush(store, uuid());
    expect(result.flushed).toBe(false);
  });

  test('request counts past 2^53 stay exact', async () => {
    const tracker = new BoundaryUsageTracker();
    const [ws, user] = [uuid(), uuid()];
    tracker.track(ws, user, Number.MAX_SAFE_INTEGER, 0);
    tracker.track(ws, user, Number.MAX_SAFE_INTEGER, 1);
    tracker.track(ws, user, 3, 0);
    expect(tracker.pending().allowedRequests).toBe(2n * BigInt(Number.MAX_SAFE_INTEGER) + 3n);
    await tracker.flush(store, uuid());
    expect((await summarize()).allowedRequests).toBe(2n * BigInt(Number.MAX_SAFE_INTEGER) + 3n);
  });
});

test('one id in upper and lower case is one id, per replica and across replicas', async () => {
  const tracker = new BoundaryUsageTracker();
  const ws = uuid();
  const user = uuid();
  tracker.track(ws.toUpperCase(), user, 1, 0);
  await tracker.flush(store, uuid());
  tracker.track(ws, user.toUpperCase(), 1, 0);
  tracker.track(ws.toUpperCase(), user.toUpperCase(), 1, 0);
  const replica = uuid();
  await tracker.flush(store, replica);
  const summary = await summarize();
  expect([summary.uniqueWorkspaces, summary.uniqueUsers]).toEqual([1n, 1n]);
  // Two replica rows (the first flush used another replica id), each with one workspace.
  expect([
    summary.uniqueWorkspacesReplicaSum,
    summary.uniqueUsersReplicaSum,
    summary.allowedRequests,
  ]).toEqual([2n, 2n, 3n]);
});

test('confirmed() counts a resent batch that succeeded even when the newer batch then fails', async () => {
  const tracker = new BoundaryUsageTracker();
  const replica = uuid();
  let calls = 0;
  // Upserts 1 and 3 go to a database that is not there; upsert 2 (the resend) to the real one.
  const down = await unreachableStore();
  class Flaky extends BoundaryUsageStore {
    override async upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
      calls++;
      return calls === 2 ? super.upsertStats(params) : down.upsertStats(params);
    }
  }
  const flaky = new Flaky(prisma);
  tracker.track(uuid(), uuid(), 5, 0);
  await expect(tracker.flush(flaky, replica)).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  tracker.track(uuid(), uuid(), 7, 0);
  await expect(tracker.flush(flaky, replica)).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  expect(tracker.confirmed()).toMatchObject({ allowedRequests: 5n, batches: 1 });
  expect(tracker.pending()).toMatchObject({ allowedRequests: 7n, unconfirmedBatch: true });
  expect((await summarize()).allowedRequests).toBe(5n);
});

test('every tracker is its own writer, and rejects bad options with a typed error', () => {
  const [first, second] = [new BoundaryUsageTracker(), new BoundaryUsageTracker()];
  expect(first.writerId).toMatch(/^[0-9a-f-]{36}$/);
  expect(second.writerId).not.toBe(first.writerId);
  expect(() => new BoundaryUsageTracker({ firstSequence: 0n })).toThrow(/firstSequence/);
  expect(() => new BoundaryUsageTracker({ firstSequence: 5 as unknown as bigint })).toThrow(
    InvalidInputError,
  );
  expect(() => new BoundaryUsageTracker({ flushDeadlineMs: 0 })).toThrow(/flushDeadlineMs/);
  expect(() => new BoundaryUsageTracker({ flushDeadlineMs: 1.5 })).toThrow(InvalidInputError);
});
