/**
 * Every SQL statement of @usagekit/boundary-usage. Each one says which lock it takes or relies
 * on, in which mode, and why. Values are always bound parameters (tagged `Prisma.sql`); the
 * only composed pieces are fixed fragments chosen in this file.
 *
 * The protocol (coder PR #21907, made cheaper): writers take the boundary-usage advisory lock
 * SHARED, the cutover takes it EXCLUSIVE, both transaction-scoped. Writers touch only their
 * own row, so they never need to exclude each other; the cutover excludes every writer, so a
 * flush lands wholly before or wholly after it; two cutovers serialize, so their whole-table
 * DELETEs cannot deadlock (the 40P01 hugodutka's stress test hit).
 *
 * Tables are named schema-qualified (`"usagekit"."boundary_usage_stats"`) through the
 * `SchemaTables` of the store's schema, raw fragments without values: no statement depends on
 * the session's search_path, which PgBouncer in transaction mode cannot carry.
 */
import { LockIds, Prisma, type SchemaTables } from '@usagekit/db';

export type LockMode = 'shared' | 'exclusive';

const lockKey = LockIds.boundaryUsageStats;

/** The server-side bounds every lock-taking transaction of the store sets for itself. */
export interface LockTimeouts {
  /** lock_timeout: how long any lock wait may last (55P03 → LockTimeoutError). */
  lockTimeoutMs: number;
  /**
   * idle_in_transaction_session_timeout: if the client vanishes (a silent network) while the
   * transaction holds the lock, the server ends the session after this long and the lock is
   * released, instead of keeping it "idle in transaction" until TCP keepalive notices (hours).
   */
  idleInTransactionTimeoutMs: number;
}

/**
 * Transaction-local lock_timeout and idle_in_transaction_session_timeout, so a writer stuck
 * behind a long cutover fails with 55P03 instead of holding its pool slot until Prisma's
 * transaction timer fires (which does not cancel the wait), and a holder whose client vanished
 * loses its locks within a bound. `SET` takes no parameters; set_config(…, true) is SET LOCAL
 * that does. Run it before any statement that touches a table: a statement takes its table
 * locks at parse/bind, under whatever lock_timeout is in force then.
 */
export function setLockTimeout(timeouts: LockTimeouts): Prisma.Sql {
  return Prisma.sql`SELECT set_config('lock_timeout', ${`${timeouts.lockTimeoutMs}ms`}, true),
    set_config('idle_in_transaction_session_timeout', ${`${timeouts.idleInTransactionTimeoutMs}ms`}, true)`;
}

/**
 * Sets the timeouts above, then takes `lockCall`, in one statement and one round trip:
 * `config` is MATERIALIZED and the lock is computed from its row, so both settings are in
 * force before the lock wait starts. Touches no table, so nothing can wait outside the
 * bounds. The lock functions return void, which adapter-pg cannot decode: run it through
 * $executeRaw.
 */
function withTimeouts(lockCall: Prisma.Sql, timeouts: LockTimeouts): Prisma.Sql {
  return Prisma.sql`WITH config AS MATERIALIZED (${setLockTimeout(timeouts)})
    SELECT ${lockCall} FROM config`;
}

/**
 * The writers' lock, with the transaction's timeouts. SHARED: many flushes at once, none
 * during a cutover. EXCLUSIVE only when the store reproduces coder's protocol for comparison.
 */
export function takeWriterLock(mode: LockMode, timeouts: LockTimeouts): Prisma.Sql {
  return withTimeouts(
    mode === 'shared'
      ? Prisma.sql`pg_advisory_xact_lock_shared(${lockKey}::bigint)`
      : Prisma.sql`pg_advisory_xact_lock(${lockKey}::bigint)`,
    timeouts,
  );
}

/**
 * The cutover's lock, with the transaction's timeouts: EXCLUSIVE, so no flush is half-visible
 * to it and cutovers serialize.
 */
export function takeCutoverLock(timeouts: LockTimeouts): Prisma.Sql {
  return withTimeouts(Prisma.sql`pg_advisory_xact_lock(${lockKey}::bigint)`, timeouts);
}

