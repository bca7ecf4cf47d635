/**
 * The exit codes scripts can rely on. Stable: a deploy script may gate on `status` exiting 0,
 * a readiness probe on 3. Documented in tools/cli/README.md.
 */
export const ExitCode = {
  /** Done; for `status`: migrations current and no report failing delivery. */
  ok: 0,
  /** Bad flags, a missing database URL, a malformed report id: nothing was sent. */
  usage: 1,
  /** The database could not be reached, refused the login, or a deadline passed. */
  unreachable: 2,
  /** Migrations are not current: pending, failed or changed (`status`), or `migrate` failed. */
  migrations: 3,
  /**
   * Telemetry needs attention: `status` found a pending report whose last delivery failed, or
   * a rejected one (dead letter); `outbox retry` named an id that is neither pending nor
   * rejected.
   */
  telemetry: 4,
  /** Anything else went wrong (a bug, a permission error); the message says what. */
  failure: 5,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];
