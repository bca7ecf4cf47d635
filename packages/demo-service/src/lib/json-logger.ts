import type { Logger } from '@usagekit/db';

/** usagekit's Logger as JSON lines (what a container log collector wants). */
export function jsonLogger(stream: NodeJS.WritableStream): Logger {
  const write = (level: string) => (message: string, meta?: Record<string, unknown>) =>
    stream.write(
      `${JSON.stringify({ level, time: new Date().toISOString(), message, ...meta })}\n`,
    );
  return {
    debug: () => undefined,
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
  };
}
