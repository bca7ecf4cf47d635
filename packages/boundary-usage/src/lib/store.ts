import {
  connectionProfile,
  DEFAULT_TRANSACTION_MAX_WAIT_MS,
  Prisma,
  schemaTables,
  toDatabaseError,
  usagekitSchemaOf,
  validateSchemaName,
  type PrismaClient,
  type SchemaTables,
} from '@usagekit/db';
import * as sql from './sql.js';
import { summaryFromRow, type BoundaryUsageSummary } from './summary.js';
import {
  assertCount,
  assertPositiveMs,
  assertUuid,
  canonicalUuid,
  InvalidInputError,
  INT8_MAX,
} from './validation.js';

export type { LockMode } from './sql.js';

export interface StoreOptions {
  /**
   * 'shared' (default): writers share the lock and only the cutover is exclusive.
   * 'exclusive': every writer takes the lock exclusively, as coder does; for comparison.
   */
  lockMode?: sql.LockMode;
  /** How long a statement may wait for the advisory lock before failing with 55P03. */
  lockTimeoutMs?: number;
  /** Prisma's limit for a whole transaction; must exceed lockTimeoutMs. */
  transactionTimeoutMs?: number;
  /**
   * idle_in_transaction_session_timeout, set locally in every transaction that takes the lock:
   * if this process vanishes (a silent network) while holding it, the server ends the session
   * and releases the lock after this long. Default 10 s.
   */
  idleInTransactionTimeoutMs?: number;
  /** How long to wait for a pooled connection to start a transaction. */
  maxWaitMs?: number;
  /**
   * How a flush talks to PostgreSQL:
   * - 'single-statement' (default): a batched `$transaction([…])` whose one statement sets
   *   lock_timeout, takes the lock and writes (Prisma sends a one-query batch as a single
   *   autocommit statement: one round trip). Used as such only where the connection's session
   *   settings bound its table locks and pin read committed (createPrismaClient on a direct
   *   connection, see `connectionProfile`); elsewhere (PgBouncer, a client of your own) the
   *   same flush runs as a two-statement batch in a read-committed transaction whose first
   *   statement sets the timeouts and takes the lock;
   * - 'interactive': `$transaction(async tx => …)` with the lock and the write as separate
   *   statements (the textbook form; slower, kept for comparison and as a fallback).
   */
  flushMode?: 'single-statement' | 'interactive';
  /**
   * The PostgreSQL schema of usagekit's tables (the one migrate() was given). Default: the
   * `schema` of the createPrismaClient that made `prisma`, or `usagekit` for a PrismaClient
   * of your own. Every statement names its tables qualified by it.
   */
  schema?: string;
}

export const DEFAULT_STORE_OPTIONS = {
  lockMode: 'shared',
  lockTimeoutMs: 2_000,
  transactionTimeoutMs: 5_000,
  idleInTransactionTimeoutMs: 10_000,
  maxWaitMs: DEFAULT_TRANSACTION_MAX_WAIT_MS,
  flushMode: 'single-statement',
} as const satisfies Required<Omit<StoreOptions, 'schema'>>;

export interface UpsertStatsParams {
  replicaId: string;
  /** Used when the upsert INSERTs (the first flush of a period). */
  uniqueWorkspacesDelta: number | bigint;
  uniqueUsersDelta: number | bigint;
  /** Used when it UPDATEs: the replica's cumulative distinct counts for the period. */
  uniqueWorkspacesCount: number | bigint;
  uniqueUsersCount: number | bigint;
  /** Always deltas, added in the database. */
  allowedRequests: number | bigint;
  deniedRequests: number | bigint;
  /** Ids seen since the last successful flush, for the exact cross-replica distinct counts. */
  workspaceIds?: readonly string[];
  userIds?: readonly string[];
  /**
   * The flush's sequence number for this replica and writer. When given, a flush whose
   * sequence is not above the writer's last applied one is skipped (`applied: false`): a
   * retry after an ambiguous commit can never count twice.
   */
  sequence?: bigint;
  /**
   * Who flushes: a uuid per tracker instance (BoundaryUsageTracker.writerId). Sequences are
   * kept per (replica, writer), so two processes sharing a replica id both count. Default: the
   * nil uuid, one writer per replica (only for callers that manage sequences themselves).
   */
  writerId?: string;
}

