/**
 * Bad input, exhaustively (fast-check). Every invalid input to the store or the tracker is
 * rejected with InvalidInputError naming the field, and changes nothing: not a row, not a
 * count. Every valid random sequence of track / flush / cutover conserves what was tracked.
 *
 * Runs are bounded so the file stays well under half a minute; USAGEKIT_STRESS_ROUNDS
 * multiplies them. A failure prints fast-check's seed and the shrunk counterexample.
 */
import fc from 'fast-check';
import type { PrismaClient } from '@usagekit/db';
import {
  BoundaryUsageStore,
  BoundaryUsageTracker,
  InvalidInputError,
  type StoreOptions,
  type UpsertStatsParams,
} from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const db = useDatabase();
const ROUNDS = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));
const runs = (base: number) => ({ numRuns: base * ROUNDS });
const HOUR_MS = 3_600_000;
const INT8_MAX = 9_223_372_036_854_775_807n;
const TIMEOUT_MS = 120_000 * ROUNDS;

let prisma: PrismaClient;
let store: BoundaryUsageStore;
beforeAll(() => {
  prisma = db.client(2);
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));

// ---------------------------------------------------------------------------------------
// Arbitraries for bad values
// ---------------------------------------------------------------------------------------

const SQL_LOOKING = [
  "'; DROP TABLE usagekit.boundary_usage_stats; --",
  "00000000-0000-0000-0000-000000000000'; DROP TABLE usagekit.boundary_usage_ids; --",
  "' OR '1'='1",
  '1; TRUNCATE usagekit.boundary_usage_flush_sequences',
  "00000000-0000-0000-0000-00000000000'",
  '$1::uuid',
  '\\x00',
  'NULL',
  '',
];

/** Anything that is not a canonical 8-4-4-4-12 uuid string. */
const notUuid: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...SQL_LOOKING),
  fc.uuid().map((id) => `${id} `),
  fc.uuid().map((id) => `{${id}}`),
  fc.uuid().map((id) => id.replace(/-/g, '')),
  fc.uuid().map((id) => `${id.slice(0, 35)}g`),
  fc.uuid().map((id) => `${id}'; DROP TABLE usagekit.boundary_usage_stats; --`),
  fc
    .string({ unit: 'binary', maxLength: 60 })
    .filter((s) => !/^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(s)),
  fc.integer(),
  fc.bigInt(),
  fc.constantFrom(null, undefined, true, NaN, {}, [], () => 'x'),
  fc.uuid().map((id) => [id]),
  fc.uuid().map((id) => ({ toString: () => id })),
);

/** Not a non-negative safe integer number nor a bigint in [0, 2^63 − 1]. */
const notCount: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ max: -1 }),
  fc.bigInt({ max: -1n }),
  fc.bigInt({ min: INT8_MAX + 1n, max: INT8_MAX * 4n }),
  fc.double({ noNaN: true, min: 0.001, max: 1e6 }).filter((n) => !Number.isInteger(n)),
  fc.double({ min: -1e300, max: -1e-300 }),
  // Integers a double cannot hold exactly: counted wrong if let through.
  fc.constantFrom(2 ** 53, Number.MAX_SAFE_INTEGER + 2, 1e20, Number.MAX_VALUE),
  fc.constantFrom(NaN, Infinity, -Infinity, -0.5),
  fc.constantFrom(
    '5',
    '0',
    '1; DROP TABLE usagekit.boundary_usage_stats; --',
    '',
    null,
    undefined,
    true,
    false,
    {},
    [],
    [1],
  ),
);

/** Invalid for the optional `sequence` (undefined is valid: no sequence). */
const notSequence: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant(0n),
  fc.bigInt({ max: -1n }),
  fc.bigInt({ min: INT8_MAX + 1n, max: INT8_MAX * 2n }),
  fc.integer({ min: 1 }),
  fc.constantFrom('1', "1'; --", null, NaN, 1.5, true, {}),
);

