/**
 * Issue 17, item 2: a database migrated by the version before usagekit had a schema of its own
 * (tables in `public`, history in `public._prisma_migrations`, beside a host application's) is
 * moved by migrate() with nothing lost and nothing counted twice, with data in every table,
 * and a fleet keeps working across the upgrade:
 * - the stopped-fleet upgrade (`legacyViews: false`) leaves nothing of usagekit's in public;
 * - the rolling upgrade (default): replicas of the old version, played with the old version's
 *   exact statements (support/legacy-statements.ts), keep flushing, cutting over, claiming
 *   and delivering through the compatibility views, also WHILE the move runs, together with
 *   new replicas, under the same advisory locks; finishSchemaUpgrade() then removes the views
 *   and usagekit's public history rows, never the host's.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client } from 'pg';
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import {
  applyRoles,
  createPrismaClient,
  defaultMigrationsDir,
  defaultRolesScriptPath,
  finishSchemaUpgrade,
  LockIds,
  migrate,
  readMigrations,
  type PrismaClient,
} from '@usagekit/db';
import {
  applyLegacyLayout,
  applyLegacyLayoutBesideHost,
  createTestDatabase,
  dropDatabase,
  LEGACY_HOST_MIGRATION,
  quoteIdentifier,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
  type TestDatabase,
} from '@usagekit/testing';
import { TelemetryReporter, type Snapshot } from '../src/index.js';
import { CollectingSink, FakeClock, TEST_RETENTION_MS } from './helpers.js';
import {
  OLD_CLAIM,
  OLD_CUTOVER,
  OLD_CUTOVER_LOCK,
  OLD_FLUSH,
  OLD_INSERT_REPORT,
  OLD_LEASE,
  OLD_MARK_DELIVERED,
} from './support/legacy-statements.js';

const TABLES = [
  'boundary_usage_flush_sequences',
  'boundary_usage_ids',
  'boundary_usage_stats',
  'telemetry_locks',
  'telemetry_reports',
] as const;
const HOST_MIGRATION = LEGACY_HOST_MIGRATION;
const HOUR_MS = 3_600_000;

let server: TestDatabase;
const databases: string[] = [];
const clients: (Client | PrismaClient)[] = [];

beforeAll(async () => {
  server = await createTestDatabase();
});

afterAll(async () => {
  for (const client of clients.splice(0)) {
    await ('$disconnect' in client ? client.$disconnect() : client.end()).catch(() => undefined);
  }
  for (const name of databases) await dropDatabase(server.serverUrl, name);
  await server.drop();
});

async function connect(databaseUrl: string): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl });
  client.on('error', () => undefined);
  await client.connect();
  clients.push(client);
  return client;
}

function prismaFor(databaseUrl: string): PrismaClient {
  const prisma = createPrismaClient({ databaseUrl, maxConnections: 4 });
  clients.push(prisma);
  return prisma;
}

/**
 * A database as the previous version left it: a host application's migration and table in
 * public, then usagekit's migrations applied the way that version's migrate() applied them
 * (@usagekit/testing's applyLegacyLayoutBesideHost).
 */
async function legacyDatabase(): Promise<string> {
  const name = uniqueDatabaseName('usagekit_upgrade');
  await withAdminClient(server.serverUrl, (client) =>
    client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
  );
  databases.push(name);
  const databaseUrl = withDatabase(server.serverUrl, name);
  const client = await connect(databaseUrl);
  await applyLegacyLayoutBesideHost(client, readMigrations(defaultMigrationsDir()));
  return databaseUrl;
}

/** The previous version's migrate(), reduced to what it wrote: unqualified, into public. */
function legacyMigrate(client: Client): Promise<string[]> {
  return applyLegacyLayout(client, readMigrations(defaultMigrationsDir()));
}

interface OldFlush {
  replicaId: string;
  writerId: string;
  sequence: bigint;
  allowed: number;
  denied?: number;
  workspaceIds?: string[];
  userIds?: string[];
}

