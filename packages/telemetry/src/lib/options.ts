import {
  DEFAULT_STORE_OPTIONS,
  InvalidInputError,
  assertPositiveInteger,
  assertPositiveMs,
  type BoundaryUsageStore,
} from '@usagekit/boundary-usage';
import {
  noopLogger,
  schemaTables,
  usagekitSchemaOf,
  type Logger,
  type PrismaClient,
  type SchemaTables,
} from '@usagekit/db';
import type { RetryBackoff } from './backoff.js';
import { systemClock, type Clock } from './clock.js';
import { HttpSink } from './http-sink.js';
import type { Sink } from './sink.js';
import type { Snapshot } from './snapshot.js';
import type { StandbyWait } from './standby-flush.js';

/** One delivery attempt, for metrics. */
export interface DeliveryAttempt {
  reportId: string;
  attempt: number;
  delivered: boolean;
  error?: unknown;
  /** This refusal was the last one allowed: the report is now rejected (a dead letter). */
  rejected?: boolean;
  durationMs: number;
}

/** One delivery pass that ran to its end, and the outbox it left behind, for metrics. */
export interface DeliveryPass {
  /** Reports the sink accepted in this pass. */
  delivered: number;
  /** Reports whose send failed in this pass. */
  failed: number;
  /** Reports still undelivered after the pass: due, leased, or waiting out their backoff. */
  pendingReports: number;
  /** How long the oldest of them has waited, by the database's clock; null when none. */
  oldestPendingAgeMs: number | null;
  /** Rejected reports (dead letters) waiting for an operator (retryRejectedReports). */
  rejectedReports: number;
  durationMs: number;
}

/** The reporter's clock against the database's, read at every claim. */
export interface ClockSkewReading {
  /** Reporter clock − database now(): positive when the reporter is ahead. */
  skewMs: number;
  /** The claim was refused (ClockSkewError): the bucket fell outside the allowed window. */
  refused: boolean;
}

/**
 * Optional hooks, e.g. to feed metrics. Every method is optional; an exception thrown by one
 * is logged and otherwise ignored.
 */
export interface TelemetryObserver {
  /** A collection that finished: with a summary (this reporter won the period) or without. */
  onSnapshot?(snapshot: Snapshot, durationMs: number): void;
  /** One report sent (or not) to the sink. */
  onDelivery?(attempt: DeliveryAttempt): void;
  /**
   * After every delivery pass that did not end in a database error. Only when this hook is set
   * does a pass read the backlog: one more query (a count over the pending-reports index).
   */
  onDeliveryPass?(pass: DeliveryPass): void;
  /**
   * A collection, delivery pass or purge that failed, once per failure, whether it was called
   * explicitly or by the schedule (the collection after its own retries). A call abandoned at
   * its deadline arrives here with a DeadlineExceededError (code 'DEADLINE_EXCEEDED').
   */
  onError?(stage: 'collect' | 'deliver' | 'purge', error: unknown): void;
  /** Every claim measures the reporter's clock against the database's; refused or not. */
  onClockSkew?(reading: ClockSkewReading): void;
  /**
   * A report's wait for the database's standbys before its send (only when pg_stat_replication
   * lists any): flushed, unverified (their positions cannot be read) or timed_out (not sent).
   */
  onStandbyWait?(wait: StandbyWait): void;
}