export { NIL_WRITER_ID } from './sql.js';

export interface UpsertStatsResult {
  /**
   * True when this flush inserted the replica's row: the first flush of a new period. For a
   * duplicate, true when the earlier, applied copy did (and the row is still there).
   */
  newPeriod: boolean;
  /**
   * False when the writer's stored sequence was not below `sequence` (nothing written): the
   * batch was applied before (a retry after an ambiguous commit), or the stored sequence is
   * ahead of this writer (see `storedSequence`).
   */
  applied: boolean;
  /**
   * Only when not applied: the writer's last applied sequence, read after the flush (0n when
   * the writer has no row any more). A batch's first send that is not applied must continue
   * above it instead of being taken as a duplicate.
   */
  storedSequence?: bigint;
  /**
   * Only when applied and `writerId` was given: which flush inserted the replica's row, as
   * "writerId/sequence" (undefined when that flush carried no sequence). It changes exactly when a new period's
   * row was inserted, also by another writer with the same replica id.
   */
  period?: string;
}

/**
 * The boundary_usage_stats table, its ids and the advisory-lock protocol around them. All SQL
 * lives in ./sql.ts; this class validates input, chooses the transaction shape and turns
 * database errors into typed ones.
 */
export class BoundaryUsageStore {
  readonly options: Readonly<Required<StoreOptions>>;
  readonly #tables: SchemaTables;

  constructor(
    private readonly prisma: PrismaClient,
    options: StoreOptions = {},
  ) {
    const merged: Required<StoreOptions> = {
      ...DEFAULT_STORE_OPTIONS,
      schema: usagekitSchemaOf(prisma),
      ...definedOnly(options),
    };
    merged.schema = validateSchemaName(merged.schema);
    this.#tables = schemaTables(merged.schema);
    if (merged.lockMode !== 'shared' && merged.lockMode !== 'exclusive') {
      throw new InvalidInputError('lockMode', merged.lockMode, "'shared' or 'exclusive'");
    }
    if (merged.flushMode !== 'single-statement' && merged.flushMode !== 'interactive') {
      throw new InvalidInputError(
        'flushMode',
        merged.flushMode,
        "'single-statement' or 'interactive'",
      );
    }
    assertPositiveMs('lockTimeoutMs', merged.lockTimeoutMs);
    assertPositiveMs('transactionTimeoutMs', merged.transactionTimeoutMs);
    assertPositiveMs('idleInTransactionTimeoutMs', merged.idleInTransactionTimeoutMs);
    assertPositiveMs('maxWaitMs', merged.maxWaitMs);
    if (merged.lockTimeoutMs >= merged.transactionTimeoutMs) {
      throw new InvalidInputError(
        'lockTimeoutMs',
        merged.lockTimeoutMs,
        `less than transactionTimeoutMs (${merged.transactionTimeoutMs}), so a lock wait ends before the transaction timer`,
      );
    }
    this.options = Object.freeze(merged);
  }

  /** Adds one flush to the replica's row, under the writer lock. */
  async upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
    const statementParams = validateUpsert(params);
    const { lockMode, lockTimeoutMs, flushMode } = this.options;
    let result: UpsertStatsResult;
    try {
      if (flushMode === 'interactive') {
        result = await this.prisma.$transaction(
          (tx) => this.flushInTransaction(tx, statementParams),
          this.transactionOptions(),
        );
      } else if (await this.sessionBoundsStatements()) {
        // One statement, one round trip: the session's lock_timeout covers the table locks it
        // takes at parse/bind and its isolation is read committed; its own set_config then
        // sets the precise lock_timeout for the advisory lock.
        // The statement's text is built once per shape, its values bound per call (sql.ts
        // flushStatement says why).
        const flush = sql.flushStatement(
          this.#tables,
          statementParams,
          'lock',
          lockMode,
          lockTimeoutMs,
        );
        const [rows] = await this.prisma.$transaction([
          this.prisma.$queryRawUnsafe<sql.FlushStatementRow[]>(flush.text, ...flush.values),
        ]);
        result = resultFromRow(rows[0]);
      } else {
        // No session settings to rely on (a pooler, a client of your own): pin read committed
        // and set the timeouts and take the lock before any statement touches a table.
        const flush = sql.flushStatement(
          this.#tables,
          statementParams,
          'after',
          lockMode,
          lockTimeoutMs,
        );
        const [, rows] = await this.prisma.$transaction(
          [
            this.prisma.$executeRaw(sql.takeWriterLock(lockMode, this.lockTimeouts())),
            this.prisma.$queryRawUnsafe<sql.FlushStatementRow[]>(flush.text, ...flush.values),
          ],
          { isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted },
        );
        result = resultFromRow(rows[0]);
      }
      // Not applied: what the database holds is read by a statement of its own (item 5).
      return result.applied
        ? result
        : await readNotApplied(this.prisma, this.#tables, statementParams);
    } catch (error) {
      throw toDatabaseError(error);
    }
  }

