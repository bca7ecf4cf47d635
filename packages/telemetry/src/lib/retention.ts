import { toDatabaseError } from '@usagekit/db';
import type { ResolvedReporterOptions } from './options.js';
import * as sql from './sql.js';
import { inReadCommitted } from './transaction.js';

export interface PurgeResult {
  /** Delivered reports deleted. */
  reports: number;
  /** telemetry_locks rows deleted. */
  locks: number;
  /** boundary_usage_flush_sequences rows deleted. */
  flushSequences: number;
}

/**
 * Deletes delivered reports and election rows older than reportRetentionMs (coder's dbpurge
 * keeps telemetry_locks 24 h) and flush sequences idle for flushSequenceRetentionMs, all by
 * the database's clock: a reporter whose clock runs a day ahead purges nothing early. Pending
 * reports are never deleted. Three statements, each correct on its own, in one READ
 * COMMITTED transaction (one round trip of bounds instead of three).
 */
export async function purgeExpired(settings: ResolvedReporterOptions): Promise<PurgeResult> {
  const { reportRetentionMs, flushSequenceRetentionMs } = settings;
  try {
    const [reports, locks, flushSequences] = (await inReadCommitted(settings, (prisma) => [
      prisma.$executeRaw(sql.deleteDeliveredReports(settings.tables, reportRetentionMs)),
      prisma.$executeRaw(sql.deleteExpiredLocks(settings.tables, reportRetentionMs)),
      prisma.$executeRaw(sql.deleteIdleFlushSequences(settings.tables, flushSequenceRetentionMs)),
    ])) as [number, number, number];
    return { reports, locks, flushSequences };
  } catch (error) {
    throw toDatabaseError(error);
  }
}
