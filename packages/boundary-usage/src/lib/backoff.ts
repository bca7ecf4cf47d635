import { setTimeout as sleep } from 'node:timers/promises';

export interface BackoffOptions {
  /** Delay before the first retry, before jitter. */
  baseDelayMs: number;
  /** Cap on any one delay. */
  maxDelayMs: number;
}

/**
 * Capped exponential backoff with full jitter: a uniform delay in [0, min(max, base × 2^n)].
 * Jitter spreads replicas that failed together (a deadlock, a cutover holding the lock) so
 * they do not retry in lockstep (PostgreSQL docs, "Serialization Failure Handling";
 * graphile/worker's calculateDelay).
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions): number {
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * ceiling);
}

/** Waits `ms`, or less if `signal` aborts; never rejects. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted) return;
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}
