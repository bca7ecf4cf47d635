import { randomUUID } from 'node:crypto';
import { createTestDatabase, withAdminClient, type TestDatabase } from '@usagekit/testing';
import { createPrismaClient, type PrismaClient } from '../src/index.js';
import { query } from './support/sql.js';

// The schema the migrations build, checked against DESIGN.md ("Schema parity") through the
// catalogs, so a migration that drifts from the design fails here and not in production.

let database: TestDatabase;
let prisma: PrismaClient;

beforeAll(async () => {
  database = await createTestDatabase();
  prisma = createPrismaClient({ databaseUrl: database.databaseUrl, maxConnections: 2 });
});

afterAll(async () => {
  await prisma?.$disconnect();
  await database?.drop();
});

interface Column {
  name: string;
  type: string;
  nullable: boolean;
  default: string | null;
}

async function columns(table: string): Promise<Column[]> {
  const rows = await query<{
    column_name: string;
    data_type: string;
    is_nullable: string;
    column_default: string | null;
  }>(
    database.databaseUrl,
    `SELECT column_name, data_type, is_nullable, column_default
       FROM information_schema.columns
      WHERE table_schema = 'usagekit' AND table_name = $1
      ORDER BY ordinal_position`,
    [table],
  );
  return rows.map((row) => ({
    name: row.column_name,
    type: row.data_type,
    nullable: row.is_nullable === 'YES',
    default: row.column_default,
  }));
}

async function constraintColumns(
  table: string,
  type: 'PRIMARY KEY' | 'UNIQUE',
): Promise<string[][]> {
  const rows = await query<{ constraint_name: string; columns: string[] }>(
    database.databaseUrl,
    `SELECT tc.constraint_name, array_agg(kcu.column_name::text ORDER BY kcu.ordinal_position) AS columns
       FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage kcu
         ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
      WHERE tc.table_schema = 'usagekit' AND tc.table_name = $1 AND tc.constraint_type = $2
      GROUP BY tc.constraint_name
      ORDER BY tc.constraint_name`,
    [table, type],
  );
  return rows.map((row) => row.columns);
}

/** Every index on the table: its name, whether unique, and its key columns in order. */
async function indexes(
  table: string,
): Promise<{ name: string; unique: boolean; columns: string[] }[]> {
  return query(
    database.databaseUrl,
    `SELECT i.relname AS name, ix.indisunique AS unique,
            array(SELECT a.attname::text
                    FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
                    JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
                   ORDER BY k.position) AS columns
       FROM pg_index ix
       JOIN pg_class i ON i.oid = ix.indexrelid
      WHERE ix.indrelid = $1::regclass
      ORDER BY i.relname`,
    [`usagekit.${table}`],
  );
}

const now = expect.stringMatching(/^(now\(\)|CURRENT_TIMESTAMP)$/);
const timestamptz = 'timestamp with time zone';

describe('boundary_usage_stats', () => {
  test('has the columns, types, defaults and NOT NULLs of the design', async () => {
    expect(await columns('boundary_usage_stats')).toEqual([
      { name: 'replica_id', type: 'uuid', nullable: false, default: null },
      { name: 'unique_workspaces_count', type: 'bigint', nullable: false, default: '0' },
      { name: 'unique_users_count', type: 'bigint', nullable: false, default: '0' },
      { name: 'allowed_requests', type: 'bigint', nullable: false, default: '0' },
      { name: 'denied_requests', type: 'bigint', nullable: false, default: '0' },
      { name: 'window_start', type: timestamptz, nullable: false, default: now },
      { name: 'updated_at', type: timestamptz, nullable: false, default: now },
      // Beyond coder: which flush sequence inserted the row (ambiguous-commit retries).
      { name: 'first_sequence', type: 'bigint', nullable: true, default: null },
      // …and which writer (tracker instance) flushed it.
      { name: 'first_writer_id', type: 'uuid', nullable: true, default: null },
    ]);
  });

  test('is keyed by replica_id', async () => {
    expect(await constraintColumns('boundary_usage_stats', 'PRIMARY KEY')).toEqual([
      ['replica_id'],
    ]);
    const replicaId = randomUUID();
    await query(
      database.databaseUrl,
      'INSERT INTO usagekit.boundary_usage_stats (replica_id) VALUES ($1)',
      [replicaId],
    );
    await expect(
      query(
        database.databaseUrl,
        'INSERT INTO usagekit.boundary_usage_stats (replica_id) VALUES ($1)',
        [replicaId],
      ),
    ).rejects.toMatchObject({ code: '23505' });
  });

  test('a row inserted with only replica_id gets zero counters and the transaction time', async () => {
    const [row] = await query<Record<string, unknown>>(
      database.databaseUrl,
      `INSERT INTO usagekit.boundary_usage_stats (replica_id) VALUES ($1)
       RETURNING unique_workspaces_count, unique_users_count, allowed_requests, denied_requests,
                 window_start = now() AS window_start_is_now, updated_at = now() AS updated_at_is_now`,
      [randomUUID()],
    );
    // pg returns int8 as a string.
    expect(row).toEqual({
      unique_workspaces_count: '0',
      unique_users_count: '0',
      allowed_requests: '0',
      denied_requests: '0',
      window_start_is_now: true,
      updated_at_is_now: true,
    });
  });

  test('counters hold the full signed 64-bit range and no more', async () => {
    const replicaId = randomUUID();
    await query(
      database.databaseUrl,
      'INSERT INTO usagekit.boundary_usage_stats (replica_id, allowed_requests) VALUES ($1, 9223372036854775807)',
      [replicaId],
    );
    await expect(
      query(
        database.databaseUrl,
        'UPDATE usagekit.boundary_usage_stats SET allowed_requests = allowed_requests + 1 WHERE replica_id = $1',
        [replicaId],
      ),
    ).rejects.toMatchObject({ code: '22003' });
  });
});