export interface FlushStatementParams {
  replicaId: string;
  /**
   * The tracker instance that flushes (a random uuid per tracker). Sequences are kept per
   * (replica, writer), so writers sharing a replica id never refuse each other's flushes.
   * Undefined: the nil uuid (one writer per replica), and no `period` is returned.
   */
  writerId: string | undefined;
  /** When set, the flush applies only if it is above this writer's last applied sequence. */
  sequence: bigint | undefined;
  uniqueWorkspacesDelta: bigint;
  uniqueUsersDelta: bigint;
  uniqueWorkspacesCount: bigint;
  uniqueUsersCount: bigint;
  allowedRequests: bigint;
  deniedRequests: bigint;
  workspaceIds: readonly string[];
  userIds: readonly string[];
}

/** The writer id of callers that pass none: one sequence per replica, as before writer ids. */
export const NIL_WRITER_ID = '00000000-0000-0000-0000-000000000000';

export interface FlushStatementRow {
  applied: boolean;
  new_period: boolean | null;
  /** Which writer's flush, with which sequence, inserted the row now there ("writer/sequence"). */
  period: string | null;
}

/**
 * The flush: one statement that (1) records the flush sequence, (2) inserts the ids it carries
 * into boundary_usage_ids, (3) upserts the replica's stats row. Each step reads the previous
 * CTE's output, so when the sequence says "not above the last applied one" nothing else is
 * written; what the database holds instead is read by a separate statement
 * ({@link readNotApplied}), only on that rare path.
 *
 * The common flush (issue 13) carries a sequence and no new ids: then there is no ids CTE at
 * all. PostgreSQL parses and plans an unprepared statement on every call, so the text it
 * never needs is left out rather than fed two empty arrays.
 *
 * When there are ids, they are inserted in (kind, id) order. Two flushes carrying the same new
 * ids each wait on the other's uncommitted insert of a shared id (ON CONFLICT must know whether
 * it commits); in opposite orders that is a deadlock (40P01, seen in the simulator's chaos runs
 * and reproduced in the stress test). In one global order the second simply waits for the first.
 *
 * `gate` is the CTE the sequence step selects FROM. In the interactive transaction it is a
 * constant row (the lock was taken by an earlier statement). In the single-statement form it
 * is the MATERIALIZED lock CTE: the sequence INSERT cannot produce its row, and so nothing
 * downstream can write, until pg_advisory_xact_lock_shared has returned. Relies on the shared
 * (or, in exclusive mode, exclusive) boundary-usage lock being held.
 *
 * Upsert semantics (coder #21805): INSERT (first flush of a period) writes the unique *deltas*;
 * UPDATE replaces the unique counts with the replica's cumulative counts for the period and
 * *adds* the request deltas. window_start, first_sequence and first_writer_id are set only on
 * INSERT. `xmax = 0` is true only for a freshly inserted tuple: the ON CONFLICT UPDATE path
 * stamps xmax with our transaction id.
 *
 * `period` names the row's period by the flush that inserted it (first_writer_id and
 * first_sequence, which an UPDATE never changes). A tracker that shares its replica id with
 * another one sees it change when the other one's flush started a new period after a cutover,
 * although its own flush only UPDATEd: that is its first flush of the new period too.
 */
