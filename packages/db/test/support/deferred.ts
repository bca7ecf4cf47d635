/** A promise with its resolve function outside, to line two clients up at a known point. */
export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

/**
 * Waits until `condition()` holds. This is waiting for an event we cannot await directly
 * (a pool's 'error' event), not a timing assertion: the deadline only turns a hang into a
 * readable failure.
 */
export async function waitUntil(
  condition: () => boolean,
  what: string,
  deadlineMs = 10_000,
): Promise<void> {
  const giveUpAt = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > giveUpAt) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
