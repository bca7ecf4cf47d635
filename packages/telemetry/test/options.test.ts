/**
 * Every invalid option is rejected at construction with InvalidInputError naming the field.
 * The PrismaClient points at a port nothing listens on: construction never connects.
 */
import { PassThrough } from 'node:stream';
import { BoundaryUsageStore, InvalidInputError } from '@usagekit/boundary-usage';
import { createPrismaClient, type PrismaClient } from '@usagekit/db';
import {
  DEFAULT_REPORTER_OPTIONS,
  HttpSink,
  JsonLinesSink,
  TelemetryReporter,
  type TelemetryReporterOptions,
} from '../src/index.js';
import { CollectingSink } from './helpers.js';

const ignore = (): void => undefined;
let prisma: PrismaClient;
let store: BoundaryUsageStore;

beforeAll(() => {
  prisma = createPrismaClient({ databaseUrl: 'postgresql://nobody@127.0.0.1:1/nothing' });
  store = new BoundaryUsageStore(prisma);
});
afterAll(() => prisma.$disconnect());

function valid(): TelemetryReporterOptions {
  return { prisma, store, deploymentId: 'deployment-1', sink: new CollectingSink() };
}

function rejection(build: () => unknown): InvalidInputError {
  try {
    build();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    return error as InvalidInputError;
  }
  throw new Error('expected the constructor to throw');
}

test('valid options give the documented defaults', () => {
  const reporter = new TelemetryReporter(valid());
  expect(reporter.snapshotFrequencyMs).toBe(1_800_000);
  expect(reporter.maxStalenessMs).toBe(3_600_000);
  const custom = new TelemetryReporter({ ...valid(), snapshotFrequencyMs: 60_000 });
  expect(custom.maxStalenessMs).toBe(120_000);
  expect(
    new TelemetryReporter({ ...valid(), sink: 'https://telemetry.example.com/snapshot' }),
  ).toBeInstanceOf(TelemetryReporter);
});

test('every wait has a documented default of at most 30 s', () => {
  const {
    collectTimeoutMs,
    deliveryPassTimeoutMs,
    purgeTimeoutMs,
    stopTimeoutMs,
    deliveryTimeoutMs,
    idleInTransactionTimeoutMs,
  } = DEFAULT_REPORTER_OPTIONS;
  expect({
    collectTimeoutMs,
    deliveryPassTimeoutMs,
    purgeTimeoutMs,
    stopTimeoutMs,
    deliveryTimeoutMs,
    idleInTransactionTimeoutMs,
  }).toEqual({
    collectTimeoutMs: 25_000,
    deliveryPassTimeoutMs: 30_000,
    purgeTimeoutMs: 30_000,
    stopTimeoutMs: 15_000,
    deliveryTimeoutMs: 10_000,
    idleInTransactionTimeoutMs: 10_000,
  });
  // A longer send stretches the pass's default so that one send always fits.
  expect(() => new TelemetryReporter({ ...valid(), deliveryTimeoutMs: 45_000 })).not.toThrow();
});

