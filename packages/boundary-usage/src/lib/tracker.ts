import { randomUUID } from 'node:crypto';
import { DatabaseError, Deadline, noopLogger, toDatabaseError, type Logger } from '@usagekit/db';
import { jsonInteger } from './json-integer.js';
import type { BoundaryUsageStore, UpsertStatsResult } from './store.js';
import { InvalidInputError, assertPositiveMs, canonicalUuid, INT8_MAX } from './validation.js';

export interface TrackerOptions {
  /**
   * The first flush sequence of this tracker; default 1. Sequences are per writer id, which is
   * new for every tracker, so they need not encode time (a clock that steps back cannot hurt).
   */
  firstSequence?: bigint;
  /**
   * Upper bound on one flush() call, resent batch and sequence recoveries included. On expiry
   * the call rejects with DeadlineExceededError (code DEADLINE_EXCEEDED, retryable); the batch
   * stays unconfirmed and is resent with the same sequence, so the abandoned call may still
   * land without counting twice. Default 25 s: above @usagekit/db's 15 s statement deadline,
   * so that one answers first when it exists, and this one holds when it does not.
   */
  flushDeadlineMs?: number;
  /** Where sequence recoveries are reported (a warning each). */
  logger?: Logger;
}

export const DEFAULT_TRACKER_OPTIONS = {
  firstSequence: 1n,
  flushDeadlineMs: 25_000,
} as const;

/** Resequencing attempts per batch before the flush fails with SequenceConflictError. */
const MAX_SEQUENCE_RECOVERIES = 3;

/**
 * A batch's first send kept finding the writer's stored sequence ahead of it, even after
 * continuing above it: something else writes with this tracker's writer id. Nothing was
 * written; the batch stays in the tracker.
 */
export class SequenceConflictError extends Error {
  override readonly name = 'SequenceConflictError';
  readonly code = 'SEQUENCE_CONFLICT';
  readonly retryable = true;
  constructor(
    readonly replicaId: string,
    readonly writerId: string,
    readonly storedSequence: bigint,
  ) {
    super(
      `Flush of replica ${replicaId} (writer ${writerId}) found the stored sequence ${storedSequence} ahead of it ${MAX_SEQUENCE_RECOVERIES + 1} times in a row; another process is writing with the same writer id.`,
    );
  }
}

/**
 * Errors after which the batch certainly did not commit: the statement failed (and with it its
 * autocommit transaction, or the interactive transaction was rolled back) before any COMMIT
 * could take effect. Any other failure (a lost connection, a deadline, an unknown error) may
 * have come after PostgreSQL committed.
 */
const NOT_COMMITTED = new Set([
  'LOCK_TIMEOUT',
  'DEADLOCK',
  'SERIALIZATION_FAILURE',
  'STATEMENT_TIMEOUT',
  'NUMERIC_OVERFLOW',
  'PERMISSION_DENIED',
  'INVALID_INPUT',
]);

/**
 * What `pending()` returns. Counters are bigints; `JSON.stringify` uses its `toJSON`, which
 * writes each as a number when it is a safe integer and as a decimal string above 2^53 − 1
 * (the rule of @usagekit/telemetry's `jsonInteger`), so logging it never throws.
 */
export interface PendingUsage {
  allowedRequests: bigint;
  deniedRequests: bigint;
  /** A batch was sent with an unknown outcome and waits to be resent. */
  unconfirmedBatch: boolean;
  toJSON(): Record<string, number | string | boolean>;
}

/** What `confirmed()` returns; JSON as for {@link PendingUsage}. */
export interface ConfirmedUsage {
  allowedRequests: bigint;
  deniedRequests: bigint;
  batches: number;
  duplicates: number;
  toJSON(): Record<string, number | string | boolean>;
}

