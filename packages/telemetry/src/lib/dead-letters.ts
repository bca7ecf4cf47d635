import { InvalidInputError, isUuid } from '@usagekit/boundary-usage';
import {
  schemaTables,
  toDatabaseError,
  usagekitSchemaOf,
  type PrismaClient,
  type SchemaTables,
} from '@usagekit/db';
import * as sql from './sql.js';
import { inReadCommitted } from './transaction.js';

/**
 * Rejected reports (dead letters): reports the receiver refused for good rejectAfterRefusals
 * times (a permanent status such as 400, 413 or 422). They stay in telemetry_reports with
 * `rejected_at` set, are never purged and never retried on their own; these two functions are
 * the operator's way to see them and to send them again once the cause is fixed.
 */
export interface RejectedReport {
  reportId: string;
  eventType: string;
  periodStartingAt: Date;
  createdAt: Date;
  /** Delivery attempts so far, every reporter together. */
  attempts: number;
  /** Permanent refusals that led to the rejection. */
  rejections: number;
  /** The receiver's last answer (status and the start of its body), secrets redacted. */
  lastError: string | null;
  rejectedAt: Date;
}

/** usagekit's schema: default the client's (createPrismaClient's `schema`, else usagekit). */
interface SchemaOption {
  schema?: string;
}

export interface ListRejectedReportsOptions extends SchemaOption {
  /** At most this many, oldest first. Default 100. */
  limit?: number;
}

export interface RetryRejectedReportsOptions extends SchemaOption {
  /** Only these reports (uuids); default every rejected report. */
  reportIds?: string[];
  /** Bounds of the statement's transaction (defaults: 2 s lock wait, 10 s idle). */
  lockTimeoutMs?: number;
  idleInTransactionTimeoutMs?: number;
}

export interface RetryRejectedReportsResult {
  /** The reports made pending again (due now); ids that were not rejected are left out. */
  reportIds: string[];
}

function tablesFor(prisma: PrismaClient, options: SchemaOption): SchemaTables {
  try {
    return schemaTables(options.schema ?? usagekitSchemaOf(prisma));
  } catch {
    throw new InvalidInputError('schema', options.schema, 'a valid PostgreSQL schema name');
  }
}

/** The rejected reports, oldest first. Database errors are typed (@usagekit/db). */
export async function listRejectedReports(
  prisma: PrismaClient,
  options: ListRejectedReportsOptions = {},
): Promise<RejectedReport[]> {
  const limit = options.limit ?? 100;
  if (!Number.isSafeInteger(limit) || limit <= 0 || limit > 2_147_483_647) {
    throw new InvalidInputError('limit', limit, 'a positive integer');
  }
  const tables = tablesFor(prisma, options);
  try {
    const rows = await prisma.$queryRaw<sql.RejectedReportRow[]>(
      sql.listRejectedReports(tables, limit),
    );
    return rows.map((row) => ({
      reportId: row.report_id,
      eventType: row.event_type,
      periodStartingAt: row.period_starting_at,
      createdAt: row.created_at,
      attempts: row.attempts,
      rejections: row.rejections,
      lastError: row.last_error,
      rejectedAt: row.rejected_at,
    }));
  } catch (error) {
    throw toDatabaseError(error);
  }
}

/**
 * Sends rejected reports again: each becomes pending, due at once, with its refusal count
 * reset, and any reporter's next delivery pass sends it (same Idempotency-Key). Reports that
 * are pending or delivered are not touched. Fix the cause first (the receiver, the sink's URL
 * or credentials): a report refused again is rejected again after rejectAfterRefusals more
 * refusals, with backoff between them.
 */
export async function retryRejectedReports(
  prisma: PrismaClient,
  options: RetryRejectedReportsOptions = {},
): Promise<RetryRejectedReportsResult> {
  const { reportIds } = options;
  if (reportIds !== undefined) {
    if (!Array.isArray(reportIds)) {
      throw new InvalidInputError('reportIds', reportIds, 'an array of report ids (uuids)');
    }
    for (const id of reportIds) {
      if (!isUuid(id)) throw new InvalidInputError('reportIds', id, 'a report id (a uuid)');
    }
    if (reportIds.length === 0) return { reportIds: [] };
  }
  const tables = tablesFor(prisma, options);
  try {
    const [rows] = (await inReadCommitted(
      {
        prisma,
        lockTimeoutMs: options.lockTimeoutMs ?? 2_000,
        idleInTransactionTimeoutMs: options.idleInTransactionTimeoutMs ?? 10_000,
      },
      (client) => [
        client.$queryRaw<{ report_id: string }[]>(
          sql.retryRejectedReports(tables, reportIds?.map((id) => id.toLowerCase()) ?? null),
        ),
      ],
    )) as [{ report_id: string }[]];
    return { reportIds: rows.map((row) => row.report_id) };
  } catch (error) {
    throw toDatabaseError(error);
  }
}