describe('telemetry_locks', () => {
  test('has event_type and period_ending_at, both required', async () => {
    expect(await columns('telemetry_locks')).toEqual([
      { name: 'event_type', type: 'text', nullable: false, default: null },
      { name: 'period_ending_at', type: timestamptz, nullable: false, default: null },
    ]);
  });

  test('is keyed by (event_type, period_ending_at), so one replica wins each period', async () => {
    expect(await constraintColumns('telemetry_locks', 'PRIMARY KEY')).toEqual([
      ['event_type', 'period_ending_at'],
    ]);
    const insert = `INSERT INTO usagekit.telemetry_locks (event_type, period_ending_at) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1`;
    const period = '2026-01-27T10:30:00Z';
    expect(
      await query(database.databaseUrl, insert, ['boundary_usage_summary', period]),
    ).toHaveLength(1);
    expect(
      await query(database.databaseUrl, insert, ['boundary_usage_summary', period]),
    ).toHaveLength(0);
    expect(await query(database.databaseUrl, insert, ['other_event', period])).toHaveLength(1);
  });

  test('has an index on period_ending_at alone, for pruning old periods', async () => {
    expect(await indexes('telemetry_locks')).toEqual([
      {
        name: 'idx_telemetry_locks_period_ending_at',
        unique: false,
        columns: ['period_ending_at'],
      },
      { name: 'telemetry_locks_pkey', unique: true, columns: ['event_type', 'period_ending_at'] },
    ]);
  });
});

describe('telemetry_reports', () => {
  test('has the outbox columns', async () => {
    expect(await columns('telemetry_reports')).toEqual([
      { name: 'report_id', type: 'uuid', nullable: false, default: null },
      { name: 'event_type', type: 'text', nullable: false, default: null },
      { name: 'period_starting_at', type: timestamptz, nullable: false, default: null },
      { name: 'period_duration_ms', type: 'bigint', nullable: false, default: null },
      { name: 'payload', type: 'jsonb', nullable: false, default: null },
      { name: 'created_at', type: timestamptz, nullable: false, default: now },
      { name: 'attempts', type: 'integer', nullable: false, default: '0' },
      { name: 'last_error', type: 'text', nullable: true, default: null },
      { name: 'next_attempt_at', type: timestamptz, nullable: false, default: now },
      { name: 'delivered_at', type: timestamptz, nullable: true, default: null },
      { name: 'rejected_at', type: timestamptz, nullable: true, default: null },
      { name: 'rejections', type: 'integer', nullable: false, default: '0' },
    ]);
  });

  test('is keyed by report_id, one report per (event_type, period_starting_at), with a pending index', async () => {
    expect(await constraintColumns('telemetry_reports', 'PRIMARY KEY')).toEqual([['report_id']]);
    expect(await indexes('telemetry_reports')).toEqual([
      {
        name: 'idx_telemetry_reports_pending',
        unique: false,
        columns: ['delivered_at', 'created_at'],
      },
      {
        name: 'telemetry_reports_event_type_period_key',
        unique: true,
        columns: ['event_type', 'period_starting_at'],
      },
      { name: 'telemetry_reports_pkey', unique: true, columns: ['report_id'] },
    ]);
  });
});

describe('boundary_usage_ids', () => {
  test('holds (kind, id) pairs keyed by both', async () => {
    expect(await columns('boundary_usage_ids')).toEqual([
      { name: 'kind', type: 'text', nullable: false, default: null },
      { name: 'id', type: 'uuid', nullable: false, default: null },
    ]);
    expect(await constraintColumns('boundary_usage_ids', 'PRIMARY KEY')).toEqual([['kind', 'id']]);
  });

  test("accepts only the kinds 'workspace' and 'user' (CHECK constraint)", async () => {
    const [check] = await query<{ name: string; definition: string }>(
      database.databaseUrl,
      `SELECT conname AS name, pg_get_constraintdef(oid) AS definition
         FROM pg_constraint WHERE conrelid = 'usagekit.boundary_usage_ids'::regclass AND contype = 'c'`,
    );
    expect(check?.name).toBe('boundary_usage_ids_kind_check');
    expect(check?.definition).toMatch(/'workspace'.*'user'/);

    const insert = 'INSERT INTO usagekit.boundary_usage_ids (kind, id) VALUES ($1, $2)';
    await query(database.databaseUrl, insert, ['workspace', randomUUID()]);
    await query(database.databaseUrl, insert, ['user', randomUUID()]);
    await expect(
      query(database.databaseUrl, insert, ['group', randomUUID()]),
    ).rejects.toMatchObject({
      code: '23514',
      constraint: 'boundary_usage_ids_kind_check',
    });
  });
});

