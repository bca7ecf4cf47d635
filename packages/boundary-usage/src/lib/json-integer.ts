/**
 * JSON for 64-bit (and wider) counters. `JSON.stringify` throws on a BigInt, and a JSON number
 * above 2^53 − 1 silently loses precision in JavaScript (and in every parser that reads
 * numbers as doubles). So a counter is a JSON number while it is a safe integer, and a decimal
 * string beyond that: exact either way, and a receiver can always parse it with BigInt().
 */
export type JsonInteger = number | string;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

export function jsonInteger(value: bigint | number): JsonInteger {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`jsonInteger: not an integer: ${value}`);
    return Number.isSafeInteger(value) ? value : BigInt(value).toString();
  }
  return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value.toString();
}

/** Reads a counter written by jsonInteger back, exactly. */
export function parseJsonInteger(value: JsonInteger): bigint {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value))
      throw new TypeError(`parseJsonInteger: unsafe number ${value}`);
    return BigInt(value);
  }
  if (!/^-?\d+$/.test(value))
    throw new TypeError(`parseJsonInteger: not a decimal integer: ${value}`);
  return BigInt(value);
}
