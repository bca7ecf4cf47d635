/**
 * From what one flush costs at production cadence to what a fleet needs: PostgreSQL cores,
 * PostgreSQL connections (max_connections slots), PgBouncer cores and client connections.
 * Pure arithmetic, so the capacity table and the fleet table follow from the measured cells.
 *
 * Connections by Little's law: a replica that holds a connection for `s` seconds of every
 * `T`-second flush interval occupies s / T of a connection on average, so N replicas hold
 * N × s / T (a warm connection: s = T, one per replica, for good).
 */

export type CadenceTransport = 'direct' | 'pgbouncer';
/** warm: the pool keeps its connection across the interval; per-flush: it is gone by the next flush. */
export type CadencePool = 'warm' | 'per-flush';

export interface HoldInput {
  transport: CadenceTransport;
  pool: CadencePool;
  intervalSeconds: number;
  /** The flush as the replica sees it (connect included for per-flush), seconds. */
  flushSeconds: number;
  /** How long the pool keeps an idle connection (per-flush: closed this long after the flush). */
  idleTimeoutSeconds: number;
  /**
   * Behind PgBouncer (transaction pooling): how long one flush occupies a PostgreSQL connection,
   * seconds; a warm flush's latency through PgBouncer is an upper bound.
   */
  serverTransactionSeconds?: number;
}

export interface Holds {
  /** Seconds of a PostgreSQL connection per replica per interval. */
  serverSeconds: number;
  /** Seconds of a PgBouncer client connection per replica per interval (behind PgBouncer). */
  poolerClientSeconds: number | undefined;
}

/** How long a replica holds each kind of connection per flush interval. */
export function holdsPerInterval(input: HoldInput): Holds {
  const { intervalSeconds: t } = input;
  const held =
    input.pool === 'warm' ? t : Math.min(t, input.flushSeconds + input.idleTimeoutSeconds);
  if (input.transport === 'direct') return { serverSeconds: held, poolerClientSeconds: undefined };
  const transaction = input.serverTransactionSeconds ?? input.flushSeconds;
  return { serverSeconds: Math.min(t, transaction), poolerClientSeconds: held };
}

/** Replicas one core serves at this interval: the core's CPU seconds ÷ CPU per flush. */
export function replicasPerCore(
  intervalSeconds: number,
  usPerFlush: number | undefined,
): number | undefined {
  if (usPerFlush === undefined || !(usPerFlush > 0)) return undefined;
  return (intervalSeconds * 1_000_000) / usPerFlush;
}

/** Replicas 1,000 connections serve when each holds one for `heldSeconds` of every interval. */
export function replicasPerThousandConnections(
  intervalSeconds: number,
  heldSeconds: number,
): number {
  if (!(heldSeconds > 0)) return Number.POSITIVE_INFINITY;
  return (1_000 * intervalSeconds) / Math.min(heldSeconds, intervalSeconds);
}

export interface FleetNeedsInput {
  replicas: number;
  intervalSeconds: number;
  serverUsPerFlush: number | undefined;
  poolerUsPerFlush: number | undefined;
  holds: Holds;
}

export interface FleetNeeds {
  replicas: number;
  serverCores: number | undefined;
  /** Average PostgreSQL connections held (N × held / T). */
  serverConnections: number;
  poolerCores: number | undefined;
  poolerClients: number | undefined;
}

export function fleetNeeds(input: FleetNeedsInput): FleetNeeds {
  const { replicas: n, intervalSeconds: t } = input;
  const flushesPerSecond = n / t;
  const cores = (us: number | undefined) =>
    us === undefined ? undefined : (flushesPerSecond * us) / 1_000_000;
  return {
    replicas: n,
    serverCores: cores(input.serverUsPerFlush),
    serverConnections: (n * input.holds.serverSeconds) / t,
    poolerCores: cores(input.poolerUsPerFlush),
    poolerClients:
      input.holds.poolerClientSeconds === undefined
        ? undefined
        : (n * input.holds.poolerClientSeconds) / t,
  };
}

/**
 * Subtracts what the process spent idle over the same time (a server's background work: WAL
 * writer, checkpointer, autovacuum launcher), then divides by the flushes. Never below zero.
 */
