import { spawn } from 'node:child_process';
import { chooseSchemaEngine, type SchemaEngineChoice } from './engine-binary.js';

export interface RunPrismaOptions {
  /** Working directory: where prisma.config.ts is found. */
  cwd: string;
  /** Environment for the CLI (the caller decides what to pass on; nothing is read here). */
  env: Record<string, string | undefined>;
  /** The CLI is killed (its whole process group) after this long. */
  timeoutMs: number;
  /** Written to the CLI's stdin, then closed (stdin is closed at once when absent). */
  input?: string;
  /** Which schema engine to run; defaults to chooseSchemaEngine(). */
  engine?: SchemaEngineChoice;
}

export interface PrismaCliResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  engine: SchemaEngineChoice;
}

export class PrismaCliTimeoutError extends Error {
  readonly code = 'PRISMA_CLI_TIMEOUT';
  constructor(
    readonly args: readonly string[],
    readonly timeoutMs: number,
    readonly partial: Pick<PrismaCliResult, 'stdout' | 'stderr'>,
  ) {
    super(
      `prisma ${args.join(' ')} did not finish within ${timeoutMs} ms\n` +
        `stdout: ${partial.stdout}\nstderr: ${partial.stderr}`,
    );
  }
}

/**
 * Runs the Prisma CLI of this workspace (node_modules/prisma) with the chosen schema engine,
 * collecting its output. No colours (FORCE_COLOR=0), no update check (CHECKPOINT_DISABLE),
 * and a deadline: a CLI waiting on a lock or a prompt is killed and reported, never awaited
 * for ever.
 */
export function runPrisma(
  args: readonly string[],
  options: RunPrismaOptions,
): Promise<PrismaCliResult> {
  const engine = options.engine ?? chooseSchemaEngine();
  const prismaCli = require.resolve('prisma/build/index.js');
  const started = performance.now();
  const child = spawn(process.execPath, [prismaCli, ...args], {
    cwd: options.cwd,
    env: {
      ...options.env,
      PRISMA_SCHEMA_ENGINE_BINARY: engine.path,
      CHECKPOINT_DISABLE: '1',
      PRISMA_HIDE_UPDATE_MESSAGE: '1',
      FORCE_COLOR: '0',
      NO_COLOR: '1',
    },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => undefined);
  child.stdin.end(options.input ?? '');
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      killGroup(child.pid);
      reject(new PrismaCliTimeoutError(args, options.timeoutMs, { stdout, stderr }));
    }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      resolvePromise({
        exitCode,
        signal,
        stdout,
        stderr,
        durationMs: performance.now() - started,
        engine,
      });
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}