/** Adds a non-enumerable toJSON that writes bigints as numbers, or decimal strings past 2^53. */
export function withJson<T extends object>(
  value: T,
): T & { toJSON(): Record<string, number | string | boolean> } {
  Object.defineProperty(value, 'toJSON', {
    enumerable: false,
    value: () =>
      Object.fromEntries(
        Object.entries(value).map(([key, field]) => [key, jsonSafe(field)]),
      ) as Record<string, number | string | boolean>,
  });
  return value as T & { toJSON(): Record<string, number | string | boolean> };
}

function jsonSafe(field: unknown): number | string | boolean {
  return typeof field === 'bigint' ? jsonInteger(field) : (field as number | string | boolean);
}

/** What one flush() did. */
export interface FlushResult {
  /** Whether the database was called (false: nothing new since the last successful flush). */
  flushed: boolean;
  /** Whether a flush of this call started a new period (inserted the replica's row). */
  newPeriod: boolean;
  /** Requests now known to be in the database from this call (batches applied or found applied). */
  allowedRequests: bigint;
  deniedRequests: bigint;
  /** Distinct workspace / user ids carried by this call's batches. */
  workspaceIds: number;
  userIds: number;
  /** Batches sent by this call: a batch retried after an earlier failure, then the new one. */
  batches: number;
  /** Batches the database had already applied (a retry after an ambiguous commit). */
  duplicates: number;
  /** Times a batch found the writer's stored sequence ahead and was resequenced and resent. */
  sequenceRecoveries: number;
}

/** One flush's payload. Kept unchanged, with its sequence, until the database has it. */
interface Batch {
  /**
   * The replica id the batch was first sent under. A resend always goes under it: sequences
   * are per (replica id, writer id), so the same batch under another replica id would be a new
   * row with a fresh sequence, and a first send that did commit would count twice (issue 20).
   */
  replicaId: string | undefined;
  sequence: bigint;
  /**
   * Whether an earlier send may have committed (it failed with an unknown outcome). Only then
   * may "not applied" mean "already applied"; a batch no send of which can have landed that
   * finds the stored sequence ahead is resequenced instead.
   */
  mayHaveLanded: boolean;
  epoch: number;
  workspaceIds: string[];
  userIds: string[];
  uniqueWorkspacesCount: number;
  uniqueUsersCount: number;
  allowedRequests: bigint;
  deniedRequests: bigint;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/**
 * Counts boundary usage in memory and flushes it to the replica's row.
 *
 * Semantics (DESIGN.md, "Tracker"): unique counts are cumulative over the whole period for
 * this replica; usage tracked while a flush is in flight goes to the next flush; no activity
 * means no database call; a failed flush keeps its batch, which is sent again, unchanged and
 * with the same sequence number, before anything newer, so an ambiguous commit can neither
 * lose it nor count it twice.
 *
 * Memory: per distinct id of the period, one Map entry (id → the flush epoch it was last
 * seen in) plus, until the next flush, one array slot. The epoch tells `track()` whether the
 * id was already noted since the last flush, with a single Map lookup on the hot path.
 */
export class BoundaryUsageTracker {
  private workspaces = new Map<string, number>();
  private users = new Map<string, number>();
  /** Ids seen (first time in the current epoch) since the last batch was cut. */
  private workspacesSinceFlush: string[] = [];
  private usersSinceFlush: string[] = [];
  private epoch = 0;
  private allowed = 0;
  private denied = 0;
  /** Overflow of the number accumulators past 2^53, kept exactly. */
  private allowedOverflow = 0n;
  private deniedOverflow = 0n;
  private active = false;
  /** A batch the database may or may not have; resent before anything newer. */
  private unconfirmed: Batch | undefined;
  private nextSequence: bigint;
  private queue: Promise<unknown> = Promise.resolve();
  /** Running totals of what the database is known to have from this tracker. */
  private readonly applied = { allowedRequests: 0n, deniedRequests: 0n, batches: 0, duplicates: 0 };
  private recoveries = 0;
  /** The period (UpsertStatsResult.period) the last applied batch landed in. */
  private period: string | undefined;
  private readonly flushDeadlineMs: number;
  private readonly logger: Logger;
  /**
   * This tracker's identity as a writer: a random uuid, new for every instance. The database
   * keeps flush sequences per (replica id, writer id), so two processes that share a replica
   * id (a blue/green overlap), or a restarted process whose clock reads earlier, never have
   * their flushes refused as "already applied" (issue 11, item 4).
   */
  readonly writerId: string = randomUUID();