/** Invalid id lists: not an array (null/undefined mean "none" and are valid). */
const notArray: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...SQL_LOOKING),
  fc.uuid(),
  fc.integer(),
  fc.constantFrom({}, true, 7n, new Set(['x'])),
);

const validCount: fc.Arbitrary<number | bigint> = fc.oneof(
  fc.nat({ max: 1_000 }),
  fc.bigInt({ min: 0n, max: 1_000n }),
);

const validParams: fc.Arbitrary<UpsertStatsParams> = fc.record({
  replicaId: fc.uuid(),
  uniqueWorkspacesDelta: validCount,
  uniqueUsersDelta: validCount,
  uniqueWorkspacesCount: validCount,
  uniqueUsersCount: validCount,
  allowedRequests: validCount,
  deniedRequests: validCount,
  workspaceIds: fc.array(fc.uuid(), { maxLength: 4 }),
  userIds: fc.array(fc.uuid(), { maxLength: 4 }),
  sequence: fc.option(fc.bigInt({ min: 1n, max: INT8_MAX }), { nil: undefined }),
});

const COUNT_FIELDS = [
  'uniqueWorkspacesDelta',
  'uniqueUsersDelta',
  'uniqueWorkspacesCount',
  'uniqueUsersCount',
  'allowedRequests',
  'deniedRequests',
] as const;

/** One field made invalid; `field` is what the error must name. */
type Corruption = { field: string; apply: (params: Record<string, unknown>) => unknown };

const corruption: fc.Arbitrary<Corruption> = fc.oneof(
  notUuid.map((value) => ({
    field: 'replicaId',
    apply: (p: Record<string, unknown>) => ({ ...p, replicaId: value }),
  })),
  fc.tuple(fc.constantFrom(...COUNT_FIELDS), notCount).map(([name, value]) => ({
    field: name,
    apply: (p: Record<string, unknown>) => ({ ...p, [name]: value }),
  })),
  notSequence.map((value) => ({
    field: 'sequence',
    apply: (p: Record<string, unknown>) => ({ ...p, sequence: value }),
  })),
  fc.tuple(fc.constantFrom('workspaceIds', 'userIds'), notArray).map(([name, value]) => ({
    field: name,
    apply: (p: Record<string, unknown>) => ({ ...p, [name]: value }),
  })),
  // A bad id after some good ones: the error names its index.
  fc
    .tuple(
      fc.constantFrom('workspaceIds', 'userIds'),
      fc.array(fc.uuid(), { maxLength: 3 }),
      notUuid,
      fc.array(fc.anything(), { maxLength: 2 }),
    )
    .map(([name, good, bad, rest]) => ({
      field: `${name}[${good.length}]`,
      apply: (p: Record<string, unknown>) => ({ ...p, [name]: [...good, bad, ...rest] }),
    })),
  // Not an object at all.
  fc
    .constantFrom(null, undefined, 'params', 42, 7n, true)
    .map((value) => ({ field: 'params', apply: () => value })),
);

// ---------------------------------------------------------------------------------------
// The database before and after
// ---------------------------------------------------------------------------------------

async function snapshot(): Promise<string> {
  const [row] = await prisma.$queryRaw<
    { tables: number; stats: string; ids: string; sequences: string }[]
  >`
    SELECT
      (SELECT count(*)::int FROM pg_class WHERE oid IN (
         to_regclass('usagekit.boundary_usage_stats'), to_regclass('usagekit.boundary_usage_ids'),
         to_regclass('usagekit.boundary_usage_flush_sequences'), to_regclass('usagekit.telemetry_locks'),
         to_regclass('usagekit.telemetry_reports'))) AS tables,
      (SELECT coalesce(jsonb_agg(t ORDER BY t.replica_id), '[]')::text FROM usagekit.boundary_usage_stats t) AS stats,
      (SELECT coalesce(jsonb_agg(t ORDER BY t.kind, t.id), '[]')::text FROM usagekit.boundary_usage_ids t) AS ids,
      (SELECT coalesce(jsonb_agg(t ORDER BY t.replica_id), '[]')::text FROM usagekit.boundary_usage_flush_sequences t) AS sequences`;
  expect(row?.tables).toBe(5);
  return JSON.stringify(row);
}

