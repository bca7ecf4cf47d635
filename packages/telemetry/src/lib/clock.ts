import { InvalidInputError } from '@usagekit/boundary-usage';

/** Where the reporter reads the time. Tests pass a fake one; production uses the system clock. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** The clock's time, checked: a fake clock returning garbage fails loudly, not as NaN periods. */
export function readClock(clock: Clock): Date {
  const now = clock.now();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new InvalidInputError('clock.now()', now, 'a valid Date');
  }
  return now;
}
