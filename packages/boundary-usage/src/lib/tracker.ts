import { toDatabaseError } from '@usagekit/db';
import type { BoundaryUsageStore, UpsertStatsResult } from './store.js';
import { InvalidInputError, assertUuid, canonicalUuid } from './validation.js';

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
}

/** One flush's payload. Kept unchanged, with its sequence, until the database has it. */
interface Batch {
  sequence: bigint;
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

  constructor(options: { firstSequence?: bigint } = {}) {
    // Sequences must keep rising across restarts of a replica that keeps its id; microseconds
    // since the epoch do, unless a process flushes more than a thousand times a millisecond.
    this.nextSequence = options.firstSequence ?? BigInt(Date.now()) * 1000n;
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
  pending(): { allowedRequests: bigint; deniedRequests: bigint; unconfirmedBatch: boolean } {
    const fromBatch = this.unconfirmed;
    return {
      allowedRequests:
        BigInt(this.allowed) + this.allowedOverflow + (fromBatch?.allowedRequests ?? 0n),
      deniedRequests: BigInt(this.denied) + this.deniedOverflow + (fromBatch?.deniedRequests ?? 0n),
      unconfirmedBatch: fromBatch !== undefined,
    };
  }

  /**
   * Totals, since the tracker was created, of what the database is known to have from it:
   * batches applied or found already applied. Unlike summing FlushResults, it also counts a
   * resent batch that succeeded in a flush() whose newer batch then failed.
   */
  confirmed(): {
    allowedRequests: bigint;
    deniedRequests: bigint;
    batches: number;
    duplicates: number;
  } {
    return { ...this.applied };
  }

  /**
   * Writes what was tracked since the last successful flush. Calls never overlap: a second
   * call waits for the first, then flushes whatever is new by then. On failure the error is a
   * typed DatabaseError (or InvalidInputError) and nothing tracked is lost.
   */
  flush(store: BoundaryUsageStore, replicaId: string): Promise<FlushResult> {
    assertUuid('replicaId', replicaId);
    const run = this.queue.then(() => this.flushOnce(store, replicaId));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async flushOnce(store: BoundaryUsageStore, replicaId: string): Promise<FlushResult> {
    const result: FlushResult = {
      flushed: false,
      newPeriod: false,
      allowedRequests: 0n,
      deniedRequests: 0n,
      workspaceIds: 0,
      userIds: 0,
      batches: 0,
      duplicates: 0,
    };
    if (this.unconfirmed) await this.send(store, replicaId, this.unconfirmed, result);
    if (this.active) await this.send(store, replicaId, this.cutBatch(), result);
    return result;
  }

  /** Moves everything tracked since the last batch into a new batch and starts a new epoch. */
  private cutBatch(): Batch {
    const batch: Batch = {
      sequence: this.nextSequence++,
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
  ): Promise<void> {
    this.unconfirmed = batch;
    let outcome: UpsertStatsResult;
    try {
      outcome = await store.upsertStats({
        replicaId,
        sequence: batch.sequence,
        uniqueWorkspacesDelta: batch.workspaceIds.length,
        uniqueUsersDelta: batch.userIds.length,
        uniqueWorkspacesCount: batch.uniqueWorkspacesCount,
        uniqueUsersCount: batch.uniqueUsersCount,
        allowedRequests: batch.allowedRequests,
        deniedRequests: batch.deniedRequests,
        workspaceIds: batch.workspaceIds,
        userIds: batch.userIds,
      });
    } catch (error) {
      // The batch stays `unconfirmed` and is resent first, with the same sequence.
      throw error instanceof InvalidInputError ? error : toDatabaseError(error);
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
    if (outcome.newPeriod) {
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
