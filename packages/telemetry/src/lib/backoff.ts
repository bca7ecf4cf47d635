/** Capped exponential backoff for delivery retries. */
export interface RetryBackoff {
  /** Delay after the first failure, before jitter. */
  baseDelayMs: number;
  /** Cap on any one delay, before jitter. */
  maxDelayMs: number;
}

/**
 * The delay before the next attempt after `failures` failed ones (1, 2, …): min(max,
 * base × 2^(failures − 1)), jittered to a uniform value in [½, 1] of that ("equal jitter").
 * The jitter spreads reporters that failed together, so a receiver that comes back is not hit
 * by all of them at once; the lower half keeps a floor under every delay, so a receiver that
 * is down is never retried in a tight loop (langwatch/langwatch#8200 spent its whole budget in
 * milliseconds with near-zero full-jitter delays).
 */
export function retryDelayMs(
  failures: number,
  backoff: RetryBackoff,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(failures, 1) - 1, 40);
  const ceiling = Math.min(backoff.maxDelayMs, backoff.baseDelayMs * 2 ** exponent);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
