/**
 * The reporter's own idle_in_transaction_session_timeout (issue 21 item 4). Every reporter
 * transaction sets it as its first statement, so a reporter whose process vanishes
 * mid-transaction (a partition, a frozen VM) loses its locks within that bound. The other
 * suites cannot tell it is there: a client from createPrismaClient on a direct connection
 * starts every session with the same timeout, and the cutover's lock statement sets the
 * store's. These tests take both away: a client without session settings (as behind
 * PgBouncer, `via: 'pooler'`), a store whose own bound is far away.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient, DatabaseError, type PrismaClient } from '@usagekit/db';
import { startFreezingProxy, withAdminClient } from '@usagekit/testing';
import { TelemetryReporter } from '../src/index.js';
import {
  CollectingSink,
  FakeClock,
  flush,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';

const db = useDatabase();
const REPORTER_IDLE_MS = 1_000;
const own: PrismaClient[] = [];

afterAll(async () => {
  await Promise.all(own.map((client) => client.$disconnect().catch(() => undefined)));
});

/** A client whose sessions carry no settings of ours: the server's defaults (no idle bound). */
async function clientWithoutSessionSettings(databaseUrl: string): Promise<PrismaClient> {
  const prisma = createPrismaClient({
    databaseUrl,
    maxConnections: 1,
    via: 'pooler',
    statementDeadlineMs: 3_000,
  });
  own.push(prisma);
  const [session] = await prisma.$queryRaw<{ idle: string }[]>`
    SELECT current_setting('idle_in_transaction_session_timeout') AS idle`;
  expect(session!.idle).toBe('0');
  return prisma;
}

test('a reporter that vanishes right after its claim frees the period within its own idle bound', async () => {
  const period = new Date('2026-02-03T13:00:00.000Z');
  const proxy = await startFreezingProxy(db.database().databaseUrl);
  try {
    const bare = await clientWithoutSessionSettings(proxy.databaseUrl);
    const realStore = new BoundaryUsageStore(bare, { idleInTransactionTimeoutMs: 600_000 });
    let frozenAt = 0;
    const vanishingStore = Object.create(realStore) as BoundaryUsageStore;
    vanishingStore.getAndResetSummaryInTransaction = (tx, params) => {
      // The claim is in, uncommitted: its primary-key entry holds the period. The process
      // vanishes now, before the cutover (so the store's bound is never sent): nothing passes
      // any more, its close neither, and the server never learns that its client is gone.
      proxy.freeze({ dropCloses: true });
      frozenAt = performance.now();
      return realStore.getAndResetSummaryInTransaction(tx, params);
    };
    const vanishing = new TelemetryReporter({
      prisma: bare,
      store: vanishingStore,
      deploymentId: 'vanished-claimer',
      sink: new CollectingSink(),
      clock: new FakeClock(period),
      collectAttempts: 1,
      idleInTransactionTimeoutMs: REPORTER_IDLE_MS,
      reportRetentionMs: TEST_RETENTION_MS,
    });
    const collection = vanishing.collectSnapshot().then(
      () => undefined,
      (error: unknown) => error,
    );
    await waitUntil(() => frozenAt > 0, 'the reporter claimed the period and went silent');

    // A successor's claim of the same period waits behind the vanished one's (one attempt,
    // lock_timeout 4 s): it gets the period once the server has ended that session.
    const successorClient = db.client(2);
    const successor = new TelemetryReporter({
      prisma: successorClient,
      store: new BoundaryUsageStore(successorClient),
      deploymentId: 'vanished-claimer',
      sink: new CollectingSink(),
      clock: new FakeClock(period),
      collectAttempts: 1,
      lockTimeoutMs: 4_000,
      transactionTimeoutMs: 10_000,
      reportRetentionMs: TEST_RETENTION_MS,
    });
    const snapshot = await successor.collectSnapshot();
    const claimedAfterMs = performance.now() - frozenAt;
    expect(snapshot.periodEndingAt).toEqual(period);
    expect(snapshot.boundaryUsageSummary).toBeDefined();
    expect(claimedAfterMs).toBeLessThan(REPORTER_IDLE_MS + 2_500);
    console.log(
      `[reporter-idle-bound] a successor claimed the period ${Math.round(claimedAfterMs)} ms after the claimer vanished (bound ${REPORTER_IDLE_MS} ms)`,
    );

    // The vanished reporter's own call settles too, by its statement deadline (nothing of
    // the server's close reaches it), with a typed error.
    expect(await collection).toBeInstanceOf(DatabaseError);
  } finally {
    proxy.thaw();
    await proxy.close();
  }
});

test("every reporter transaction runs under the reporter's idle bound: claim, lease, delivery outcome, retention", async () => {
  // A statement-level trigger on each table a reporter transaction writes records the
  // setting in force when that statement ran (it fires even when no row matches).
  await withAdminClient(db.database().databaseUrl, async (admin) => {
    await admin.query(`CREATE TABLE idle_seen (statement text, idle text)`);
    await admin.query(`CREATE FUNCTION record_idle() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO idle_seen VALUES (TG_TABLE_NAME || ' ' || TG_OP,
          current_setting('idle_in_transaction_session_timeout'));
        RETURN NULL;
      END $$`);
    for (const [table, events] of [
      ['telemetry_locks', 'INSERT OR DELETE'],
      ['telemetry_reports', 'UPDATE OR DELETE'],
      ['boundary_usage_flush_sequences', 'DELETE'],
    ] as const) {
      await admin.query(`CREATE TRIGGER record_idle AFTER ${events} ON usagekit.${table}
        FOR EACH STATEMENT EXECUTE FUNCTION record_idle()`);
    }
  });
  const bare = await clientWithoutSessionSettings(db.database().databaseUrl);
  const store = new BoundaryUsageStore(bare, { idleInTransactionTimeoutMs: 600_000 });
  await store.upsertStats(flush(uuid(), { allowedRequests: 3 }));
  const reporter = new TelemetryReporter({
    prisma: bare,
    store,
    deploymentId: 'idle-bound',
    sink: new CollectingSink(),
    clock: new FakeClock('2026-02-03T14:00:00.000Z'),
    idleInTransactionTimeoutMs: 1_234,
    reportRetentionMs: TEST_RETENTION_MS,
  });
  expect((await reporter.collectSnapshot()).boundaryUsageSummary?.allowedRequests).toBe(3n);
  // Delivers the first test's report too, if it left one: the outcome does not matter here.
  expect((await reporter.deliverPending()).delivered).toBeGreaterThanOrEqual(1);
  await reporter.purgeExpired();

  const seen = await bare.$queryRaw<{ statement: string; idle: string }[]>`
    SELECT statement, idle FROM idle_seen ORDER BY statement`;
  // The claim (INSERT telemetry_locks), the leases and the delivered marks (UPDATE
  // telemetry_reports), and the purge's three DELETEs.
  expect([...new Set(seen.map((row) => row.statement))]).toEqual([
    'boundary_usage_flush_sequences DELETE',
    'telemetry_locks DELETE',
    'telemetry_locks INSERT',
    'telemetry_reports DELETE',
    'telemetry_reports UPDATE',
  ]);
  expect(seen.filter((row) => row.idle !== '1234ms')).toEqual([]);
});
