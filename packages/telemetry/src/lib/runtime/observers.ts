import type { FlushLoopObserver } from '@usagekit/boundary-usage';
import type { TelemetryObserver } from '../options.js';

/**
 * One observer that calls each of `observers` in turn (metrics and the host's own hooks). The
 * flush loop and the reporter isolate hooks that throw; so does this, per observer, so one
 * failing hook does not keep the next from running.
 */
export function combineObservers<T extends FlushLoopObserver | TelemetryObserver>(
  observers: (T | undefined)[],
  onHookError: (hook: string, error: unknown) => void,
): T {
  const present = observers.filter((observer): observer is T => observer !== undefined);
  const names = new Set(present.flatMap((observer) => Object.keys(observer)));
  const combined: Record<string, (...args: unknown[]) => void> = {};
  for (const name of names) {
    combined[name] = (...args: unknown[]) => {
      for (const observer of present) {
        const hook = (observer as Record<string, unknown>)[name];
        if (typeof hook !== 'function') continue;
        try {
          (hook as (...a: unknown[]) => void).apply(observer, args);
        } catch (error) {
          onHookError(name, error);
        }
      }
    };
  }
  return combined as unknown as T;
}
