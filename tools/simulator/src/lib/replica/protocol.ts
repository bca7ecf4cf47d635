/**
 * Messages between the simulator and its replica processes (Node IPC with the 'advanced'
 * serialization, so bigints cross unchanged).
 */

/** What a replica needs to know, passed in its environment as JSON. */
export interface ReplicaConfig {
  index: number;
  databaseUrl: string;
  deploymentId: string;
  collectorUrl: string;
  flushIntervalMs: number;
  periodMs: number;
  statementDeadlineMs: number;
  maxStalenessMs: number;
  ratePerReplica: number;
  workspaces: number;
  users: number;
  replicas: number;
  lockMode: 'shared' | 'exclusive';
  /** How often the replica pushes its state to the parent (besides after every flush). */
  stateIntervalMs: number;
}

export const REPLICA_CONFIG_ENV = 'USAGEKIT_SIM_REPLICA_CONFIG';

/** The application_name of every replica connection; --chaos terminates only these. */
export const REPLICA_APPLICATION_NAME_PREFIX = 'usagekit-sim-replica-';

/** Allowed and denied requests. */
export interface RequestCounts {
  allowed: bigint;
  denied: bigint;
}

/** A flush batch the store neither confirmed nor refused for sure (the call failed). */
export interface UnconfirmedBatch extends RequestCounts {
  sequence: bigint;
  /** The tracker instance that sent it: sequences are per (replica, writer). */
  writerId: string | undefined;
}

/** Cumulative since the replica started, except the latency samples (since the last message). */
export interface ReplicaState {
  replicaId: string;
  index: number;
  pid: number;
  /** Requests generated (and tracked; every generated request is tracked). */
  generated: RequestCounts;
  /**
   * Requests the database is known to have from this replica (tracker.confirmed(): each batch
   * once, applied now or found already applied by its sequence).
   */
  flushed: RequestCounts;
  /** The same, summed from FlushResult of successful flushes (cross-check, see README). */
  flushResults: RequestCounts;
  /** What the tracker still holds (tracker.pending()). */
  pending: RequestCounts;
  flushes: number;
  batches: number;
  /** Batches the database had already applied (a retry after an ambiguous commit). */
  duplicateBatches: number;
  /** Flushes that inserted the replica's row: the first flush after a cutover. */
  newPeriods: number;
  /** Cutovers this replica's reporter performed (periods it won). */
  periodsReported: number;
  /** Delivery attempts by this replica's reporter, and how many the collector acknowledged. */
  deliveries: number;
  deliveriesAcknowledged: number;
  /** Errors by class, e.g. "flush CONNECTION_LOST". */
  errors: Record<string, number>;
  flushLatencyMs: number[];
  cutoverLatencyMs: number[];
  /**
   * When each flush that completed (wrote, or found nothing to write) ended, epoch ms, since
   * the last message: the stall and recovery times of --chaos are measured from these.
   */
  flushCompletedAtMs: number[];
}

export type ParentToReplica = { type: 'start' } | { type: 'freeze' } | { type: 'stop' };

export type ReplicaToParent =
  /** metricsPort: where the replica serves its prom-client registry (127.0.0.1). */
  | { type: 'ready'; replicaId: string; pid: number; metricsPort: number }
  | { type: 'state'; state: ReplicaState }
  /** Answer to 'freeze': no more traffic, no more flushes; safe to SIGKILL. */
  | { type: 'frozen'; state: ReplicaState; unconfirmedBatch: UnconfirmedBatch | undefined }
  /** Answer to 'stop': the final flush and the reporter's last delivery are done. */
  | { type: 'stopped'; state: ReplicaState }
  | { type: 'fatal'; message: string };
