/** A uniformly chosen element; undefined only for an empty list. */
export function pickRandom<T>(
  items: readonly T[],
  random: () => number = Math.random,
): T | undefined {
  return items[Math.floor(random() * items.length)];
}
