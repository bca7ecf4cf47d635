/**
 * Proves the baseline runs what the store runs. Records every statement the store hands to
 * node-postgres (adapter-pg sends through `pg.Client#query`, the same `pg` module the bench
 * uses) during one flush in each mode and one cutover, and compares text and parameters with
 * the copies in raw-sql.ts.
 */
import { BoundaryUsageStore } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import { Client } from 'pg';
import {
  CUTOVER,
  FLUSH_AFTER_LOCK,
  FLUSH_WITH_SHARED_LOCK,
  LOCK_KEY,
  LOCK_TIMEOUT,
  SET_LOCK_TIMEOUT,
  TAKE_EXCLUSIVE_LOCK,
  TAKE_SHARED_LOCK,
  flushAfterLockParams,
  flushWithLockParams,
  type FlushValues,
} from './raw-sql.js';

export interface CapturedStatement {
  text: string;
  values: unknown[];
  /** Set when the statement was sent as a named (prepared) statement. */
  name?: string;
}

export interface DriftReport {
  /** True when every statement and parameter list the store sent equals the baseline's. */
  matches: boolean;
  mismatches: string[];
}

const SAMPLE: Omit<FlushValues, 'replicaId' | 'sequence'> = {
  uniqueWorkspacesDelta: 2n,
  uniqueUsersDelta: 1n,
  uniqueWorkspacesCount: 5n,
  uniqueUsersCount: 3n,
  allowedRequests: 7n,
  deniedRequests: 1n,
  workspaceIds: ['6f1c2a9e-0d4b-4c51-9a39-3b7f0e5d2c11', '6f1c2a9e-0d4b-4c51-9a39-3b7f0e5d2c12'],
  userIds: ['0b5e8d2a-7c1f-4e93-8a64-2d9c1b7e5f30'],
};

/** Collapses whitespace, so indentation changes in sql.ts are not reported as drift. */
export function normalizeSql(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Runs `work` while recording every query node-postgres sends, in order. */
export async function recordQueries(work: () => Promise<void>): Promise<CapturedStatement[]> {
  const captured: CapturedStatement[] = [];
  const prototype = Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function recordingQuery(this: unknown, ...args: unknown[]) {
    const [first, second] = args;
    if (typeof first === 'string') {
      captured.push({ text: first, values: Array.isArray(second) ? second : [] });
    } else if (first && typeof first === 'object' && 'text' in first) {
      const config = first as { text: string; values?: unknown[]; name?: string };
      captured.push({
        text: config.text,
        values: config.values ?? (Array.isArray(second) ? second : []),
        ...(config.name ? { name: config.name } : {}),
      });
    }
    return original.apply(this, args);
  };
  try {
    await work();
  } finally {
    prototype.query = original;
  }
  return captured;
}

/**
 * Flushes twice (single-statement and interactive) and cuts over once through the store on
 * `databaseUrl`, and compares what went over the wire with raw-sql.ts. Leaves one row per
 * flush behind only until the cutover deletes them; the flush-sequence rows stay.
 */
export async function checkBaselineSql(databaseUrl: string): Promise<DriftReport> {
  const prisma = createPrismaClient({ databaseUrl, maxConnections: 1 });
  const mismatches: string[] = [];
  try {
    const single = new BoundaryUsageStore(prisma, { flushMode: 'single-statement' });
    const interactive = new BoundaryUsageStore(prisma, { flushMode: 'interactive' });
    const singleValues: FlushValues = {
      ...SAMPLE,
      replicaId: '9a7d1f52-3c4e-4b8a-9f01-000000000001',
      sequence: 11n,
    };
    const interactiveValues: FlushValues = {
      ...SAMPLE,
      replicaId: '9a7d1f52-3c4e-4b8a-9f01-000000000002',
      sequence: 12n,
    };
    const maxStalenessMs = 3_600_000;

    // Warm the client first: its first query may send extra statements of its own.
    await prisma.$queryRaw`SELECT 1`;

    const singleSent = await recordQueries(async () => {
      await single.upsertStats(singleValues);
    });
    compare(
      'single-statement flush',
      significant(singleSent),
      [{ text: FLUSH_WITH_SHARED_LOCK, values: flushWithLockParams(singleValues) }],
      mismatches,
    );

    const interactiveSent = await recordQueries(async () => {
      await interactive.upsertStats(interactiveValues);
    });
    compare(
      'interactive flush',
      significant(interactiveSent),
      [
        { text: SET_LOCK_TIMEOUT, values: [LOCK_TIMEOUT] },
        { text: TAKE_SHARED_LOCK, values: [LOCK_KEY] },
        { text: FLUSH_AFTER_LOCK, values: flushAfterLockParams(interactiveValues) },
      ],
      mismatches,
    );

    const cutoverSent = await recordQueries(async () => {
      await single.getAndResetSummary({ maxStalenessMs });
    });
    compare(
      'cutover',
      significant(cutoverSent),
      [
        { text: SET_LOCK_TIMEOUT, values: [LOCK_TIMEOUT] },
        { text: TAKE_EXCLUSIVE_LOCK, values: [LOCK_KEY] },
        { text: CUTOVER, values: [maxStalenessMs] },
      ],
      mismatches,
    );
  } finally {
    await prisma.$disconnect();
  }
  return { matches: mismatches.length === 0, mismatches };
}

/** Drops BEGIN/COMMIT/ROLLBACK: the baseline sends those itself and they carry no SQL of ours. */
function significant(statements: CapturedStatement[]): CapturedStatement[] {
  return statements.filter((s) => !/^(BEGIN|COMMIT|ROLLBACK)\b/i.test(s.text.trim()));
}

function compare(
  what: string,
  sent: CapturedStatement[],
  expected: CapturedStatement[],
  mismatches: string[],
): void {
  if (sent.length !== expected.length) {
    mismatches.push(
      `${what}: the store sent ${sent.length} statement(s), the baseline has ${expected.length}: ` +
        sent.map((s) => JSON.stringify(normalizeSql(s.text).slice(0, 60))).join(', '),
    );
    return;
  }
  expected.forEach((want, i) => {
    const got = sent[i];
    if (normalizeSql(got.text) !== normalizeSql(want.text)) {
      mismatches.push(
        `${what}, statement ${i + 1}: text differs from raw-sql.ts (${firstDifference(got.text, want.text)})`,
      );
    }
    if (JSON.stringify(got.values) !== JSON.stringify(want.values)) {
      mismatches.push(
        `${what}, statement ${i + 1}: parameters differ: store ${JSON.stringify(got.values)} vs baseline ${JSON.stringify(want.values)}`,
      );
    }
  });
}

function firstDifference(a: string, b: string): string {
  const x = normalizeSql(a);
  const y = normalizeSql(b);
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return `at character ${i}: store …${JSON.stringify(x.slice(i, i + 40))} vs baseline …${JSON.stringify(y.slice(i, i + 40))}`;
}
