import { Deadline } from '@usagekit/db';

/**
 * Runs `work` with a deadline (@usagekit/db's Deadline): the returned promise settles when the
 * work does or, at the latest, after `deadlineMs` with a DeadlineExceededError (code
 * 'DEADLINE_EXCEEDED'). A call stuck on a silent connection (a partition, a frozen server: no
 * FIN, no RST) otherwise never settles; Prisma's own transaction timer only queues a ROLLBACK
 * behind the stuck statement. The work is told through `signal` so it starts nothing new.
 */
export function withDeadline<T>(
  operation: string,
  deadlineMs: number,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const deadline = new Deadline(operation, deadlineMs);
  let running: Promise<T>;
  try {
    running = work(deadline.signal);
  } catch (error) {
    deadline.clear();
    return Promise.reject(error);
  }
  return deadline.race(running).finally(() => deadline.clear());
}

/** Throws the abort reason (the DeadlineExceededError) if the deadline has passed. */
export function throwIfExpired(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}