export interface TelemetryReporterOptions {
  prisma: PrismaClient;
  /** The store whose cutover runs inside the reporter's transaction. */
  store: BoundaryUsageStore;
  /** Identifies the deployment in every report and in the report id. */
  deploymentId: string;
  /** Where reports go: a Sink, or a receiver URL for an {@link HttpSink} with its defaults. */
  sink: Sink | string | URL;
  /** Length of a telemetry period; coder's SnapshotFrequency. Default 30 minutes. */
  snapshotFrequencyMs?: number;
  /** Rows whose window started longer ago are deleted but reported apart. Default 2 × frequency. */
  maxStalenessMs?: number;
  clock?: Clock;
  logger?: Logger;
  observer?: TelemetryObserver;
  /** lock_timeout for the claim (the cutover uses the store's). Default: the store's lockTimeoutMs. */
  lockTimeoutMs?: number;
  /** Limit for the collection transaction. Default: the store's transactionTimeoutMs. */
  transactionTimeoutMs?: number;
  /** Attempts of one collection when the database says a retry may succeed. Default 3. */
  collectAttempts?: number;
  /**
   * Upper bound on one sink.send: the send's signal is aborted then (HttpSink cancels the
   * request), and a sink given as a URL string uses it as its HttpSink timeoutMs. A row is
   * leased for standbyFlushTimeoutMs + this + max(this, 5 s) (the wait for the standbys comes
   * first, inside the lease), and a send is always aborted 1 s before its lease ends, so two
   * sends of one report are never in flight at once, except right after a manual
   * `usagekit outbox retry`, which may start a second send while a leased one is still open
   * (the receiver drops it by its Idempotency-Key). Default 10 s.
   */
  deliveryTimeoutMs?: number;
  /** Reports sent at most per deliverPending() pass. Default 20. */
  deliveryBatchSize?: number;
  /** Backoff between delivery attempts of one report. Default 5 s doubling up to 10 min. */
  retryBackoff?: RetryBackoff;
  /**
   * Cap on a receiver's Retry-After (429, 503): the next attempt waits at least the receiver's
   * delay, at most this, and never less than the backoff. Default 1 h.
   */
  maxRetryAfterMs?: number;
  /**
   * Permanent refusals (HttpSink: 400, 401, 403, 404, 405, 410, 411, 413, 414, 415, 422; any
   * SinkError with `permanent`) after which a report is rejected: set aside, kept, counted,
   * never retried until an operator sends it again (retryRejectedReports). Default 5.
   */
  rejectAfterRefusals?: number;
  /**
   * Before a report is sent, how long to wait at most for every physical standby listed in
   * pg_stat_replication to flush the report's cutover (so that an asynchronous failover cannot
   * undo a cutover whose report was delivered, and count its rows again). Past it the attempt
   * fails with StandbyLagError (STANDBY_LAG) and is retried after its backoff. 0: never wait.
   * Where the role cannot read the standbys' positions, reports go out unverified (a warning,
   * and observer.onStandbyWait's `unverified`). Default 5 s.
   */
  standbyFlushTimeoutMs?: number;
  /**
   * Backoff between retries of a scheduled collection that failed, within the same period
   * (the next period's edge takes over). Default 5 s doubling up to 1 min.
   */
  collectRetryBackoff?: RetryBackoff;
  /** Delivered reports and telemetry_locks rows older than this are deleted. Default 24 h. */
  reportRetentionMs?: number;
  /** boundary_usage_flush_sequences rows not updated for this long are deleted. Default 7 days. */
  flushSequenceRetentionMs?: number;
  /** Upper bound on stop(): waiting for in-flight work plus the last delivery. Default 15 s. */
  stopTimeoutMs?: number;
  /**
   * Deadline of one collectSnapshot(), retries included; past it the call rejects with
   * DeadlineExceededError. Default 25 s.
   */
  collectTimeoutMs?: number;
  /**
   * Deadline of one delivery pass (deliverPending()); a pass leases no new report when a
   * whole send would not fit. Default 30 s, or deliveryTimeoutMs + 10 s if that is more.
   */
  deliveryPassTimeoutMs?: number;
  /** Deadline of one purgeExpired(). Default 30 s. */
  purgeTimeoutMs?: number;
  /**
   * idle_in_transaction_session_timeout set in every reporter transaction: a reporter whose
   * connection goes silent mid-transaction is ended by the server after this, and its locks
   * (the exclusive boundary-usage lock among them) released. Default 10 s.
   */
  idleInTransactionTimeoutMs?: number;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;

export const DEFAULT_REPORTER_OPTIONS = {
  snapshotFrequencyMs: 30 * MINUTE_MS,
  collectAttempts: 3,
  deliveryTimeoutMs: 10_000,
  deliveryBatchSize: 20,
  retryBackoff: { baseDelayMs: 5_000, maxDelayMs: 10 * MINUTE_MS },
  maxRetryAfterMs: HOUR_MS,
  rejectAfterRefusals: 5,
  collectRetryBackoff: { baseDelayMs: 5_000, maxDelayMs: MINUTE_MS },
  standbyFlushTimeoutMs: 5_000,
  reportRetentionMs: 24 * HOUR_MS,
  flushSequenceRetentionMs: 7 * 24 * HOUR_MS,
  stopTimeoutMs: 15_000,
  collectTimeoutMs: 25_000,
  deliveryPassTimeoutMs: 30_000,
  purgeTimeoutMs: 30_000,
  idleInTransactionTimeoutMs: 10_000,
} as const;

/**
 * The skew guard's margin: a claim is refused for a bucket older than reportRetentionMs minus
 * this (its election row may be purged by then) or newer than one period plus this, both
 * against the database's now(). Far more than any transaction lasts (the purge and a claim
 * compare now() of different transactions), far less than a day.
 */
export const CLAIM_WINDOW_MARGIN_MS = 5 * MINUTE_MS;

/** A delivery lease outlasts deliveryTimeoutMs by at least this (and by deliveryTimeoutMs). */
const MIN_LEASE_MARGIN_MS = 5_000;

export interface ResolvedReporterOptions {
  prisma: PrismaClient;
  store: BoundaryUsageStore;
  deploymentId: string;
  sink: Sink;
  snapshotFrequencyMs: number;
  maxStalenessMs: number;
  clock: Clock;
  logger: Logger;
  observer: TelemetryObserver;
  lockTimeoutMs: number;
  transactionTimeoutMs: number;
  maxWaitMs: number;
  collectAttempts: number;
  deliveryTimeoutMs: number;
  deliveryLeaseMs: number;
  deliveryBatchSize: number;
  retryBackoff: RetryBackoff;
  maxRetryAfterMs: number;
  rejectAfterRefusals: number;
  collectRetryBackoff: RetryBackoff;
  standbyFlushTimeoutMs: number;
  reportRetentionMs: number;
  flushSequenceRetentionMs: number;
  stopTimeoutMs: number;
  collectTimeoutMs: number;
  deliveryPassTimeoutMs: number;
  purgeTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  /** Buckets the claim accepts, around the database's now() (see sql.claimPeriod). */
  claimWindow: { maxPastMs: number; maxFutureMs: number };
  /**
   * usagekit's tables, qualified by the store's schema: the claim, the outbox row and the
   * cutover run in one transaction, so they must name the same schema.
   */
  tables: SchemaTables;
}

/** Checks every option once, at construction, and fills in the defaults. */
export function resolveReporterOptions(options: TelemetryReporterOptions): ResolvedReporterOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidInputError('options', options, 'an options object');
  }
  const { prisma, store } = options;
  if (typeof (prisma as Partial<PrismaClient> | undefined)?.$transaction !== 'function') {
    throw new InvalidInputError(
      'prisma',
      prisma,
      'a PrismaClient (createPrismaClient from @usagekit/db)',
    );
  }
  if (
    typeof (store as Partial<BoundaryUsageStore> | undefined)?.getAndResetSummaryInTransaction !==
    'function'
  ) {
    throw new InvalidInputError('store', store, 'a BoundaryUsageStore');
  }
  const deploymentId = options.deploymentId;
  if (
    typeof deploymentId !== 'string' ||
    deploymentId.trim().length === 0 ||
    deploymentId.length > 256
  ) {
    throw new InvalidInputError(
      'deploymentId',
      deploymentId,
      'a non-empty string of at most 256 characters',
    );
  }

  const snapshotFrequencyMs = assertPositiveMs(
    'snapshotFrequencyMs',
    options.snapshotFrequencyMs ?? DEFAULT_REPORTER_OPTIONS.snapshotFrequencyMs,
  );
  const maxStalenessMs = assertPositiveMs(
    'maxStalenessMs',
    options.maxStalenessMs ?? 2 * snapshotFrequencyMs,
  );

  const clock = options.clock ?? systemClock;
  if (typeof (clock as Partial<Clock> | undefined)?.now !== 'function') {
    throw new InvalidInputError('clock', clock, 'an object with now(): Date');
  }
  const logger = options.logger ?? noopLogger;
  for (const level of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof (logger as Partial<Logger>)?.[level] !== 'function') {
      throw new InvalidInputError('logger', logger, 'a Logger with debug, info, warn and error');
    }
  }
  const observer = options.observer ?? {};
  if (typeof observer !== 'object' || observer === null) {
    throw new InvalidInputError('observer', observer, 'an object of optional hooks');
  }

  // A store that is not a BoundaryUsageStore (a wrapper, say) may not carry options.
  const storeOptions: Partial<typeof DEFAULT_STORE_OPTIONS> =
    (store as { options?: Partial<typeof DEFAULT_STORE_OPTIONS> }).options ?? {};
  const storeLockTimeoutMs = storeOptions.lockTimeoutMs ?? DEFAULT_STORE_OPTIONS.lockTimeoutMs;
  const lockTimeoutMs = assertPositiveMs(
    'lockTimeoutMs',
    options.lockTimeoutMs ?? storeLockTimeoutMs,
  );
  const transactionTimeoutMs = assertPositiveMs(
    'transactionTimeoutMs',
    options.transactionTimeoutMs ??
      storeOptions.transactionTimeoutMs ??
      DEFAULT_STORE_OPTIONS.transactionTimeoutMs,
  );
  // The collection may wait twice: for a rival's claim, then for the cutover lock. Both waits
  // must end (55P03, retryable) before Prisma's transaction timer, which cancels nothing.
  if (lockTimeoutMs + storeLockTimeoutMs >= transactionTimeoutMs) {
    throw new InvalidInputError(
      'transactionTimeoutMs',
      transactionTimeoutMs,
      `more than lockTimeoutMs (${lockTimeoutMs}) plus the store's lockTimeoutMs (${storeLockTimeoutMs})`,
    );
  }
  const maxWaitMs = storeOptions.maxWaitMs ?? DEFAULT_STORE_OPTIONS.maxWaitMs;
  const schema = (store as { options?: { schema?: string } }).options?.schema;
  let tables: SchemaTables;
  try {
    tables = schemaTables(schema ?? usagekitSchemaOf(prisma));
  } catch {
    throw new InvalidInputError('store.options.schema', schema, 'a valid schema name');
  }

  const collectAttempts = assertPositiveInteger(
    'collectAttempts',
    options.collectAttempts ?? DEFAULT_REPORTER_OPTIONS.collectAttempts,
  );
  const deliveryTimeoutMs = assertPositiveMs(
    'deliveryTimeoutMs',
    options.deliveryTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.deliveryTimeoutMs,
  );
  const deliveryBatchSize = assertPositiveInteger(
    'deliveryBatchSize',
    options.deliveryBatchSize ?? DEFAULT_REPORTER_OPTIONS.deliveryBatchSize,
  );
  const sink = resolveSink(options.sink, deliveryTimeoutMs);
  const retryBackoff = resolveBackoff(
    'retryBackoff',
    options.retryBackoff ?? DEFAULT_REPORTER_OPTIONS.retryBackoff,
  );
  const collectRetryBackoff = resolveBackoff(
    'collectRetryBackoff',
    options.collectRetryBackoff ?? DEFAULT_REPORTER_OPTIONS.collectRetryBackoff,
  );
  const maxRetryAfterMs = assertPositiveMs(
    'maxRetryAfterMs',
    options.maxRetryAfterMs ?? DEFAULT_REPORTER_OPTIONS.maxRetryAfterMs,
  );
  const standbyFlushTimeoutMs =
    options.standbyFlushTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.standbyFlushTimeoutMs;
  if (!Number.isSafeInteger(standbyFlushTimeoutMs) || standbyFlushTimeoutMs < 0) {
    throw new InvalidInputError(
      'standbyFlushTimeoutMs',
      standbyFlushTimeoutMs,
      'a non-negative integer number of milliseconds (0: do not wait)',
    );
  }
  const rejectAfterRefusals = assertPositiveInteger(
    'rejectAfterRefusals',
    options.rejectAfterRefusals ?? DEFAULT_REPORTER_OPTIONS.rejectAfterRefusals,
  );

  const reportRetentionMs = assertPositiveMs(
    'reportRetentionMs',
    options.reportRetentionMs ?? DEFAULT_REPORTER_OPTIONS.reportRetentionMs,
  );
  // An in-sync reporter claims a bucket up to one period old; the window must hold it.
  if (reportRetentionMs < snapshotFrequencyMs + 2 * CLAIM_WINDOW_MARGIN_MS) {
    throw new InvalidInputError(
      'reportRetentionMs',
      reportRetentionMs,
      `at least snapshotFrequencyMs (${snapshotFrequencyMs}) plus ${2 * CLAIM_WINDOW_MARGIN_MS} ms, so the claim window (retention minus ${CLAIM_WINDOW_MARGIN_MS} ms) holds the current period`,
    );
  }
  const deliveryPassTimeoutMs = assertPositiveMs(
    'deliveryPassTimeoutMs',
    options.deliveryPassTimeoutMs ??
      Math.max(
        DEFAULT_REPORTER_OPTIONS.deliveryPassTimeoutMs,
        standbyFlushTimeoutMs + deliveryTimeoutMs + 10_000,
      ),
  );
  // One send first waits up to standbyFlushTimeoutMs for the standbys, then up to
  // deliveryTimeoutMs for the receiver: a shorter pass could never finish a send.
  if (deliveryPassTimeoutMs <= standbyFlushTimeoutMs + deliveryTimeoutMs) {
    throw new InvalidInputError(
      'deliveryPassTimeoutMs',
      deliveryPassTimeoutMs,
      `more than standbyFlushTimeoutMs + deliveryTimeoutMs (${standbyFlushTimeoutMs} + ${deliveryTimeoutMs}), so a pass can finish one send`,
    );
  }

  return {
    prisma,
    store,
    tables,
    deploymentId,
    sink,
    snapshotFrequencyMs,
    maxStalenessMs,
    clock,
    logger,
    observer,
    lockTimeoutMs,
    transactionTimeoutMs,
    maxWaitMs,
    collectAttempts,
    deliveryTimeoutMs,
    // The send is aborted at deliveryTimeoutMs, and at the latest LEASE_SAFETY_MS before the
    // lease ends (deliver.ts): the margin covers the lease statement's round trip, so nobody
    // else leases the row while our request is open.
    // The wait for the standbys comes first, inside the same lease.
    deliveryLeaseMs:
      standbyFlushTimeoutMs + deliveryTimeoutMs + Math.max(deliveryTimeoutMs, MIN_LEASE_MARGIN_MS),
    deliveryBatchSize,
    retryBackoff,
    maxRetryAfterMs,
    rejectAfterRefusals,
    collectRetryBackoff,
    standbyFlushTimeoutMs,
    reportRetentionMs,
    flushSequenceRetentionMs: assertPositiveMs(
      'flushSequenceRetentionMs',
      options.flushSequenceRetentionMs ?? DEFAULT_REPORTER_OPTIONS.flushSequenceRetentionMs,
    ),
    stopTimeoutMs: assertPositiveMs(
      'stopTimeoutMs',
      options.stopTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.stopTimeoutMs,
    ),
    collectTimeoutMs: assertPositiveMs(
      'collectTimeoutMs',
      options.collectTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.collectTimeoutMs,
    ),
    deliveryPassTimeoutMs,
    purgeTimeoutMs: assertPositiveMs(
      'purgeTimeoutMs',
      options.purgeTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.purgeTimeoutMs,
    ),
    idleInTransactionTimeoutMs: assertPositiveMs(
      'idleInTransactionTimeoutMs',
      options.idleInTransactionTimeoutMs ?? DEFAULT_REPORTER_OPTIONS.idleInTransactionTimeoutMs,
    ),
    claimWindow: {
      maxPastMs: reportRetentionMs - CLAIM_WINDOW_MARGIN_MS,
      maxFutureMs: snapshotFrequencyMs + CLAIM_WINDOW_MARGIN_MS,
    },
  };
}

function resolveBackoff(field: string, backoff: RetryBackoff | undefined): RetryBackoff {
  const resolved = {
    baseDelayMs: assertPositiveMs(`${field}.baseDelayMs`, backoff?.baseDelayMs),
    maxDelayMs: assertPositiveMs(`${field}.maxDelayMs`, backoff?.maxDelayMs),
  };
  if (resolved.maxDelayMs < resolved.baseDelayMs) {
    throw new InvalidInputError(`${field}.maxDelayMs`, resolved.maxDelayMs, 'at least baseDelayMs');
  }
  return resolved;
}

/** A URL string or URL becomes an HttpSink whose timeout is the reporter's deliveryTimeoutMs. */
function resolveSink(sink: unknown, deliveryTimeoutMs: number): Sink {
  if (typeof sink === 'string' || sink instanceof URL) {
    return new HttpSink({ url: sink, timeoutMs: deliveryTimeoutMs });
  }
  if (typeof (sink as Partial<Sink> | undefined)?.send !== 'function') {
    throw new InvalidInputError(
      'sink',
      sink,
      'a Sink (an object with send(report)) or a receiver URL',
    );
  }
  return sink as Sink;
}
