/**
 * The last hop against real node:http receivers on 127.0.0.1 (issue 18): redirects answered to
 * the POST, a receiver slower than the delivery timeout with two reporters draining, Retry-After
 * as seconds and as a date, a 2xx whose body trickles, credentials in the receiver URL, and
 * permanent refusals (dead letters an operator sends again).
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import type { Logger, PrismaClient } from '@usagekit/db';
import { Registry } from 'prom-client';
import {
  createTelemetryMetrics,
  HttpSink,
  listRejectedReports,
  retryRejectedReports,
  SinkError,
  type TelemetryReporter,
} from '../src/index.js';
import {
  ageOutbox,
  clearTables,
  databaseNow,
  FakeClock,
  flush,
  MINUTE_MS,
  outbox,
  reporter,
  useDatabase,
  uuid,
  waitUntil,
} from './helpers.js';
import {
  after,
  startHttpReceiver,
  type Handler,
  type HttpReceiver,
} from './support/http-receiver.js';

const db = useDatabase();
let prisma: PrismaClient;
let store: BoundaryUsageStore;
const ALIGNED = '2026-02-03T12:00:00.000Z';
const receivers: HttpReceiver[] = [];
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

async function receiver(handler: Handler): Promise<HttpReceiver> {
  const started = await startHttpReceiver(handler);
  receivers.push(started);
  return started;
}

function track<T extends TelemetryReporter>(telemetry: T): T {
  reporters.push(telemetry);
  return telemetry;
}

/** One report in the outbox, written by a reporter whose sink is never used. */
async function oneReport(allowedRequests = 5): Promise<string> {
  await store.upsertStats(flush(uuid(), { allowedRequests }));
  const writer = reporter(prisma, new FakeClock(ALIGNED), 'http://127.0.0.1:9/unused');
  return (await writer.collectSnapshot()).reportId!;
}

describe('redirects are not followed for a POST', () => {
  test.each([301, 302, 303, 307, 308])(
    '%i to a login page: a failed attempt naming status and Location; the login page never sees the report',
    async (status) => {
      const server = await receiver((request, response) => {
        if (request.path === '/login') {
          response.writeHead(200, { 'content-type': 'text/html' });
          response.end('<form>login</form>');
          return;
        }
        response.writeHead(status, { location: '/login?next=%2Fsnapshot' });
        response.end();
      });
      const reportId = await oneReport();
      const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url);
      expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });

      expect(server.requests.map((request) => `${request.method} ${request.path}`)).toEqual([
        'POST /snapshot',
      ]);
      expect(server.requests[0]!.key).toBe(reportId);
      const [row] = await outbox(prisma);
      expect(row!.delivered_at).toBeNull();
      expect(row!.last_error).toBe(
        `POST ${server.url} answered ${status} redirecting to ${server.origin}/login?…; redirects are not followed for a POST (configure the final URL)`,
      );
    },
  );
});

test('a receiver slower than deliveryTimeoutMs, two reporters draining: every abandoned POST is closed, never two of one report open at once', async () => {
  // Answers after 3 s; the reporters give up after 400 ms. The sink is a URL string, so its
  // timeout is the reporter's (it used to keep its own 10 s).
  const server = await receiver((_request, response) =>
    after(3_000, response, () => {
      response.writeHead(202);
      response.end();
    }),
  );
  const reportId = await oneReport();
  const clock = new FakeClock(ALIGNED);
  const options = { deliveryTimeoutMs: 400, retryBackoff: { baseDelayMs: 50, maxDelayMs: 50 } };
  const first = reporter(db.client(), clock, server.url, options);
  const second = reporter(db.client(), clock, server.url, options);

  for (let round = 0; round < 3; round++) {
    const startedAt = performance.now();
    const results = await Promise.all([first.deliverPending(), second.deliverPending()]);
    const tookMs = performance.now() - startedAt;
    // One of them leased the report and gave up at its timeout; the other found nothing due.
    expect(results.map((result) => result.failed).sort()).toEqual([0, 1]);
    expect(tookMs).toBeGreaterThanOrEqual(390);
    expect(tookMs).toBeLessThan(2_500);
    // The receiver saw the connection close (the request was cancelled, not left running).
    await waitUntil(
      () => server.requests.length === round + 1 && server.requests[round]!.closedByClient,
      'the abandoned POST was closed',
      2_000,
    );
    // Due again at once, as if the backoff had passed.
    await ageOutbox(prisma, 10 * MINUTE_MS);
  }
  expect(server.maxConcurrentPerKey()).toBe(1);
  expect(server.requests.every((request) => request.key === reportId)).toBe(true);
  const [row] = await outbox(prisma);
  expect(row!.attempts).toBe(3);
  expect(row!.last_error).toMatch(/did not settle within 4\d\d ms|abandoned by the reporter/);
});

