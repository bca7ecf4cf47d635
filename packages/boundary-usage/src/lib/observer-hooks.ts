/**
 * One observer that calls each of `observers` in turn, every hook isolated: a hook that throws
 * goes to `onHookError` and the next observer's hook still runs. Observers are the host's code
 * (metrics, logging); a throwing onFlush must not turn a committed flush into a failure (it
 * would be retried and reported as failed although the database has it), and a throwing
 * onError must not escape a retry loop (issue 20). Used by the flush loop (one observer) and
 * the usage runtime (metrics and the host's hooks).
 */
export function combineHooks<T extends object>(
  observers: readonly (T | undefined)[],
  onHookError: (hook: string, error: unknown) => void,
): T {
  const present = observers.filter((observer): observer is T => observer !== undefined);
  const names = new Set(present.flatMap(hookNames));
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

/** Own and inherited function names: an observer may be a class instance (methods on its prototype). */
function hookNames(observer: object): string[] {
  const names: string[] = [];
  for (
    let level: object | null = observer;
    level !== null && level !== Object.prototype;
    level = Object.getPrototypeOf(level) as object | null
  ) {
    for (const name of Object.getOwnPropertyNames(level)) {
      if (
        name !== 'constructor' &&
        typeof (observer as Record<string, unknown>)[name] === 'function'
      ) {
        names.push(name);
      }
    }
  }
  return names;
}