function flushBody(
  tables: SchemaTables,
  params: FlushStatementParams,
  gate: Prisma.Sql,
): Prisma.Sql {
  const t = tables.sql;
  const replicaId = params.replicaId;
  const writerId = params.writerId ?? NIL_WRITER_ID;
  const withSequence = params.sequence !== undefined;
  const sequenceStep = withSequence
    ? Prisma.sql`sequence AS (
          INSERT INTO ${t.boundary_usage_flush_sequences} AS s (replica_id, writer_id, last_sequence, updated_at)
          SELECT ${replicaId}::uuid, ${writerId}::uuid, ${params.sequence}::bigint, now() FROM ${gate}
          ON CONFLICT (replica_id, writer_id) DO UPDATE
            SET last_sequence = EXCLUDED.last_sequence, updated_at = EXCLUDED.updated_at
            WHERE s.last_sequence < EXCLUDED.last_sequence
          RETURNING s.last_sequence AS number
        )`
    : Prisma.sql`sequence AS (SELECT NULL::bigint AS number FROM ${gate})`;
  const firstWriter = withSequence ? Prisma.sql`${writerId}::uuid` : Prisma.sql`NULL::uuid`;
  const period =
    params.writerId === undefined
      ? Prisma.sql`NULL::text`
      : Prisma.sql`b.first_writer_id::text || '/' || b.first_sequence`;
  const idsStep =
    params.workspaceIds.length === 0 && params.userIds.length === 0
      ? Prisma.empty
      : Prisma.sql`ids AS (
      INSERT INTO ${t.boundary_usage_ids} (kind, id)
      SELECT kind, id FROM (
        SELECT 'workspace' AS kind, w AS id FROM unnest(${params.workspaceIds as string[]}::uuid[]) AS w
        UNION ALL
        SELECT 'user', u FROM unnest(${params.userIds as string[]}::uuid[]) AS u
      ) carried
       WHERE EXISTS (SELECT 1 FROM sequence)
       ORDER BY kind, id
      ON CONFLICT DO NOTHING
    ),`;
  return Prisma.sql`${sequenceStep},
    ${idsStep}
    stats AS (
      INSERT INTO ${t.boundary_usage_stats} AS b (
        replica_id, unique_workspaces_count, unique_users_count,
        allowed_requests, denied_requests, window_start, updated_at, first_sequence, first_writer_id)
      SELECT ${replicaId}::uuid, ${params.uniqueWorkspacesDelta}::bigint,
             ${params.uniqueUsersDelta}::bigint, ${params.allowedRequests}::bigint,
             ${params.deniedRequests}::bigint, now(), now(), sequence.number, ${firstWriter}
        FROM sequence
      ON CONFLICT (replica_id) DO UPDATE SET
        unique_workspaces_count = ${params.uniqueWorkspacesCount}::bigint,
        unique_users_count = ${params.uniqueUsersCount}::bigint,
        allowed_requests = b.allowed_requests + EXCLUDED.allowed_requests,
        denied_requests = b.denied_requests + EXCLUDED.denied_requests,
        updated_at = EXCLUDED.updated_at
      RETURNING (xmax = 0) AS new_period, ${period} AS period
    )
    SELECT EXISTS (SELECT 1 FROM sequence) AS applied, (SELECT new_period FROM stats) AS new_period,
      (SELECT period FROM stats) AS period`;
}

export interface NotAppliedRow {
  /** The writer's stored last_sequence now (NULL when retention deleted its row meanwhile). */
  stored_sequence: bigint | null;
  /** Whether the row now there was inserted by this writer's flush with this sequence. */
  inserted_by_sequence: boolean;
}

/**
 * What the database holds for a flush that was NOT applied (its sequence was not above the
 * writer's stored one): the stored sequence, so a first send can continue above it, and
 * whether the applied copy of a resent batch inserted the replica's row (started the period).
 *
 * A separate statement, after the flush statement has finished, on purpose (issue 11, item 5):
 * the flush statement's snapshot is taken before it waits (for the writer lock, and for the
 * sequence row an overlapping original of the same batch holds until it commits), so when a
 * retry overlapped its original across a cutover, a read inside that statement saw the old
 * period's row and answered "did not start the period" although the original had just
 * inserted the new row. This statement starts after both committed, so it sees the new row.
 *
 * No lock: it only reads. A cutover that deletes the row in between makes it answer false,
 * which is harmless: the period the original started has then been reported, and the
 * tracker's next flush INSERTs and restarts its period sets itself.
 */
