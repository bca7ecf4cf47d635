import {
  BoundaryUsageStore,
  type UpsertStatsParams,
  type UpsertStatsResult,
} from '@usagekit/boundary-usage';
import type { UnconfirmedBatch } from './protocol.js';

/**
 * The replica's store, with what the simulator needs to account for a SIGKILL. (What was
 * flushed comes from `tracker.confirmed()`, not from counting calls here: a call abandoned at
 * the tracker's deadline may still land and its resend then comes back as a duplicate, and a
 * batch whose first send found the stored sequence ahead is resent under a new one; counting
 * returned calls would count either batch twice.)
 *
 * - `unconfirmed` is the batch of the last call if that call failed: the one batch whose fate
 *   only the database knows (an ambiguous commit). The tracker resends it first, so there is
 *   never more than one.
 * - `freeze()` lets no new upsert start and waits for those in flight, so a replica about to be
 *   SIGKILLed reports numbers that cannot change any more.
 */
export class ObservedStore extends BoundaryUsageStore {
  unconfirmed: UnconfirmedBatch | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  private frozen = false;

  override upsertStats(params: UpsertStatsParams): Promise<UpsertStatsResult> {
    // Frozen: this process is about to be killed. Never settling keeps the batch in the
    // tracker, exactly where a crash at this instant would leave it.
    if (this.frozen) return new Promise<never>(() => undefined);
    const call = super.upsertStats(params).then(
      (result) => {
        this.unconfirmed = undefined;
        return result;
      },
      (error: unknown) => {
        this.unconfirmed = {
          sequence: params.sequence ?? 0n,
          writerId: params.writerId,
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
