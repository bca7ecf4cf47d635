import { LatencyRecorder, median, percentile, ratio, summarizeLatencies } from '../src/index';

describe('percentile (nearest rank)', () => {
  const oneToHundred = Array.from({ length: 100 }, (_, i) => i + 1);

  it('p50 and p99 of 1..100 are 50 and 99, whatever the input order', () => {
    const shuffled = [...oneToHundred].sort(() => Math.random() - 0.5);
    expect(percentile(shuffled, 50)).toBe(50);
    expect(percentile(shuffled, 99)).toBe(99);
    expect(percentile(shuffled, 100)).toBe(100);
    expect(percentile(shuffled, 1)).toBe(1);
  });

  it('reports a value that occurred, never an interpolation', () => {
    expect(percentile([10, 20], 50)).toBe(10);
    expect(percentile([1, 2, 3, 1000], 99)).toBe(1000);
    expect(
      percentile(
        Array.from({ length: 1000 }, (_, i) => i + 1),
        99,
      ),
    ).toBe(990);
  });

  it('sorts numerically, not as strings', () => {
    expect(percentile([9, 10, 100, 2], 50)).toBe(9);
  });

  it('is NaN for no samples and rejects p outside (0, 100]', () => {
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile([1], 0)).toThrow(RangeError);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });
});

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('ignores NaN rounds and is NaN when nothing is left', () => {
    expect(median([Number.NaN, 5, 1])).toBe(3);
    expect(median([])).toBeNaN();
  });
});

describe('LatencyRecorder', () => {
  it('keeps every sample past its initial capacity and summarizes them', () => {
    const recorder = new LatencyRecorder();
    for (let i = 5000; i >= 1; i--) recorder.add(i / 10);
    expect(recorder.count).toBe(5000);
    expect(recorder.summary()).toEqual({ count: 5000, p50Ms: 250, p99Ms: 495, maxMs: 500 });
  });

  it('summarizes an empty sample as NaNs with count 0', () => {
    const summary = summarizeLatencies([]);
    expect(summary.count).toBe(0);
    expect(summary.p99Ms).toBeNaN();
  });
});

describe('ratio', () => {
  it('divides, and is NaN when a side is missing or the divisor is 0', () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(undefined, 2)).toBeNaN();
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(Number.NaN, 1)).toBeNaN();
  });
});
