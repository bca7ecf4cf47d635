import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

// TODO(requireProgram): replace with requireProgram from @usagekit/testing once the "ci"
// helper's version is merged; this local stand-in prints the same kind of one-line skip.
/** The program's path on $PATH (or in /usr/bin, /usr/sbin), or undefined after printing why. */
export function which(program: string, installHint: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin', '/usr/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  if (process.env['USAGEKIT_REQUIRE_PROGRAMS'] === '1') {
    throw new Error(
      `${program} is required (USAGEKIT_REQUIRE_PROGRAMS=1); install: ${installHint}`,
    );
  }
  console.log(`skipped: ${program} not found (install: ${installHint})`);
  return undefined;
}
