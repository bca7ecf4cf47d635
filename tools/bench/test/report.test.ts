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
import type { FlushCell } from '../src/sections/flush';

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
  it('draws one line per contender a, b, d, e with a point per concurrency', () => {
    const cells = ['a', 'b', 'd', 'e', 'f'].flatMap((c, i) =>
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

describe('goals', () => {
  it('passes, misses, or says a goal was not measured', () => {
    const goals = evaluateGoals({
      flush: {
        contenders: [],
        pgbench: 'measured',
        cells: [],
        ratios: [
          {
            replicas: 16,
            oursOverRawPg: 0.85,
            oursOverPgbench: 0.5,
            sharedOverExclusive: 1.1,
            oursOverRawSameStatement: 0.6,
            interactiveOverRawPg: 0.5,
            sharedOverExclusiveInteractive: 2,
            preparedOverUnprepared: 1.2,
            oursPreparedOverOurs: 1.5,
            oursPreparedOverRawPg: 1.3,
            sharedOverExclusivePrepared: 1.1,
          },
        ],
      },
    });
    expect(goals.map((g) => [g.id, g.status])).toEqual([
      ['flush-ours-vs-raw-pg', 'PASS'],
      ['flush-shared-vs-exclusive', 'MISS'],
      ['cutover-100k-vs-raw-pg', 'NOT MEASURED'],
      ['track-ops-per-second', 'NOT MEASURED'],
      ['track-bytes-per-id', 'NOT MEASURED'],
    ]);
  });
});

describe('pgbench', () => {
  it('binds every placeholder of the baseline to a pgbench variable', () => {
    const script = pgbenchScript();
    expect(script).not.toMatch(/\$\d/);
    expect(script.split('\n')[0]).toBe('\\set seq :seq + 1');
    expect(script).toContain('pg_advisory_xact_lock_shared(:lock_key::bigint)');
    expect(script).toContain(
      `(:prefix::text || lpad(:client_id::text, 12, '0'))::uuid, :writer::uuid, :seq::bigint`,
    );
    expect(script.match(/;\n/g)).toHaveLength(5);
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