export function readNotApplied(tables: SchemaTables, params: FlushStatementParams): Prisma.Sql {
  const t = tables.sql;
  return Prisma.sql`SELECT
    (SELECT last_sequence FROM ${t.boundary_usage_flush_sequences}
      WHERE replica_id = ${params.replicaId}::uuid AND writer_id = ${params.writerId ?? NIL_WRITER_ID}::uuid)
      AS stored_sequence,
    EXISTS (SELECT 1 FROM ${t.boundary_usage_stats}
      WHERE replica_id = ${params.replicaId}::uuid
        AND first_writer_id = ${params.writerId ?? NIL_WRITER_ID}::uuid
        AND first_sequence = ${params.sequence ?? null}::bigint) AS inserted_by_sequence`;
}

/** The flush for an interactive transaction that already holds the writer lock. */
export function flushAfterLock(tables: SchemaTables, params: FlushStatementParams): Prisma.Sql {
  return Prisma.sql`WITH gate AS (SELECT 1), ${flushBody(tables, params, Prisma.sql`gate`)}`;
}

/**
 * The flush as ONE statement that sets lock_timeout, takes the writer lock and writes. Sent
 * as a one-query batch `$transaction([…])`, which Prisma runs as a single autocommit statement
 * (no BEGIN/COMMIT on the wire; the ambiguous-commit test watches the protocol): the
 * statement is its own transaction, so the transaction-scoped lock and the transaction-local
 * lock_timeout last exactly as long as the write. One round trip instead of the interactive
 * form's five, and none of Prisma's interactive-transaction bookkeeping.
 *
 * Ordering, which the store's tests prove against a real server: `config` and `lock` are
 * MATERIALIZED, so each runs once, in dependency order, when first read; `lock` reads
 * `config`, so lock_timeout is in force before the lock wait starts; every write reads from
 * `lock` (directly or through `sequence`), so none can happen before the lock is granted.
 * The statement's snapshot predates the lock wait, which is harmless here: INSERT … ON
 * CONFLICT DO UPDATE checks and locks the latest committed row version, not the snapshot's,
 * so a row a cutover deleted while we waited is seen as gone and we INSERT (a new period). *
 * What the statement cannot bound itself: its table locks (RowExclusive on the three tables)
 * are taken at parse/bind, before `config` runs, and its isolation level is whatever the
 * session's is. The store sends it this way only when the connection's session settings
 * (createPrismaClient on a direct connection) already cover both: a session lock_timeout and
 * read committed. Otherwise it sends takeWriterLock() and flushAfterLock() in a transaction.
 */
export function flushWithLock(
  tables: SchemaTables,
  params: FlushStatementParams,
  mode: LockMode,
  lockTimeoutMs: number,
): Prisma.Sql {
  return flushWithLockSql(tables, params, mode, `${lockTimeoutMs}ms`);
}

/** {@link flushWithLock} with the lock_timeout setting's value as given (a slot, see below). */
function flushWithLockSql(
  tables: SchemaTables,
  params: FlushStatementParams,
  mode: LockMode,
  lockTimeout: unknown,
): Prisma.Sql {
  const lockCall =
    mode === 'shared'
      ? Prisma.sql`pg_advisory_xact_lock_shared(${lockKey}::bigint)`
      : Prisma.sql`pg_advisory_xact_lock(${lockKey}::bigint)`;
  return Prisma.sql`WITH
    config AS MATERIALIZED (SELECT set_config('lock_timeout', ${lockTimeout}, true) AS v),
    lock AS MATERIALIZED (SELECT ${lockCall} IS NULL AS granted FROM config),
    ${flushBody(tables, params, Prisma.sql`lock`)}`;
}

/**
 * A statement as its text and its bound values, for `$queryRawUnsafe(text, ...values)`. The
 * text holds only `$n` placeholders: every value is still a bound parameter. bigints are
 * bound as their decimal text (see `asBound`).
 */
export interface BoundStatement {
  text: string;
  values: unknown[];
}