test.each<[string, Partial<Record<keyof TelemetryReporterOptions, unknown>>, string, RegExp]>([
  [
    'a sink URL that is not a URL',
    { sink: 'not a url' },
    'sink url',
    /absolute http:\/\/ or https:\/\/ URL/,
  ],
  ['a sink URL with another scheme', { sink: 'ftp://example.com/x' }, 'sink url', /http/],
  ['no sink', { sink: undefined }, 'sink', /Sink/],
  ['a sink without send', { sink: { post: () => undefined } }, 'sink', /send\(report\)/],
  ['frequency zero', { snapshotFrequencyMs: 0 }, 'snapshotFrequencyMs', /positive integer/],
  ['frequency negative', { snapshotFrequencyMs: -1_000 }, 'snapshotFrequencyMs', /got -1000/],
  ['frequency not an integer', { snapshotFrequencyMs: 1.5 }, 'snapshotFrequencyMs', /got 1.5/],
  ['frequency NaN', { snapshotFrequencyMs: Number.NaN }, 'snapshotFrequencyMs', /got NaN/],
  ['frequency as a string', { snapshotFrequencyMs: '1000' }, 'snapshotFrequencyMs', /got "1000"/],
  ['maxStalenessMs zero', { maxStalenessMs: 0 }, 'maxStalenessMs', /positive integer/],
  ['maxStalenessMs negative', { maxStalenessMs: -5 }, 'maxStalenessMs', /got -5/],
  ['no prisma', { prisma: undefined }, 'prisma', /PrismaClient/],
  ['no store', { store: undefined }, 'store', /BoundaryUsageStore/],
  ['no deploymentId', { deploymentId: undefined }, 'deploymentId', /non-empty string/],
  ['a blank deploymentId', { deploymentId: '  ' }, 'deploymentId', /non-empty string/],
  ['a clock without now()', { clock: { time: () => new Date() } }, 'clock', /now\(\)/],
  [
    'a logger without error()',
    { logger: { debug: ignore, info: ignore, warn: ignore } },
    'logger',
    /Logger/,
  ],
  [
    'a transaction timeout below the lock waits',
    { transactionTimeoutMs: 3_000 },
    'transactionTimeoutMs',
    /lockTimeoutMs/,
  ],
  [
    'a backoff cap below its base',
    { retryBackoff: { baseDelayMs: 10, maxDelayMs: 5 } },
    'retryBackoff.maxDelayMs',
    /baseDelayMs/,
  ],
  ['a zero delivery batch', { deliveryBatchSize: 0 }, 'deliveryBatchSize', /positive integer/],
  [
    'a retention too short for the claim window to hold the current period',
    { reportRetentionMs: 30 * 60_000 },
    'reportRetentionMs',
    /claim window/,
  ],
  [
    'a delivery pass deadline no longer than one send',
    { deliveryTimeoutMs: 20_000, deliveryPassTimeoutMs: 20_000 },
    'deliveryPassTimeoutMs',
    /more than standbyFlushTimeoutMs \+ deliveryTimeoutMs \(5000 \+ 20000\)/,
  ],
  [
    'a delivery pass deadline no longer than the standby wait plus one send',
    { deliveryTimeoutMs: 20_000, standbyFlushTimeoutMs: 5_000, deliveryPassTimeoutMs: 25_000 },
    'deliveryPassTimeoutMs',
    /more than standbyFlushTimeoutMs \+ deliveryTimeoutMs \(5000 \+ 20000\)/,
  ],
  ['a zero collect deadline', { collectTimeoutMs: 0 }, 'collectTimeoutMs', /positive integer/],
  ['a zero purge deadline', { purgeTimeoutMs: 0 }, 'purgeTimeoutMs', /positive integer/],
  [
    'a zero idle-in-transaction timeout',
    { idleInTransactionTimeoutMs: 0 },
    'idleInTransactionTimeoutMs',
    /positive integer/,
  ],
])('rejects %s', (_case, overrides, field, message) => {
  const error = rejection(
    () => new TelemetryReporter({ ...valid(), ...overrides } as TelemetryReporterOptions),
  );
  expect(error.code).toBe('INVALID_INPUT');
  expect(error.field).toBe(field);
  expect(error.message).toMatch(
    new RegExp(`^Invalid ${field.replace(/[.()]/g, '\\$&')}: expected`),
  );
  expect(error.message).toMatch(message);
});

test('no options at all', () => {
  expect(
    rejection(() => new TelemetryReporter(undefined as unknown as TelemetryReporterOptions)).field,
  ).toBe('options');
});

test('HttpSink rejects a bad URL or timeout; JsonLinesSink a non-stream', () => {
  expect(rejection(() => new HttpSink({ url: 'localhost:8080' })).field).toBe('sink url');
  expect(rejection(() => new HttpSink({ url: '' })).field).toBe('sink url');
  expect(rejection(() => new HttpSink({ url: 'http://127.0.0.1/x', timeoutMs: 0 })).field).toBe(
    'sink timeoutMs',
  );
  expect(new HttpSink({ url: new URL('http://127.0.0.1:9/x') }).url.href).toBe(
    'http://127.0.0.1:9/x',
  );
  expect(rejection(() => new JsonLinesSink({ stream: {} as NodeJS.WritableStream })).field).toBe(
    'stream',
  );
  expect(new JsonLinesSink({ stream: new PassThrough() })).toBeInstanceOf(JsonLinesSink);
});

test('a clock that returns no valid Date fails the collection before touching the database', async () => {
  const reporter = new TelemetryReporter({
    ...valid(),
    clock: { now: () => new Date(Number.NaN) },
  });
  await expect(reporter.collectSnapshot()).rejects.toThrow(
    /Invalid clock\.now\(\): expected a valid Date/,
  );
});
