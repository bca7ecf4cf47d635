import {
  capacityRows,
  fleetNeeds,
  fleetTable,
  flushOffsetsMs,
  holdsPerInterval,
  perFlushNetOfIdle,
  replicasPerCore,
  replicasPerThousandConnections,
  type MeasuredCadenceCell,
} from '../src/lib/cadence-model';
import { parseProcessMemory } from '../src/lib/proc-memory';

describe('connections held per flush interval', () => {
  const base = { intervalSeconds: 60, flushSeconds: 0.01, idleTimeoutSeconds: 1 };

  it('warm, direct: a backend for the whole interval', () => {
    expect(holdsPerInterval({ ...base, transport: 'direct', pool: 'warm' })).toEqual({
      serverSeconds: 60,
      poolerClientSeconds: undefined,
    });
  });

  it('per-flush, direct: the flush plus the idle timeout, never more than the interval', () => {
    expect(
      holdsPerInterval({ ...base, transport: 'direct', pool: 'per-flush' }).serverSeconds,
    ).toBeCloseTo(1.01);
    expect(
      holdsPerInterval({ ...base, transport: 'direct', pool: 'per-flush', idleTimeoutSeconds: 90 })
        .serverSeconds,
    ).toBe(60);
  });

  it('behind PgBouncer: the server connection for the transaction, the client connection as direct', () => {
    const warm = holdsPerInterval({
      ...base,
      transport: 'pgbouncer',
      pool: 'warm',
      serverTransactionSeconds: 0.002,
    });
    expect(warm).toEqual({ serverSeconds: 0.002, poolerClientSeconds: 60 });
    const perFlush = holdsPerInterval({
      ...base,
      transport: 'pgbouncer',
      pool: 'per-flush',
      serverTransactionSeconds: 0.002,
    });
    expect(perFlush.serverSeconds).toBe(0.002);
    expect(perFlush.poolerClientSeconds).toBeCloseTo(1.01);
    // Without a separate transaction time, the flush's own latency stands for it.
    expect(holdsPerInterval({ ...base, transport: 'pgbouncer', pool: 'warm' }).serverSeconds).toBe(
      0.01,
    );
  });
});

describe('capacity arithmetic', () => {
  it('replicas per core: the core-seconds of an interval over CPU per flush', () => {
    expect(replicasPerCore(60, 150)).toBe(400_000);
    expect(replicasPerCore(60, 6_000)).toBe(10_000);
    expect(replicasPerCore(60, undefined)).toBeUndefined();
    expect(replicasPerCore(60, 0)).toBeUndefined();
  });

  it('replicas per 1,000 connections by Little’s law', () => {
    expect(replicasPerThousandConnections(60, 60)).toBe(1_000);
    expect(replicasPerThousandConnections(60, 1)).toBe(60_000);
    expect(replicasPerThousandConnections(60, 120)).toBe(1_000);
    expect(replicasPerThousandConnections(60, 0)).toBe(Number.POSITIVE_INFINITY);
  });

  it('fleet needs: cores and average connections for N replicas', () => {
    const needs = fleetNeeds({
      replicas: 1_000,
      intervalSeconds: 60,
      serverUsPerFlush: 6_000,
      poolerUsPerFlush: undefined,
      holds: { serverSeconds: 1.5, poolerClientSeconds: undefined },
    });
    expect(needs.serverCores).toBeCloseTo(0.1);
    expect(needs.serverConnections).toBeCloseTo(25);
    expect(needs.poolerCores).toBeUndefined();
    expect(needs.poolerClients).toBeUndefined();
  });

  it('CPU per flush net of idle, never negative', () => {
    expect(perFlushNetOfIdle(10_000, 1_000, 2, 100)).toBe(80);
    expect(perFlushNetOfIdle(1_000, 1_000, 2, 100)).toBe(0);
    expect(perFlushNetOfIdle(undefined, 1_000, 2, 100)).toBeUndefined();
    expect(perFlushNetOfIdle(1_000, undefined, 2, 10)).toBe(100);
    expect(perFlushNetOfIdle(1_000, 0, 2, 0)).toBeUndefined();
  });

  it('spreads replicas evenly over the interval', () => {
    expect(flushOffsetsMs(4, 400)).toEqual([0, 100, 200, 300]);
  });
});

