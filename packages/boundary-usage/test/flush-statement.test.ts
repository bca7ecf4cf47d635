/**
 * Issue 13: the common flush carries a sequence and no new ids, and PostgreSQL parses and
 * plans an unprepared statement on every call, so that flush's text must not carry the ids
 * step at all. (Measured on PostgreSQL 15, durable, unprepared: about 360 µs of backend CPU
 * per flush instead of about 490 µs.)
 */
import { schemaTables, type PrismaClient } from '@usagekit/db';
import {
  flushAfterLock,
  flushStatement,
  flushWithLock,
  type FlushStatementParams,
} from '../src/lib/sql.js';
import { BoundaryUsageStore } from '../src/index.js';
import { clearTables, useDatabase, uuid } from './helpers.js';

const tables = schemaTables();
const db = useDatabase();
let prisma: PrismaClient;

beforeAll(() => {
  prisma = db.client();
});
beforeEach(() => clearTables(prisma));

const params = (ids: { workspaceIds?: string[]; userIds?: string[] }): FlushStatementParams => ({
  replicaId: uuid(),
  writerId: uuid(),
  sequence: 1n,
  uniqueWorkspacesDelta: 0n,
  uniqueUsersDelta: 0n,
  uniqueWorkspacesCount: 1n,
  uniqueUsersCount: 1n,
  allowedRequests: 1n,
  deniedRequests: 0n,
  workspaceIds: ids.workspaceIds ?? [],
  userIds: ids.userIds ?? [],
});

test('a flush without ids has no ids step; one with ids inserts them in (kind, id) order', () => {
  const withoutIds = flushWithLock(tables, params({}), 'shared', 2_000).text;
  expect(withoutIds).not.toMatch(/boundary_usage_ids|unnest/);
  for (const ids of [{ workspaceIds: [uuid()] }, { userIds: [uuid()] }]) {
    const withIds = flushWithLock(tables, params(ids), 'shared', 2_000).text;
    expect(withIds).toMatch(/INSERT INTO "usagekit"."boundary_usage_ids"[\s\S]*ORDER BY kind, id/);
  }
  expect(withoutIds.length).toBeLessThan(
    flushWithLock(tables, params({ userIds: [uuid()] }), 'shared', 2_000).text.length,
  );
});

describe('flushStatement: the text built once per shape', () => {
  // Every shape: gate, lock mode, with or without a sequence, a writer id, ids of one kind.
  const shapes = (['lock', 'after'] as const).flatMap((gate) =>
    (['shared', 'exclusive'] as const).flatMap((mode) =>
      [true, false].flatMap((withSequence) =>
        [true, false].flatMap((withWriter) =>
          [{}, { workspaceIds: [uuid(), uuid()] }, { userIds: [uuid()] }].map((ids) => ({
            gate,
            mode,
            withSequence,
            withWriter,
            ids,
          })),
        ),
      ),
    ),
  );

  test.each(shapes)(
    '$gate $mode sequence=$withSequence writer=$withWriter ids=$ids: same text and values as composed',
    ({ gate, mode, withSequence, withWriter, ids }) => {
      // Two calls of the same shape with different values: the second comes from the cache.
      for (let call = 0; call < 2; call++) {
        const p = params(ids);
        if (!withSequence) p.sequence = undefined;
        if (!withWriter) p.writerId = undefined;
        p.allowedRequests = BigInt(call + 7);
        const lockTimeoutMs = 1_000 + call;
        const composed =
          gate === 'lock'
            ? flushWithLock(tables, p, mode, lockTimeoutMs)
            : flushAfterLock(tables, p);
        const cached = flushStatement(tables, p, gate, mode, lockTimeoutMs);
        expect(cached.text).toBe(composed.text);
        // bigints are bound as their decimal text, which is what Prisma sends for a bigint.
        expect(cached.values).toEqual(
          composed.values.map((v) => (typeof v === 'bigint' ? v.toString() : v)),
        );
      }
    },
  );

  test('one text per schema: every table is qualified by the schema the statement was built for', () => {
    const p = params({ userIds: [uuid()] });
    const other = schemaTables('usagekit_other');
    for (let call = 0; call < 2; call++) {
      for (const gate of ['lock', 'after'] as const) {
        const ours = flushStatement(tables, p, gate, 'shared', 2_000).text;
        const theirs = flushStatement(other, p, gate, 'shared', 2_000).text;
        for (const table of [
          'boundary_usage_stats',
          'boundary_usage_ids',
          'boundary_usage_flush_sequences',
        ]) {
          expect(ours).toContain(`"usagekit"."${table}"`);
          expect(theirs).toContain(`"usagekit_other"."${table}"`);
        }
        expect(theirs).not.toContain('"usagekit".');
        // No table is named without its schema.
        expect(ours.replace(/"usagekit"\."\w+"/g, '')).not.toMatch(/boundary_usage_\w+/);
      }
    }
  });
});

test.each(['single-statement', 'interactive'] as const)(
  '%s: flushes with and without ids write the same stats and only the ids they carry',
  async (flushMode) => {
    const store = new BoundaryUsageStore(prisma, { flushMode });
    const replicaId = uuid();
    const writerId = uuid();
    const [workspace, user] = [uuid(), uuid()];
    const base = {
      replicaId,
      writerId,
      uniqueWorkspacesCount: 1,
      uniqueUsersCount: 1,
      deniedRequests: 0,
    };
    await store.upsertStats({
      ...base,
      sequence: 1n,
      uniqueWorkspacesDelta: 1,
      uniqueUsersDelta: 1,
      allowedRequests: 2,
      workspaceIds: [workspace],
      userIds: [user],
    });
    expect(
      await store.upsertStats({
        ...base,
        sequence: 2n,
        uniqueWorkspacesDelta: 0,
        uniqueUsersDelta: 0,
        allowedRequests: 3,
      }),
    ).toMatchObject({ applied: true, newPeriod: false });
    const summary = await store.getAndResetSummary({ maxStalenessMs: 3_600_000 });
    expect([summary.uniqueWorkspaces, summary.uniqueUsers, summary.allowedRequests]).toEqual([
      1n,
      1n,
      5n,
    ]);
  },
);