export function perFlushNetOfIdle(
  spentUs: number | undefined,
  idleUsPerSecond: number | undefined,
  windowSeconds: number,
  flushes: number,
): number | undefined {
  if (spentUs === undefined || flushes <= 0) return undefined;
  const idle = (idleUsPerSecond ?? 0) * windowSeconds;
  return Math.max(0, spentUs - idle) / flushes;
}

/** The compressed schedule: replica i flushes at i × interval / replicas into every interval. */
export function flushOffsetsMs(replicas: number, intervalMs: number): number[] {
  return Array.from({ length: replicas }, (_, i) => (i * intervalMs) / replicas);
}

/** What capacityRows needs of a measured cell (section 7). */
export interface MeasuredCadenceCell {
  transport: CadenceTransport;
  tls: boolean;
  pool: CadencePool;
  serverUsPerFlush: number | undefined;
  poolerUsPerFlush: number | undefined;
  /** The flush as the replica saw it, ms (p50). */
  p50Ms: number;
}

export interface CapacityRow {
  transport: CadenceTransport;
  tls: boolean;
  pool: CadencePool;
  serverUsPerFlush: number | undefined;
  poolerUsPerFlush: number | undefined;
  holds: Holds;
  replicasPerServerCore: number | undefined;
  replicasPerThousandServerConnections: number;
  replicasPerPoolerCore: number | undefined;
  replicasPerThousandPoolerClients: number | undefined;
}

export interface CapacityAssumptions {
  intervalSeconds: number;
  /** The per-flush pool's idle timeout in production (the library's default). */
  perFlushIdleTimeoutSeconds: number;
}

/**
 * Replicas per PostgreSQL core, per 1,000 PostgreSQL connections and per PgBouncer core, for
 * each measured cell, at the real interval. Behind PgBouncer a flush occupies a server
 * connection for its transaction only: the warm flush's latency through PgBouncer (same TLS)
 * stands for it, an upper bound.
 */
export function capacityRows(
  cells: readonly MeasuredCadenceCell[],
  assumptions: CapacityAssumptions,
): CapacityRow[] {
  const { intervalSeconds: t } = assumptions;
  return cells.map((cell) => {
    const warmThroughPooler = cells.find(
      (c) => c.transport === 'pgbouncer' && c.pool === 'warm' && c.tls === cell.tls,
    );
    const holds = holdsPerInterval({
      transport: cell.transport,
      pool: cell.pool,
      intervalSeconds: t,
      flushSeconds: cell.p50Ms / 1000,
      idleTimeoutSeconds: assumptions.perFlushIdleTimeoutSeconds,
      serverTransactionSeconds:
        cell.transport === 'pgbouncer' ? (warmThroughPooler ?? cell).p50Ms / 1000 : undefined,
    });
    return {
      transport: cell.transport,
      tls: cell.tls,
      pool: cell.pool,
      serverUsPerFlush: cell.serverUsPerFlush,
      poolerUsPerFlush: cell.poolerUsPerFlush,
      holds,
      replicasPerServerCore: replicasPerCore(t, cell.serverUsPerFlush),
      replicasPerThousandServerConnections: replicasPerThousandConnections(t, holds.serverSeconds),
      replicasPerPoolerCore:
        cell.transport === 'pgbouncer' ? replicasPerCore(t, cell.poolerUsPerFlush) : undefined,
      replicasPerThousandPoolerClients:
        holds.poolerClientSeconds === undefined
          ? undefined
          : replicasPerThousandConnections(t, holds.poolerClientSeconds),
    };
  });
}

export const FLEET_SIZES = [10, 1_000, 100_000] as const;

/** What fleets of 10, 1,000 and 100,000 replicas need, for each row. */
export function fleetTable(
  rows: readonly CapacityRow[],
  intervalSeconds: number,
  sizes: readonly number[] = FLEET_SIZES,
): Array<{ row: CapacityRow; needs: FleetNeeds[] }> {
  return rows.map((row) => ({
    row,
    needs: sizes.map((replicas) =>
      fleetNeeds({
        replicas,
        intervalSeconds,
        serverUsPerFlush: row.serverUsPerFlush,
        poolerUsPerFlush: row.poolerUsPerFlush,
        holds: row.holds,
      }),
    ),
  }));
}
