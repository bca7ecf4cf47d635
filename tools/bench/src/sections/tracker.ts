/**
 * Section 4: BoundaryUsageTracker.track(), the per-request hot path. 1 M calls spread over
 * 100 k distinct ids (50 k workspaces, each with its own owner: 50 k users), against the
 * simplest thing that could work: one Set<string> of both ids plus two number additions.
 *
 * Speed: calls per second over the 1 M calls of a fresh tracker (so the 100 k first sightings,
 * with their validation and inserts, are included), per second of this process's CPU time: the
 * loop is synchronous, so on a dedicated core CPU time is wall time, and on a shared machine
 * it leaves out the time other processes held the core (wall-clock rates are kept beside it).
 * A second measurement spreads the same calls over 1,000 ids, which stay in the CPU caches. Memory: heap retained per distinct id,
 * measured with global.gc() before and after; the id strings themselves are allocated before
 * the first measurement and belong to the caller, so the figure is the tracker's own structures.
 * What a 36-character id string adds when the tracker is its only owner is reported beside it.
 */
import * as boundaryUsage from '@usagekit/boundary-usage';
import { clientCpuUs } from '../lib/cpu.js';
import { flatUuid } from '../lib/ids.js';
import type { BenchContext } from '../lib/context.js';
import { fmt } from '../lib/output.js';
import { median, ratio } from '../lib/stats.js';

interface Trackable {
  track(workspaceId: string, ownerId: string, allowed: number, denied: number): void;
}

type TrackerConstructor = new () => Trackable;

export interface TrackerRound {
  trackerOpsPerSecond: number;
  baselineOpsPerSecond: number;
  /** Wall-clock rates, for reference: on a shared machine they also measure the neighbours. */
  trackerWallOpsPerSecond: number;
  baselineWallOpsPerSecond: number;
  trackerBytesPerId: number | undefined;
  baselineBytesPerId: number | undefined;
}

export interface TrackerSectionResult {
  status: 'measured' | 'skipped';
  skipReason?: string;
  calls: number;
  distinctIds: number;
  rounds: TrackerRound[];
  /** Calls per second of CPU time (process.cpuUsage), median over rounds. */
  trackerOpsPerSecond: number;
  baselineOpsPerSecond: number;
  trackerWallOpsPerSecond: number;
  baselineWallOpsPerSecond: number;
  /** tracker ÷ baseline (speed). */
  trackerOverBaseline: number;
  /** The same calls over only 1,000 distinct ids, which stay in the CPU caches. */
  hot:
    { distinctIds: number; trackerOpsPerSecond: number; baselineOpsPerSecond: number } | undefined;
  /** Undefined without --expose-gc. */
  trackerBytesPerId: number | undefined;
  baselineBytesPerId: number | undefined;
  /** Heap of one distinct 36-character id string, for context. */
  idStringBytes: number | undefined;
}

/** The baseline: a plain Set of both ids and two counters. */
export class SetBaseline implements Trackable {
  private readonly ids = new Set<string>();
  private allowed = 0;
  private denied = 0;

  track(workspaceId: string, ownerId: string, allowed: number, denied: number): void {
    this.ids.add(workspaceId);
    this.ids.add(ownerId);
    this.allowed += allowed;
    this.denied += denied;
  }

  get counted(): { ids: number; allowed: number; denied: number } {
    return { ids: this.ids.size, allowed: this.allowed, denied: this.denied };
  }
}

export function trackerConstructor(): TrackerConstructor | undefined {
  const candidate = (boundaryUsage as Record<string, unknown>)['BoundaryUsageTracker'];
  if (typeof candidate !== 'function') return undefined;
  const probe = (candidate as { prototype?: { track?: unknown } }).prototype;
  return typeof probe?.track === 'function' ? (candidate as TrackerConstructor) : undefined;
}

type GcFunction = () => void;

function gcFunction(): GcFunction | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? (gc as GcFunction) : undefined;
}

function settledHeap(gc: GcFunction): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

// Two loops, not one loop over a `Trackable`: a shared call site would turn polymorphic and
// penalize whichever implementation runs second.
interface Timing {
  wallMs: number;
  cpuMs: number;
}

