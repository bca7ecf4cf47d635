import { createTestDatabase, type TestDatabase } from '@usagekit/testing';
import { Client } from 'pg';
import {
  emptyCounts,
  migrateHostTables,
  oneRequest,
  receivedTotals,
  spawnService,
  startReceiver,
  stoppedEvent,
  type Receiver,
  type ServiceProcess,
} from './support.js';

// The demo service end to end: the real process, its own table migrated by the real Prisma
// CLI beside usagekit's (already migrated in the suite's database), a real receiver.
let database: TestDatabase;
let receiver: Receiver;
let service: ServiceProcess | undefined;

beforeAll(async () => {
  database = await createTestDatabase();
  migrateHostTables(database.databaseUrl);
  receiver = await startReceiver();
});

afterAll(async () => {
  service?.child.kill('SIGKILL');
  await receiver?.close();
  await database?.drop();
});

test('requests in → exact totals at the receiver, over several periods and the final collection', async () => {
  service = await spawnService({
    DATABASE_URL: database.databaseUrl,
    TELEMETRY_URL: receiver.url,
    FLUSH_INTERVAL_MS: '200',
    SNAPSHOT_FREQUENCY_MS: '1000',
    FINAL_COLLECTION: 'true',
  });
  const counts = emptyCounts();
  const total = 400;
  const started = Date.now();
  // Spread over about 2.5 s, so the traffic crosses period edges and scheduled reports go out.
  for (let batch = 0; batch < total / 20; batch++) {
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => oneRequest(service!.port, batch * 20 + i, counts)),
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  expect(counts).toMatchObject({ unanswered: 0, other: 0 });
  expect(counts.allowed + counts.denied).toBe(total);
  expect(counts.denied).toBe(total / 10);
  expect(Date.now() - started).toBeGreaterThan(2_000);

  service.child.kill('SIGTERM');
  const exit = await service.exited;
  expect(exit).toEqual({ code: 0, signal: null });
  const stopped = stoppedEvent(service);
  expect(stopped.usage.inMemory).toEqual({ allowedRequests: 0, deniedRequests: 0 });
  expect(stopped.usage.finalCollection).toBe('reported');
  expect(stopped.usage.undeliveredReports).toBe(0);
  expect(stopped.usage.awaitingCollection).toEqual({ allowedRequests: 0, deniedRequests: 0 });

  // Exactly what was served, each report once; more than one period carried usage.
  expect(receivedTotals(receiver)).toEqual({ allowed: counts.allowed, denied: counts.denied });
  expect(receiver.duplicates).toBe(0);
  const withUsage = [...receiver.reports.values()].filter((r) => r.allowed + r.denied > 0);
  expect(withUsage.length).toBeGreaterThan(1);
  const periods = new Set([...receiver.reports.values()].map((r) => r.periodStart));
  expect(periods.size).toBe(receiver.reports.size);
  for (const report of withUsage) expect(report.uniqueWorkspaces).toBeLessThanOrEqual(5);

  // The service's own data and history in public, usagekit's in its schema: side by side.
  const client = new Client({ connectionString: database.databaseUrl });
  await client.connect();
  try {
    const notes = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM public.demo_notes',
    );
    expect(notes.rows[0]!.n).toBe(counts.created);
    const hostHistory = await client.query<{ migration_name: string }>(
      'SELECT migration_name FROM public._prisma_migrations ORDER BY migration_name',
    );
    expect(hostHistory.rows.map((r) => r.migration_name)).toEqual(['20261206000000_notes']);
    const usagekitHistory = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM usagekit._prisma_migrations WHERE migration_name = $1',
      ['20261206000000_notes'],
    );
    expect(usagekitHistory.rows[0]!.n).toBe(0);
  } finally {
    await client.end();
  }
});
