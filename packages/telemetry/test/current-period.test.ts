/**
 * reporter.collectCurrentPeriod(): the final collection of the period in progress (issue 20
 * item 2), a real API instead of a reporter whose clock runs one period ahead.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import {
  CollectingSink,
  FakeClock,
  flush,
  FREQUENCY_MS,
  reporter,
  useDatabase,
  uuid,
} from './helpers.js';

const db = useDatabase();

test('claims the period in progress, beside the one that just ended; what comes later goes to the next period', async () => {
  const prisma = db.client();
  const store = new BoundaryUsageStore(prisma);
  const clock = new FakeClock('2026-05-04T10:12:00Z'); // inside the bucket 10:00–10:30
  const subject = reporter(prisma, clock, new CollectingSink());
  const replica = uuid();

  await store.upsertStats(flush(replica, { allowedRequests: 5 }));
  // The scheduled collection of the period that ended at 10:00.
  const ended = await subject.collectSnapshot();
  expect(ended.periodEndingAt).toEqual(new Date('2026-05-04T10:00:00Z'));
  expect(ended.boundaryUsageSummary?.allowedRequests).toBe(5n);

  await store.upsertStats(flush(replica, { allowedRequests: 7, deniedRequests: 1 }));
  // The last replica stops at 10:12: the period 10:00–10:30 is collected now.
  const final = await subject.collectCurrentPeriod();
  expect(final.periodEndingAt).toEqual(new Date('2026-05-04T10:30:00Z'));
  expect(final.boundaryUsageSummary).toMatchObject({
    allowedRequests: 7n,
    deniedRequests: 1n,
    periodStart: new Date('2026-05-04T10:00:00Z'),
    periodDurationMs: FREQUENCY_MS,
  });
  expect(final.reportId).toEqual(expect.any(String));
  expect(final.reportId).not.toBe(ended.reportId);

  // A second final collection in the same period (another replica) finds it claimed and
  // deletes nothing; its rows wait for the next period.
  await store.upsertStats(flush(uuid(), { allowedRequests: 3 }));
  const again = await subject.collectCurrentPeriod();
  expect(again.boundaryUsageSummary).toBeUndefined();
  // The schedule at 10:30 finds the bucket it would claim taken as well …
  clock.set('2026-05-04T10:30:01Z');
  expect((await subject.collectSnapshot()).boundaryUsageSummary).toBeUndefined();
  // … and the next edge reports what waited: nothing lost, nothing twice.
  clock.set('2026-05-04T11:00:01Z');
  const next = await subject.collectSnapshot();
  expect(next.boundaryUsageSummary?.allowedRequests).toBe(3n);
});

test("a caller's signal: an aborted one starts nothing (the rows stay); a bad one is INVALID_INPUT", async () => {
  const prisma = db.client();
  const store = new BoundaryUsageStore(prisma);
  const clock = new FakeClock('2026-05-04T14:12:00Z');
  const subject = reporter(prisma, clock, new CollectingSink());
  const replica = uuid();
  await store.upsertStats(flush(replica, { allowedRequests: 3 }));

  const outOfTime = new AbortController();
  outOfTime.abort(new Error('the shutdown budget ran out'));
  await expect(subject.collectCurrentPeriod({ signal: outOfTime.signal })).rejects.toThrow(
    'the shutdown budget ran out',
  );
  await expect(
    subject.collectCurrentPeriod({ signal: 'soon' as unknown as AbortSignal }),
  ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'signal' });

  // Nothing was claimed or cut over: a collection with a live signal still reports the rows.
  const final = await subject.collectCurrentPeriod({ signal: new AbortController().signal });
  expect(final.periodEndingAt).toEqual(new Date('2026-05-04T14:30:00Z'));
  expect(final.boundaryUsageSummary?.allowedRequests).toBe(3n);
});
