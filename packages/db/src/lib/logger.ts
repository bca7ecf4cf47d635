/**
 * The logger every usagekit package accepts. A pino or winston logger, or `console`,
 * satisfies it. Defaults to a no-op: a library does not print unless asked.
 */
export interface Logger {
  debug(message: string, meta?: Record<string, unknown>): void;
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  error(message: string, meta?: Record<string, unknown>): void;
}

const ignore = (): void => undefined;

export const noopLogger: Logger = { debug: ignore, info: ignore, warn: ignore, error: ignore };

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for logs and errors. */
export function redactDatabaseUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return databaseUrl.replace(/\/\/([^:/@]+):[^@/]*@/, '//$1:***@');
  }
}
