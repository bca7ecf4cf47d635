import { LockIds } from '@usagekit/db';
import type { Client } from 'pg';
import { migrationsStatus, type MigrationsStatus } from './migrations.js';
import { hasDeadLetters, listOutbox, pendingCondition, type OutboxReportRow } from './outbox.js';
import { TABLE_EXISTS, type UsagekitTables } from './tables.js';

/** A counter as JSON: a number while it is a safe integer, a decimal string beyond. */
export type JsonInteger = number | string;

export interface ReplicaStatus {
  replicaId: string;
  /** The replica's latest flush the database applied (ISO time), from either table. */
  lastFlushAt: string | null;
  lastFlushAgeMs: number | null;
  /** Tracker instances (processes) that flushed under this id and are still remembered. */
  writers: number;
  /** What this replica flushed since the last cutover: waiting in boundary_usage_stats. */
  awaitingCutover: {
    allowedRequests: JsonInteger;
    deniedRequests: JsonInteger;
    uniqueWorkspaces: JsonInteger;
    uniqueUsers: JsonInteger;
    windowStart: string;
  } | null;
}

export interface LockSession {
  /** Which usagekit lock (a key of LockIds in @usagekit/db). */
  lock: string;
  pid: number;
  mode: string;
  granted: boolean;
  applicationName: string | null;
  state: string | null;
  inTransactionMs: number | null;
  inStateMs: number | null;
  waitEvent: string | null;
  query: string | null;
}

export interface LockStatus {
  /** Sessions holding a usagekit advisory lock now. */
  held: LockSession[];
  /** Sessions waiting for one. */
  waiting: LockSession[];
}

export interface PeriodsStatus {
  /**
   * The latest period a reporter claimed (telemetry_locks), null before the first. `ageMs` is
   * negative while the period is still in progress (a final collection claims it early).
   */
  lastClaimed: { eventType: string; periodEndingAt: string; ageMs: number } | null;
  claimedPeriods: number;
}

export interface OutboxStatus {
  /** Reports not yet acknowledged by the receiver. */
  pending: number;
  oldestPendingAgeMs: number | null;
  lastDeliveredAt: string | null;
  /** Pending reports whose latest delivery attempt failed, with the receiver's answer. */
  failing: OutboxReportRow[];
  /**
   * Dead letters: reports the receiver refused for good, set aside and not retried until an
   * operator sends them again (`outbox retry`). Always 0 / [] on a database without them.
   */
  rejected: number;
  rejectedReports: OutboxReportRow[];
}

export interface StatusReport {
  database: string;
  /** usagekit's PostgreSQL schema the report reads. */
  schema: string;
  migrations: MigrationsStatus;
  replicas: ReplicaStatus[];
  lock: LockStatus;
  periods: PeriodsStatus;
  outbox: OutboxStatus;
}

export function jsonInteger(value: string | number | bigint): JsonInteger {
  const big = BigInt(value);
  const safe = big <= BigInt(Number.MAX_SAFE_INTEGER) && big >= BigInt(Number.MIN_SAFE_INTEGER);
  return safe ? Number(big) : big.toString();
}

export async function collectStatus(
  client: Client,
  tables: UsagekitTables,
  migrationsDir: string | undefined,
  redactedDatabaseUrl: string,
): Promise<StatusReport> {
  const migrations = await migrationsStatus(client, tables, migrationsDir);
  const lock = await lockStatus(client);
  // Before the first migrate there are no tables: report an empty fleet, not an error.
  const migrated = await tableExists(client, tables.telemetryReports);
  return {
    database: redactedDatabaseUrl,
    schema: tables.schema,
    migrations,
    replicas: migrated ? await replicaStatus(client, tables) : [],
    lock,
    periods: migrated
      ? await periodsStatus(client, tables)
      : { lastClaimed: null, claimedPeriods: 0 },
    outbox: migrated ? await outboxStatus(client, tables) : emptyOutbox(),
  };
}

async function tableExists(client: Client, qualifiedName: string): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(TABLE_EXISTS, [qualifiedName]);
  return rows[0]?.exists === true;
}

interface ReplicaRow {
  replica_id: string;
  last_flush_at: Date | null;
  last_flush_age_ms: number | null;
  writers: string | null;
  allowed_requests: string | null;
  denied_requests: string | null;
  unique_workspaces_count: string | null;
  unique_users_count: string | null;
  window_start: Date | null;
}

/**
 * Every replica the database remembers: a row in boundary_usage_stats (flushed, not cut over
 * yet) and/or flush sequences (which survive cutovers), newest flush first. Ages use the
 * database's clock. Takes no locks (plain MVCC reads).
 */
async function replicaStatus(client: Client, tables: UsagekitTables): Promise<ReplicaStatus[]> {
  const { rows } = await client.query<ReplicaRow>(
    `WITH sequences AS (
       SELECT replica_id, max(updated_at) AS updated_at, count(*) AS writers
         FROM ${tables.flushSequences} GROUP BY replica_id)
     SELECT replica_id::text AS replica_id,
            greatest(q.updated_at, s.updated_at) AS last_flush_at,
            extract(epoch FROM now() - greatest(q.updated_at, s.updated_at)) * 1000 AS last_flush_age_ms,
            coalesce(q.writers, 0) AS writers,
            s.allowed_requests, s.denied_requests, s.unique_workspaces_count, s.unique_users_count,
            s.window_start
       FROM ${tables.stats} s FULL JOIN sequences q USING (replica_id)
      ORDER BY last_flush_at DESC NULLS LAST, replica_id`,
  );
  return rows.map((row) => ({
    replicaId: row.replica_id,
    lastFlushAt: row.last_flush_at?.toISOString() ?? null,
    lastFlushAgeMs:
      row.last_flush_age_ms === null ? null : Math.round(Number(row.last_flush_age_ms)),
    writers: Number(row.writers ?? 0),
    awaitingCutover:
      row.window_start === null
        ? null
        : {
            allowedRequests: jsonInteger(row.allowed_requests ?? 0),
            deniedRequests: jsonInteger(row.denied_requests ?? 0),
            uniqueWorkspaces: jsonInteger(row.unique_workspaces_count ?? 0),
            uniqueUsers: jsonInteger(row.unique_users_count ?? 0),
            windowStart: row.window_start.toISOString(),
          },
  }));
}

