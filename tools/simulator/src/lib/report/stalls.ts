/** How one replica's flushing went through the --chaos partition. */
export interface ReplicaStall {
  index: number;
  /** The longest time without a completed flush, and when (ms into the traffic phase). */
  longestGapMs: number;
  gapFromMs: number;
  gapToMs: number;
  /**
   * The first completed flush that ended the stall the partition caused: ms after the partition
   * began and after it healed (negative: it recovered before the heal, on a fresh connection).
   * null when the replica never flushed again (killed, or the run ended first).
   */
  recoveredAfterPartitionMs: number | null;
  recoveredAfterThawMs: number | null;
}

/**
 * Gaps between completed flushes (`flushTimesMs`, ms into the traffic phase, ascending), from
 * the traffic start to `endMs`. The partition's stall is the longest gap that is open when the
 * partition begins or opens within `graceMs` of it: a flush already on its way back when the
 * partition began may still complete just after it, and is not the recovery. Later gaps (a
 * replica that recovered and was then killed) are not the partition's.
 */
export function measureStall(input: {
  index: number;
  flushTimesMs: readonly number[];
  endMs: number;
  partitionMs: number | undefined;
  thawMs: number | undefined;
  /** One flush interval. */
  graceMs: number;
}): ReplicaStall {
  const points = [0, ...input.flushTimesMs.filter((t) => t >= 0 && t <= input.endMs)];
  const gaps: Array<{ from: number; to: number; closed: boolean }> = points.map((from, i) =>
    i + 1 < points.length
      ? { from, to: points[i + 1] ?? from, closed: true }
      : { from, to: input.endMs, closed: false },
  );
  const longest = gaps.reduce((a, b) => (b.to - b.from > a.to - a.from ? b : a));
  let recoveredAfterPartitionMs: number | null = null;
  let recoveredAfterThawMs: number | null = null;
  const partitionMs = input.partitionMs;
  if (partitionMs !== undefined) {
    const stall = gaps
      .filter((gap) => gap.to > partitionMs && gap.from <= partitionMs + input.graceMs)
      .reduce<(typeof gaps)[number] | undefined>(
        (a, b) => (!a || b.to - b.from > a.to - a.from ? b : a),
        undefined,
      );
    if (stall?.closed) {
      recoveredAfterPartitionMs = stall.to - partitionMs;
      recoveredAfterThawMs = input.thawMs === undefined ? null : stall.to - input.thawMs;
    }
  }
  return {
    index: input.index,
    longestGapMs: longest.to - longest.from,
    gapFromMs: longest.from,
    gapToMs: longest.to,
    recoveredAfterPartitionMs,
    recoveredAfterThawMs,
  };
}
