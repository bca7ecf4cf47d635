/**
 * Delivery from the outbox: a real HTTP receiver on 127.0.0.1 that is down, refuses or
 * accepts; a reporter that "crashes" after the cutover; two reporters draining at once; the
 * JSON-lines sink; and start()/stop().
 */
import { PassThrough } from 'node:stream';
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import type { PrismaClient } from '@usagekit/db';
import { findFreePort } from '@usagekit/testing';
import {
  HttpSink,
  JsonLinesSink,
  snapshotToJson,
  TelemetryReporter,
  type OutboxReport,
  type Sink,
  type SnapshotJson,
} from '../src/index.js';
import {
  ageOutbox,
  clearTables,
  CollectingSink,
  databaseNow,
  FakeClock,
  flush,
  gate,
  MINUTE_MS,
  outbox,
  reporter,
  startReceiver,
  TEST_RETENTION_MS,
  useDatabase,
  uuid,
  waitUntil,
  type Receiver,
} from './helpers.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const ALIGNED = '2026-02-03T12:00:00.000Z';
const receivers: Receiver[] = [];
const reporters: TelemetryReporter[] = [];

beforeAll(() => {
  prisma = db.client();
  store = new BoundaryUsageStore(prisma);
});
beforeEach(() => clearTables(prisma));
afterEach(async () => {
  await Promise.all(reporters.splice(0).map((telemetry) => telemetry.stop()));
  await Promise.all(receivers.splice(0).map((receiver) => receiver.close()));
});

async function receiver(options: Parameters<typeof startReceiver>[0] = {}): Promise<Receiver> {
  const started = await startReceiver(options);
  receivers.push(started);
  return started;
}

function track<T extends TelemetryReporter>(telemetry: T): T {
  reporters.push(telemetry);
  return telemetry;
}

/** A sink that holds every send until its gate opens. */
class GatedSink implements Sink {
  readonly calls: OutboxReport[] = [];
  constructor(private readonly opened: Promise<void>) {}
  async send(report: OutboxReport): Promise<void> {
    this.calls.push(report);
    await this.opened;
  }
}

test('receiver down for three attempts (503), then up: delivered exactly once, same Idempotency-Key every time', async () => {
  const server = await receiver({ statusFor: (index) => (index < 3 ? 503 : 202) });
  const clock = new FakeClock(ALIGNED);
  const telemetry = reporter(prisma, clock, new HttpSink({ url: server.url, timeoutMs: 5_000 }), {
    retryBackoff: { baseDelayMs: 1_000, maxDelayMs: 4_000 },
  });
  await store.upsertStats(
    flush(uuid(), {
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      allowedRequests: 9,
      deniedRequests: 4,
    }),
  );
  const snapshot = await telemetry.collectSnapshot();

  for (let failure = 1; failure <= 3; failure++) {
    const before = await databaseNow(prisma);
    expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
    const after = await databaseNow(prisma);
    const [row] = await outbox(prisma);
    expect(row!.attempts).toBe(failure);
    expect(row!.last_error).toMatch(/answered 503/);
    // Equal-jitter backoff on the database's clock: [½, 1] × min(4 s, 1 s × 2^(failure − 1)).
    const ceiling = Math.min(4_000, 1_000 * 2 ** (failure - 1));
    expect(row!.next_attempt_at.getTime() - before.getTime()).toBeGreaterThanOrEqual(ceiling / 2);
    expect(row!.next_attempt_at.getTime() - after.getTime()).toBeLessThanOrEqual(ceiling);
    // Not due yet, whatever the reporter's clock says: nothing is sent.
    clock.advance(60 * MINUTE_MS);
    expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });
    await ageOutbox(prisma, ceiling);
  }
  const before = await databaseNow(prisma);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  const after = await databaseNow(prisma);
  await ageOutbox(prisma, 60 * MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });

  expect(server.requests).toHaveLength(4);
  expect(server.accepted()).toHaveLength(1);
  for (const request of server.requests) {
    expect(request.method).toBe('POST');
    expect(request.url).toBe('/snapshot');
    expect(request.headers['idempotency-key']).toBe(snapshot.reportId);
    expect(request.headers['content-type']).toBe('application/json');
    expect(JSON.parse(request.body)).toEqual(snapshotToJson(snapshot));
  }
  const [row] = await outbox(prisma);
  expect(row!.attempts).toBe(4);
  expect(row!.last_error).toBeNull();
  // delivered_at is the database's time, moved back by the hour the test aged the outbox.
  const deliveredAt = row!.delivered_at!.getTime() + 60 * MINUTE_MS;
  expect(deliveredAt).toBeGreaterThanOrEqual(before.getTime());
  expect(deliveredAt).toBeLessThanOrEqual(after.getTime());
});