describe('boundary_usage_flush_sequences', () => {
  test('keeps the last flush sequence per replica and writer', async () => {
    expect(await columns('boundary_usage_flush_sequences')).toEqual([
      { name: 'replica_id', type: 'uuid', nullable: false, default: null },
      { name: 'last_sequence', type: 'bigint', nullable: false, default: null },
      { name: 'updated_at', type: timestamptz, nullable: false, default: now },
      {
        name: 'writer_id',
        type: 'uuid',
        nullable: false,
        default: "'00000000-0000-0000-0000-000000000000'::uuid",
      },
    ]);
    expect(await constraintColumns('boundary_usage_flush_sequences', 'PRIMARY KEY')).toEqual([
      ['replica_id', 'writer_id'],
    ]);
    expect(await indexes('boundary_usage_flush_sequences')).toEqual([
      {
        name: 'boundary_usage_flush_sequences_pkey',
        unique: true,
        columns: ['replica_id', 'writer_id'],
      },
      {
        name: 'idx_boundary_usage_flush_sequences_updated_at',
        unique: false,
        columns: ['updated_at'],
      },
    ]);
  });
});

const TABLES = [
  'boundary_usage_stats',
  'telemetry_locks',
  'telemetry_reports',
  'boundary_usage_ids',
  'boundary_usage_flush_sequences',
];

test('every table and every column of boundary_usage_stats carries a comment', async () => {
  const comments = await withAdminClient(database.databaseUrl, async (client) => {
    const result: Record<string, string | null> = {};
    for (const table of TABLES) {
      const { rows } = await client.query<{ comment: string | null }>(
        `SELECT obj_description($1::regclass, 'pg_class') AS comment`,
        [`usagekit.${table}`],
      );
      result[table] = rows[0]!.comment;
    }
    return result;
  });
  for (const table of TABLES) expect(comments[table]).toEqual(expect.stringMatching(/\S{3,}/));

  const uncommented = await query<{ column_name: string }>(
    database.databaseUrl,
    `SELECT column_name FROM information_schema.columns
      WHERE table_schema = 'usagekit' AND table_name = 'boundary_usage_stats'
        AND col_description('usagekit.boundary_usage_stats'::regclass, ordinal_position::int) IS NULL`,
  );
  expect(uncommented).toEqual([]);
});

test('the generated Prisma client maps every model onto these tables', async () => {
  const replicaId = randomUUID();
  const stats = await prisma.boundaryUsageStats.create({
    data: { replicaId, allowedRequests: 2n ** 62n },
  });
  expect(stats).toMatchObject({ replicaId, uniqueUsersCount: 0n, allowedRequests: 2n ** 62n });
  expect(stats.windowStart).toBeInstanceOf(Date);

  const periodEndingAt = new Date('2026-01-27T11:00:00Z');
  await prisma.telemetryLock.create({ data: { eventType: 'prisma_roundtrip', periodEndingAt } });
  const report = await prisma.telemetryReport.create({
    data: {
      reportId: randomUUID(),
      eventType: 'prisma_roundtrip',
      periodStartingAt: periodEndingAt,
      periodDurationMs: 1_800_000n,
      payload: { unique_users: 3 },
    },
  });
  expect(report).toMatchObject({
    attempts: 0,
    lastError: null,
    deliveredAt: null,
    payload: { unique_users: 3 },
  });
  await prisma.boundaryUsageId.create({ data: { kind: 'user', id: replicaId } });
  await prisma.boundaryUsageFlushSequence.create({ data: { replicaId, lastSequence: 7n } });

  const [counts] = await query<Record<string, number>>(
    database.databaseUrl,
    `SELECT (SELECT count(*)::int FROM usagekit.boundary_usage_stats WHERE replica_id = $1) AS stats,
            (SELECT count(*)::int FROM usagekit.telemetry_locks WHERE event_type = 'prisma_roundtrip') AS locks,
            (SELECT count(*)::int FROM usagekit.telemetry_reports WHERE event_type = 'prisma_roundtrip') AS reports,
            (SELECT count(*)::int FROM usagekit.boundary_usage_ids WHERE id = $1) AS ids,
            (SELECT count(*)::int FROM usagekit.boundary_usage_flush_sequences WHERE replica_id = $1 AND last_sequence = 7) AS sequences`,
    [replicaId],
  );
  expect(counts).toEqual({ stats: 1, locks: 1, reports: 1, ids: 1, sequences: 1 });
});