async function seedRows(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await store.upsertStats({
      replicaId: uuid(),
      sequence: 1n,
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      uniqueWorkspacesCount: 1,
      uniqueUsersCount: 1,
      allowedRequests: 10 + i,
      deniedRequests: i,
      workspaceIds: [uuid()],
      userIds: [uuid()],
    });
  }
}

async function rejection(work: () => Promise<unknown> | unknown): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  return undefined;
}

function expectInvalid(error: unknown, fields: readonly string[]): void {
  expect(error).toBeInstanceOf(InvalidInputError);
  expect((error as InvalidInputError).code).toBe('INVALID_INPUT');
  expect(fields).toContain((error as InvalidInputError).field);
}

// ---------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------

describe.each(['single-statement', 'interactive'] as const)(
  'store (%s): invalid input',
  (flushMode) => {
    test(
      'one bad field: rejected, the field named, nothing written',
      async () => {
        const modeStore = new BoundaryUsageStore(prisma, { flushMode });
        await seedRows();
        const before = await snapshot();
        await fc.assert(
          fc.asyncProperty(validParams, corruption, async (params, bad) => {
            const error = await rejection(() =>
              modeStore.upsertStats(bad.apply({ ...params }) as UpsertStatsParams),
            );
            expectInvalid(error, [bad.field]);
            expect(await snapshot()).toBe(before);
          }),
          runs(60),
        );
      },
      TIMEOUT_MS,
    );
  },
);

test(
  'store: several bad fields at once: rejected, one of them named, nothing written',
  async () => {
    await seedRows();
    const before = await snapshot();
    await fc.assert(
      fc.asyncProperty(
        validParams,
        fc.array(corruption, { minLength: 2, maxLength: 4 }),
        async (params, bads) => {
          // `params` itself replaced by a non-object wins over field corruptions, so apply it last.
          let input: unknown = { ...params };
          for (const bad of bads)
            input =
              typeof input === 'object' && input !== null
                ? bad.apply(input as Record<string, unknown>)
                : input;
          const error = await rejection(() => store.upsertStats(input as UpsertStatsParams));
          expectInvalid(
            error,
            bads.map((bad) => bad.field),
          );
          expect(await snapshot()).toBe(before);
        },
      ),
      runs(60),
    );
  },
  TIMEOUT_MS,
);

test(
  'store: a bad maxStalenessMs is rejected and the cutover deletes nothing',
  async () => {
    await seedRows();
    const before = await snapshot();
    const notPositiveMs = fc.oneof(
      fc.integer({ max: 0 }),
      fc.double({ noNaN: true, min: 0.001, max: 1e9 }).filter((n) => !Number.isInteger(n)),
      fc.constantFrom(
        NaN,
        Infinity,
        -Infinity,
        2 ** 53,
        1e21,
        '3600000',
        '1; DELETE FROM usagekit.boundary_usage_stats',
        null,
        undefined,
        3_600_000n,
        {},
      ),
    );
    await fc.assert(
      fc.asyncProperty(notPositiveMs, async (maxStalenessMs) => {
        const error = await rejection(() =>
          store.getAndResetSummary({ maxStalenessMs: maxStalenessMs as number }),
        );
        expectInvalid(error, ['maxStalenessMs']);
        expect(await snapshot()).toBe(before);
      }),
      runs(50),
    );
    expect(
      await rejection(() =>
        store.getAndResetSummary(undefined as unknown as { maxStalenessMs: number }),
      ),
    ).toBeInstanceOf(InvalidInputError);
    expect(await snapshot()).toBe(before);
  },
  TIMEOUT_MS,
);