describe('capacity rows from the measured cells', () => {
  const cells: MeasuredCadenceCell[] = [
    {
      transport: 'direct',
      tls: true,
      pool: 'warm',
      serverUsPerFlush: 200,
      poolerUsPerFlush: undefined,
      p50Ms: 2,
    },
    {
      transport: 'direct',
      tls: true,
      pool: 'per-flush',
      serverUsPerFlush: 6_000,
      poolerUsPerFlush: undefined,
      p50Ms: 20,
    },
    {
      transport: 'pgbouncer',
      tls: true,
      pool: 'warm',
      serverUsPerFlush: 300,
      poolerUsPerFlush: 100,
      p50Ms: 4,
    },
    {
      transport: 'pgbouncer',
      tls: true,
      pool: 'per-flush',
      serverUsPerFlush: 300,
      poolerUsPerFlush: 2_000,
      p50Ms: 30,
    },
  ];
  const rows = capacityRows(cells, { intervalSeconds: 60, perFlushIdleTimeoutSeconds: 1 });

  it('per core and per 1,000 connections, direct and behind PgBouncer', () => {
    const [directWarm, directPerFlush, poolerWarm, poolerPerFlush] = rows;
    expect(directWarm.replicasPerServerCore).toBe(300_000);
    expect(directWarm.replicasPerThousandServerConnections).toBe(1_000);
    expect(directPerFlush.replicasPerServerCore).toBe(10_000);
    // 20 ms of flush plus 1 s idle of every 60 s.
    expect(directPerFlush.replicasPerThousandServerConnections).toBeCloseTo(60_000 / 1.02);
    expect(directWarm.replicasPerPoolerCore).toBeUndefined();
    // Behind PgBouncer both hold a server connection for the warm flush's 4 ms.
    expect(poolerWarm.replicasPerThousandServerConnections).toBe(15_000_000);
    expect(poolerPerFlush.replicasPerThousandServerConnections).toBe(15_000_000);
    expect(poolerWarm.replicasPerPoolerCore).toBe(600_000);
    expect(poolerPerFlush.replicasPerPoolerCore).toBe(30_000);
    expect(poolerWarm.replicasPerThousandPoolerClients).toBe(1_000);
    expect(poolerPerFlush.replicasPerThousandPoolerClients).toBeCloseTo(60_000 / 1.03);
  });

  it('fleets of 10, 1,000 and 100,000', () => {
    const table = fleetTable(rows, 60);
    expect(table[0].needs.map((n) => n.replicas)).toEqual([10, 1_000, 100_000]);
    // A warm direct fleet of 100,000 holds 100,000 backends.
    expect(table[0].needs[2].serverConnections).toBe(100_000);
    // Per-flush direct: 100,000 × 6 ms a minute is 10 cores.
    expect(table[1].needs[2].serverCores).toBeCloseTo(10);
  });
});

describe('process memory from /proc', () => {
  it('reads private, proportional and anonymous memory', () => {
    const rollup = [
      '55e-7ff ---p 00000000 00:00 0   [rollup]',
      'Rss:                1748 kB',
      'Pss:                 239 kB',
      'Private_Clean:        80 kB',
      'Private_Dirty:       112 kB',
    ].join('\n');
    expect(parseProcessMemory(rollup, 'Name:\tpostgres\nRssAnon:\t     156 kB\n')).toEqual({
      rssBytes: 1748 * 1024,
      pssBytes: 239 * 1024,
      privateBytes: 192 * 1024,
      anonymousBytes: 156 * 1024,
    });
    expect(parseProcessMemory('Rss: 1 kB')).toBeUndefined();
  });
});