interface LockRow {
  key: string;
  pid: number;
  mode: string;
  granted: boolean;
  application_name: string | null;
  state: string | null;
  in_transaction_ms: number | null;
  in_state_ms: number | null;
  wait_event: string | null;
  query: string | null;
}

/**
 * Who holds or waits for a usagekit advisory lock in this database. pg_locks shows a bigint
 * key split in two (classid = high 32 bits, objid = low 32 bits, objsubid = 1); we join it
 * back and name it from LockIds. Needs pg_read_all_stats (or superuser) to see other roles'
 * query text; without it those columns are null.
 */
async function lockStatus(client: Client): Promise<LockStatus> {
  const names = new Map(Object.entries(LockIds).map(([name, key]) => [key.toString(), name]));
  const { rows } = await client.query<LockRow>(
    `SELECT ((l.classid::bigint << 32) | l.objid::bigint)::text AS key, l.pid, l.mode, l.granted,
            a.application_name, a.state,
            extract(epoch FROM now() - a.xact_start) * 1000 AS in_transaction_ms,
            extract(epoch FROM now() - a.state_change) * 1000 AS in_state_ms,
            nullif(concat_ws(':', a.wait_event_type, a.wait_event), '') AS wait_event,
            left(a.query, 120) AS query
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 1
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY($1::bigint[])
      ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid`,
    [[...names.keys()]],
  );
  const sessions = rows.map((row): LockSession & { granted: boolean } => ({
    lock: names.get(row.key) ?? row.key,
    pid: row.pid,
    mode: row.mode,
    granted: row.granted,
    applicationName: row.application_name || null,
    state: row.state,
    inTransactionMs: roundOrNull(row.in_transaction_ms),
    inStateMs: roundOrNull(row.in_state_ms),
    waitEvent: row.wait_event,
    query: row.query,
  }));
  return {
    held: sessions.filter((session) => session.granted),
    waiting: sessions.filter((session) => !session.granted),
  };
}

async function periodsStatus(client: Client, tables: UsagekitTables): Promise<PeriodsStatus> {
  const { rows } = await client.query<{
    event_type: string | null;
    period_ending_at: Date | null;
    age_ms: number | null;
    claimed: string;
  }>(
    `SELECT latest.event_type, latest.period_ending_at,
            extract(epoch FROM now() - latest.period_ending_at) * 1000 AS age_ms,
            (SELECT count(*) FROM ${tables.telemetryLocks}) AS claimed
       FROM (SELECT 1) one
       LEFT JOIN (SELECT event_type, period_ending_at FROM ${tables.telemetryLocks}
                   ORDER BY period_ending_at DESC LIMIT 1) latest ON true`,
  );
  const row = rows[0];
  return {
    lastClaimed:
      row?.period_ending_at && row.event_type
        ? {
            eventType: row.event_type,
            periodEndingAt: row.period_ending_at.toISOString(),
            ageMs: Math.round(Number(row.age_ms)),
          }
        : null,
    claimedPeriods: Number(row?.claimed ?? 0),
  };
}

async function outboxStatus(client: Client, tables: UsagekitTables): Promise<OutboxStatus> {
  const deadLetters = await hasDeadLetters(client, tables);
  const pending = pendingCondition(deadLetters);
  const rejected = deadLetters ? 'rejected_at IS NOT NULL AND delivered_at IS NULL' : 'false';
  const { rows } = await client.query<{
    pending: string;
    rejected: string;
    oldest_age_ms: number | null;
    last_delivered_at: Date | null;
  }>(
    `SELECT count(*) FILTER (WHERE ${pending}) AS pending,
            count(*) FILTER (WHERE ${rejected}) AS rejected,
            extract(epoch FROM now() - min(created_at) FILTER (WHERE ${pending})) * 1000 AS oldest_age_ms,
            max(delivered_at) AS last_delivered_at
       FROM ${tables.telemetryReports}`,
  );
  const row = rows[0];
  return {
    pending: Number(row?.pending ?? 0),
    oldestPendingAgeMs: roundOrNull(row?.oldest_age_ms ?? null),
    lastDeliveredAt: row?.last_delivered_at?.toISOString() ?? null,
    failing: await listOutbox(
      client,
      tables,
      { limit: 20, state: 'pending', failingOnly: true },
      deadLetters,
    ),
    rejected: Number(row?.rejected ?? 0),
    rejectedReports: await listOutbox(
      client,
      tables,
      { limit: 20, state: 'rejected' },
      deadLetters,
    ),
  };
}

function emptyOutbox(): OutboxStatus {
  return {
    pending: 0,
    oldestPendingAgeMs: null,
    lastDeliveredAt: null,
    failing: [],
    rejected: 0,
    rejectedReports: [],
  };
}

function roundOrNull(value: number | string | null): number | null {
  return value === null ? null : Math.round(Number(value));
}