test('receiver port closed, then a receiver starts on it: the report arrives', async () => {
  const port = await findFreePort();
  const clock = new FakeClock(ALIGNED);
  const telemetry = reporter(prisma, clock, `http://127.0.0.1:${port}/snapshot`);
  await store.upsertStats(flush(uuid(), { allowedRequests: 2 }));
  const snapshot = await telemetry.collectSnapshot();

  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
  expect((await outbox(prisma))[0]!.last_error).toMatch(/ECONNREFUSED/);
  await ageOutbox(prisma, 10 * MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });

  const server = await receiver({ port });
  await ageOutbox(prisma, 20 * MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  expect(server.requests).toHaveLength(1);
  expect(server.requests[0]!.headers['idempotency-key']).toBe(snapshot.reportId);
  const body = JSON.parse(server.requests[0]!.body) as SnapshotJson;
  expect(body.boundary_usage_summary!.allowed_requests).toBe(2);
});

test('a crash after the cutover committed loses nothing: the next reporter to start delivers it', async () => {
  const server = await receiver();
  const clock = new FakeClock('2026-02-03T12:10:00.000Z');
  await store.upsertStats(
    flush(uuid(), {
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      allowedRequests: 21,
      deniedRequests: 5,
    }),
  );
  // This reporter's process "dies" right after the cutover: no delivery, no stop().
  const crashed = reporter(db.client(), clock, new HttpSink({ url: server.url }));
  const snapshot = await crashed.collectSnapshot();
  expect(server.requests).toHaveLength(0);

  // Another replica starts its reporter in the same period: it loses the claim, delivers the row.
  const successor = track(reporter(db.client(), clock, new HttpSink({ url: server.url })));
  successor.start();
  await waitUntil(() => server.accepted().length === 1, 'the receiver accepted the report');
  await successor.stop();

  expect(server.requests).toHaveLength(1);
  expect(server.requests[0]!.headers['idempotency-key']).toBe(snapshot.reportId);
  expect(
    (JSON.parse(server.requests[0]!.body) as SnapshotJson).boundary_usage_summary,
  ).toMatchObject({
    allowed_requests: 21,
    denied_requests: 5,
  });
  const rows = await outbox(prisma);
  expect(rows).toHaveLength(1);
  expect(rows[0]!.delivered_at).not.toBeNull();
});

test('a report being sent is leased: a second reporter does not send it until the lease runs out', async () => {
  const clock = new FakeClock(ALIGNED);
  const held = gate();
  const slowSink = new GatedSink(held.promise);
  const slow = reporter(prisma, clock, slowSink, { deliveryTimeoutMs: 30_000 });
  await store.upsertStats(flush(uuid(), { allowedRequests: 3 }));
  const snapshot = await slow.collectSnapshot();

  const slowDelivery = slow.deliverPending();
  await waitUntil(() => slowSink.calls.length === 1, 'the first reporter is sending');

  const otherSink = new CollectingSink();
  const other = reporter(db.client(), clock, otherSink);
  expect(await other.deliverPending()).toEqual({ delivered: 0, failed: 0 });
  // The lease is on the database's clock: a reporter whose clock runs an hour ahead cannot
  // take the row either.
  clock.advance(60 * MINUTE_MS);
  // still inside the 65 s lease (standbyFlushTimeoutMs + deliveryTimeoutMs + max(deliveryTimeoutMs, 5 s))
  await ageOutbox(prisma, 55_000);
  expect(await other.deliverPending()).toEqual({ delivered: 0, failed: 0 });
  expect(otherSink.sent).toHaveLength(0);

  // The first sender looks dead: after the lease the row is sent again, same id.
  await ageOutbox(prisma, 11_000);
  expect(await other.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  expect(otherSink.sent.map((report) => [report.reportId, report.attempt])).toEqual([
    [snapshot.reportId, 2],
  ]);
  const deliveredAt = (await outbox(prisma))[0]!.delivered_at;

  // The slow send finishes later; the row keeps its first acknowledgement.
  held.open();
  expect(await slowDelivery).toEqual({ delivered: 1, failed: 0 });
  expect((await outbox(prisma))[0]!.delivered_at).toEqual(deliveredAt);
});

test('oldest first, and one refused report does not block the others', async () => {
  const clock = new FakeClock(ALIGNED);
  const ids: string[] = [];
  for (let period = 0; period < 3; period++) {
    await store.upsertStats(flush(uuid(), { allowedRequests: period + 1 }));
    ids.push((await reporter(prisma, clock, new CollectingSink()).collectSnapshot()).reportId!);
    clock.advance(30 * MINUTE_MS);
  }
  const refused = ids[0]!;
  const server = await receiver();
  const sent: string[] = [];
  const picky: Sink = {
    async send(report) {
      sent.push(report.reportId);
      if (report.reportId === refused) throw new Error('receiver rejects this one');
      await new HttpSink({ url: server.url }).send(report);
    },
  };
  const telemetry = reporter(prisma, clock, picky);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 2, failed: 1 });
  expect(sent).toEqual(ids);
  expect(server.requests.map((request) => request.headers['idempotency-key'])).toEqual(
    ids.slice(1),
  );
});