/**
 * {@link flushWithLock} (`gate: 'lock'`) or {@link flushAfterLock} (`gate: 'after'`), the
 * same text and values, with the text built once per shape instead of on every flush.
 *
 * Why (issue 13): composing the nested `Prisma.sql` fragments, and then hashing and comparing
 * a new 2 kB string for its prepared statement's name, cost Node CPU on every flush, and the
 * flush is the library's hot path. The text depends only on the shape (lock mode, whether the
 * flush carries a sequence, a writer id, ids, and its gate); the values on the call.
 *
 * Built from the very templates above, fed slots instead of values: the composed statement's
 * values are then the slots, in placeholder order, and each call replaces the slots by its own
 * values. The flush-statement test checks text and values against the composed statement for
 * every shape.
 */
export function flushStatement(
  tables: SchemaTables,
  params: FlushStatementParams,
  gate: 'lock' | 'after',
  mode: LockMode,
  lockTimeoutMs: number,
): BoundStatement {
  const hasIds = params.workspaceIds.length > 0 || params.userIds.length > 0;
  const key = `${tables.schema}/${gate}/${mode}/${params.sequence !== undefined}/${params.writerId !== undefined}/${hasIds}`;
  let template = flushTemplates.get(key);
  if (template === undefined) {
    template = buildFlushTemplate(tables, params, gate, mode, hasIds);
    flushTemplates.set(key, template);
  }
  const values = new Array<unknown>(template.values.length);
  for (let i = 0; i < values.length; i++) {
    const value = template.values[i];
    values[i] = value instanceof FlushSlot ? asBound(value.read(params, lockTimeoutMs)) : value;
  }
  return { text: template.text, values };
}

/**
 * A bigint as its decimal text, which is exactly what Prisma hands the driver for a bigint
 * (it serialises raw parameters to JSON as `{ prisma__type: 'bigint', prisma__value }` and
 * parses them back to that text): the same bytes on the wire, `$n::bigint` in the SQL casts
 * as before, without the round trip's objects on every flush.
 */
