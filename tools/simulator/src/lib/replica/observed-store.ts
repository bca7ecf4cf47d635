import {
  BoundaryUsageStore,
  type UpsertStatsParams,
  type UpsertStatsResult,
} from '@usagekit/boundary-usage';
import type { RequestCounts, UnconfirmedBatch } from './protocol.js';

/**
 * The replica's store, with the accounting the simulator needs at the one place where it is
 * exact: each upsert call.
 *
 * - `confirmed` sums the batches whose upsert returned (applied, or found already applied by
 *   its sequence). The tracker sends a batch until one call returns and never again after, so
 *   each batch is counted exactly once. (Summing FlushResult instead loses a batch when a
 *   flush confirms a resent batch and then fails on the next one: the flush throws and its
 *   result, with the confirmed batch in it, never reaches the observer.)
 * - `unconfirmed` is the batch of the last call if that call failed: the one batch whose fate
 *   only the database knows (an ambiguous commit). The tracker resends it first, so there is
 *   never more than one.
 * - `freeze()` lets no new upsert start and waits for those in flight, so a replica about to be
 *   SIGKILLed reports numbers that cannot change any more.
 */
export class ObservedStore extends BoundaryUsageStore {
  readonly confirmed: RequestCounts = { allowed: 0n, denied: 0n };
  unconfirmed: UnconfirmedBatch | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  private frozen = false;

  override upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
    // Frozen: this process is about to be killed. Never settling keeps the batch in the
    // tracker, exactly where a crash at this instant would leave it.
    if (this.frozen) return new Promise<never>(() => undefined);
    const call = super.upsertStats(params).then(
      (result) => {
        this.confirmed.allowed += BigInt(params.allowedRequests);
        this.confirmed.denied += BigInt(params.deniedRequests);
        this.unconfirmed = undefined;
        return result;
      },
      (error: unknown) => {
        this.unconfirmed = {
          sequence: params.sequence ?? 0n,
          allowed: BigInt(params.allowedRequests),
          denied: BigInt(params.deniedRequests),
        };
        throw error;
      },
    );
    this.inFlight.add(call);
    void call.catch(() => undefined).finally(() => this.inFlight.delete(call));
    return call;
  }

  /** No upsert starts from now on; resolves when every upsert in flight has settled. */
  async freeze(): Promise<void> {
    this.frozen = true;
    await Promise.allSettled([...this.inFlight]);
  }
}