test('JsonLinesSink writes one JSON line per report', async () => {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString('utf8')));
  const clock = new FakeClock(ALIGNED);
  const telemetry = reporter(prisma, clock, new JsonLinesSink({ stream }));
  await store.upsertStats(flush(uuid(), { allowedRequests: 13 }));
  const snapshot = await telemetry.collectSnapshot();
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  const lines = chunks.join('').split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[1]).toBe('');
  expect(JSON.parse(lines[0]!)).toEqual(snapshotToJson(snapshot));
});

describe('start() and stop()', () => {
  test('start reports at once; stop is idempotent and waits for the send in flight', async () => {
    const clock = new FakeClock(ALIGNED);
    const held = gate();
    const sink = new GatedSink(held.promise);
    const telemetry = track(reporter(prisma, clock, sink));
    await store.upsertStats(flush(uuid(), { allowedRequests: 17 }));

    telemetry.start();
    telemetry.start(); // no second schedule
    await waitUntil(() => sink.calls.length === 1, 'the first report is being sent');

    const stopping = telemetry.stop();
    expect(telemetry.stop()).toBe(stopping);
    let stopped = false;
    void stopping.then(() => (stopped = true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stopped).toBe(false);

    held.open();
    await stopping;
    expect(stopped).toBe(true);
    expect(sink.calls).toHaveLength(1);
    expect((sink.calls[0]!.payload as SnapshotJson).boundary_usage_summary!.allowed_requests).toBe(
      17,
    );
    const rows = await outbox(prisma);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.delivered_at).not.toBeNull();
    expect(() => telemetry.start()).toThrow(/start\(\) after stop\(\)/);
  });

  test('stop tries one last delivery of what failed before', async () => {
    const server = await receiver({ statusFor: (index) => (index === 0 ? 503 : 202) });
    const clock = new FakeClock(ALIGNED);
    // A long backoff, so that only stop()'s last delivery can send the report during this test.
    const telemetry = track(
      reporter(prisma, clock, new HttpSink({ url: server.url }), {
        retryBackoff: { baseDelayMs: 10 * MINUTE_MS, maxDelayMs: 10 * MINUTE_MS },
      }),
    );
    await store.upsertStats(flush(uuid(), { allowedRequests: 4 }));
    telemetry.start();
    await waitUntil(
      async () => (await outbox(prisma))[0]?.last_error != null,
      'the first attempt failed',
    );
    expect(server.accepted()).toHaveLength(0);

    await ageOutbox(prisma, 10 * MINUTE_MS);
    await telemetry.stop();
    expect(server.requests).toHaveLength(2);
    expect(server.accepted()).toHaveLength(1);
    expect((await outbox(prisma))[0]!.delivered_at).not.toBeNull();
  });

  test('stop() on a reporter that never started still delivers what is pending', async () => {
    const clock = new FakeClock(ALIGNED);
    await store.upsertStats(flush(uuid(), { allowedRequests: 1 }));
    await reporter(prisma, clock, new CollectingSink()).collectSnapshot();
    const sink = new CollectingSink();
    const telemetry = new TelemetryReporter({
      prisma,
      store,
      deploymentId: 'test-deployment',
      sink,
      clock,
      reportRetentionMs: TEST_RETENTION_MS,
    });
    await telemetry.stop();
    expect(sink.sent).toHaveLength(1);
  });
});
