import { requireProgram } from '@usagekit/testing';

/**
 * The program's path, or undefined after one printed line saying how to install it (a failure
 * instead under USAGEKIT_REQUIRE_PROGRAMS=1, which CI sets).
 */
export function which(program: string, installHint: string): string | undefined {
  return requireProgram(program, installHint);
}
