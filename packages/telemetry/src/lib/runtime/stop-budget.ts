/**
 * How a runtime's stop() shares the host's shutdown budget among its steps. Pure arithmetic, so
 * the split can be read (and tested) without a database.
 *
 * Kubernetes sends SIGTERM and, `terminationGracePeriodSeconds` (30 s by default) later,
 * SIGKILL. The default budget, 20 s, leaves 10 s for the host's own shutdown (closing its HTTP
 * server, its own PrismaClient) and for the process to exit.
 */
export const DEFAULT_STOP_BUDGET_MS = 20_000;

export type StopStepName = 'flush' | 'final-collection' | 'delivery' | 'account' | 'disconnect';

/**
 * Each step's share. A step gets `share × budget`, but never so much that the steps after it
 * lose their reserve, and whatever an earlier step did not use passes on: every deadline is
 * computed from the time actually left when the step starts.
 *
 * - flush 40 %: the final flush, its retries included (a lock timeout is 2 s per attempt).
 * - final collection 25 % (only when asked for): one claim + cutover + outbox write.
 * - delivery: what is left after the reserves below: the reporter's last delivery pass.
 * - account 5 %, at most 1 s: one read saying where the usage is (the stop report).
 * - disconnect 10 %, at most 2 s: `$disconnect()`, forced when a statement is stuck.
 */
const SHARES: Record<'flush' | 'final-collection', number> = {
  flush: 0.4,
  'final-collection': 0.25,
};
const RESERVES: Record<'account' | 'disconnect', { share: number; maxMs: number }> = {
  account: { share: 0.05, maxMs: 1_000 },
  disconnect: { share: 0.1, maxMs: 2_000 },
};

export class StopBudget {
  readonly budgetMs: number;
  readonly #startedAt = performance.now();
  readonly #steps: StopStepName[];

  constructor(budgetMs: number, finalCollection: boolean) {
    this.budgetMs = budgetMs;
    this.#steps = finalCollection
      ? ['flush', 'final-collection', 'delivery', 'account', 'disconnect']
      : ['flush', 'delivery', 'account', 'disconnect'];
  }

  get steps(): readonly StopStepName[] {
    return this.#steps;
  }

  elapsedMs(): number {
    return performance.now() - this.#startedAt;
  }

  remainingMs(): number {
    return Math.max(0, this.budgetMs - this.elapsedMs());
  }

  /** The time `step` may take if it starts now (0: no time left for it). */
  allowanceMs(step: StopStepName): number {
    const remaining = this.remainingMs();
    const later = this.#steps.slice(this.#steps.indexOf(step) + 1);
    const reservedForLater = later.reduce((sum, name) => sum + this.#reserveMs(name), 0);
    const available = Math.max(0, remaining - reservedForLater);
    if (step === 'flush' || step === 'final-collection') {
      return Math.floor(Math.min(available, SHARES[step] * this.budgetMs));
    }
    if (step === 'account') return Math.floor(Math.min(available, this.#reserveMs('account')));
    // Delivery takes what is left before the reserves; the disconnect, last, takes all of it.
    return Math.floor(available);
  }

  #reserveMs(step: StopStepName): number {
    if (step === 'account' || step === 'disconnect') {
      const reserve = RESERVES[step];
      return Math.min(reserve.maxMs, reserve.share * this.budgetMs);
    }
    return 0;
  }
}