test('store: bad options are rejected by the constructor, the field named', () => {
  const notPositiveMs = fc.oneof(
    fc.integer({ max: 0 }),
    fc.constantFrom(NaN, 1.5, Infinity, '2000', null, 2_000n, 2 ** 53),
  );
  const badOption: fc.Arbitrary<[keyof StoreOptions, unknown]> = fc.oneof(
    fc.tuple(
      fc.constant('lockMode' as const),
      fc.oneof(fc.string(), fc.constantFrom(null, 1, 'SHARED', "shared'; --")),
    ),
    fc.tuple(
      fc.constant('flushMode' as const),
      fc.oneof(fc.string(), fc.constantFrom(null, 1, 'Interactive')),
    ),
    fc.tuple(
      fc.constantFrom(
        'lockTimeoutMs' as const,
        'transactionTimeoutMs' as const,
        'maxWaitMs' as const,
      ),
      notPositiveMs,
    ),
  );
  fc.assert(
    fc.property(badOption, ([field, value]) => {
      fc.pre(
        value !== undefined &&
          !(field === 'lockMode' && (value === 'shared' || value === 'exclusive')),
      );
      fc.pre(!(field === 'flushMode' && (value === 'single-statement' || value === 'interactive')));
      let error: unknown;
      try {
        new BoundaryUsageStore(prisma, { [field]: value } as StoreOptions);
      } catch (caught) {
        error = caught;
      }
      expectInvalid(error, [field]);
    }),
    runs(200),
  );
});

// ---------------------------------------------------------------------------------------
// The tracker
// ---------------------------------------------------------------------------------------

/** A pool of ids, and whether an occurrence is written in upper case (same uuid to PostgreSQL). */
const idPool = fc.uniqueArray(fc.uuid(), { minLength: 1, maxLength: 6 });
const validAmount = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 1_000 }) },
  { weight: 1, arbitrary: fc.constant(Number.MAX_SAFE_INTEGER) },
  { weight: 1, arbitrary: fc.constant(0) },
);
const notAmount: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ max: -1 }),
  fc.double({ noNaN: true, min: 0.001, max: 1e6 }).filter((n) => !Number.isInteger(n)),
  fc.constantFrom(
    NaN,
    Infinity,
    -Infinity,
    2 ** 53,
    1e20,
    5n,
    '5',
    '5; DROP TABLE usagekit.boundary_usage_stats',
    null,
    undefined,
    true,
    {},
    [],
  ),
);

test(
  'tracker: every invalid track() throws, naming the field, and counts nothing',
  async () => {
    const badTrack = fc.oneof(
      fc.tuple(fc.constant('workspaceId'), notUuid),
      fc.tuple(fc.constant('ownerId'), notUuid),
      fc.tuple(fc.constant('allowed'), notAmount),
      fc.tuple(fc.constant('denied'), notAmount),
    );
    const replicaId = uuid();
    await fc.assert(
      fc.asyncProperty(
        idPool,
        fc.array(fc.tuple(fc.nat(), fc.nat(), validAmount, validAmount, fc.boolean()), {
          maxLength: 6,
        }),
        fc.array(fc.tuple(badTrack, fc.nat(), fc.nat()), { minLength: 1, maxLength: 4 }),
        async (ids, goods, bads) => {
          await clearTables(prisma);
          const tracker = new BoundaryUsageTracker();
          let allowed = 0n;
          let denied = 0n;
          const workspaces = new Set<string>();
          const users = new Set<string>();
          const trackGood = ([w, u, a, d, upper]: [number, number, number, number, boolean]) => {
            const workspaceId = ids[w % ids.length]!;
            const userId = ids[u % ids.length]!;
            tracker.track(upper ? workspaceId.toUpperCase() : workspaceId, userId, a, d);
            workspaces.add(workspaceId);
            users.add(userId);
            allowed += BigInt(a);
            denied += BigInt(d);
          };
          goods.slice(0, 3).forEach(trackGood);
          for (const [[field, value], w, u] of bads) {
            const args: unknown[] = [ids[w % ids.length], ids[u % ids.length], 1, 1];
            args[['workspaceId', 'ownerId', 'allowed', 'denied'].indexOf(field)] = value;
            const pendingBefore = tracker.pending();
            let error: unknown;
            try {
              (tracker.track as (...a: unknown[]) => void)(...args);
            } catch (caught) {
              error = caught;
            }
            expectInvalid(error, [field]);
            expect(tracker.pending()).toEqual(pendingBefore);
          }
          // A bad replica id for flush() is refused before anything is sent.
          expectInvalid(
            await rejection(() =>
              tracker.flush(store, "'; DROP TABLE usagekit.boundary_usage_stats; --"),
            ),
            ['replicaId'],
          );
          goods.slice(3).forEach(trackGood);
          await tracker.flush(store, replicaId);
          const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
          expect([
            summary.allowedRequests,
            summary.deniedRequests,
            summary.uniqueWorkspaces,
            summary.uniqueUsers,
          ]).toEqual([allowed, denied, BigInt(workspaces.size), BigInt(users.size)]);
        },
      ),
      runs(50),
    );
  },
  TIMEOUT_MS,
);