function timeTracker(
  target: Trackable,
  workspaces: string[],
  owners: string[],
  order: Uint32Array,
): Timing {
  const cpu = clientCpuUs();
  const started = performance.now();
  for (let i = 0; i < order.length; i++) {
    const k = order[i];
    target.track(workspaces[k], owners[k], 1, i & 1);
  }
  return { wallMs: performance.now() - started, cpuMs: (clientCpuUs() - cpu) / 1000 };
}

function timeBaseline(
  target: SetBaseline,
  workspaces: string[],
  owners: string[],
  order: Uint32Array,
): Timing {
  const cpu = clientCpuUs();
  const started = performance.now();
  for (let i = 0; i < order.length; i++) {
    const k = order[i];
    target.track(workspaces[k], owners[k], 1, i & 1);
  }
  return { wallMs: performance.now() - started, cpuMs: (clientCpuUs() - cpu) / 1000 };
}

/** Which pair each call uses: every pair once first (in shuffled order), then uniformly random. */
export function callOrder(
  calls: number,
  pairs: number,
  random: () => number = Math.random,
): Uint32Array {
  const order = new Uint32Array(calls);
  for (let i = 0; i < pairs && i < calls; i++) order[i] = i;
  for (let i = Math.min(pairs, calls) - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (let i = pairs; i < calls; i++) order[i] = Math.floor(random() * pairs);
  return order;
}

export async function runTrackerSection(ctx: BenchContext): Promise<TrackerSectionResult> {
  const { settings, out } = ctx;
  const Tracker = trackerConstructor();
  const pairs = settings.trackerDistinctIds / 2;
  const empty: TrackerSectionResult = {
    status: 'skipped',
    calls: settings.trackerCalls,
    distinctIds: settings.trackerDistinctIds,
    rounds: [],
    trackerOpsPerSecond: Number.NaN,
    baselineOpsPerSecond: Number.NaN,
    trackerWallOpsPerSecond: Number.NaN,
    baselineWallOpsPerSecond: Number.NaN,
    trackerOverBaseline: Number.NaN,
    hot: undefined,
    trackerBytesPerId: undefined,
    baselineBytesPerId: undefined,
    idStringBytes: undefined,
  };
  if (!Tracker) {
    const skipReason =
      '@usagekit/boundary-usage does not export BoundaryUsageTracker with track(); tracker section skipped';
    out.line(skipReason);
    return { ...empty, skipReason };
  }
  const gc = gcFunction();
  if (!gc) out.line('  (run node with --expose-gc for heap figures; `npm run bench` does)');

  const workspaces = Array.from({ length: pairs }, flatUuid);
  const owners = Array.from({ length: pairs }, flatUuid);
  const order = callOrder(settings.trackerCalls, pairs);

  // Warm-up: let V8 optimize both paths before anything is timed.
  timeTracker(new Tracker(), workspaces, owners, order);
  timeBaseline(new SetBaseline(), workspaces, owners, order);

  const measure = (
    which: 'tracker' | 'baseline',
    callOrderToUse: Uint32Array,
    distinctIds: number,
  ) => {
    const before = gc ? settledHeap(gc) : 0;
    const target = which === 'tracker' ? new Tracker() : new SetBaseline();
    const timing =
      which === 'tracker'
        ? timeTracker(target, workspaces, owners, callOrderToUse)
        : timeBaseline(target as SetBaseline, workspaces, owners, callOrderToUse);
    const after = gc ? settledHeap(gc) : 0;
    keepAlive(target);
    return {
      opsPerSecond: callOrderToUse.length / (timing.cpuMs / 1000),
      wallOpsPerSecond: callOrderToUse.length / (timing.wallMs / 1000),
      bytesPerId: gc ? (after - before) / distinctIds : undefined,
    };
  };

  const rounds: TrackerRound[] = [];
  for (let round = 0; round < settings.trackerRounds; round++) {
    await yieldToEventLoop(ctx.signal);
    const trackerFirst = round % 2 === 0;
    const first = measure(
      trackerFirst ? 'tracker' : 'baseline',
      order,
      settings.trackerDistinctIds,
    );
    const second = measure(
      trackerFirst ? 'baseline' : 'tracker',
      order,
      settings.trackerDistinctIds,
    );
    const tracker = trackerFirst ? first : second;
    const baseline = trackerFirst ? second : first;
    rounds.push({
      trackerOpsPerSecond: tracker.opsPerSecond,
      baselineOpsPerSecond: baseline.opsPerSecond,
      trackerWallOpsPerSecond: tracker.wallOpsPerSecond,
      baselineWallOpsPerSecond: baseline.wallOpsPerSecond,
      trackerBytesPerId: tracker.bytesPerId,
      baselineBytesPerId: baseline.bytesPerId,
    });
  }

  // The same number of calls over 1,000 ids: what track() costs when memory is not the limit.
  const hotPairs = 500;
  const hotOrder = callOrder(settings.trackerCalls, hotPairs);
  const hotRounds: Array<{ tracker: number; baseline: number }> = [];
  for (let round = 0; round < settings.trackerRounds; round++) {
    await yieldToEventLoop(ctx.signal);
    const trackerFirst = round % 2 === 0;
    const first = measure(
      trackerFirst ? 'tracker' : 'baseline',
      hotOrder,
      hotPairs * 2,
    ).opsPerSecond;
    const second = measure(
      trackerFirst ? 'baseline' : 'tracker',
      hotOrder,
      hotPairs * 2,
    ).opsPerSecond;
    hotRounds.push(
      trackerFirst ? { tracker: first, baseline: second } : { tracker: second, baseline: first },
    );
  }

  const trackerOps = median(rounds.map((r) => r.trackerOpsPerSecond));
  const baselineOps = median(rounds.map((r) => r.baselineOpsPerSecond));
  const result: TrackerSectionResult = {
    ...empty,
    status: 'measured',
    rounds,
    trackerOpsPerSecond: trackerOps,
    baselineOpsPerSecond: baselineOps,
    trackerWallOpsPerSecond: median(rounds.map((r) => r.trackerWallOpsPerSecond)),
    baselineWallOpsPerSecond: median(rounds.map((r) => r.baselineWallOpsPerSecond)),
    trackerOverBaseline: ratio(trackerOps, baselineOps),
    hot: {
      distinctIds: hotPairs * 2,
      trackerOpsPerSecond: median(hotRounds.map((r) => r.tracker)),
      baselineOpsPerSecond: median(hotRounds.map((r) => r.baseline)),
    },
    trackerBytesPerId: gc
      ? median(rounds.map((r) => r.trackerBytesPerId ?? Number.NaN))
      : undefined,
    baselineBytesPerId: gc
      ? median(rounds.map((r) => r.baselineBytesPerId ?? Number.NaN))
      : undefined,
    idStringBytes: gc ? idStringBytes(gc, settings.trackerDistinctIds) : undefined,
  };
  out.table(
    `4. Tracker.track(): ${fmt(settings.trackerCalls)} calls (median of ${settings.trackerRounds} rounds; calls per CPU-second)`,
    [
      'contender',
      `calls/s, ${fmt(settings.trackerDistinctIds)} ids`,
      'wall-clock calls/s',
      'heap bytes / distinct id',
      `calls/s, ${fmt(hotPairs * 2)} ids`,
    ],
    [
      [
        'BoundaryUsageTracker.track',
        fmt(result.trackerOpsPerSecond),
        fmt(result.trackerWallOpsPerSecond),
        fmt(result.trackerBytesPerId, 1),
        fmt(result.hot?.trackerOpsPerSecond),
      ],
      [
        'baseline: Set.add ×2 + 2 additions',
        fmt(result.baselineOpsPerSecond),
        fmt(result.baselineWallOpsPerSecond),
        fmt(result.baselineBytesPerId, 1),
        fmt(result.hot?.baselineOpsPerSecond),
      ],
    ],
    [
      `tracker ÷ baseline speed: ${result.trackerOverBaseline.toFixed(2)}×; ids are caller-owned; a 36-char id string the tracker alone keeps adds ${fmt(result.idStringBytes, 0)} bytes`,
    ],
  );
  return result;
}

/** Heap per 36-character id string built the way a request parser would (a fresh flat string). */
function idStringBytes(gc: GcFunction, count: number): number {
  // The array exists before the first reading, so only the strings are counted.
  const ids = new Array<string>(count).fill('');
  const before = settledHeap(gc);
  for (let i = 0; i < count; i++) ids[i] = flatUuid();
  const after = settledHeap(gc);
  keepAlive(ids);
  return (after - before) / count;
}

let sink: unknown;
function keepAlive(value: unknown): void {
  sink = value;
  if (sink === Symbol.for('never')) throw new Error('unreachable');
}

async function yieldToEventLoop(signal: AbortSignal): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  signal.throwIfAborted();
}