/** A flush exactly as a replica of the previous version sends it. */
async function oldFlush(
  client: Client,
  flush: OldFlush,
): Promise<{ applied: boolean; new_period: boolean | null }> {
  const workspaceIds = flush.workspaceIds ?? [];
  const userIds = flush.userIds ?? [];
  const { rows } = await client.query<{ applied: boolean; new_period: boolean | null }>(OLD_FLUSH, [
    '2000ms',
    LockIds.boundaryUsageStats.toString(),
    flush.replicaId,
    flush.writerId,
    flush.sequence.toString(),
    workspaceIds,
    userIds,
    flush.replicaId,
    String(workspaceIds.length),
    String(userIds.length),
    String(flush.allowed),
    String(flush.denied ?? 0),
    flush.writerId,
    String(workspaceIds.length),
    String(userIds.length),
  ]);
  return rows[0]!;
}

/** The previous version's cutover: its lock, then its DELETE … RETURNING sum, in one transaction. */
async function oldCutover(
  client: Client,
): Promise<{ allowed: bigint; denied: bigint; uniqueUsers: bigint }> {
  await client.query('BEGIN');
  try {
    await client.query(OLD_CUTOVER_LOCK, [
      '2000ms',
      '10000ms',
      LockIds.boundaryUsageStats.toString(),
    ]);
    const { rows } = await client.query<{
      allowed_requests: string;
      denied_requests: string;
      unique_users: string;
    }>(OLD_CUTOVER, [HOUR_MS]);
    await client.query('COMMIT');
    return {
      allowed: BigInt(rows[0]!.allowed_requests),
      denied: BigInt(rows[0]!.denied_requests),
      uniqueUsers: BigInt(rows[0]!.unique_users),
    };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** The previous version's claim and outbox row for `bucket`, in one transaction. */
async function oldClaimAndReport(client: Client, bucket: Date): Promise<string | undefined> {
  await client.query('BEGIN');
  const { rows } = await client.query<{ claimed: boolean }>(OLD_CLAIM, [
    bucket.toISOString(),
    TEST_RETENTION_MS,
    HOUR_MS,
    'boundary_usage_summary',
    bucket.toISOString(),
  ]);
  if (!rows[0]!.claimed) {
    await client.query('ROLLBACK');
    return undefined;
  }
  const reportId = randomUUID();
  await client.query(OLD_INSERT_REPORT, [
    reportId,
    'boundary_usage_summary',
    new Date(bucket.getTime() - 30 * 60_000).toISOString(),
    30 * 60_000,
    JSON.stringify({ old: true }),
  ]);
  await client.query('COMMIT');
  return reportId;
}

/** Every row of every usagekit table in `schema`, as JSON, for before/after comparisons. */
async function contents(client: Client, schema: string): Promise<Record<string, unknown[]>> {
  const result: Record<string, unknown[]> = {};
  for (const table of TABLES) {
    const { rows } = await client.query<{ rows: unknown[] }>(
      `SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') AS rows
         FROM ${quoteIdentifier(schema)}.${quoteIdentifier(table)} t`,
    );
    result[table] = rows[0]!.rows;
  }
  return result;
}

async function history(
  client: Client,
  schema: string,
): Promise<{ id: string; migration_name: string; checksum: string }[]> {
  const { rows } = await client.query<{ id: string; migration_name: string; checksum: string }>(
    `SELECT id, migration_name, checksum, finished_at FROM ${quoteIdentifier(schema)}."_prisma_migrations"
      ORDER BY migration_name`,
  );
  return rows;
}

/** What lives in public: relation names and kinds. */
async function publicRelations(client: Client): Promise<string[]> {
  const { rows } = await client.query<{ r: string }>(
    `SELECT c.relname || ':' || c.relkind::text AS r FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p') ORDER BY 1`,
  );
  return rows.map((row) => row.r);
}

/**
 * Data in every table, written by the old version: two replicas' stats with ids and flush
 * sequences, an election row and a pending outbox report (plus one delivered).
 */
async function fillAsOldVersion(client: Client): Promise<{
  writerA: string;
  replicaA: string;
  pendingReportId: string;
  claimedBucket: Date;
  allowed: number;
}> {
  const replicaA = randomUUID();
  const writerA = randomUUID();
  const replicaB = randomUUID();
  const writerB = randomUUID();
  const sharedUser = randomUUID();
  expect(
    await oldFlush(client, {
      replicaId: replicaA,
      writerId: writerA,
      sequence: 1n,
      allowed: 5,
      denied: 1,
      workspaceIds: [randomUUID()],
      userIds: [sharedUser],
    }),
  ).toMatchObject({ applied: true, new_period: true });
  expect(
    await oldFlush(client, { replicaId: replicaA, writerId: writerA, sequence: 2n, allowed: 7 }),
  ).toMatchObject({ applied: true, new_period: false });
  await oldFlush(client, {
    replicaId: replicaB,
    writerId: writerB,
    sequence: 1n,
    allowed: 11,
    userIds: [sharedUser],
  });
  const delivered = await oldClaimAndReport(client, new Date('2026-01-01T10:00:00Z'));
  await client.query(OLD_MARK_DELIVERED, [delivered]);
  const claimedBucket = new Date('2026-01-01T10:30:00Z');
  const pendingReportId = (await oldClaimAndReport(client, claimedBucket))!;
  return { writerA, replicaA, pendingReportId, claimedBucket, allowed: 5 + 7 + 11 };
}

const migrationNames = readMigrations(defaultMigrationsDir()).map((m) => m.name);

test('stopped fleet (legacyViews: false): every row, index, comment and history row moves; nothing of usagekit stays in public; the host keeps its own', async () => {
  const databaseUrl = await legacyDatabase();
  const client = await connect(databaseUrl);
  const old = await fillAsOldVersion(client);
  const before = await contents(client, 'public');
  const historyBefore = (await history(client, 'public')).filter((row) =>
    migrationNames.includes(row.migration_name),
  );
  const { rows: indexesBefore } = await client.query(
    `SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'host_items' ORDER BY 1, 2`,
  );

  const result = await migrate({ databaseUrl, legacyViews: false });

  expect(result.upgraded).toEqual({
    tables: [
      'boundary_usage_stats',
      'boundary_usage_ids',
      'boundary_usage_flush_sequences',
      'telemetry_locks',
      'telemetry_reports',
    ],
    migrations: historyBefore.map((row) => row.migration_name),
    legacyViews: false,
  });
  expect(result.applied).toEqual([]);
  expect(await contents(client, 'usagekit')).toEqual(before);
  expect(await history(client, 'usagekit')).toEqual(historyBefore);
  // The host's table and its history row, and nothing else, are left in public.
  expect(await publicRelations(client)).toEqual(['_prisma_migrations:r', 'host_items:r']);
  expect((await history(client, 'public')).map((row) => row.migration_name)).toEqual([
    HOST_MIGRATION,
  ]);
  expect((await client.query('SELECT * FROM public.host_items')).rows).toEqual([
    { id: 1, name: 'kept' },
  ]);
  const { rows: indexesAfter } = await client.query(
    `SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'usagekit' ORDER BY 1, 2`,
  );
  expect(indexesAfter).toEqual(indexesBefore);
  const { rows: comment } = await client.query(
    `SELECT obj_description('usagekit.boundary_usage_stats'::regclass, 'pg_class') AS c`,
  );
  expect(comment[0].c).toMatch(/^Per-replica boundary usage/);

  // The old version's statements find nothing in public any more: no silent second table.
  await expect(
    oldFlush(client, { replicaId: randomUUID(), writerId: randomUUID(), sequence: 1n, allowed: 1 }),
  ).rejects.toMatchObject({ code: '42P01' });

  // A new tracker continues: the sequences moved with their table, so a resent batch is
  // refused, the next one applies; the reporter delivers the old pending report once and
  // reports the old and new counts once.
  const prisma = prismaFor(databaseUrl);
  const store = new BoundaryUsageStore(prisma);
  const flushA = {
    replicaId: old.replicaA,
    writerId: old.writerA,
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 0,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    deniedRequests: 0,
  };
  expect(await store.upsertStats({ ...flushA, sequence: 2n, allowedRequests: 7 })).toMatchObject({
    applied: false,
    storedSequence: 2n,
  });
  expect(await store.upsertStats({ ...flushA, sequence: 3n, allowedRequests: 100 })).toMatchObject({
    applied: true,
    newPeriod: false,
  });
  const sink = new CollectingSink();
  const reporter = new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'upgrade',
    sink,
    clock: new FakeClock(old.claimedBucket),
    reportRetentionMs: TEST_RETENTION_MS,
  });
  // The old version claimed this period: the election row moved, so it is not claimed again.
  const lost: Snapshot = await reporter.collectSnapshot();
  expect(lost.boundaryUsageSummary).toBeUndefined();
  const next = new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'upgrade',
    sink,
    clock: new FakeClock(new Date(old.claimedBucket.getTime() + 30 * 60_000)),
    reportRetentionMs: TEST_RETENTION_MS,
  });
  const won = await next.collectSnapshot();
  expect(won.boundaryUsageSummary).toMatchObject({
    allowedRequests: BigInt(old.allowed + 100),
    deniedRequests: 1n,
    uniqueUsers: 1n,
  });
  expect(await next.deliverPending()).toEqual({ delivered: 2, failed: 0 });
  expect(sink.sent.map((report) => report.reportId).sort()).toEqual(
    [old.pendingReportId, won.reportId].sort(),
  );
  expect(await next.deliverPending()).toEqual({ delivered: 0, failed: 0 });

  // Idempotent: nothing left to move.
  await expect(migrate({ databaseUrl })).resolves.toEqual({ applied: [] });
});

