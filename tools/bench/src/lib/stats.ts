/**
 * The few statistics the bench reports. Percentiles use the nearest-rank method (the value
 * at rank ⌈p/100 · n⌉ of the sorted sample), so a reported p99 is a latency that really
 * happened, never an interpolation between two.
 */

/** The nearest-rank percentile of `values` (0 < p ≤ 100). NaN for an empty sample. */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile: p must be in (0, 100], got ${p}`);
  const sorted = sortedCopy(values);
  return percentileOfSorted(sorted, p);
}

export function percentileOfSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** The median: the middle value, or the mean of the two middle values. NaN when empty. */
export function median(values: ArrayLike<number>): number {
  const finite = Array.from(values).filter((v) => !Number.isNaN(v));
  if (finite.length === 0) return Number.NaN;
  finite.sort((x, y) => x - y);
  const mid = finite.length >> 1;
  return finite.length % 2 === 1 ? finite[mid] : (finite[mid - 1] + finite[mid]) / 2;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export function summarizeLatencies(values: ArrayLike<number>): LatencySummary {
  const sorted = sortedCopy(values);
  return {
    count: sorted.length,
    p50Ms: percentileOfSorted(sorted, 50),
    p99Ms: percentileOfSorted(sorted, 99),
    maxMs: sorted.length > 0 ? sorted[sorted.length - 1] : Number.NaN,
  };
}

/** Latencies in milliseconds, appended without per-sample allocation. */
export class LatencyRecorder {
  private buffer = new Float64Array(1024);
  private size = 0;

  add(ms: number): void {
    if (this.size === this.buffer.length) {
      const grown = new Float64Array(this.buffer.length * 2);
      grown.set(this.buffer);
      this.buffer = grown;
    }
    this.buffer[this.size++] = ms;
  }

  get count(): number {
    return this.size;
  }

  values(): Float64Array {
    return this.buffer.subarray(0, this.size);
  }

  summary(): LatencySummary {
    return summarizeLatencies(this.values());
  }
}

/** a ÷ b, or NaN when either side is missing or b is zero. */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) {
    return Number.NaN;
  }
  return a / b;
}

function sortedCopy(values: ArrayLike<number>): Float64Array {
  const sorted = Float64Array.from(values as ArrayLike<number>);
  sorted.sort();
  return sorted;
}
