import {
  breakdown,
  categorize,
  childrenCpuUs,
  evaluateGoals,
  extractNotes,
  flushThroughputSvg,
  niceCeiling,
  parseProcStat,
  parsePgbenchLog,
  pgbenchScript,
  callOrder,
} from '../src/index';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { settingsFor } from '../src/lib/context';
import { otherRuns } from '../src/report/write';
import { exclusiveLockHoldMs } from '../src/lib/wire-timing';
import { NOTES_TEMPLATE, renderReadme } from '../src/report/readme';
import type { BenchResults } from '../src/report/results';
import { recordedCall, substitute } from '../src/lib/replay';
import { pgbenchValue } from '../src/lib/pgbench';
import { fitHold } from '../src/sections/capacity';
import { capacityRows, fleetTable } from '../src/lib/cadence-model';
import { roundByRoundRatios, type FlushCell, type FlushRatios } from '../src/sections/flush';

const cell = (
  contender: FlushCell['contender'],
  replicas: number,
  flushesPerSecond: number,
): FlushCell => ({
  contender,
  replicas,
  rounds: [],
  flushesPerSecond,
  p50Ms: 1,
  p99Ms: 2,
  clientCpuUsPerFlush: 100,
  serverCpuUsPerFlush: 200,
  errors: 0,
});

describe('flush chart', () => {
  it('draws one line per contender a, l, k, h with a point per concurrency', () => {
    const cells = ['a', 'l', 'k', 'h', 'f'].flatMap((c, i) =>
      [1, 4, 16, 64].map((n) => cell(c as FlushCell['contender'], n, (i + 1) * n * 10)),
    );
    const svg = flushThroughputSvg(cells, 'test <run> & more');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(4);
    expect(svg.match(/<circle /g)).toHaveLength(16);
    expect(svg).toContain('test &lt;run&gt; &amp; more');
    expect(svg).not.toContain('NaN');
  });

  it('rounds the axis up to a readable number', () => {
    expect(niceCeiling(3_700)).toBe(5_000);
    expect(niceCeiling(1_000)).toBe(1_000);
    expect(niceCeiling(2_100)).toBe(2_500);
  });
});

describe('round by round', () => {
  it('pairs the rounds of two contenders by index, at one concurrency', () => {
    const withRounds = (
      contender: FlushCell['contender'],
      replicas: number,
      perSecond: number[],
    ): FlushCell => ({
      ...cell(contender, replicas, 0),
      rounds: perSecond.map((flushesPerSecond) => ({
        flushesPerSecond,
        p50Ms: 1,
        p99Ms: 2,
        flushes: 1,
        errors: 0,
        clientCpuUsPerFlush: 1,
        serverCpuUsPerFlush: 1,
      })),
    });
    const cells = [
      withRounds('a', 16, [110, 90, 100]),
      withRounds('l', 16, [100, 100, 0]),
      withRounds('a', 4, [1]),
      withRounds('l', 4, [2]),
    ];
    // The third round has no finite ratio (l measured 0/s) and is left out.
    expect(roundByRoundRatios(cells, 'a', 'l', 16)).toEqual([1.1, 0.9]);
    expect(roundByRoundRatios(cells, 'a', 'l', 4)).toEqual([0.5]);
    expect(roundByRoundRatios(cells, 'a', 'k', 16)).toEqual([]);
  });
});