test('stop() that gives up on a send in flight cancels it: the receiver sees the POST closed', async () => {
  const server = await receiver((_request, response) =>
    after(5_000, response, () => {
      response.writeHead(202);
      response.end();
    }),
  );
  await oneReport();
  const telemetry = reporter(prisma, new FakeClock('2026-02-03T12:10:00.000Z'), server.url, {
    deliveryTimeoutMs: 10_000,
    stopTimeoutMs: 300,
  });
  telemetry.start();
  await waitUntil(() => server.requests.length === 1, 'the POST arrived');
  const stoppingAt = performance.now();
  await telemetry.stop();
  expect(performance.now() - stoppingAt).toBeLessThan(2_000);
  await waitUntil(() => server.requests[0]!.closedByClient, 'the POST was closed', 2_000);
  expect((await outbox(prisma))[0]!.delivered_at).toBeNull();
});

test('the lease outlives the send holding it, on the database clock', async () => {
  const server = await receiver((_request, response) =>
    after(5_000, response, () => {
      response.writeHead(202);
      response.end();
    }),
  );
  await oneReport();
  // 2 s of send: the lease is read while the POST is open even on a loaded machine (with a
  // 300 ms send, the abort's failure mark could land first and replace the lease).
  const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url, {
    deliveryTimeoutMs: 2_000,
  });
  const before = await databaseNow(prisma);
  const delivering = telemetry.deliverPending();
  await waitUntil(() => server.requests.length === 1, 'the POST arrived');
  const [leased] = await outbox(prisma);
  expect(server.requests[0]!.closedByClient).toBe(false);
  // deliveryTimeoutMs + max(deliveryTimeoutMs, 5 s).
  expect(leased!.next_attempt_at.getTime() - before.getTime()).toBeGreaterThanOrEqual(7_000);
  expect(await delivering).toEqual({ delivered: 0, failed: 1 });
  await waitUntil(() => server.requests[0]!.closedByClient, 'the POST was closed');
});

test('Retry-After in seconds on 503: the next POST waits at least that long (at the receiver, under start())', async () => {
  const server = await receiver((request, response) => {
    if (request.index === 0) {
      response.writeHead(503, { 'retry-after': '2' });
      response.end('busy');
      return;
    }
    response.writeHead(202);
    response.end();
  });
  const reportId = await oneReport();
  const telemetry = track(
    reporter(prisma, new FakeClock('2026-02-03T12:10:00.000Z'), server.url, {
      retryBackoff: { baseDelayMs: 100, maxDelayMs: 100 },
    }),
  );
  telemetry.start();
  await waitUntil(() => server.requests.length === 2, 'the second POST', 8_000);
  const gapMs = server.requests[1]!.at - server.requests[0]!.at;
  expect(gapMs).toBeGreaterThanOrEqual(1_950);
  expect(gapMs).toBeLessThan(5_000);
  expect(server.requests.map((request) => request.key)).toEqual([reportId, reportId]);
  await waitUntil(async () => (await outbox(prisma))[0]!.delivered_at !== null, 'delivered');
});

test('Retry-After as an HTTP date on 429: next_attempt_at is at least that far out, on the database clock', async () => {
  const server = await receiver((request, response) => {
    // The date is whole seconds; the Date header is the same clock, so the delay is exact.
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    response.writeHead(429, {
      date: now.toUTCString(),
      'retry-after': new Date(now.getTime() + 4_000).toUTCString(),
    });
    response.end('slow down');
  });
  await oneReport();
  const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url, {
    retryBackoff: { baseDelayMs: 100, maxDelayMs: 100 },
  });
  const before = await databaseNow(prisma);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
  const afterAt = await databaseNow(prisma);
  const [row] = await outbox(prisma);
  expect(row!.next_attempt_at.getTime() - afterAt.getTime()).toBeGreaterThanOrEqual(3_900);
  expect(row!.next_attempt_at.getTime() - before.getTime()).toBeLessThanOrEqual(4_100);
  expect(row!.last_error).toMatch(/answered 429 \(Retry-After 4000 ms\): slow down/);
  // Not due before then.
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });
  expect(server.requests).toHaveLength(1);
});

test('a 2xx whose body is slow is delivered on its status line, once', async () => {
  const server = await receiver((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write('{"accepted":');
    after(3_000, response, () => response.end('true}'));
  });
  await oneReport();
  const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url, {
    deliveryTimeoutMs: 1_000,
  });
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
  await ageOutbox(prisma, 60 * MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });
  expect(server.requests).toHaveLength(1);
  expect((await outbox(prisma))[0]!.delivered_at).not.toBeNull();
});

