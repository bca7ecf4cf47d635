/**
 * When each statement the store sends comes back. Wraps `pg.Client#query` (which adapter-pg
 * uses for every statement, BEGIN and COMMIT included) so a section can time a span inside
 * one public-API call: e.g. how long the cutover holds its exclusive lock, from the moment the
 * lock statement returns to the moment COMMIT does. Nothing else about the call changes.
 */
import { Client } from 'pg';

export interface TimedStatement {
  text: string;
  /** performance.now() when the statement was handed to node-postgres. */
  sentAt: number;
  /** performance.now() when its result (or error) came back; undefined if it never did. */
  doneAt: number | undefined;
}

export async function timeQueries<T>(
  work: () => Promise<T>,
): Promise<{ result: T; statements: TimedStatement[] }> {
  const statements: TimedStatement[] = [];
  const prototype = Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function timingQuery(this: unknown, ...args: unknown[]) {
    const [first] = args;
    const text =
      typeof first === 'string'
        ? first
        : first && typeof first === 'object' && 'text' in first
          ? String((first as { text: unknown }).text)
          : undefined;
    const returned = original.apply(this, args);
    if (text !== undefined && returned instanceof Promise) {
      const timed: TimedStatement = { text, sentAt: performance.now(), doneAt: undefined };
      statements.push(timed);
      returned.then(
        () => (timed.doneAt = performance.now()),
        () => (timed.doneAt = performance.now()),
      );
    }
    return returned;
  };
  try {
    const result = await work();
    return { result, statements };
  } finally {
    prototype.query = original;
  }
}

/**
 * The exclusive lock's hold in a recorded transaction: from the return of the last statement
 * that takes `pg_advisory_xact_lock(` (not the shared variant) to the return of COMMIT.
 * Undefined when either is missing.
 */
export function exclusiveLockHoldMs(statements: readonly TimedStatement[]): number | undefined {
  const lock = [...statements]
    .reverse()
    .find((s) => /pg_advisory_xact_lock\s*\(/i.test(s.text) && s.doneAt !== undefined);
  const commit = statements.find(
    (s) =>
      /^\s*(COMMIT|END)\b/i.test(s.text) &&
      s.doneAt !== undefined &&
      s.sentAt >= (lock?.sentAt ?? 0),
  );
  if (!lock?.doneAt || !commit?.doneAt) return undefined;
  return commit.doneAt - lock.doneAt;
}