describe('goals', () => {
  const ratios = (overrides: Partial<FlushRatios>): FlushRatios => ({
    replicas: 16,
    defaultOverCoderShared: 1.1,
    defaultOverCoderExclusive: 2,
    defaultServerCpuOverCoderShared: 0.9,
    defaultOverRawPrepared: 0.85,
    defaultOverRawSameStatement: 0.7,
    preparedOverUnprepared: 2,
    defaultOverUnprepared: 1.5,
    defaultOverRawInteractive: 1.5,
    defaultOverPgbench: 1,
    sharedOverExclusive: 1.1,
    coderSharedOverExclusive: 2,
    interactiveOverRawPg: 0.5,
    trackerOverDefault: 0.9,
    ...overrides,
  });
  const flush = (r: FlushRatios) => ({
    contenders: [],
    pgbench: 'measured' as const,
    defaultFlush: { source: 'captured' as const, text: '', storePrepared: true },
    cells: [],
    ratios: [r],
  });

  it("holds the default flush to coder's protocol (throughput and PostgreSQL CPU) and to raw prepared", () => {
    const goals = evaluateGoals({ flush: flush(ratios({})) });
    expect(goals.map((g) => [g.id, g.status])).toEqual([
      ['flush-default-vs-coder-shared', 'PASS'],
      ['flush-cpu-default-vs-coder-shared', 'PASS'],
      ['flush-default-vs-raw-prepared', 'PASS'],
      ['cutover-100k-vs-raw-pg', 'NOT MEASURED'],
      ['track-vs-set-baseline', 'NOT MEASURED'],
    ]);
  });

  it('misses when the default is slower than coder, costs the server more, or trails raw prepared', () => {
    const goals = evaluateGoals({
      flush: flush(
        ratios({
          defaultOverCoderShared: 0.99,
          defaultServerCpuOverCoderShared: 1.01,
          defaultOverRawPrepared: 0.79,
        }),
      ),
    });
    expect(goals.slice(0, 3).map((g) => g.status)).toEqual(['MISS', 'MISS', 'MISS']);
  });

  it('says NOT MEASURED when PostgreSQL CPU could not be read (NaN ratio)', () => {
    const goals = evaluateGoals({
      flush: flush(ratios({ defaultServerCpuOverCoderShared: Number.NaN })),
    });
    expect(goals[1]).toMatchObject({ status: 'NOT MEASURED', actualText: '–' });
  });
});

describe('capacity', () => {
  it('fits a line through the measured holds and finds where it reaches the lock_timeout', () => {
    const fit = fitHold(
      [
        [1_000_000, 1_010],
        [100_000, 110],
      ],
      2_000,
    );
    expect(fit?.fixedMs).toBeCloseTo(10, 6);
    expect(fit?.perUnitUs).toBeCloseTo(1, 6);
    expect(fit?.sizeAtLockTimeout).toBeCloseTo(1_990_000, 0);
    expect(fitHold([[1_000, 5]], 2_000)).toBeUndefined();
    expect(
      fitHold(
        [
          [1_000, 5],
          [10_000, 4],
        ],
        2_000,
      )?.sizeAtLockTimeout,
    ).toBeUndefined();
  });

  it('measures the hold from the lock statement to COMMIT', () => {
    const at = (text: string, sentAt: number, doneAt: number) => ({ text, sentAt, doneAt });
    expect(
      exclusiveLockHoldMs([
        at('BEGIN', 0, 1),
        at("SELECT set_config('lock_timeout', $1, true)", 1, 2),
        at('SELECT pg_advisory_xact_lock($1::bigint)', 2, 5),
        at('WITH deleted AS (DELETE …)', 5, 40),
        at('COMMIT', 40, 47),
      ]),
    ).toBe(42);
    expect(exclusiveLockHoldMs([at('BEGIN', 0, 1), at('COMMIT', 1, 2)])).toBeUndefined();
  });
});

