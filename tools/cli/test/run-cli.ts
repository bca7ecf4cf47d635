import { execFile } from 'node:child_process';
import { join } from 'node:path';

export const CLI_BIN = join(__dirname, '..', 'bin', 'usagekit.js');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

/**
 * Runs the real bin in a child process, as `npx usagekit …` does: real exit codes, real
 * stdout/stderr. DATABASE_URL is removed unless given, so a test never picks up the caller's.
 */
export function runCliProcess(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const started = Date.now();
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('DATABASE_URL' in env)) delete childEnv['DATABASE_URL'];
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI_BIN, ...args],
      { env: childEnv, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr, elapsedMs: Date.now() - started });
      },
    );
  });
}
