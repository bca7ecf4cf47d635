import { skipOrThrow } from './require-program.js';

/** The image for the container source and for container fault tests (default postgres:18-alpine). */
export const CONTAINER_IMAGE_ENV = 'USAGEKIT_TEST_POSTGRES_IMAGE';
/**
 * Set by the Jest global setup for the workers: `ok` when a container runtime answered and
 * the image (CONTAINER_IMAGE_ENV) is there or could be pulled, otherwise why not. Workers
 * cannot ask asynchronously before `describe` runs, so the global setup asks once per run.
 */
export const CONTAINER_RUNTIME_ENV = 'USAGEKIT_TEST_CONTAINER_RUNTIME';

/**
 * For a suite that needs containers of its own (docker pause, a container restart): true when
 * the global setup found a runtime and the image. Otherwise one printed "skipped: …" line and false; under
 * USAGEKIT_REQUIRE_PROGRAMS=1 it throws instead.
 */
export function requireContainerRuntime(what: string, installHint: string): boolean {
  const state = process.env[CONTAINER_RUNTIME_ENV];
  if (state === 'ok') return true;
  skipOrThrow(
    `${what}: no container (${state ?? 'not probed: run through the workspace Jest preset'}; ` +
      `install: ${installHint})`,
  );
  return false;
}
