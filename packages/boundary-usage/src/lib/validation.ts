/**
 * Input checks at the library's edge. Every rejected input raises {@link InvalidInputError},
 * which names the field and the value, before anything is counted or written. The class lives
 * in @usagekit/db (one class for every package) and is re-exported here.
 */
import { InvalidInputError } from '@usagekit/db';

export { InvalidInputError };

export const INT8_MAX = 9_223_372_036_854_775_807n;

const HEX = new Uint8Array(128);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;

/**
 * True for a canonical 8-4-4-4-12 hex uuid (any version, either case). A hand loop rather
 * than a regular expression: the tracker runs it for every id it sees first.
 */
export function isUuid(value: unknown): value is string {
  if (typeof value !== 'string' || value.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const code = value.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (code !== 45 /* - */) return false;
    } else if (code > 127 || HEX[code] !== 1) {
      return false;
    }
  }
  return true;
}

/**
 * The uuid in its canonical lower-case form (PostgreSQL's uuid type ignores case, so the
 * tracker must too, or one id in two spellings would count twice per replica). Throws
 * InvalidInputError for anything that is not a uuid.
 */
export function canonicalUuid(field: string, value: unknown): string {
  const uuid = assertUuid(field, value);
  return /[A-F]/.test(uuid) ? uuid.toLowerCase() : uuid;
}

export function assertUuid(field: string, value: unknown): string {
  if (!isUuid(value)) throw new InvalidInputError(field, value, 'a uuid (8-4-4-4-12 hex digits)');
  return value;
}

/** A non-negative count: a safe-integer number or a bigint that fits int8. */
export function assertCount(field: string, value: unknown): bigint {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
    throw new InvalidInputError(field, value, 'a non-negative safe integer');
  }
  if (typeof value === 'bigint') {
    if (value >= 0n && value <= INT8_MAX) return value;
    throw new InvalidInputError(field, value, 'a non-negative bigint no larger than 2^63 - 1');
  }
  throw new InvalidInputError(field, value, 'a non-negative integer (number or bigint)');
}

/** A positive safe integer (a count of attempts, rows, …). */
export function assertPositiveInteger(field: string, value: unknown): number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return value;
  throw new InvalidInputError(field, value, 'a positive integer');
}

/** A positive safe-integer number of milliseconds. */
export function assertPositiveMs(field: string, value: unknown): number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return value;
  throw new InvalidInputError(field, value, 'a positive integer number of milliseconds');
}

/**
 * assertPositiveMs for a time that may be computed (what a shutdown budget leaves): a
 * fractional number is rounded up. Anything but a finite number (a string such as '100'
 * included, which Math.ceil would quietly coerce) is refused first.
 */
export function assertPositiveMsRoundedUp(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new InvalidInputError(field, value, 'a positive number of milliseconds');
  }
  return assertPositiveMs(field, Math.ceil(value));
}
