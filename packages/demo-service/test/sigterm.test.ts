import { createTestDatabase, waitUntil, type TestDatabase } from '@usagekit/testing';
import {
  emptyCounts,
  migrateHostTables,
  receivedTotals,
  runTraffic,
  spawnService,
  startReceiver,
  stoppedEvent,
  type Receiver,
  type ServiceProcess,
} from './support.js';

// SIGTERM straight to the real process (as a container runtime sends it: node is the process,
// no npm or nx in between) while eight clients keep sending requests.
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

test('SIGTERM in the middle of traffic: every request served is reported, none twice', async () => {
  const budgetMs = 10_000;
  service = await spawnService({
    DATABASE_URL: database.databaseUrl,
    TELEMETRY_URL: receiver.url,
    FLUSH_INTERVAL_MS: '300',
    SNAPSHOT_FREQUENCY_MS: '1000',
    FINAL_COLLECTION: 'true',
    SHUTDOWN_BUDGET_MS: String(budgetMs),
  });
  const counts = emptyCounts();
  let exited = false;
  const exit = service.exited.then((result) => {
    exited = true;
    return result;
  });
  // Traffic runs until the process is gone: across the SIGTERM, the drain and the stop.
  const traffic = runTraffic(service.port, 8, counts, () => exited);
  // Past a few flushes and a period edge (about 1 s at most of the traffic, or a bounded wait).
  await waitUntil(() => counts.allowed + counts.denied >= 200, '200 requests served', 20_000);
  const servedBeforeSignal = counts.allowed + counts.denied;
  const signalledAt = Date.now();
  service.child.kill('SIGTERM');
  const result = await exit;
  const stopMs = Date.now() - signalledAt;
  await traffic;

  expect(servedBeforeSignal).toBeGreaterThanOrEqual(200);
  expect(service.events.find((e) => e['event'] === 'stopping')).toMatchObject({
    signal: 'SIGTERM',
  });
  expect(result).toEqual({ code: 0, signal: null });
  expect(stopMs).toBeLessThan(budgetMs + 2_000);
  const stopped = stoppedEvent(service);
  expect(stopped.abandonedRequests).toBe(0);
  expect(stopped.usage.inMemory).toEqual({ allowedRequests: 0, deniedRequests: 0 });
  expect(stopped.usage.finalCollection).toBe('reported');
  expect(stopped.usage.undeliveredReports).toBe(0);

  console.log(
    `SIGTERM mid-traffic: served ${counts.allowed + counts.denied} (${servedBeforeSignal} before the signal), ` +
      `unanswered ${counts.unanswered}, process gone ${stopMs} ms after SIGTERM (shutdown ${stopped.elapsedMs} ms), ` +
      `${receiver.reports.size} reports`,
  );
  // Requests refused while it stopped were never served; every served one is reported once.
  expect(counts.other).toBe(0);
  expect(counts.unanswered).toBeGreaterThan(0);
  expect(receivedTotals(receiver)).toEqual({ allowed: counts.allowed, denied: counts.denied });
  expect(receiver.duplicates).toBe(0);
});