  constructor(options: TrackerOptions = {}) {
    const firstSequence = options.firstSequence ?? DEFAULT_TRACKER_OPTIONS.firstSequence;
    if (typeof firstSequence !== 'bigint' || firstSequence <= 0n || firstSequence > INT8_MAX) {
      throw new InvalidInputError(
        'firstSequence',
        firstSequence,
        'a positive bigint that fits int8',
      );
    }
    this.nextSequence = firstSequence;
    this.flushDeadlineMs = assertPositiveMs(
      'flushDeadlineMs',
      options.flushDeadlineMs ?? DEFAULT_TRACKER_OPTIONS.flushDeadlineMs,
    );
    this.logger = options.logger ?? noopLogger;
  }

  /** Times, since the tracker was created, a batch was resequenced above a stored sequence. */
  sequenceRecoveries(): number {
    return this.recoveries;
  }

  /**
   * Notes one batch of requests for a workspace and its owner. O(1), no I/O, no allocation
   * for ids it has already seen since the last flush. Throws InvalidInputError (and counts
   * nothing) for a malformed uuid or a count that is not a non-negative safe integer.
   */
  track(workspaceId: string, ownerId: string, allowed: number, denied: number): void {
    if (!(Number.isSafeInteger(allowed) && allowed >= 0)) {
      throw new InvalidInputError('allowed', allowed, 'a non-negative safe integer');
    }
    if (!(Number.isSafeInteger(denied) && denied >= 0)) {
      throw new InvalidInputError('denied', denied, 'a non-negative safe integer');
    }
    const epoch = this.epoch;
    let workspaceKey = workspaceId;
    let workspaceEpoch = this.workspaces.get(workspaceId);
    let userKey = ownerId;
    let userEpoch = this.users.get(ownerId);
    // Only ids not seen this period (in this spelling) are validated and canonicalized: seen
    // ones were checked when first noted, so the hot path is one Map lookup per id.
    if (workspaceEpoch === undefined) {
      workspaceKey = canonicalUuid('workspaceId', workspaceId);
      if (workspaceKey !== workspaceId) workspaceEpoch = this.workspaces.get(workspaceKey);
    }
    if (userEpoch === undefined) {
      userKey = canonicalUuid('ownerId', ownerId);
      if (userKey !== ownerId) userEpoch = this.users.get(userKey);
    }
    if (workspaceEpoch !== epoch) {
      this.workspaces.set(workspaceKey, epoch);
      this.workspacesSinceFlush.push(workspaceKey);
    }
    if (userEpoch !== epoch) {
      this.users.set(userKey, epoch);
      this.usersSinceFlush.push(userKey);
    }
    if (this.allowed > MAX_SAFE - allowed) {
      this.allowedOverflow += BigInt(this.allowed);
      this.allowed = 0;
    }
    this.allowed += allowed;
    if (this.denied > MAX_SAFE - denied) {
      this.deniedOverflow += BigInt(this.denied);
      this.denied = 0;
    }
    this.denied += denied;
    this.active = true;
  }

  /** Requests tracked but not yet known to be in the database (for accounting and tests). */
  pending(): PendingUsage {
    const fromBatch = this.unconfirmed;
    return withJson({
      allowedRequests:
        BigInt(this.allowed) + this.allowedOverflow + (fromBatch?.allowedRequests ?? 0n),
      deniedRequests: BigInt(this.denied) + this.deniedOverflow + (fromBatch?.deniedRequests ?? 0n),
      unconfirmedBatch: fromBatch !== undefined,
    });
  }

