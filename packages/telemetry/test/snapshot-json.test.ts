/**
 * The pure parts: report ids, period arithmetic, the bigint-safe JSON and the backoff. No
 * database needed.
 */
import { emptySummary } from '@usagekit/boundary-usage';
import {
  floorToFrequency,
  jsonInteger,
  parseJsonInteger,
  periodAt,
  reportIdFor,
  retryDelayMs,
  serializeSnapshot,
  snapshotToJson,
  uuidV5,
  type Snapshot,
} from '../src/index.js';
import { FREQUENCY_MS } from './helpers.js';

describe('report ids', () => {
  test('uuidV5 matches RFC 9562 (Python uuid5(NAMESPACE_DNS, "www.example.com"))', () => {
    expect(uuidV5('www.example.com', '6ba7b810-9dad-11d1-80b4-00c04fd430c8')).toBe(
      '2ed6657d-e927-568b-95e1-2665a8aea6a2',
    );
  });

  test('one id per (deployment, event type, period), stable across calls and processes', () => {
    const period = new Date('2026-02-03T12:00:00.000Z');
    const id = reportIdFor('test-deployment', 'boundary_usage_summary', period);
    // Computed independently with Python's uuid.uuid5 over the same namespace and name.
    expect(id).toBe('875c20ea-97d8-5bd0-8fef-b7e8c13d37d5');
    expect(reportIdFor('test-deployment', 'boundary_usage_summary', new Date(period))).toBe(id);
    const others = [
      reportIdFor('other-deployment', 'boundary_usage_summary', period),
      reportIdFor('test-deployment', 'other_event', period),
      reportIdFor(
        'test-deployment',
        'boundary_usage_summary',
        new Date(period.getTime() + FREQUENCY_MS),
      ),
    ];
    expect(new Set([id, ...others]).size).toBe(4);
  });
});

describe('periods (UTC, floored to the frequency)', () => {
  test.each([
    ['2026-02-03T12:29:59.999Z', '2026-02-03T12:00:00.000Z', '2026-02-03T11:30:00.000Z'],
    ['2026-02-03T12:30:00.000Z', '2026-02-03T12:30:00.000Z', '2026-02-03T12:00:00.000Z'],
    ['2026-02-03T12:30:00.001Z', '2026-02-03T12:30:00.000Z', '2026-02-03T12:00:00.000Z'],
    ['1969-12-31T23:59:59.999Z', '1969-12-31T23:30:00.000Z', '1969-12-31T23:00:00.000Z'],
  ])('at %s the claimed bucket is %s and the period starts %s', (now, bucket, start) => {
    const period = periodAt(new Date(now), FREQUENCY_MS);
    expect(period.periodEndingAt.toISOString()).toBe(bucket);
    expect(period.periodStart.toISOString()).toBe(start);
    expect(period.periodDurationMs).toBe(FREQUENCY_MS);
    expect(floorToFrequency(new Date(now), FREQUENCY_MS).toISOString()).toBe(bucket);
  });
});

describe('bigint-safe JSON', () => {
  test.each([
    [0n, 0],
    [9_007_199_254_740_991n, 9_007_199_254_740_991],
    [9_007_199_254_740_992n, '9007199254740992'],
    [9_223_372_036_854_775_807n, '9223372036854775807'],
    [18_446_744_073_709_551_618n, '18446744073709551618'],
    [-9_007_199_254_740_992n, '-9007199254740992'],
  ])('%s is written as %j and read back exactly', (value, expected) => {
    expect(jsonInteger(value)).toBe(expected);
    expect(parseJsonInteger(jsonInteger(value))).toBe(value);
  });

  test('a snapshot with counters past 2^53 serializes without a BigInt and without rounding', () => {
    const huge = 2n ** 63n + 2n;
    const snapshot: Snapshot = {
      deploymentId: 'd',
      collectedAt: new Date('2026-02-03T12:00:00.000Z'),
      periodEndingAt: new Date('2026-02-03T12:00:00.000Z'),
      reportId: '875c20ea-97d8-5bd0-8fef-b7e8c13d37d5',
      boundaryUsageSummary: {
        ...emptySummary(),
        allowedRequests: huge,
        deniedRequests: 3n,
        periodStart: new Date('2026-02-03T11:30:00.000Z'),
        periodDurationMs: FREQUENCY_MS,
      },
    };
    const text = serializeSnapshot(snapshot);
    expect(text).toContain('"allowed_requests":"9223372036854775810"');
    expect(text).toContain('"denied_requests":3');
    const parsed = JSON.parse(text) as ReturnType<typeof snapshotToJson>;
    expect(parseJsonInteger(parsed.boundary_usage_summary!.allowed_requests)).toBe(huge);
    expect(parsed.boundary_usage_summary!.window_start).toBeNull();
  });

  test('a lost claim has no boundary_usage_summary and no report_id (omitted, as coder omitempty)', () => {
    const json = snapshotToJson({
      deploymentId: 'd',
      collectedAt: new Date('2026-02-03T12:00:00.000Z'),
      periodEndingAt: new Date('2026-02-03T12:00:00.000Z'),
    });
    expect(json).toEqual({ deployment_id: 'd', collected_at: '2026-02-03T12:00:00.000Z' });
  });
});

describe('retry backoff', () => {
  const backoff = { baseDelayMs: 1_000, maxDelayMs: 8_000 };
  test.each([
    [1, 500, 1_000],
    [2, 1_000, 2_000],
    [3, 2_000, 4_000],
    [4, 4_000, 8_000],
    [30, 4_000, 8_000],
  ])('after %i failures the delay is within [%i, %i] ms', (failures, low, high) => {
    expect(retryDelayMs(failures, backoff, () => 0)).toBe(low);
    expect(retryDelayMs(failures, backoff, () => 1)).toBe(high);
    const random = retryDelayMs(failures, backoff);
    expect(random).toBeGreaterThanOrEqual(low);
    expect(random).toBeLessThanOrEqual(high);
  });
});
