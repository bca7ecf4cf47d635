/**
 * The library's default flush, whatever it is today: the parameters a tracker's steady-state
 * flush hands to `store.upsertStats` (a sequence, no new ids), and the statement(s) the store
 * with every default (createPrismaClient's and BoundaryUsageStore's) puts on the wire for it.
 *
 * The raw contenders f and h replay that captured statement instead of a hand-kept copy, so
 * "ours ÷ raw, same statement" stays a comparison of the same SQL when the store's default
 * changes (prepared statements, a cheaper statement without ids, a writer id…).
 */
import { BoundaryUsageStore, type UpsertStatsParams } from '@usagekit/boundary-usage';
import { createPrismaClient } from '@usagekit/db';
import type { Pool } from 'pg';
import { FLUSH_WITH_SHARED_LOCK, flushWithLockParams } from './raw-sql.js';
import { recordQueries, type CapturedStatement } from './sql-drift.js';

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

/** A captured flush statement with the places where the replica id and the sequence go. */
export interface FlushTemplate {
  /** 'captured': what the default store sent; 'copy': raw-sql.ts's copy (capture failed). */
  source: 'captured' | 'copy';
  text: string;
  values: unknown[];
  replicaSlots: number[];
  sequenceSlots: number[];
  /** Whether the store itself sent it as a named (prepared) statement. */
  storePrepared: boolean;
  /** Why the copy is used, when it is. */
  note?: string;
}

const CAPTURE_REPLICA = '9a7d1f52-3c4e-4b8a-9f01-0000000000f1';
const CAPTURE_WRITER = '9a7d1f52-3c4e-4b8a-9f01-0000000000f2';
const CAPTURE_SEQUENCE = 987_654_321_987n;

/** Builds a template from what was captured: exactly one significant statement, or undefined. */
export function templateFromCapture(
  sent: readonly (CapturedStatement & { name?: string })[],
  replicaId: string,
  sequence: bigint,
): FlushTemplate | string {
  const significant = sent.filter((s) => !/^(BEGIN|COMMIT|ROLLBACK)\b/i.test(s.text.trim()));
  if (significant.length !== 1) {
    return `the default flush sent ${significant.length} statements, not one`;
  }
  const [statement] = significant;
  const replicaSlots: number[] = [];
  const sequenceSlots: number[] = [];
  statement.values.forEach((value, i) => {
    if (typeof value === 'string' && value.toLowerCase() === replicaId) replicaSlots.push(i);
    else if (
      (typeof value === 'string' || typeof value === 'bigint' || typeof value === 'number') &&
      String(value) === sequence.toString()
    )
      sequenceSlots.push(i);
  });
  if (replicaSlots.length === 0) return 'the replica id is not among its parameters';
  return {
    source: 'captured',
    text: statement.text,
    values: [...statement.values],
    replicaSlots,
    sequenceSlots,
    storePrepared: statement.name !== undefined,
  };
}

/** The same statement for another replica and sequence. */
export function instantiate(
  template: FlushTemplate,
  replicaId: string,
  sequence: bigint,
): unknown[] {
  const values = [...template.values];
  for (const i of template.replicaSlots) values[i] = replicaId;
  for (const i of template.sequenceSlots) values[i] = sequence.toString();
  return values;
}

/** raw-sql.ts's copy of the single statement, for when the capture does not yield one. */
export function copiedTemplate(note: string): FlushTemplate {
  const values = flushWithLockParams({
    replicaId: CAPTURE_REPLICA,
    sequence: CAPTURE_SEQUENCE,
    uniqueWorkspacesDelta: 1n,
    uniqueUsersDelta: 1n,
    uniqueWorkspacesCount: 1n,
    uniqueUsersCount: 1n,
    allowedRequests: 3n,
    deniedRequests: 1n,
    workspaceIds: [],
    userIds: [],
  });
  const slots = (want: string) =>
    values.flatMap((v, i) => (typeof v === 'string' && v === want ? [i] : []));
  return {
    source: 'copy',
    text: FLUSH_WITH_SHARED_LOCK,
    values,
    replicaSlots: slots(CAPTURE_REPLICA),
    sequenceSlots: slots(CAPTURE_SEQUENCE.toString()),
    storePrepared: false,
    note,
  };
}

/** Flushes twice through a store with every default and keeps the second flush's statement. */
export async function captureDefaultFlush(databaseUrl: string): Promise<FlushTemplate> {
  const prisma = createPrismaClient({ databaseUrl, maxConnections: 1 });
  try {
    const store = new BoundaryUsageStore(prisma);
    // The first flush pays for the connection (and any session set-up or preparation).
    await store.upsertStats(
      defaultFlushParams(CAPTURE_REPLICA, CAPTURE_SEQUENCE - 1n, CAPTURE_WRITER),
    );
    const sent = await recordQueries(async () => {
      await store.upsertStats(
        defaultFlushParams(CAPTURE_REPLICA, CAPTURE_SEQUENCE, CAPTURE_WRITER),
      );
    });
    const template = templateFromCapture(sent, CAPTURE_REPLICA, CAPTURE_SEQUENCE);
    return typeof template === 'string' ? copiedTemplate(template) : template;
  } catch (error) {
    return copiedTemplate(
      `capture failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`,
    );
  } finally {
    await prisma.$disconnect();
  }
}

/** Contender f: the default flush's statement in raw node-postgres, unnamed (parsed every time). */
export async function rawReplay(
  pool: Pool,
  template: FlushTemplate,
  replicaId: string,
  sequence: bigint,
): Promise<unknown> {
  return (await pool.query(template.text, instantiate(template, replicaId, sequence))).rows[0];
}

/** Contender h: the same as a named prepared statement (parsed and planned once per connection). */
export async function rawReplayPrepared(
  pool: Pool,
  template: FlushTemplate,
  replicaId: string,
  sequence: bigint,
): Promise<unknown> {
  return (
    await pool.query({
      name: 'usagekit_bench_default_flush',
      text: template.text,
      values: instantiate(template, replicaId, sequence),
    })
  ).rows[0];
}
