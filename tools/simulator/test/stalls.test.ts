import { planFaults } from '../src/lib/faults.js';
import { measureStall } from '../src/lib/report/stalls.js';

describe('measureStall', () => {
  it('finds the partition’s stall and the flush that ended it, after the heal', () => {
    // Flushes every second, none from 3.1 s (partition at 3 s) until 13.6 s (healed at 13.5 s).
    const flushTimesMs = [1_000, 2_000, 3_050, 13_600, 14_600, 15_600];
    expect(
      measureStall({
        index: 0,
        flushTimesMs,
        endMs: 16_000,
        partitionMs: 3_000,
        thawMs: 13_500,
        graceMs: 1_000,
      }),
    ).toEqual({
      index: 0,
      longestGapMs: 10_550,
      gapFromMs: 3_050,
      gapToMs: 13_600,
      recoveredAfterPartitionMs: 10_600,
      recoveredAfterThawMs: 100,
    });
  });

  it('reports a recovery before the heal (a deadline abandoned the call) as negative', () => {
    const flushTimesMs = [1_000, 2_000, 9_000, 10_000, 11_000];
    const stall = measureStall({
      index: 1,
      flushTimesMs,
      endMs: 20_000,
      partitionMs: 3_000,
      thawMs: 13_500,
      graceMs: 1_000,
    });
    expect(stall.recoveredAfterPartitionMs).toBe(6_000);
    expect(stall.recoveredAfterThawMs).toBe(-4_500);
    // The longest gap is the open one at the end (no flush after 11 s until the end at 20 s).
    expect([stall.longestGapMs, stall.gapFromMs, stall.gapToMs]).toEqual([9_000, 11_000, 20_000]);
  });

  it('says "never" when the replica did not flush again (killed, or the run ended)', () => {
    const stall = measureStall({
      index: 2,
      flushTimesMs: [1_000, 2_000],
      endMs: 10_000,
      partitionMs: 3_000,
      thawMs: undefined,
      graceMs: 1_000,
    });
    expect(stall.recoveredAfterPartitionMs).toBeNull();
    expect(stall.longestGapMs).toBe(8_000);
  });
});

describe('planFaults', () => {
  it('puts each fault in its own window, the kill after the heal, and room to resolve at the end', () => {
    const plan = planFaults(30_000);
    expect(plan).toEqual({
      partitionAtMs: 3_000,
      newConnectionsAtMs: 6_000,
      thawAtMs: 13_500,
      outageFromMs: 13_500,
      outageToMs: 22_500,
      lockHoldAtMs: 22_500,
      lockHoldMs: 4_500,
      killAtMs: 27_900,
    });
    const short = planFaults(6_000);
    expect(short.newConnectionsAtMs - short.partitionAtMs).toBe(600);
    expect(short.killAtMs).toBeGreaterThan(short.thawAtMs);
  });
});
