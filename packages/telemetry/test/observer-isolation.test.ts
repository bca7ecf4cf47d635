/**
 * Issue 20 item 5: observer hooks are isolated. Every hook of the reporter throws here; the
 * collection still reports, the delivery still delivers, and a failure is still the database's
 * typed error, not the hook's. (The flush loop's hooks: boundary-usage test/footguns.test.ts.)
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { LockIds } from '@usagekit/db';
import { Client } from 'pg';
import type { TelemetryObserver } from '../src/index.js';
import { CollectingSink, FakeClock, flush, reporter, useDatabase, uuid } from './helpers.js';

const db = useDatabase();

const throwing: Required<TelemetryObserver> = {
  onSnapshot: () => {
    throw new Error('hook: onSnapshot');
  },
  onDelivery: () => {
    throw new Error('hook: onDelivery');
  },
  onDeliveryPass: () => {
    throw new Error('hook: onDeliveryPass');
  },
  onError: () => {
    throw new Error('hook: onError');
  },
  onClockSkew: () => {
    throw new Error('hook: onClockSkew');
  },
};

test('hooks that throw change nothing: the period is reported and delivered, failures stay typed', async () => {
  const prisma = db.client();
  const sink = new CollectingSink();
  const clock = new FakeClock('2026-03-02T10:00:30Z');
  const warnings: string[] = [];
  const subject = reporter(prisma, clock, sink, {
    observer: throwing,
    lockTimeoutMs: 200,
    collectAttempts: 1,
    logger: {
      debug: () => undefined,
      info: () => undefined,
      warn: (message) => warnings.push(message),
      error: () => undefined,
    },
  });
  await new BoundaryUsageStore(prisma).upsertStats(
    flush(uuid(), { allowedRequests: 7, deniedRequests: 2 }),
  );

  const snapshot = await subject.collectSnapshot();
  expect(snapshot.boundaryUsageSummary).toMatchObject({ allowedRequests: 7n, deniedRequests: 2n });
  await expect(subject.deliverPending()).resolves.toEqual({ delivered: 1, failed: 0 });
  expect(sink.sent).toHaveLength(1);

  // A failure reaches the caller as the database's typed error, not as the onError hook's.
  const holder = new Client({ connectionString: db.database().databaseUrl });
  holder.on('error', () => undefined);
  await holder.connect();
  db.defer(() => holder.end());
  await holder.query('BEGIN');
  await holder.query('SELECT pg_advisory_xact_lock($1::bigint)', [
    LockIds.boundaryUsageStats.toString(),
  ]);
  clock.advance(30 * 60_000);
  await expect(subject.collectSnapshot()).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
  await holder.query('ROLLBACK');

  for (const hook of ['onSnapshot', 'onDelivery', 'onDeliveryPass', 'onError', 'onClockSkew']) {
    expect(warnings.some((message) => message.includes(hook))).toBe(true);
  }
});
