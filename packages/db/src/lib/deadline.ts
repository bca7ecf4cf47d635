import { DeadlineExceededError } from './errors.js';

/**
 * One call's deadline, for work that spans several statements (a flush with its resend, a
 * collection, a delivery pass). `race(work)` settles with the work or rejects with
 * DeadlineExceededError once the time is up; the work itself is not recalled (a statement in
 * flight is settled by the database: each transaction is all or nothing, and
 * idle_in_transaction_session_timeout ends a session whose client went silent), so a late
 * outcome is dropped and a late rejection is swallowed here, not left unhandled. `signal` is
 * aborted with the same error, so the work can start nothing new after the deadline.
 */
export class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly expired: Promise<never>;

  constructor(operation: string, deadlineMs: number) {
    let reject!: (error: DeadlineExceededError) => void;
    this.expired = new Promise<never>((_, rejectExpired) => {
      reject = rejectExpired;
    });
    this.timer = setTimeout(() => {
      const error = new DeadlineExceededError(operation, deadlineMs);
      this.controller.abort(error);
      reject(error);
    }, deadlineMs);
    // Nobody may be racing when it fires (between two statements): not an unhandled error.
    this.expired.catch(() => undefined);
  }

  /** Aborted with the DeadlineExceededError when the time is up. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  race<T>(work: Promise<T>): Promise<T> {
    // An abandoned call that fails later has nobody listening: not an unhandled rejection.
    work.catch(() => undefined);
    return Promise.race([work, this.expired]);
  }

  /** Throws the DeadlineExceededError if the time is up. */
  throwIfExpired(): void {
    if (this.controller.signal.aborted) throw this.controller.signal.reason;
  }

  clear(): void {
    clearTimeout(this.timer);
  }
}
