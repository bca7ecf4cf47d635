import { gate, waitUntil } from '@usagekit/testing';

export { waitUntil };

/** A promise with its resolve function outside, to line two clients up at a known point. */
export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

export function deferred(): Deferred {
  const { promise, open } = gate();
  return { promise, resolve: open };
}