test('credentials in the receiver URL are sent as Basic auth and appear in no error, log line or last_error', async () => {
  const password = `pw-${uuid()}@:/`;
  const server = await receiver((request, response) => {
    // A careless receiver that echoes what it got, the Authorization header included.
    response.writeHead(request.index === 0 ? 500 : 202);
    response.end(`got ${request.headers.authorization ?? 'nothing'} for ${request.path}`);
  });
  const url = new URL(server.url);
  url.username = 'reporter';
  url.password = password;
  const lines: string[] = [];
  const logger: Logger = {
    debug: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    info: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    warn: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    error: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
  };
  const errors: unknown[] = [];
  await oneReport();
  const telemetry = reporter(prisma, new FakeClock(ALIGNED), url.href, {
    logger,
    retryBackoff: { baseDelayMs: 50, maxDelayMs: 50 },
    observer: { onDelivery: (attempt) => errors.push(attempt.error) },
  });
  expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
  await ageOutbox(prisma, MINUTE_MS);
  expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });

  const expected = `Basic ${Buffer.from(`reporter:${password}`).toString('base64')}`;
  expect(server.requests.map((request) => [request.path, request.headers.authorization])).toEqual([
    ['/snapshot', expected],
    ['/snapshot', expected],
  ]);
  const [row] = await outbox(prisma);
  const failure = errors[0] as SinkError;
  expect(failure.message).toBe(`POST ${server.url} answered 500: got Basic *** for /snapshot`);
  const everything = [
    ...lines,
    ...errors.map((error) =>
      error instanceof Error ? `${error.message} ${String(error.cause)}` : '',
    ),
    row!.last_error ?? '',
    JSON.stringify(
      (await prisma.$queryRaw`SELECT * FROM usagekit.telemetry_reports`) as unknown[],
      (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v),
    ),
  ].join('\n');
  expect(everything).not.toContain(password);
  expect(everything).not.toContain(encodeURIComponent(password));
  expect(everything).not.toContain(expected.slice(6));
  // And the constructor refuses ambiguity without echoing the password.
  let refused: unknown;
  try {
    new HttpSink({ url, headers: { Authorization: 'Bearer x' } });
  } catch (error) {
    refused = error;
  }
  expect(refused).toMatchObject({ code: 'INVALID_INPUT', field: 'sink url' });
  expect(String((refused as Error).message)).not.toContain(encodeURIComponent(password));
});

test('a bare Bearer token or a token-as-username URL echoed by the receiver appears in no error, log line or last_error', async () => {
  const bearer = `tok${uuid().replace(/-/g, '')}`;
  const userToken = `ghp${uuid().replace(/-/g, '')}`;
  const server = await receiver((request, response) => {
    // A careless receiver that names the credential it refuses, without the scheme.
    const authorization = request.headers.authorization ?? '';
    const credential = authorization.startsWith('Basic ')
      ? Buffer.from(authorization.slice(6), 'base64').toString('utf8').split(':')[0]
      : authorization.replace(/^Bearer /, '');
    response.writeHead(401);
    response.end(`invalid token ${credential}`);
  });
  const lines: string[] = [];
  const logger: Logger = {
    debug: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    info: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    warn: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
    error: (message, fields) => lines.push(`${message} ${JSON.stringify(fields ?? {})}`),
  };
  const errors: unknown[] = [];
  const userUrl = new URL(server.url);
  userUrl.username = userToken;
  const sinks = [
    new HttpSink({ url: server.url, headers: { Authorization: `Bearer ${bearer}` } }),
    new HttpSink({ url: userUrl }),
  ];
  for (const sink of sinks) {
    await clearTables(prisma);
    await oneReport();
    const telemetry = reporter(prisma, new FakeClock(ALIGNED), sink, {
      logger,
      observer: { onDelivery: (attempt) => errors.push(attempt.error) },
    });
    expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
    const [row] = await outbox(prisma);
    lines.push(row!.last_error ?? '');
    try {
      await sink.send({ reportId: uuid(), eventType: 'probe', attempt: 1, payload: {} });
    } catch (error) {
      errors.push(error);
    }
  }
  // The receiver did echo both credentials: the test would catch a leak.
  expect(server.requests).toHaveLength(4);
  expect(errors).toHaveLength(4);
  expect(errors.every((error) => error instanceof SinkError)).toBe(true);
  const everything = [
    ...lines,
    ...errors.map((error) =>
      error instanceof Error ? `${error.message} ${String(error.cause)}` : String(error),
    ),
  ].join('\n');
  expect(everything).toContain('invalid token ***');
  expect(everything).not.toContain(bearer);
  expect(everything).not.toContain(userToken);
});

