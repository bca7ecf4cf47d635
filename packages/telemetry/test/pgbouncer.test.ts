/**
 * The reporter behind PgBouncer in transaction pooling mode: the election, the cutover and
 * the outbox row share one transaction, so they share one server connection even when
 * PgBouncer hands every transaction a different one. Two reporters and three replicas, more
 * clients than server connections; every request is reported exactly once.
 */
import { BoundaryUsageStore, BoundaryUsageTracker, startFlushLoop } from '@usagekit/boundary-usage';
import { usePgBouncer } from '@usagekit/test-support';
import { PGBOUNCER_INSTALL_HINT, requireProgram } from '@usagekit/testing';
import { parseJsonInteger, TelemetryReporter } from '../src/index.js';
import {
  FakeClock,
  FREQUENCY_MS,
  startReceiver,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  type Receiver,
} from './helpers.js';

// Skipped, with one printed line, where pgbouncer is not installed; CI sets
// USAGEKIT_REQUIRE_PROGRAMS=1, which turns the skip into a failure.
const describeWithPgBouncer = requireProgram('pgbouncer', PGBOUNCER_INSTALL_HINT)
  ? describe
  : describe.skip;

describeWithPgBouncer('the reporter behind PgBouncer (transaction pooling)', () => {
  let receiver: Receiver;
  const db = useDatabase();
  const pgbouncer = usePgBouncer(db, { serverConnections: 3 });
  const ROUNDS = Math.max(1, Number(process.env.USAGEKIT_STRESS_ROUNDS ?? 1));

  beforeAll(async () => {
    receiver = await startReceiver();
    db.defer(() => receiver.close());
  });

  test('two reporters and three flushing replicas through PgBouncer: one report per period, nothing lost', async () => {
    const clock = new FakeClock('2026-11-27T00:00:00Z');
    const reporters = [0, 1].map(() => {
      const prisma = pgbouncer.client();
      return new TelemetryReporter({
        prisma,
        store: new BoundaryUsageStore(prisma),
        deploymentId: 'pgbouncer-test',
        sink: receiver.url,
        clock,
        reportRetentionMs: TEST_RETENTION_MS,
      });
    });
    const replicas = [0, 1, 2].map(() => {
      const tracker = new BoundaryUsageTracker();
      const store = new BoundaryUsageStore(pgbouncer.client());
      const loop = startFlushLoop({ tracker, store, replicaId: uuid(), intervalMs: 5 });
      db.defer(() => loop.stop()); // stopped in afterAll too if the test fails half way
      return { tracker, loop };
    });
    const workspaces = Array.from({ length: 5 }, () => uuid());
    const users = Array.from({ length: 3 }, () => uuid());
    let tracked = 0n;
    const periods = 6 * ROUNDS;
    for (let period = 0; period < periods; period++) {
      for (let i = 0; i < 40; i++) {
        const replica = replicas[i % replicas.length]!;
        replica.tracker.track(workspaces[i % 5]!, users[i % 3]!, 1 + (i % 4), 0);
        tracked += BigInt(1 + (i % 4));
        if (i % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
      }
      // Both reporters try every period; the election lets one of them report it.
      const snapshots = await Promise.all(reporters.map((r) => r.collectSnapshot()));
      expect(snapshots.filter((s) => s.boundaryUsageSummary !== undefined)).toHaveLength(1);
      clock.advance(FREQUENCY_MS);
    }
    await Promise.all(replicas.map(({ loop }) => loop.stop()));
    await reporters[0]!.collectSnapshot();
    for (const r of reporters) await r.deliverPending();

    const bodies = receiver.accepted().map(
      (request) =>
        JSON.parse(request.body) as {
          boundary_usage_summary: { allowed_requests: number | string };
        },
    );
    const keys = new Set(receiver.accepted().map((request) => request.headers['idempotency-key']));
    expect(keys.size).toBe(bodies.length);
    expect(bodies).toHaveLength(periods + 1);
    const reported = bodies.reduce(
      (sum, body) => sum + parseJsonInteger(body.boundary_usage_summary.allowed_requests),
      0n,
    );
    expect(reported).toBe(tracked);
  });
});