/**
 * An old replica's flush loop: every batch is retried with the same sequence until it is
 * applied or refused as a duplicate (the old tracker's behaviour), so each batch counts
 * exactly once whatever fails in between. Returns how many requests it counted.
 */
function oldReplicaLoop(
  databaseUrl: string,
  until: () => boolean,
): Promise<{ counted: number; batches: number; errors: string[] }> {
  return (async () => {
    const client = await connect(databaseUrl);
    const replicaId = randomUUID();
    const writerId = randomUUID();
    const errors: string[] = [];
    let counted = 0;
    let sequence = 0n;
    while (!until()) {
      sequence++;
      const allowed = Number(sequence % 5n) + 1;
      // Bounded: a batch that cannot be applied in 200 tries fails the test, not the run.
      for (let attempt = 1; attempt <= 200; attempt++) {
        try {
          const result = await oldFlush(client, { replicaId, writerId, sequence, allowed });
          if (result.applied) counted += allowed;
          break;
        } catch (error) {
          errors.push(String((error as { code?: string }).code ?? error));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    }
    return { counted, batches: Number(sequence), errors };
  })();
}

test('rolling upgrade (default): old replicas keep flushing, cutting over, claiming and delivering through the views, during and after the move; finishSchemaUpgrade removes exactly what was usagekit’s', async () => {
  const databaseUrl = await legacyDatabase();
  const client = await connect(databaseUrl);
  const old = await fillAsOldVersion(client);
  const before = await contents(client, 'public');

  // Old replicas flush all through the move; a new replica migrates meanwhile.
  let stop = false;
  const fleet = [oldReplicaLoop(databaseUrl, () => stop), oldReplicaLoop(databaseUrl, () => stop)];
  let result: Awaited<ReturnType<typeof migrate>>;
  try {
    await new Promise((resolve) => setTimeout(resolve, 200));
    result = await migrate({ databaseUrl });
    await new Promise((resolve) => setTimeout(resolve, 200));
  } finally {
    stop = true;
  }
  const replicas = await Promise.all(fleet);

  // The move neither lost nor doubled an old replica's flush, and none of them failed.
  expect(replicas.flatMap((r) => r.errors)).toEqual([]);
  expect(result!.upgraded).toMatchObject({ legacyViews: true });
  expect(result!.upgraded?.tables).toHaveLength(TABLES.length);
  for (const r of replicas) expect(r.batches).toBeGreaterThan(0);
  const fleetCounted = replicas.reduce((sum, r) => sum + r.counted, 0);
  const { rows: sums } = await client.query<{ allowed: string }>(
    `SELECT sum(allowed_requests)::text AS allowed FROM usagekit.boundary_usage_stats`,
  );
  expect(BigInt(sums[0]!.allowed)).toBe(BigInt(old.allowed + fleetCounted));
  // The tables are in usagekit; public holds views over them, and the history in both.
  expect(await publicRelations(client)).toEqual(
    ['_prisma_migrations:r', 'host_items:r', ...TABLES.map((t) => `${t}:v`)].sort(),
  );
  const moved = (await history(client, 'usagekit')).map((row) => row.migration_name);
  expect(moved).toEqual(migrationNames);
  // An old replica restarting runs the old migrate(): it finds everything applied.
  expect(await legacyMigrate(client)).toEqual([]);
  // Everything the old rows held is still there (the old fleet only added stats).
  const after = await contents(client, 'usagekit');
  for (const table of TABLES.filter(
    (t) => t !== 'boundary_usage_stats' && t !== 'boundary_usage_flush_sequences',
  )) {
    expect(after[table]).toEqual(before[table]);
  }

  // Old and new side by side: a new replica flushes, an old one too (its sequences honoured:
  // a resend is refused), and the OLD cutover sums both exactly once, under the same lock.
  const prisma = prismaFor(databaseUrl);
  const store = new BoundaryUsageStore(prisma);
  const newReplica = randomUUID();
  await store.upsertStats({
    replicaId: newReplica,
    writerId: randomUUID(),
    sequence: 1n,
    uniqueWorkspacesDelta: 0,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 0,
    uniqueUsersCount: 1,
    allowedRequests: 1000,
    deniedRequests: 0,
    userIds: [randomUUID()],
  });
  expect(
    await oldFlush(client, {
      replicaId: old.replicaA,
      writerId: old.writerA,
      sequence: 2n,
      allowed: 7,
    }),
  ).toMatchObject({ applied: false });
  expect(
    await oldFlush(client, {
      replicaId: old.replicaA,
      writerId: old.writerA,
      sequence: 3n,
      allowed: 9,
    }),
  ).toMatchObject({ applied: true, new_period: false });
  const cut = await oldCutover(client);
  expect(cut).toEqual({
    allowed: BigInt(old.allowed + fleetCounted + 1000 + 9),
    denied: 1n,
    uniqueUsers: 2n,
  });
  const { rows: left } = await client.query(
    `SELECT count(*)::int AS n FROM usagekit.boundary_usage_stats`,
  );
  expect(left).toEqual([{ n: 0 }]);

  // The old election and outbox still work through the views: the old version claims a new
  // period and writes its report; a new reporter cannot claim that period again and delivers
  // every pending report once, the old version's included; the old lease finds none left.
  const oldBucket = new Date('2026-01-01T11:00:00Z');
  const oldReport = await oldClaimAndReport(client, oldBucket);
  expect(oldReport).toBeDefined();
  expect(await oldClaimAndReport(client, oldBucket)).toBeUndefined();
  const sink = new CollectingSink();
  const reporter = new TelemetryReporter({
    prisma,
    store,
    deploymentId: 'upgrade',
    sink,
    clock: new FakeClock(oldBucket),
    reportRetentionMs: TEST_RETENTION_MS,
  });
  expect((await reporter.collectSnapshot()).boundaryUsageSummary).toBeUndefined();
  expect(await reporter.deliverPending()).toEqual({ delivered: 2, failed: 0 });
  expect(sink.sent.map((r) => r.reportId).sort()).toEqual([old.pendingReportId, oldReport].sort());
  expect((await client.query(OLD_LEASE, [60_000])).rows).toEqual([]);

  // Once every replica runs the new version: the views and usagekit's public history go,
  // the host's row and table stay, usagekit's own history is complete.
  const finished = await finishSchemaUpgrade({ databaseUrl });
  expect(finished).toEqual({
    views: [...TABLES],
    historyRows: migrationNames.length,
    droppedHistoryTable: false,
  });
  expect(await publicRelations(client)).toEqual(['_prisma_migrations:r', 'host_items:r']);
  expect((await history(client, 'public')).map((row) => row.migration_name)).toEqual([
    HOST_MIGRATION,
  ]);
  expect((await history(client, 'usagekit')).map((row) => row.migration_name)).toEqual(
    migrationNames,
  );
  // From here an old replica fails loudly (and keeps its counts), a new one works.
  await expect(
    oldFlush(client, { replicaId: old.replicaA, writerId: old.writerA, sequence: 4n, allowed: 1 }),
  ).rejects.toMatchObject({ code: '42P01' });
  await expect(
    store.upsertStats({
      replicaId: old.replicaA,
      writerId: old.writerA,
      sequence: 4n,
      uniqueWorkspacesDelta: 0,
      uniqueUsersDelta: 0,
      uniqueWorkspacesCount: 0,
      uniqueUsersCount: 0,
      allowedRequests: 1,
      deniedRequests: 0,
    }),
  ).resolves.toMatchObject({ applied: true, newPeriod: true });
  await expect(finishSchemaUpgrade({ databaseUrl })).resolves.toEqual({
    views: [],
    historyRows: 0,
    droppedHistoryTable: false,
  });
  await expect(migrate({ databaseUrl })).resolves.toEqual({ applied: [] });
});

test('a legacy public._prisma_migrations that held only usagekit’s rows is dropped once emptied; a host table named like ours is never taken', async () => {
  const name = uniqueDatabaseName('usagekit_upgrade');
  await withAdminClient(server.serverUrl, (admin) =>
    admin.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
  );
  databases.push(name);
  const databaseUrl = withDatabase(server.serverUrl, name);
  const client = await connect(databaseUrl);
  await legacyMigrate(client);
  await fillAsOldVersion(client);

  const result = await migrate({ databaseUrl, legacyViews: false });
  expect(result.upgraded?.tables).toHaveLength(TABLES.length);
  expect(await publicRelations(client)).toEqual([]);

  // A database where the host has a telemetry_reports of its own and usagekit's history does
  // not record creating it: nothing is moved, usagekit is installed beside it.
  const hostName = uniqueDatabaseName('usagekit_upgrade');
  await withAdminClient(server.serverUrl, (admin) =>
    admin.query(`CREATE DATABASE ${quoteIdentifier(hostName)}`),
  );
  databases.push(hostName);
  const hostUrl = withDatabase(server.serverUrl, hostName);
  const host = await connect(hostUrl);
  await host.query(`CREATE TABLE public.telemetry_reports (id int PRIMARY KEY)`);
  const fresh = await migrate({ databaseUrl: hostUrl });
  expect(fresh.upgraded).toBeUndefined();
  expect(fresh.applied).toEqual(migrationNames);
  expect(await publicRelations(host)).toEqual(['telemetry_reports:r']);
});

test('replicas running as usagekit_reporter keep working across the rolling upgrade: old ones through the views, new ones in the schema', async () => {
  const databaseUrl = await legacyDatabase();
  const client = await connect(databaseUrl);
  // The roles as the previous version granted them, on the tables in public.
  await client.query('BEGIN');
  await client.query(`SELECT set_config('usagekit.schema', 'public', true)`);
  await client.query(readFileSync(defaultRolesScriptPath(), 'utf8'));
  await client.query('COMMIT');
  const user = `usagekit_upgrade_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const password = randomUUID();
  await client.query(`CREATE ROLE ${user} LOGIN PASSWORD '${password}' IN ROLE usagekit_reporter`);
  const opened = clients.length;
  try {
    const url = new URL(databaseUrl);
    url.username = user;
    url.password = password;
    const replica = await connect(url.toString());
    const writerId = randomUUID();
    const replicaId = randomUUID();
    await oldFlush(replica, { replicaId, writerId, sequence: 1n, allowed: 2 });

    await migrate({ databaseUrl });

    // The old version, as that user, through the views: flush and cutover.
    expect(
      await oldFlush(replica, { replicaId, writerId, sequence: 2n, allowed: 3 }),
    ).toMatchObject({ applied: true, new_period: false });
    // The new version, as that user, in the schema (USAGE came with the move).
    const prisma = prismaFor(url.toString());
    await new BoundaryUsageStore(prisma).upsertStats({
      replicaId: randomUUID(),
      uniqueWorkspacesDelta: 0,
      uniqueUsersDelta: 0,
      uniqueWorkspacesCount: 0,
      uniqueUsersCount: 0,
      allowedRequests: 10,
      deniedRequests: 0,
    });
    expect(await oldCutover(replica)).toMatchObject({ allowed: 15n });
    // applyRoles() on the new layout leaves them able to do the same.
    await applyRoles({ databaseUrl });
    await expect(
      new BoundaryUsageStore(prisma).getAndResetSummary({ maxStalenessMs: HOUR_MS }),
    ).resolves.toMatchObject({ allowedRequests: 0n });
  } finally {
    for (const c of clients.splice(opened)) {
      await ('$disconnect' in c ? c.$disconnect() : c.end()).catch(() => undefined);
    }
    await client.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`,
      [user],
    );
    await client.query(`DROP ROLE IF EXISTS ${user}`);
  }
});
