import { TelemetryCollector } from '../src/index.js';

async function post(url: string, body: unknown, key?: string): Promise<number> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  await response.text();
  return response.status;
}

/** A fixed sequence of "random" numbers, then zeros. */
function sequence(...values: number[]): () => number {
  return () => values.shift() ?? 0;
}

describe('TelemetryCollector', () => {
  let collector: TelemetryCollector | undefined;
  afterEach(async () => {
    await collector?.close();
    collector = undefined;
  });

  it('listens on loopback and stores each report once, counting redeliveries apart', async () => {
    collector = await TelemetryCollector.start();
    expect(collector.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/snapshot$/);
    expect(await post(collector.url, { n: 1 }, 'key-1')).toBe(202);
    expect(await post(collector.url, { n: 1 }, 'key-1')).toBe(202);
    expect(await post(collector.url, { n: 2 }, 'key-2')).toBe(202);
    expect(
      collector.received().map((report) => [report.idempotencyKey, report.body, report.copies]),
    ).toEqual([
      ['key-1', { n: 1 }, 2],
      ['key-2', { n: 2 }, 1],
    ]);
    expect(collector.stats()).toMatchObject({ posts: 3, accepted: 2, duplicates: 1, malformed: 0 });
  });

  it('refuses a POST without an Idempotency-Key or with a body that is not JSON', async () => {
    collector = await TelemetryCollector.start();
    expect(await post(collector.url, { n: 1 })).toBe(400);
    expect(await post(collector.url, '{not json', 'key-1')).toBe(400);
    expect(collector.received()).toEqual([]);
    expect(collector.stats().malformed).toBe(2);
  });

  it('with chaos, refuses some POSTs unstored and drops some acknowledgements of stored ones', async () => {
    // Per POST the collector draws twice: refuse?, then drop the acknowledgement?
    collector = await TelemetryCollector.start({
      refuseRate: 0.5,
      dropAcknowledgementRate: 0.5,
      random: sequence(
        0.1,
        /* refused */ 0.9,
        0.1 /* stored, acknowledgement dropped */,
        0.9,
        0.9 /* stored */,
      ),
    });
    expect(await post(collector.url, { n: 1 }, 'key-1')).toBe(503);
    expect(collector.received()).toEqual([]);
    expect(await post(collector.url, { n: 1 }, 'key-1')).toBe(500);
    expect(await post(collector.url, { n: 1 }, 'key-1')).toBe(202);
    expect(collector.received()).toHaveLength(1);
    expect(collector.stats()).toMatchObject({
      posts: 3,
      accepted: 1,
      duplicates: 1,
      refused: 1,
      acknowledgementsDropped: 1,
    });
    collector.stopChaos();
    expect(await post(collector.url, { n: 2 }, 'key-2')).toBe(202);
  });
});
