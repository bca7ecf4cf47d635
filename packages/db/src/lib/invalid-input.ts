/**
 * Bad input to a public call of any usagekit package: one class for all of them (the packages
 * above re-export it), so a caller matches `code === 'INVALID_INPUT'` wherever it came from.
 * A TypeError, so `instanceof TypeError` checks written before it existed still hold.
 */
export class InvalidInputError extends TypeError {
  override readonly name = 'InvalidInputError';
  readonly code = 'INVALID_INPUT';
  /** Bad input is not a transient failure: the same call fails the same way. */
  readonly retryable = false;
  constructor(
    readonly field: string,
    readonly value: unknown,
    expected: string,
  ) {
    super(`Invalid ${field}: expected ${expected}, got ${describeValue(value)}`);
  }
}

function describeValue(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string')
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'number') return String(value);
  if (value === null || value === undefined) return String(value);
  return `a ${typeof value}`;
}
