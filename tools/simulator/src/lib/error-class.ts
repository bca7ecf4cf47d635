/**
 * The class an error is counted under in the report: the stable `code` usagekit's typed
 * errors carry (CONNECTION_LOST, LOCK_TIMEOUT, SINK_REJECTED…), else the error's name.
 */
export function errorClass(error: unknown): string {
  if (typeof error === 'string') return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.length > 0) return code;
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' && name.length > 0 ? name : 'UNKNOWN';
}