function asBound(value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** A placeholder for one of a flush's values, while its template is built. */
class FlushSlot {
  constructor(readonly name: keyof FlushStatementParams | 'lockTimeout') {}

  read(params: FlushStatementParams, lockTimeoutMs: number): unknown {
    return this.name === 'lockTimeout' ? `${lockTimeoutMs}ms` : params[this.name];
  }
}

/** Values a flush template may hold as they are: constants of this file, never a caller's. */
const TEMPLATE_CONSTANTS: ReadonlySet<unknown> = new Set([lockKey, NIL_WRITER_ID]);

/** At most 2 gates × 2 modes × 2 × 2 × 2 shapes per schema (normally one schema). */
const flushTemplates = new Map<string, BoundStatement>();

function buildFlushTemplate(
  tables: SchemaTables,
  params: FlushStatementParams,
  gate: 'lock' | 'after',
  mode: LockMode,
  hasIds: boolean,
): BoundStatement {
  // Array slots are arrays so that flushBody's emptiness test sees the shape; one element
  // each, so a flush with ids of only one kind still gets the ids step.
  const arraySlot = (name: 'workspaceIds' | 'userIds'): string[] =>
    hasIds ? (Object.assign([''], { slot: new FlushSlot(name) }) as string[]) : [];
  const slot = <T>(name: keyof FlushStatementParams): T => new FlushSlot(name) as unknown as T;
  const slots: FlushStatementParams = {
    replicaId: slot('replicaId'),
    writerId: params.writerId === undefined ? undefined : slot('writerId'),
    sequence: params.sequence === undefined ? undefined : slot('sequence'),
    uniqueWorkspacesDelta: slot('uniqueWorkspacesDelta'),
    uniqueUsersDelta: slot('uniqueUsersDelta'),
    uniqueWorkspacesCount: slot('uniqueWorkspacesCount'),
    uniqueUsersCount: slot('uniqueUsersCount'),
    allowedRequests: slot('allowedRequests'),
    deniedRequests: slot('deniedRequests'),
    workspaceIds: arraySlot('workspaceIds'),
    userIds: arraySlot('userIds'),
  };
  const composed =
    gate === 'lock'
      ? flushWithLockSql(tables, slots, mode, new FlushSlot('lockTimeout'))
      : flushAfterLock(tables, slots);
  const values = composed.values.map((value) => {
    const slotOfArray = Array.isArray(value) ? (value as { slot?: unknown }).slot : undefined;
    if (slotOfArray instanceof FlushSlot) return slotOfArray;
    if (value instanceof FlushSlot) return value;
    if (TEMPLATE_CONSTANTS.has(value)) return asBound(value);
    // A value derived from a slot ("[object Object]…") would be sent as it is, on every call.
    throw new Error(`flush template: value ${String(value)} is neither a slot nor a constant`);
  });
  return { text: composed.text, values };
}

export interface CutoverRow {
  unique_workspaces: bigint;
  unique_users: bigint;
  unique_workspaces_replica_sum: string;
  unique_users_replica_sum: string;
  allowed_requests: string;
  denied_requests: string;
  replicas: bigint;
  window_start: Date | null;
  window_end: Date | null;
  stale_replicas: bigint;
  stale_unique_workspaces_replica_sum: string;
  stale_unique_users_replica_sum: string;
  stale_allowed_requests: string;
  stale_denied_requests: string;
}

/**
 * The cutover: deletes every stats row and every id row and sums exactly what it deleted
 * (coder #21770: a separate read and reset lose the flushes landing between them). Must run
 * under the EXCLUSIVE boundary-usage lock, taken by an earlier statement of the same
 * transaction, so the DELETE's snapshot already includes every flush that committed before
 * the lock was granted and none can commit until we do.
 *
 * Rows whose window started before now() − maxStaleness (a replica whose data sat through
 * failed collections) are deleted but not counted; their totals are reported separately.
 * Sums are aggregated as numeric and returned as text: int8 rows can add up past 2^63 − 1,
 * and a `::bigint` cast would then fail every cutover forever (a poison row). Always returns
 * exactly one row; an empty table gives zeros.
 */
export function getAndResetSummary(tables: SchemaTables, maxStalenessMs: number): Prisma.Sql {
  const t = tables.sql;
  return Prisma.sql`WITH
    deleted AS (DELETE FROM ${t.boundary_usage_stats} RETURNING *),
    deleted_ids AS (DELETE FROM ${t.boundary_usage_ids} RETURNING kind),
    marked AS (
      SELECT d.*, d.window_start >= now() - ${maxStalenessMs}::bigint * interval '1 millisecond' AS fresh
        FROM deleted d
    )
    SELECT
      (SELECT count(*) FROM deleted_ids WHERE kind = 'workspace') AS unique_workspaces,
      (SELECT count(*) FROM deleted_ids WHERE kind = 'user') AS unique_users,
      COALESCE(sum(unique_workspaces_count) FILTER (WHERE fresh), 0)::text AS unique_workspaces_replica_sum,
      COALESCE(sum(unique_users_count) FILTER (WHERE fresh), 0)::text AS unique_users_replica_sum,
      COALESCE(sum(allowed_requests) FILTER (WHERE fresh), 0)::text AS allowed_requests,
      COALESCE(sum(denied_requests) FILTER (WHERE fresh), 0)::text AS denied_requests,
      count(*) FILTER (WHERE fresh) AS replicas,
      min(window_start) FILTER (WHERE fresh) AS window_start,
      max(updated_at) FILTER (WHERE fresh) AS window_end,
      count(*) FILTER (WHERE NOT fresh) AS stale_replicas,
      COALESCE(sum(unique_workspaces_count) FILTER (WHERE NOT fresh), 0)::text AS stale_unique_workspaces_replica_sum,
      COALESCE(sum(unique_users_count) FILTER (WHERE NOT fresh), 0)::text AS stale_unique_users_replica_sum,
      COALESCE(sum(allowed_requests) FILTER (WHERE NOT fresh), 0)::text AS stale_allowed_requests,
      COALESCE(sum(denied_requests) FILTER (WHERE NOT fresh), 0)::text AS stale_denied_requests
    FROM marked`;
}
