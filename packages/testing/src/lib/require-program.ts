import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Set to 1 (CI does) to turn every "program missing" skip into a failure. */
export const REQUIRE_PROGRAMS_ENV = 'USAGEKIT_REQUIRE_PROGRAMS';

// Debian installs daemons (pgbouncer, dockerd) in sbin, which a normal user's PATH may lack.
const EXTRA_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/local/bin', '/opt/homebrew/bin'];

/** The path of an executable called `name` on PATH or in the usual sbin directories. */
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...EXTRA_DIRS];
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/**
 * For a suite that needs another program (pgbouncer, pgbench, docker…): the program's path,
 * or, when it is missing, one printed line saying what is skipped and how to install it, and
 * undefined (the caller then uses `describe.skip`). With USAGEKIT_REQUIRE_PROGRAMS=1 a missing
 * program throws instead, so CI, which installs everything, never skips silently.
 *
 *   const pgbouncer = requireProgram('pgbouncer', 'apt-get install pgbouncer');
 *   const describeWithPgBouncer = pgbouncer ? describe : describe.skip;
 */
export function requireProgram(name: string, installHint: string): string | undefined {
  const path = findProgram(name);
  if (path) return path;
  skipOrThrow(`${name} not installed (install: ${installHint})`);
  return undefined;
}

/**
 * The same rule for a requirement that is not a program on PATH (a container runtime that
 * answers): prints one "skipped: …" line, or throws under USAGEKIT_REQUIRE_PROGRAMS=1.
 */
export function skipOrThrow(what: string): void {
  if (process.env[REQUIRE_PROGRAMS_ENV] === '1') {
    throw new Error(`[usagekit/testing] required but missing: ${what} (${REQUIRE_PROGRAMS_ENV}=1)`);
  }
  // One plain line: console.log inside Jest would add a stack and a header.
  process.stdout.write(`[usagekit/testing] skipped: ${what}\n`);
}
