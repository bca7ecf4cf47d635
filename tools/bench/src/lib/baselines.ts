/**
 * The raw baselines' statements, recorded from the store at the start of every run (see
 * ./replay.ts): the library's default flush (contenders a → f, h), the interactive flush
 * (c → d, e) and the cutover (getAndResetSummary → the raw cutover). Also the parameters a
 * tracker's steady-state flush hands to `upsertStats`.
 */
import {
  BoundaryUsageStore,
  type StoreOptions,
  type UpsertStatsParams,
} from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import type { Pool } from 'pg';
import { MAX_STALENESS_MS } from './fill.js';
import {
  missingSubstitutions,
  normalizeSql,
  recordCall,
  replayCall,
  storePrepared,
  type RecordedCall,
  type Substitutions,
} from './replay.js';

/**
 * `upsertStats`'s parameters plus the tracker's writer id. Declared here rather than taken
 * from the store so the bench compiles both before and after the store learnt writer ids
 * (a store that does not know the field ignores it).
 */
export type DefaultFlushParams = UpsertStatsParams & { writerId?: string };

/**
 * What a tracker sends in steady state: its writer id (one uuid per tracker instance), a
 * sequence number, request deltas, cumulative unique counts, and no id it has not sent
 * before (so no ids at all).
 */
export function defaultFlushParams(
  replicaId: string,
  sequence: bigint,
  writerId: string,
): DefaultFlushParams {
  return {
    replicaId,
    writerId,
    sequence,
    uniqueWorkspacesDelta: 1,
    uniqueUsersDelta: 1,
    uniqueWorkspacesCount: 1,
    uniqueUsersCount: 1,
    allowedRequests: 3n,
    deniedRequests: 1n,
    workspaceIds: [],
    userIds: [],
  };
}

/** A recorded flush and the values that identify it (replaced on replay). */
export interface RecordedFlush {
  call: RecordedCall;
  replicaId: string;
  sequence: bigint;
}

export interface Baselines {
  /** The default store's flush (every default of createPrismaClient and BoundaryUsageStore). */
  defaultFlush: RecordedFlush;
  /** The same with flushMode 'interactive'. */
  interactiveFlush: RecordedFlush;
  /** getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS }). */
  cutover: RecordedCall;
  /** Anything that makes a replay differ from the store's call (printed and reported). */
  problems: string[];
}

const CAPTURE_WRITER = '9a7d1f52-3c4e-4b8a-9f01-0000000000f0';
const CAPTURE_SEQUENCE = 987_654_321_987n;

/** Replaces the recorded replica id and sequence with another replica's. */
export function flushSubstitutions(
  flush: RecordedFlush,
  replicaId: string,
  sequence: bigint,
): Substitutions {
  return [
    [flush.replicaId, replicaId],
    [flush.sequence.toString(), sequence.toString()],
  ];
}

async function recordFlush(
  databaseUrl: string,
  options: StoreOptions,
  replicaId: string,
  problems: string[],
  what: string,
): Promise<RecordedFlush> {
  const prisma = createPrismaClient({ databaseUrl, maxConnections: 1 });
  try {
    const store = new BoundaryUsageStore(prisma, options);
    // The first flush pays for the connection (and any session set-up or preparation).
    await store.upsertStats(defaultFlushParams(replicaId, CAPTURE_SEQUENCE - 1n, CAPTURE_WRITER));
    const call = await recordCall(() =>
      store.upsertStats(defaultFlushParams(replicaId, CAPTURE_SEQUENCE, CAPTURE_WRITER)),
    );
    const flush = { call, replicaId, sequence: CAPTURE_SEQUENCE };
    const missing = missingSubstitutions(call, flushSubstitutions(flush, replicaId, 1n));
    if (call.statements.length === 0) problems.push(`${what}: the store sent no statement`);
    if (missing.length > 0) {
      problems.push(`${what}: ${missing.map(String).join(', ')} not among its parameters`);
    }
    return flush;
  } finally {
    await prisma.$disconnect();
  }
}

/**
 * Records the three calls on `databaseUrl` (which must be empty or disposable: the cutover
 * deletes every row). Leaves the flush-sequence rows of the capture replicas behind.
 */
export async function captureBaselines(databaseUrl: string): Promise<Baselines> {
  const problems: string[] = [];
  const defaultFlush = await recordFlush(
    databaseUrl,
    {},
    '9a7d1f52-3c4e-4b8a-9f01-0000000000f1',
    problems,
    'default flush',
  );
  const interactiveFlush = await recordFlush(
    databaseUrl,
    { flushMode: 'interactive' },
    '9a7d1f52-3c4e-4b8a-9f01-0000000000f2',
    problems,
    'interactive flush',
  );
  const prisma = createPrismaClient({ databaseUrl, maxConnections: 1 });
  let cutover: RecordedCall;
  try {
    const store = new BoundaryUsageStore(prisma);
    await store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS });
    cutover = await recordCall(() =>
      store.getAndResetSummary({ maxStalenessMs: MAX_STALENESS_MS }),
    );
  } finally {
    await prisma.$disconnect();
  }
  if (!cutover.transaction) problems.push('cutover: the store did not use a transaction');
  return { defaultFlush, interactiveFlush, cutover, problems };
}

/** Contenders f and h: the default flush's statements for another replica and sequence. */
export function rawDefaultFlush(
  pool: Pool,
  baselines: Baselines,
  replicaId: string,
  sequence: bigint,
  prepared: boolean,
): Promise<Record<string, unknown> | undefined> {
  const flush = baselines.defaultFlush;
  return replayCall(
    pool,
    flush.call,
    flushSubstitutions(flush, replicaId, sequence),
    prepared ? { prepare: 'usagekit_bench_default_flush' } : {},
  );
}

/** Contender d: the store's interactive flush, in raw node-postgres. */
export function rawInteractiveFlush(
  pool: Pool,
  baselines: Baselines,
  replicaId: string,
  sequence: bigint,
): Promise<Record<string, unknown> | undefined> {
  const flush = baselines.interactiveFlush;
  return replayCall(pool, flush.call, flushSubstitutions(flush, replicaId, sequence));
}

export interface RawCutoverRow {
  unique_workspaces: string;
  unique_users: string;
  allowed_requests: string;
  denied_requests: string;
  replicas: string;
}

/** The raw cutover: the store's getAndResetSummary statements (staleness MAX_STALENESS_MS). */
export async function rawCutover(pool: Pool, baselines: Baselines): Promise<RawCutoverRow> {
  const row = await replayCall(pool, baselines.cutover, []);
  if (!row) throw new Error('raw cutover: the last statement returned no row');
  return row as unknown as RawCutoverRow;
}

/** What results.json keeps about the baselines: their statements, as sent. */
export interface BaselinesReport {
  problems: string[];
  /** Whether the default flush was sent as named (prepared) statements. */
  defaultFlushPrepared: boolean;
  statements: Record<'defaultFlush' | 'interactiveFlush' | 'cutover', string[]>;
}

export function baselinesReport(b: Baselines): BaselinesReport {
  const texts = (call: RecordedCall) => [
    ...(call.transaction ? ['BEGIN'] : []),
    ...call.statements.map((s) => normalizeSql(s.text)),
    ...(call.transaction ? ['COMMIT'] : []),
  ];
  return {
    problems: b.problems,
    defaultFlushPrepared: storePrepared(b.defaultFlush.call),
    statements: {
      defaultFlush: texts(b.defaultFlush.call),
      interactiveFlush: texts(b.interactiveFlush.call),
      cutover: texts(b.cutover),
    },
  };
}
