/**
 * Least privilege (packages/db/sql/roles.sql, applyRoles from @usagekit/db): replicas log in
 * as users granted usagekit_writer or usagekit_reporter and can do their job and nothing
 * more. Each test user is a LOGIN role with a unique name, granted one of the two group
 * roles and dropped in afterAll, so parallel runs on one server never collide. The group
 * roles are cluster-wide and shared on purpose; their grants live in this suite's database.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  applyRoles,
  createPrismaClient,
  DatabaseError,
  defaultRolesScriptPath,
  LockIds,
  toDatabaseError,
  UsagekitRoles,
  type PrismaClient,
} from '@usagekit/db';
import { createTestDatabase, quoteIdentifier, withAdminClient } from '@usagekit/testing';
import { BoundaryUsageStore, type LockMode, type StoreOptions } from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const createdUsers: string[] = [];
const clients: PrismaClient[] = [];

// Declared before useDatabase(): Jest runs afterAll hooks in declaration order, and the users
// must be dropped while this suite's database still exists (DROP OWNED works per database).
afterAll(async () => {
  await Promise.all(clients.map((client) => client.$disconnect().catch(() => undefined)));
  if (createdUsers.length === 0) return;
  await withAdminClient(db.database().databaseUrl, async (client) => {
    for (const user of createdUsers) {
      // Anything a test user might own or have been granted here, then the user itself.
      await client.query(`REASSIGN OWNED BY ${quoteIdentifier(user)} TO CURRENT_USER`);
      await client.query(`DROP OWNED BY ${quoteIdentifier(user)}`);
      await client.query(`DROP ROLE ${quoteIdentifier(user)}`);
    }
  });
});

const db = useDatabase();
const HOUR_MS = 3_600_000;
let admin: PrismaClient;

/** A LOGIN user in `role`, and a PrismaClient connected as that user to this suite's database. */
async function loginAs(
  role: string,
  extra = '',
): Promise<{ user: string; url: string; prisma: PrismaClient }> {
  const user = `usagekit_test_${process.pid}_${randomBytes(6).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  await withAdminClient(db.database().serverUrl, (client) =>
    client.query(
      `CREATE ROLE ${quoteIdentifier(user)} LOGIN PASSWORD '${password}' ${role ? `IN ROLE ${quoteIdentifier(role)}` : ''} ${extra}`,
    ),
  );
  createdUsers.push(user);
  const url = new URL(db.database().databaseUrl);
  url.username = user;
  url.password = password;
  const prisma = createPrismaClient({ databaseUrl: url.toString(), maxConnections: 2 });
  clients.push(prisma);
  return { user, url: url.toString(), prisma };
}

/** The SQLSTATE of whatever `work` threw, as our typed error reports it. */
async function failure(work: () => Promise<unknown>): Promise<DatabaseError> {
  try {
    await work();
  } catch (error) {
    const typed = toDatabaseError(error);
    expect(typed).toBeInstanceOf(DatabaseError);
    return typed;
  }
  throw new Error('expected the statement to be refused, but it succeeded');
}

function flushParams(replicaId: string, sequence: bigint) {
  return {
    replicaId,
    sequence,
    uniqueWorkspacesDelta: 1,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    allowedRequests: 5,
    deniedRequests: 2,
    workspaceIds: [uuid()],
    userIds: [uuid()],
  };
}

async function statsRows(): Promise<{ replica_id: string; allowed_requests: bigint }[]> {
  return admin.$queryRaw`SELECT replica_id::text, allowed_requests FROM usagekit.boundary_usage_stats ORDER BY replica_id`;
}

beforeAll(async () => {
  admin = db.client(2);
  await applyRoles({ databaseUrl: db.database().databaseUrl });
});
beforeEach(() => clearTables(admin));
test('the script takes the advisory lock the registry names', () => {
  const script = readFileSync(defaultRolesScriptPath(), 'utf8');
  expect(script).toContain(`pg_advisory_xact_lock(${LockIds.roles.toString()})`);
});

test('creates two NOLOGIN roles; the reporter inherits the writer', async () => {
  const roles = await admin.$queryRaw<
    { rolname: string; rolcanlogin: boolean; rolinherit: boolean }[]
  >`
    SELECT rolname, rolcanlogin, rolinherit FROM pg_roles
     WHERE rolname IN (${UsagekitRoles.writer}, ${UsagekitRoles.reporter}) ORDER BY rolname`;
  expect(roles).toEqual([
    { rolname: 'usagekit_reporter', rolcanlogin: false, rolinherit: true },
    { rolname: 'usagekit_writer', rolcanlogin: false, rolinherit: true },
  ]);
  const [membership] = await admin.$queryRaw<{ member: boolean }[]>`
    SELECT pg_has_role('usagekit_reporter', 'usagekit_writer', 'USAGE') AS member`;
  expect(membership?.member).toBe(true);
});

test('is idempotent, converges, and survives concurrent runs here and in another database', async () => {
  // Someone granted too much by hand; the next run takes it away again.
  await admin.$executeRawUnsafe(
    'GRANT DELETE, TRUNCATE ON usagekit.boundary_usage_stats TO usagekit_writer',
  );
  const other = await createTestDatabase();
  try {
    await Promise.all([
      ...Array.from({ length: 4 }, () => applyRoles({ databaseUrl: db.database().databaseUrl })),
      ...Array.from({ length: 3 }, () => applyRoles({ databaseUrl: other.databaseUrl })),
    ]);
    await withAdminClient(other.databaseUrl, async (client) => {
      const { rows } = await client.query<{ ok: boolean }>(
        `SELECT has_table_privilege('usagekit_reporter', 'usagekit.telemetry_reports', 'INSERT') AS ok`,
      );
      expect(rows[0]?.ok).toBe(true);
    });
  } finally {
    await other.drop();
  }
  const [extra] = await admin.$queryRaw<{ delete: boolean; truncate: boolean }[]>`
    SELECT has_table_privilege('usagekit_writer', 'usagekit.boundary_usage_stats', 'DELETE') AS delete,
           has_table_privilege('usagekit_writer', 'usagekit.boundary_usage_stats', 'TRUNCATE') AS truncate`;
  expect(extra).toEqual({ delete: false, truncate: false });
});

test('refuses to run without CREATEROLE, with a message that says so', async () => {
  const { url } = await loginAs('');
  const error = await applyRoles({ databaseUrl: url }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(DatabaseError);
  expect((error as DatabaseError).sqlState).toBe('42501');
  expect((error as DatabaseError).message).toMatch(/CREATEROLE/);
});

test('refuses to run for a CREATEROLE user that does not own the tables (GRANT would only warn)', async () => {
  const { url } = await loginAs('', 'CREATEROLE');
  const error = await applyRoles({ databaseUrl: url }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(DatabaseError);
  expect((error as DatabaseError).sqlState).toBe('42501');
  expect((error as DatabaseError).message).toMatch(/does not own/);
});

describe('usagekit_writer', () => {
  let writer: PrismaClient;
  beforeAll(async () => {
    ({ prisma: writer } = await loginAs(UsagekitRoles.writer));
  });

  describe.each<[LockMode, NonNullable<StoreOptions['flushMode']>]>([
    ['shared', 'single-statement'],
    ['shared', 'interactive'],
    ['exclusive', 'single-statement'],
    ['exclusive', 'interactive'],
  ])('%s lock, %s flush', (lockMode, flushMode) => {
    test('flushes: insert, update, a duplicate sequence, ids and sequences', async () => {
      const store = new BoundaryUsageStore(writer, { lockMode, flushMode });
      const replicaId = uuid();
      expect(await store.upsertStats(flushParams(replicaId, 1n))).toEqual({
        newPeriod: true,
        applied: true,
      });
      expect(await store.upsertStats(flushParams(replicaId, 2n))).toEqual({
        newPeriod: false,
        applied: true,
      });
      expect(await store.upsertStats(flushParams(replicaId, 2n))).toEqual({
        newPeriod: false,
        applied: false,
        storedSequence: 2n,
      });
      expect(await statsRows()).toEqual([{ replica_id: replicaId, allowed_requests: 10n }]);
      const [ids] = await admin.$queryRaw<
        { n: bigint }[]
      >`SELECT count(*) AS n FROM usagekit.boundary_usage_ids`;
      expect(ids?.n).toBe(4n);
      const [sequence] = await admin.$queryRaw<{ last_sequence: bigint }[]>`
        SELECT last_sequence FROM usagekit.boundary_usage_flush_sequences WHERE replica_id = ${replicaId}::uuid`;
      expect(sequence?.last_sequence).toBe(2n);
    });
  });

  // Column-level SELECT only where the flush reads: take any one of them away and it fails.
  // `duplicate`: read only by the separate statement of a flush that was not applied.
  test.each([
    ['boundary_usage_stats', 'replica_id', 'applied'],
    ['boundary_usage_stats', 'allowed_requests', 'applied'],
    ['boundary_usage_stats', 'denied_requests', 'applied'],
    ['boundary_usage_stats', 'updated_at', 'applied'],
    ['boundary_usage_stats', 'xmax', 'applied'],
    ['boundary_usage_stats', 'first_sequence', 'duplicate'],
    ['boundary_usage_stats', 'first_writer_id', 'duplicate'],
    ['boundary_usage_flush_sequences', 'replica_id', 'applied'],
    ['boundary_usage_flush_sequences', 'writer_id', 'applied'],
    ['boundary_usage_flush_sequences', 'last_sequence', 'applied'],
    ['boundary_usage_flush_sequences', 'updated_at', 'applied'],
  ] as const)('SELECT (%s.%s) is needed by the flush (%s)', async (table, column, path) => {
    const store = new BoundaryUsageStore(writer);
    const replicaId = uuid();
    const writerId = uuid();
    await store.upsertStats({ ...flushParams(replicaId, 1n), writerId });
    const next = path === 'applied' ? 2n : 1n;
    await admin.$executeRawUnsafe(
      `REVOKE SELECT (${column}) ON usagekit.${table} FROM usagekit_writer`,
    );
    try {
      const refused = await failure(() =>
        store.upsertStats({ ...flushParams(replicaId, next), writerId }),
      );
      expect(refused.sqlState).toBe('42501');
    } finally {
      await applyRoles({ databaseUrl: db.database().databaseUrl });
    }
    expect(await store.upsertStats({ ...flushParams(replicaId, next), writerId })).toEqual(
      path === 'applied'
        ? { newPeriod: false, applied: true, period: `${writerId}/1` }
        : { newPeriod: true, applied: false, storedSequence: 1n },
    );
  });

  test('cannot run the cutover or DELETE stats (42501, a typed DatabaseError)', async () => {
    await new BoundaryUsageStore(writer).upsertStats(flushParams(uuid(), 1n));
    const cutover = await failure(() =>
      new BoundaryUsageStore(writer).getAndResetSummary({ maxStalenessMs: HOUR_MS }),
    );
    expect(cutover.sqlState).toBe('42501');
    const deleted = await failure(
      () => writer.$executeRaw`DELETE FROM usagekit.boundary_usage_stats`,
    );
    expect(deleted.sqlState).toBe('42501');
    expect(await statsRows()).toHaveLength(1);
  });

  test('cannot touch telemetry_reports or telemetry_locks', async () => {
    expect(
      (await failure(() => writer.$queryRaw`SELECT * FROM usagekit.telemetry_reports`)).sqlState,
    ).toBe('42501');
    expect(
      (
        await failure(
          () =>
            writer.$executeRaw`INSERT INTO usagekit.telemetry_locks (event_type, period_ending_at) VALUES ('x', now())`,
        )
      ).sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => writer.$executeRaw`DELETE FROM usagekit.telemetry_locks`)).sqlState,
    ).toBe('42501');
  });

  test('reads only the columns the flush reads; cannot rewrite window_start or read the ids', async () => {
    expect(
      (
        await failure(
          () => writer.$queryRaw`SELECT window_start FROM usagekit.boundary_usage_stats`,
        )
      ).sqlState,
    ).toBe('42501');
    expect(
      (
        await failure(
          () => writer.$queryRaw`SELECT unique_users_count FROM usagekit.boundary_usage_stats`,
        )
      ).sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => writer.$queryRaw`SELECT id FROM usagekit.boundary_usage_ids`)).sqlState,
    ).toBe('42501');
    expect(
      (
        await failure(
          () => writer.$executeRaw`UPDATE usagekit.boundary_usage_stats SET window_start = now()`,
        )
      ).sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => writer.$executeRaw`DELETE FROM usagekit.boundary_usage_flush_sequences`))
        .sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => writer.$executeRaw`TRUNCATE usagekit.boundary_usage_stats`)).sqlState,
    ).toBe('42501');
  });
});

describe('usagekit_reporter', () => {
  let reporter: PrismaClient;
  beforeAll(async () => {
    ({ prisma: reporter } = await loginAs(UsagekitRoles.reporter));
  });

  test('flushes (it inherits the writer) and runs the cutover', async () => {
    const store = new BoundaryUsageStore(reporter);
    const replicaId = uuid();
    await store.upsertStats(flushParams(replicaId, 1n));
    await new BoundaryUsageStore(reporter, { flushMode: 'interactive' }).upsertStats(
      flushParams(replicaId, 2n),
    );
    const summary = await store.getAndResetSummary({ maxStalenessMs: HOUR_MS });
    expect([
      summary.allowedRequests,
      summary.deniedRequests,
      summary.uniqueWorkspaces,
      summary.uniqueUsers,
    ]).toEqual([10n, 4n, 2n, 2n]);
    expect(await statsRows()).toEqual([]);
  });

  // The statement shapes of @usagekit/telemetry's sql.ts (which this package cannot import:
  // dependencies point telemetry → boundary-usage): claim + cutover + outbox in one
  // transaction, then lease, mark delivered, and the three retention deletes.
  test('runs the collection, the outbox delivery and retention', async () => {
    const store = new BoundaryUsageStore(reporter);
    await store.upsertStats(flushParams(uuid(), 1n));
    const reportId = uuid();
    await reporter.$transaction(async (tx) => {
      const claim = await tx.$queryRaw<{ claimed: boolean }[]>`
        INSERT INTO usagekit.telemetry_locks (event_type, period_ending_at)
        VALUES ('boundary_usage_summary', now())
        ON CONFLICT (event_type, period_ending_at) DO NOTHING
        RETURNING true AS claimed`;
      expect(claim).toEqual([{ claimed: true }]);
      const summary = await store.getAndResetSummaryInTransaction(tx, { maxStalenessMs: HOUR_MS });
      expect(summary.allowedRequests).toBe(5n);
      await tx.$executeRaw`
        INSERT INTO usagekit.telemetry_reports
          (report_id, event_type, period_starting_at, period_duration_ms, payload, created_at, next_attempt_at)
        VALUES (${reportId}::uuid, 'boundary_usage_summary', now(), 1800000, '{}'::jsonb, now(), now())`;
    });
    const leased = await reporter.$queryRaw<{ report_id: string; attempts: number }[]>`
      UPDATE usagekit.telemetry_reports r
         SET attempts = r.attempts + 1, next_attempt_at = now() + interval '1 minute'
       WHERE r.report_id = (
         SELECT report_id FROM usagekit.telemetry_reports
          WHERE delivered_at IS NULL AND next_attempt_at <= now()
          ORDER BY created_at, report_id LIMIT 1
          FOR UPDATE SKIP LOCKED)
      RETURNING r.report_id::text AS report_id, r.attempts`;
    expect(leased).toEqual([{ report_id: reportId, attempts: 1 }]);
    expect(
      await reporter.$executeRaw`UPDATE usagekit.telemetry_reports SET last_error = 'x', next_attempt_at = now()
                                  WHERE report_id = ${reportId}::uuid AND delivered_at IS NULL AND attempts = 1`,
    ).toBe(1);
    expect(
      await reporter.$executeRaw`UPDATE usagekit.telemetry_reports SET delivered_at = now() - interval '2 days', last_error = NULL
                                  WHERE report_id = ${reportId}::uuid AND delivered_at IS NULL`,
    ).toBe(1);
    const [next] = await reporter.$queryRaw<{ next_attempt_at: Date | null }[]>`
      SELECT min(next_attempt_at) AS next_attempt_at FROM usagekit.telemetry_reports WHERE delivered_at IS NULL`;
    expect(next?.next_attempt_at).toBeNull();

    expect(
      await reporter.$executeRaw`DELETE FROM usagekit.telemetry_reports
                                  WHERE delivered_at IS NOT NULL AND delivered_at < now() - interval '1 day'`,
    ).toBe(1);
    expect(
      await reporter.$executeRaw`DELETE FROM usagekit.telemetry_locks WHERE period_ending_at < now() + interval '1 minute'`,
    ).toBe(1);
    expect(
      await reporter.$executeRaw`DELETE FROM usagekit.boundary_usage_flush_sequences
                                  WHERE updated_at < now() + interval '1 minute'`,
    ).toBe(1);
  });

  test('cannot truncate, drop, or read the migrations table', async () => {
    expect(
      (await failure(() => reporter.$executeRaw`TRUNCATE usagekit.boundary_usage_stats`)).sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => reporter.$executeRaw`DROP TABLE usagekit.telemetry_reports`)).sqlState,
    ).toBe('42501');
    expect(
      (await failure(() => reporter.$queryRaw`SELECT * FROM usagekit._prisma_migrations`)).sqlState,
    ).toBe('42501');
    expect(
      (
        await failure(
          () => reporter.$executeRaw`UPDATE usagekit.telemetry_locks SET event_type = 'x'`,
        )
      ).sqlState,
    ).toBe('42501');
  });
});
