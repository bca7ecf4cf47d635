/**
 * A `Retry-After` header (RFC 9110 §10.2.3) as a delay in milliseconds: delta-seconds
 * (`120`) or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`). A date is measured against the
 * response's own `Date` header when it has one (both are the receiver's clock, so our clock's
 * offset does not matter), else against ours. A date in the past is 0; anything unparseable
 * is undefined (no hint). The caller caps the result.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  responseDate?: string | null,
  nowMs: number = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    const seconds = Number(text);
    return Number.isSafeInteger(seconds) ? seconds * 1000 : undefined;
  }
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  const base = responseDate ? Date.parse(responseDate) : Number.NaN;
  return Math.max(0, at - (Number.isNaN(base) ? nowMs : base));
}