type Op =
  | {
      kind: 'track';
      replica: number;
      workspace: number;
      user: number;
      allowed: number;
      denied: number;
      upper: boolean;
    }
  | { kind: 'flush'; replica: number }
  /** A flush left in flight while the next operations run (tracking during a flush). */
  | { kind: 'startFlush'; replica: number }
  | { kind: 'cutover' };

const REPLICAS = 3;
const replica = fc.nat({ max: REPLICAS - 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('track' as const),
      replica,
      workspace: fc.nat(),
      user: fc.nat(),
      allowed: validAmount,
      denied: validAmount,
      upper: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flush' as const), replica }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('startFlush' as const), replica }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'cutover' as const }) },
);

interface Period {
  allowed: bigint;
  denied: bigint;
  workspaces: Set<string>;
  users: Set<string>;
  /** Per replica, for coder's replica sums. */
  perReplica: { workspaces: Set<string>; users: Set<string> }[];
}
interface Reported {
  allowed: bigint;
  denied: bigint;
  workspaces: bigint;
  users: bigint;
  workspacesReplicaSum: bigint;
  usersReplicaSum: bigint;
}
const newPeriod = (): Period => ({
  allowed: 0n,
  denied: 0n,
  workspaces: new Set(),
  users: new Set(),
  perReplica: Array.from({ length: REPLICAS }, () => ({ workspaces: new Set(), users: new Set() })),
});
const expected = (p: Period): Reported => ({
  allowed: p.allowed,
  denied: p.denied,
  workspaces: BigInt(p.workspaces.size),
  users: BigInt(p.users.size),
  workspacesReplicaSum: p.perReplica.reduce((n, r) => n + BigInt(r.workspaces.size), 0n),
  usersReplicaSum: p.perReplica.reduce((n, r) => n + BigInt(r.users.size), 0n),
});

/**
 * How an id is spelled. 'per-id': each id of the pool always in the same case (half of them
 * upper case). 'per-call': each track() picks; PostgreSQL's uuid ignores case, so the exact
 * counts still see one id, but the tracker's per-replica sets (plain strings) see two.
 */
type Spelling = 'per-id' | 'per-call';

/**
 * Runs the operations against real trackers (one per replica) and the store, then flushes
 * everything and cuts over once more. With `flushBeforeCutover`, every cutover first waits for
 * flushes in flight and flushes every replica, so each period's data is in the database when
 * it is cut over; otherwise cutovers land anywhere, even while flushes are in flight.
 */
async function runOps(
  ids: string[],
  ops: Op[],
  options: { flushBeforeCutover: boolean; spelling: Spelling },
): Promise<{ tracked: Period[]; reported: Reported[] }> {
  await clearTables(prisma);
  const replicas = Array.from({ length: REPLICAS }, () => ({
    id: uuid(),
    tracker: new BoundaryUsageTracker(),
  }));
  const inFlight: Promise<unknown>[] = [];
  const tracked: Period[] = [newPeriod()];
  const reported: Reported[] = [];
  const flushAll = async () => {
    await Promise.all(inFlight.splice(0));
    await Promise.all(replicas.map(({ id, tracker }) => tracker.flush(store, id)));
  };
  const cutover = async () => {
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    reported.push({
      allowed: summary.allowedRequests,
      denied: summary.deniedRequests,
      workspaces: summary.uniqueWorkspaces,
      users: summary.uniqueUsers,
      workspacesReplicaSum: summary.uniqueWorkspacesReplicaSum,
      usersReplicaSum: summary.uniqueUsersReplicaSum,
    });
    tracked.push(newPeriod());
  };
  const spell = (index: number, upper: boolean) => {
    const id = ids[index % ids.length]!;
    const toUpper = options.spelling === 'per-call' ? upper : (index % ids.length) % 2 === 1;
    return toUpper ? id.toUpperCase() : id;
  };
  for (const step of ops) {
    if (step.kind === 'track') {
      const workspaceId = spell(step.workspace, step.upper);
      const userId = spell(step.user + 1, !step.upper);
      replicas[step.replica]!.tracker.track(workspaceId, userId, step.allowed, step.denied);
      const period = tracked[tracked.length - 1]!;
      period.allowed += BigInt(step.allowed);
      period.denied += BigInt(step.denied);
      period.workspaces.add(workspaceId.toLowerCase());
      period.users.add(userId.toLowerCase());
      period.perReplica[step.replica]!.workspaces.add(workspaceId);
      period.perReplica[step.replica]!.users.add(userId);
    } else if (step.kind === 'flush') {
      const { id, tracker } = replicas[step.replica]!;
      await tracker.flush(store, id);
    } else if (step.kind === 'startFlush') {
      const { id, tracker } = replicas[step.replica]!;
      inFlight.push(tracker.flush(store, id));
      // Let the flush cut its batch and reach the database before the next operation.
      await new Promise((resolve) => setImmediate(resolve));
    } else {
      if (options.flushBeforeCutover) await flushAll();
      await cutover();
    }
  }
  await flushAll();
  await cutover();
  tracked.pop(); // the period opened by the final cutover is empty
  for (const { tracker } of replicas) {
    expect(tracker.pending()).toEqual({
      allowedRequests: 0n,
      deniedRequests: 0n,
      unconfirmedBatch: false,
    });
  }
  return { tracked, reported };
}

const sum = (periods: { allowed: bigint; denied: bigint }[], key: 'allowed' | 'denied') =>
  periods.reduce((total, p) => total + p[key], 0n);

test(
  'tracker: any valid sequence of track / flush / cutover conserves every request',
  async () => {
    await fc.assert(
      fc.asyncProperty(idPool, fc.array(op, { maxLength: 40 }), async (ids, ops) => {
        const { tracked, reported } = await runOps(ids, ops, {
          flushBeforeCutover: false,
          spelling: 'per-call',
        });
        expect(reported).toHaveLength(tracked.length);
        expect([sum(reported, 'allowed'), sum(reported, 'denied')]).toEqual([
          sum(tracked, 'allowed'),
          sum(tracked, 'denied'),
        ]);
      }),
      runs(50),
    );
  },
  TIMEOUT_MS,
);

test(
  'tracker: with cutovers only between flushes, each period reports exactly what was tracked in it',
  async () => {
    await fc.assert(
      fc.asyncProperty(idPool, fc.array(op, { maxLength: 40 }), async (ids, ops) => {
        const { tracked, reported } = await runOps(ids, ops, {
          flushBeforeCutover: true,
          spelling: 'per-id',
        });
        expect(reported).toEqual(tracked.map(expected));
      }),
      runs(50),
    );
  },
  TIMEOUT_MS,
);

test(
  'tracker: one uuid spelled in both cases is one id in the exact counts',
  async () => {
    await fc.assert(
      fc.asyncProperty(idPool, fc.array(op, { maxLength: 40 }), async (ids, ops) => {
        const { tracked, reported } = await runOps(ids, ops, {
          flushBeforeCutover: true,
          spelling: 'per-call',
        });
        const exact = ({ allowed, denied, workspaces, users }: Reported) => ({
          allowed,
          denied,
          workspaces,
          users,
        });
        expect(reported.map(exact)).toEqual(tracked.map(expected).map(exact));
      }),
      runs(30),
    );
  },
  TIMEOUT_MS,
);