  /**
   * Totals, since the tracker was created, of what the database is known to have from it:
   * batches applied or found already applied. Unlike summing FlushResults, it also counts a
   * resent batch that succeeded in a flush() whose newer batch then failed.
   */
  confirmed(): ConfirmedUsage {
    return withJson({ ...this.applied });
  }

  /**
   * Writes what was tracked since the last successful flush. Calls never overlap: a second
   * call waits for the first, then flushes whatever is new by then. On failure the error is a
   * typed DatabaseError (or InvalidInputError) and nothing tracked is lost.
   */
  flush(store: BoundaryUsageStore, replicaId: string): Promise<FlushResult> {
    // An async API rejects, it never throws: a caller's `.catch()` must see bad input too.
    try {
      replicaId = canonicalUuid('replicaId', replicaId);
      if (typeof (store as Partial<BoundaryUsageStore> | undefined)?.upsertStats !== 'function') {
        throw new InvalidInputError('store', store, 'a BoundaryUsageStore');
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const run = this.queue.then(async () => {
      const deadline = new Deadline('flush', this.flushDeadlineMs);
      try {
        return await this.flushOnce(store, replicaId, deadline);
      } finally {
        deadline.clear();
      }
    });
    // The next flush waits for this one to settle, which the deadline bounds: a call abandoned
    // there keeps running in the background, but nothing waits for it any more.
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async flushOnce(
    store: BoundaryUsageStore,
    replicaId: string,
    deadline: Deadline,
  ): Promise<FlushResult> {
    const result: FlushResult = {
      flushed: false,
      newPeriod: false,
      allowedRequests: 0n,
      deniedRequests: 0n,
      workspaceIds: 0,
      userIds: 0,
      batches: 0,
      duplicates: 0,
      sequenceRecoveries: 0,
    };
    if (this.unconfirmed) await this.send(store, replicaId, this.unconfirmed, result, deadline);
    if (this.active) await this.send(store, replicaId, this.cutBatch(), result, deadline);
    return result;
  }

  /** Moves everything tracked since the last batch into a new batch and starts a new epoch. */
  private cutBatch(): Batch {
    const batch: Batch = {
      replicaId: undefined,
      sequence: this.nextSequence++,
      mayHaveLanded: false,
      epoch: this.epoch,
      workspaceIds: this.workspacesSinceFlush,
      userIds: this.usersSinceFlush,
      uniqueWorkspacesCount: this.workspaces.size,
      uniqueUsersCount: this.users.size,
      allowedRequests: BigInt(this.allowed) + this.allowedOverflow,
      deniedRequests: BigInt(this.denied) + this.deniedOverflow,
    };
    this.workspacesSinceFlush = [];
    this.usersSinceFlush = [];
    this.allowed = 0;
    this.denied = 0;
    this.allowedOverflow = 0n;
    this.deniedOverflow = 0n;
    this.active = false;
    this.epoch++;
    return batch;
  }

  private async send(
    store: BoundaryUsageStore,
    replicaId: string,
    batch: Batch,
    result: FlushResult,
    deadline: Deadline,
  ): Promise<void> {
    this.unconfirmed = batch;
    // Bound to the replica id of its first send (see Batch.replicaId); newer batches follow
    // the caller's id.
    batch.replicaId ??= replicaId;
    replicaId = batch.replicaId;
    let outcome: UpsertStatsResult;
    for (let recoveries = 0; ; recoveries++) {
      // Out of time before sending: this send cannot have landed, so it must not mark the
      // batch as possibly applied.
      deadline.throwIfExpired();
      try {
        outcome = await deadline.race(
          store.upsertStats({
            replicaId,
            writerId: this.writerId,
            sequence: batch.sequence,
            uniqueWorkspacesDelta: batch.workspaceIds.length,
            uniqueUsersDelta: batch.userIds.length,
            uniqueWorkspacesCount: batch.uniqueWorkspacesCount,
            uniqueUsersCount: batch.uniqueUsersCount,
            allowedRequests: batch.allowedRequests,
            deniedRequests: batch.deniedRequests,
            workspaceIds: batch.workspaceIds,
            userIds: batch.userIds,
          }),
        );
      } catch (error) {
        // The batch stays `unconfirmed` and is resent first, with the same sequence.
        const typed = error instanceof InvalidInputError ? error : toDatabaseError(error);
        // Never applied: refused before anything ran (a server that cannot take writes, a
        // connection that never opened: DatabaseError.certainlyNotCommitted) or rolled back.
        const notCommitted =
          NOT_COMMITTED.has(typed.code) ||
          (typed instanceof DatabaseError && typed.certainlyNotCommitted);
        if (!notCommitted) batch.mayHaveLanded = true;
        throw typed;
      }
      const stored = outcome.storedSequence ?? 0n;
      // Only a resend of a batch that may have landed can be a real duplicate: its sequence is
      // then the stored one (or, were the writer id reused, below it).
      if (outcome.applied || (batch.mayHaveLanded && stored >= batch.sequence)) break;
      // A first send refused: the stored sequence is ahead of this writer (its row was written
      // by another process with the same writer id, or moved by hand). Nothing was written, so
      // the batch may take a sequence above the stored one and go again; dropping it here
      // would lose it silently (issue 11, item 4).
      if (recoveries >= MAX_SEQUENCE_RECOVERIES) {
        throw new SequenceConflictError(replicaId, this.writerId, stored);
      }
      const previous = batch.sequence;
      if (stored >= batch.sequence) batch.sequence = stored + 1n;
      if (this.nextSequence <= batch.sequence) this.nextSequence = batch.sequence + 1n;
      this.recoveries++;
      result.sequenceRecoveries++;
      this.logger.warn('boundary usage flush sequence was behind the stored one; resent above it', {
        replicaId,
        writerId: this.writerId,
        storedSequence: String(stored),
        previousSequence: String(previous),
        sequence: String(batch.sequence),
      });
    }
    this.unconfirmed = undefined;
    this.applied.allowedRequests += batch.allowedRequests;
    this.applied.deniedRequests += batch.deniedRequests;
    this.applied.batches++;
    if (!outcome.applied) this.applied.duplicates++;
    result.flushed = true;
    result.batches++;
    if (!outcome.applied) result.duplicates++;
    result.allowedRequests += batch.allowedRequests;
    result.deniedRequests += batch.deniedRequests;
    result.workspaceIds += batch.workspaceIds.length;
    result.userIds += batch.userIds.length;
    // A new period for this tracker: its flush inserted the row, or (a duplicate) its earlier
    // copy did, or the row it updated was inserted since its last flush by another tracker
    // with the same replica id (a cutover came in between).
    const landedIn = outcome.applied ? outcome.period : `${this.writerId}/${batch.sequence}`;
    const periodChanged =
      outcome.applied &&
      landedIn !== undefined &&
      this.period !== undefined &&
      landedIn !== this.period;
    if (outcome.applied || outcome.newPeriod) this.period = landedIn;
    if (outcome.newPeriod || periodChanged) {
      result.newPeriod = true;
      this.restartPeriod(batch);
    }
  }

  /**
   * The flush inserted the row: a cutover took the previous period. The period's sets restart
   * from what the insert carried plus what was tracked since the batch was cut.
   */
  private restartPeriod(batch: Batch): void {
    this.workspaces = restart(
      batch.workspaceIds,
      batch.epoch,
      this.workspacesSinceFlush,
      this.epoch,
    );
    this.users = restart(batch.userIds, batch.epoch, this.usersSinceFlush, this.epoch);
  }
}

function restart(
  carried: readonly string[],
  carriedEpoch: number,
  sinceCut: readonly string[],
  currentEpoch: number,
): Map<string, number> {
  const fresh = new Map<string, number>();
  for (const id of carried) fresh.set(id, carriedEpoch);
  for (const id of sinceCut) fresh.set(id, currentEpoch);
  return fresh;
}
