import { DeadlineExceededError } from '@usagekit/db';

/**
 * Runs `work` with a deadline: the returned promise settles when the work does or, at the
 * latest, after `deadlineMs` with a DeadlineExceededError (code 'DEADLINE_EXCEEDED'). A call
 * stuck on a silent connection (a partition, a frozen server: no FIN, no RST) otherwise never
 * settles; Prisma's own transaction timer only queues a ROLLBACK behind the stuck statement.
 *
 * The work is told through `signal` (aborted with that error) so it starts nothing new, but
 * what is already in flight cannot be recalled: the database settles it (each transaction is
 * all or nothing, and idle_in_transaction_session_timeout ends a session whose client went
 * silent). Its late outcome is dropped, and a late rejection is swallowed here, not left
 * unhandled.
 */
export function withDeadline<T>(
  operation: string,
  deadlineMs: number,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new DeadlineExceededError(operation, deadlineMs);
      controller.abort(error);
      reject(error);
    }, deadlineMs);
  });
  let running: Promise<T>;
  try {
    running = work(controller.signal);
  } catch (error) {
    clearTimeout(timer);
    return Promise.reject(error);
  }
  running.catch(() => undefined);
  return Promise.race([running, expired]).finally(() => clearTimeout(timer));
}

/** Throws the abort reason (the DeadlineExceededError) if the deadline has passed. */
export function throwIfExpired(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}