  /**
   * The flush inside a transaction the caller owns (interactive form): sets lock_timeout,
   * takes the writer lock, writes. The caller's other statements in the same transaction then
   * run under the writer lock too, e.g. to record which period a flush landed in.
   */
  async upsertStatsInTransaction(
    tx: Prisma.TransactionClient,
    params: UpsertStatsParams,
  ): Promise<UpsertStatsResult> {
    const statementParams = validateUpsert(params);
    const result = await this.flushInTransaction(tx, statementParams);
    return result.applied ? result : readNotApplied(tx, this.#tables, statementParams);
  }

  private async flushInTransaction(
    tx: Prisma.TransactionClient,
    params: sql.FlushStatementParams,
  ): Promise<UpsertStatsResult> {
    await tx.$executeRaw(sql.takeWriterLock(this.options.lockMode, this.lockTimeouts()));
    const { lockMode, lockTimeoutMs } = this.options;
    const flush = sql.flushStatement(this.#tables, params, 'after', lockMode, lockTimeoutMs);
    const rows = await tx.$queryRawUnsafe<sql.FlushStatementRow[]>(flush.text, ...flush.values);
    return resultFromRow(rows[0]);
  }

  /**
   * Atomically reads and deletes every replica's row (and the period's ids) under the
   * exclusive lock, and returns what it deleted. Rows whose window started more than
   * `maxStalenessMs` ago are deleted but reported apart, not counted.
   */
  async getAndResetSummary(params: { maxStalenessMs: number }): Promise<BoundaryUsageSummary> {
    const maxStalenessMs = assertPositiveMs('maxStalenessMs', params?.maxStalenessMs);
    try {
      return await this.prisma.$transaction(
        (tx) => this.getAndResetSummaryInTransaction(tx, { maxStalenessMs }),
        this.transactionOptions(),
      );
    } catch (error) {
      throw toDatabaseError(error);
    }
  }

  /**
   * The cutover inside a transaction the caller owns, so it can commit together with other
   * writes (the telemetry reporter claims the period and writes its outbox row in the same
   * transaction). Takes the exclusive lock first.
   */
  async getAndResetSummaryInTransaction(
    tx: Prisma.TransactionClient,
    params: { maxStalenessMs: number },
  ): Promise<BoundaryUsageSummary> {
    const maxStalenessMs = assertPositiveMs('maxStalenessMs', params?.maxStalenessMs);
    // The timeouts come from here, not from the caller: the telemetry reporter runs this
    // inside its own transaction.
    await tx.$executeRaw(sql.takeCutoverLock(this.lockTimeouts()));
    const rows = await tx.$queryRaw<sql.CutoverRow[]>(
      sql.getAndResetSummary(this.#tables, maxStalenessMs),
    );
    return summaryFromRow(rows[0]);
  }

  /**
   * Every interactive transaction pins read committed: the database default may be repeatable
   * read or serializable, under which a cutover that waited behind a flush fails with 40001.
   */
  private transactionOptions(): {
    maxWait: number;
    timeout: number;
    isolationLevel: Prisma.TransactionIsolationLevel;
  } {
    return {
      maxWait: this.options.maxWaitMs,
      timeout: this.options.transactionTimeoutMs,
      isolationLevel: Prisma.TransactionIsolationLevel.ReadCommitted,
    };
  }

  private lockTimeouts(): sql.LockTimeouts {
    return {
      lockTimeoutMs: this.options.lockTimeoutMs,
      idleInTransactionTimeoutMs: this.options.idleInTransactionTimeoutMs,
    };
  }

  #sessionBounds: Promise<boolean> | undefined;

  /**
   * Whether every session of our client starts with a lock_timeout and read committed
   * (createPrismaClient on a direct connection). Asked once per store; a failed probe (the
   * server unreachable) is asked again next time.
   */
  private sessionBoundsStatements(): Promise<boolean> {
    const known =
      this.#sessionBounds ??
      connectionProfile(this.prisma).then(
        (profile) => profile.sessionSettings,
        (error: unknown) => {
          this.#sessionBounds = undefined;
          throw error;
        },
      );
    this.#sessionBounds = known;
    return known;
  }
}

/** An applied flush's answer; a flush not applied is answered by {@link readNotApplied}. */
function resultFromRow(row: sql.FlushStatementRow | undefined): UpsertStatsResult {
  if (!row) throw new Error('upsertStats: the flush statement returned no row');
  if (!row.applied) return { applied: false, newPeriod: false };
  const result: UpsertStatsResult = { applied: true, newPeriod: row.new_period === true };
  if (row.period !== null) result.period = row.period;
  return result;
}

/**
 * A flush that was not applied: reads, in a statement of its own (sql.ts readNotApplied says
 * why it must not be the flush's), the writer's stored sequence and whether the applied copy
 * of this batch inserted the replica's row. A duplicate then reports newPeriod when its
 * earlier copy started the period, so a tracker that never heard back still restarts its
 * period sets.
 */
async function readNotApplied(
  client: Pick<PrismaClient, '$queryRaw'>,
  tables: SchemaTables,
  params: sql.FlushStatementParams,
): Promise<UpsertStatsResult> {
  const [row] = await client.$queryRaw<sql.NotAppliedRow[]>(sql.readNotApplied(tables, params));
  return {
    applied: false,
    newPeriod: row?.inserted_by_sequence === true,
    storedSequence: row?.stored_sequence ?? 0n,
  };
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(options ?? {}).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

function validateUpsert(params: UpsertStatsParams): sql.FlushStatementParams {
  if (typeof params !== 'object' || params === null) {
    throw new InvalidInputError('params', params, 'an object');
  }
  const workspaceIds = params.workspaceIds ?? [];
  const userIds = params.userIds ?? [];
  if (!Array.isArray(workspaceIds))
    throw new InvalidInputError('workspaceIds', workspaceIds, 'an array of uuids');
  if (!Array.isArray(userIds)) throw new InvalidInputError('userIds', userIds, 'an array of uuids');
  workspaceIds.forEach((id, index) => assertUuid(`workspaceIds[${index}]`, id));
  userIds.forEach((id, index) => assertUuid(`userIds[${index}]`, id));
  let sequence: bigint | undefined;
  if (params.sequence !== undefined) {
    if (
      typeof params.sequence !== 'bigint' ||
      params.sequence <= 0n ||
      params.sequence > INT8_MAX
    ) {
      throw new InvalidInputError('sequence', params.sequence, 'a positive bigint that fits int8');
    }
    sequence = params.sequence;
  }
  const writerId =
    params.writerId === undefined ? undefined : canonicalUuid('writerId', params.writerId);
  return {
    replicaId: assertUuid('replicaId', params.replicaId),
    writerId,
    sequence,
    uniqueWorkspacesDelta: assertCount('uniqueWorkspacesDelta', params.uniqueWorkspacesDelta),
    uniqueUsersDelta: assertCount('uniqueUsersDelta', params.uniqueUsersDelta),
    uniqueWorkspacesCount: assertCount('uniqueWorkspacesCount', params.uniqueWorkspacesCount),
    uniqueUsersCount: assertCount('uniqueUsersCount', params.uniqueUsersCount),
    allowedRequests: assertCount('allowedRequests', params.allowedRequests),
    deniedRequests: assertCount('deniedRequests', params.deniedRequests),
    workspaceIds,
    userIds,
  };
}