describe('record and replay', () => {
  const replica = '9a7d1f52-3c4e-4b8a-9f01-0000000000f1';
  const other = '00000000-0000-4000-8000-000000000001';

  it('keeps the statements between BEGIN and COMMIT and remembers the transaction', () => {
    const call = recordedCall([
      { text: 'BEGIN', values: [] },
      { text: 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED', values: [] },
      { text: 'WITH … $1 $2 $3', values: ['2000ms', replica, '77'], name: 'q1' },
      { text: 'COMMIT', values: [] },
    ]);
    expect(call.transaction).toBe(true);
    expect(call.statements.map((s) => s.text)).toEqual([
      'SET TRANSACTION ISOLATION LEVEL READ COMMITTED',
      'WITH … $1 $2 $3',
    ]);
    expect(recordedCall([{ text: 'SELECT 1', values: [] }]).transaction).toBe(false);
  });

  it('replaces the values that identify a call, wherever they are, and nothing else', () => {
    const ids = ['6f1c2a9e-0d4b-4c51-9a39-3b7f0e5d2c11'];
    expect(
      substitute(
        ['2000ms', replica, '77', replica, 77, ids, [], '1'],
        [
          [replica, other],
          ['77', '78'],
          [ids, ['x']],
        ],
      ),
    ).toEqual(['2000ms', other, '78', other, '78', ['x'], [], '1']);
  });
});

describe('pgbench', () => {
  const replica = '9a7d1f52-3c4e-4b8a-9f01-0000000000f2';
  const flush = {
    replicaId: replica,
    sequence: 987n,
    call: {
      transaction: true,
      statements: [
        { text: 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED', values: [] },
        {
          text: 'SELECT set_config($1, $2, true), pg_advisory_xact_lock_shared($3::bigint)',
          values: ['lock_timeout', '2000ms', '8463215219768819713'],
        },
        {
          text: 'INSERT INTO t SELECT $1::uuid, $2::bigint, $3::uuid[], $10::bigint FROM x',
          values: [replica, '987', [], '4', '5', '6', '7', '8', '9', '10'],
        },
      ],
    },
  };

  it("binds every placeholder of the recorded flush: the client's replica, its sequence, the recorded values", () => {
    const { script, variables } = pgbenchScript(flush);
    expect(script).not.toMatch(/\$\d/);
    expect(script.split('\n')).toEqual([
      '\\set seq :seq + 1',
      'BEGIN;',
      'SET TRANSACTION ISOLATION LEVEL READ COMMITTED;',
      'SELECT set_config(:p2_1, :p2_2, true), pg_advisory_xact_lock_shared(:p2_3::bigint);',
      `INSERT INTO t SELECT (:prefix::text || lpad(:client_id::text, 12, '0'))::uuid, :seq::bigint, :p3_3::uuid[], :p3_10::bigint FROM x;`,
      'COMMIT;',
      '',
    ]);
    expect(variables).toEqual({
      p2_1: 'lock_timeout',
      p2_2: '2000ms',
      p2_3: '8463215219768819713',
      p3_3: '{}',
      p3_10: '10',
    });
    expect(pgbenchValue(['a', 'b'])).toBe('{a,b}');
  });

  it('reads per-transaction latencies from its log, and its CPU from bash `times`', () => {
    const latencies: number[] = [];
    parsePgbenchLog('0 1 1523 0 1700000000 123\n1 1 980 0 1700000000 456\n', latencies);
    expect(latencies).toEqual([1.523, 0.98]);
    expect(childrenCpuUs('tps = 1\n0m0.010s 0m0.002s\n0m1.500s 0m0.250s\n')).toBe(1_750_000);
    expect(childrenCpuUs('no times here')).toBeUndefined();
  });
});

describe('cpu accounting', () => {
  it('parses /proc/<pid>/stat even when the command name has spaces and parentheses', () => {
    const fields = ['S', '42', ...Array(9).fill('0'), '150', '50', '7', '3', '20', '0'];
    expect(parseProcStat(99, `99 (postgres: a (b) c) ${fields.join(' ')}`)).toEqual({
      pid: 99,
      ppid: 42,
      own: 200,
      reaped: 10,
    });
  });

  it('attributes profile samples to layers', () => {
    const node = (id: number, functionName: string, url: string) => ({
      id,
      callFrame: { functionName, url, lineNumber: 0 },
    });
    const profile = {
      nodes: [
        node(1, '(root)', ''),
        node(2, 'request', 'file:///w/node_modules/@prisma/client/runtime/client.js'),
        node(3, 'query', 'file:///w/node_modules/pg/lib/client.js'),
        node(4, '(idle)', ''),
        node(5, 'writev', ''),
      ],
      startTime: 0,
      endTime: 1000,
      samples: [2, 2, 3, 4, 5],
      timeDeltas: [100, 100, 100, 500, 200],
    };
    expect(categorize(profile.nodes[1]!)).toBe('prisma client runtime');
    const result = breakdown(profile);
    expect(result.totalMs).toBe(1);
    expect(result.byCategory[0]).toEqual({
      category: 'idle (waiting for PostgreSQL)',
      ms: 0.5,
      share: 0.5,
    });
    expect(result.topFunctions.map((f) => f.category)).toEqual([
      'prisma client runtime',
      'socket writes (syscall)',
      'node-postgres (pg, pg-protocol)',
    ]);
  });
});

describe('tracker call order', () => {
  it('visits every pair once first, then draws uniformly', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const order = callOrder(1000, 100, random);
    expect(new Set(order.subarray(0, 100)).size).toBe(100);
    expect(Math.max(...order)).toBeLessThan(100);
  });
});

describe('README notes', () => {
  it('keeps the hand-written block between the markers', () => {
    const text =
      'x\n<!-- notes:start (hand-written; kept when the bench rewrites this file) -->\nmine\n<!-- notes:end -->\n';
    expect(extractNotes(text)).toBe('mine');
    expect(extractNotes('nothing')).toBeUndefined();
  });
});

describe('README', () => {
  const results = (over: Partial<BenchResults> = {}): BenchResults => ({
    schemaVersion: 2,
    mode: 'quick',
    command: 'npm run bench -- --quick',
    date: '2026-12-02T06:00:00.000Z',
    durationSeconds: 150,
    git: { commit: 'abc', dirtyPaths: 0 },
    machine: {
      cpuModel: 'cpu',
      cores: 2,
      memoryBytes: 2 ** 30,
      platform: 'linux',
      release: '6',
      loadAverageAtStart: [1, 1, 1],
    },
    node: 'v20',
    postgres: {
      version: 'PostgreSQL 18.4',
      serverVersion: '18.4',
      source: 'embedded',
      kind: 'embedded-durable',
      durable: true,
      settings: { fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on' },
      serverCpuMeasured: true,
      tls: true,
    },
    pgbench: null,
    settings: settingsFor(true),
    baselines: {
      problems: [],
      defaultFlushPrepared: true,
      statements: { defaultFlush: ['WITH …'], interactiveFlush: [], cutover: [] },
    },
    capacity: {
      flushIntervalSeconds: 60,
      flushSource: 'flush section',
      replicas: 16,
      serverCpuUsPerFlush: 600,
      flushesPerSecond: 2000,
      replicasPerCore: 100_000,
      replicasAtMeasuredThroughput: 120_000,
      lockTimeoutMs: 2000,
      holds: [
        {
          kind: 'distinct-ids',
          replicaRows: 16,
          distinctIds: 100_000,
          holdMs: 80,
          holdRoundsMs: [80],
          callMs: 82,
        },
      ],
      rowsFit: undefined,
      idsFit: { fixedMs: 5, perUnitUs: 0.75, sizeAtLockTimeout: 2_660_000 },
    },
    failures: [],
    goals: evaluateGoals({}),
    ...over,
  });

  it('says which server was used, what changed, and the capacity figures', () => {
    const text = renderReadme(results(), 'chart.svg', undefined);
    expect(text).toContain(
      'embedded, durable (fsync=on, synchronous_commit=on, full_page_writes=on)',
    );
    expect(text).toContain('## What changed since the previous published run, and why');
    expect(text).toContain("coder's protocol as the baseline");
    expect(text).toContain(
      '**Replicas per PostgreSQL core at a 60 s flush: 100,000** (section 7 did not run',
    );
    expect(text).toContain('**2,660,000 distinct ids**');
    expect(text).toContain('(not found for replica rows: the hold did not grow');
    expect(text).toContain(NOTES_TEMPLATE);
    expect(text).not.toContain('This server is not durable');
  });

  it('shows the production-cadence section and derives the capacity table from it', () => {
    const cell = (
      transport: 'direct' | 'pgbouncer',
      pool: 'warm' | 'per-flush',
      serverUsPerFlush: number,
      poolerUsPerFlush?: number,
    ) => ({
      transport,
      tls: true,
      pool,
      replicas: 32,
      idleTimeoutMs: pool === 'warm' ? 60_000 : 83,
      rounds: [],
      p50Ms: pool === 'warm' ? 2 : 20,
      p99Ms: 30,
      socketsPerFlush: pool === 'warm' ? 0 : 1,
      nodeUsPerFlush: 500,
      serverUsPerFlush,
      poolerUsPerFlush,
      errors: 0,
    });
    const cells = [
      cell('direct', 'warm', 200),
      cell('direct', 'per-flush', 6_000),
      cell('pgbouncer', 'warm', 300, 100),
      cell('pgbouncer', 'per-flush', 300, 2_000),
    ];
    const base = results();
    const rows = capacityRows(cells, { intervalSeconds: 60, perFlushIdleTimeoutSeconds: 1 });
    const text = renderReadme(
      results({
        cadence: {
          realIntervalSeconds: 60,
          intervalMs: 500,
          intervals: 6,
          replicas: 32,
          rounds: 1,
          warmIdleTimeoutMs: 60_000,
          perFlushIdleTimeoutMs: 83,
          cells,
          warm: [
            {
              transport: 'direct',
              tls: true,
              backendContextBytes: 1_700 * 1024,
              backendPrivateBytes: 2_200 * 1024,
              freshBackendContextBytes: 1_600 * 1024,
              freshBackendPrivateBytes: 1_800 * 1024,
            },
            {
              transport: 'pgbouncer',
              tls: true,
              poolerBytesPerClient: 10 * 1024,
              poolerClientsMeasured: 200,
            },
          ],
          maxConnections: 400,
          superuserReservedConnections: 3,
          authMethod: 'password',
          pgbouncerClientAuth: 'trust',
          tlsMeasured: true,
          pgbouncerMeasured: true,
          notes: [],
        },
        capacity: {
          ...base.capacity!,
          cadence: { perFlushIdleTimeoutMs: 1_000, rows, fleets: fleetTable(rows, 60) },
        },
      }),
      'chart.svg',
      undefined,
    );
    expect(text).toContain('## 7. The flush at production cadence');
    expect(text).toContain(
      '| direct | require | per-flush | 6,000 | 500 |  | 20.0 | 30.0 | 1.00 | 0 |',
    );
    // Per-flush ÷ warm, PostgreSQL CPU: 6,000 ÷ 200.
    expect(text).toContain('| direct | require | 30.00× | 1.00× |  |');
    expect(text).toContain('| require | 1,700 | 2,200 | 1,600 | 1,800 |');
    expect(text).toContain('10.0 kB per idle client with TLS require (200 clients)');
    // Section 6 from section 7: per core and per 1,000 connections.
    expect(text).toContain('replicas per 1,000 PostgreSQL connections');
    expect(text).toContain('| direct | require | warm | 200 | **300,000** | **1,000** |');
    expect(text).toContain('| direct | require | per-flush | 6,000 | **10,000** | **58,824** |');
    expect(text).toContain(
      '| PgBouncer | require | per-flush | 300 | **200,000** | **30,000,000** | 2,000 | 30,000 | 58,824 |',
    );
    expect(text).not.toContain('section 7 did not run');
  });

  it('warns about a server that is not durable, and shows other servers beside this run', () => {
    const fast = results({
      postgres: {
        ...results().postgres,
        kind: 'embedded-fast',
        durable: false,
        settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' },
      },
    });
    const pg15 = results({
      postgres: { ...results().postgres, serverVersion: '15.20', kind: 'database-url' },
    });
    const text = renderReadme(fast, 'chart.svg', 'kept', [{ directory: 'pg15', results: pg15 }]);
    expect(text).toContain('This server is not durable');
    expect(text).toContain('[pg15](pg15/README.md): PostgreSQL 15.20, durable, quick, 2026-12-02');
    expect(text).toContain('kept');
  });
});

describe('other runs beside this one', () => {
  it('reads results.json from subdirectories and skips older formats and junk', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-report-'));
    try {
      for (const [name, content] of [
        ['pg15', JSON.stringify({ schemaVersion: 2, goals: [] })],
        ['old', JSON.stringify({ schemaVersion: 1, goals: [] })],
        ['junk', '{'],
      ] as const) {
        mkdirSync(join(dir, name));
        writeFileSync(join(dir, name, 'results.json'), content);
      }
      expect(otherRuns(dir).map((r) => r.directory)).toEqual(['pg15']);
      expect(otherRuns(join(dir, 'missing'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