describe('permanent refusals', () => {
  test('a 422 moves the report to rejected after rejectAfterRefusals attempts with backoff; kept, counted, and sent again by an operator', async () => {
    let refuse = true;
    const server = await receiver((_request, response) => {
      response.writeHead(refuse ? 422 : 202);
      response.end(refuse ? 'schema mismatch' : '');
    });
    const reportId = await oneReport(7);
    const registry = new Registry();
    const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url, {
      rejectAfterRefusals: 3,
      retryBackoff: { baseDelayMs: 1_000, maxDelayMs: 1_000 },
      // Short retention: a delivered report would be purged; a rejected one must not be.
      reportRetentionMs: 2 * 365 * 24 * 60 * MINUTE_MS,
      observer: createTelemetryMetrics(registry),
    });
    for (let refusal = 1; refusal <= 3; refusal++) {
      const before = await databaseNow(prisma);
      expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
      const [row] = await outbox(prisma);
      // Backoff, never a tight loop: not due again before half the base delay.
      expect(row!.next_attempt_at.getTime() - before.getTime()).toBeGreaterThanOrEqual(500);
      expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });
      await ageOutbox(prisma, 2_000);
    }
    expect(server.requests).toHaveLength(3);
    // Rejected: never due again, whatever the time.
    await ageOutbox(prisma, 3 * 365 * 24 * 60 * MINUTE_MS);
    expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 0 });
    expect(server.requests).toHaveLength(3);
    expect(await telemetry.purgeExpired()).toMatchObject({ reports: 0 });
    const rejected = await listRejectedReports(prisma);
    expect(rejected).toEqual([expect.objectContaining({ reportId, attempts: 3, rejections: 3 })]);
    expect(rejected[0]!.lastError).toMatch(/answered 422: schema mismatch/);
    const metrics = await registry.getMetricsAsJSON();
    const gauge = metrics.find(
      (metric) => metric.name === 'usagekit_telemetry_outbox_rejected_reports',
    );
    const counter = metrics.find(
      (metric) => metric.name === 'usagekit_telemetry_reports_rejected_total',
    );
    expect(gauge?.values[0]?.value).toBe(1);
    expect(counter?.values[0]?.value).toBe(1);
    const pending = metrics.find(
      (metric) => metric.name === 'usagekit_telemetry_outbox_pending_reports',
    );
    expect(pending?.values[0]?.value).toBe(0);

    // The operator fixes the receiver and sends it again.
    refuse = false;
    await expect(retryRejectedReports(prisma, { reportIds: ['not-a-uuid'] })).rejects.toMatchObject(
      {
        code: 'INVALID_INPUT',
      },
    );
    expect(await retryRejectedReports(prisma, { reportIds: [uuid()] })).toEqual({ reportIds: [] });
    expect(await retryRejectedReports(prisma, { reportIds: [reportId] })).toEqual({
      reportIds: [reportId],
    });
    expect(await retryRejectedReports(prisma)).toEqual({ reportIds: [] });
    expect(await telemetry.deliverPending()).toEqual({ delivered: 1, failed: 0 });
    expect(server.requests.map((request) => request.key)).toEqual([
      reportId,
      reportId,
      reportId,
      reportId,
    ]);
    expect(await listRejectedReports(prisma)).toEqual([]);
    const [row] = await outbox(prisma);
    expect(row!.delivered_at).not.toBeNull();
    expect(row!.attempts).toBe(4);
  });

  test('transient refusals (503, 429) never reject, however many, and a pass sends a report at most once', async () => {
    const server = await receiver((request, response) => {
      response.writeHead(request.index % 2 === 0 ? 503 : 429);
      response.end();
    });
    await oneReport();
    const telemetry = reporter(prisma, new FakeClock(ALIGNED), server.url, {
      rejectAfterRefusals: 1,
      // Due again 1 ms after each failure: still one send per pass, never a loop within it.
      retryBackoff: { baseDelayMs: 1, maxDelayMs: 1 },
    });
    for (let attempt = 0; attempt < 4; attempt++) {
      expect(await telemetry.deliverPending()).toEqual({ delivered: 0, failed: 1 });
      await ageOutbox(prisma, MINUTE_MS);
    }
    expect(await listRejectedReports(prisma)).toEqual([]);
    expect(server.requests).toHaveLength(4);
  });
});
