import { toDatabaseError } from '@usagekit/db';
import { readClock } from './clock.js';
import type { ResolvedReporterOptions } from './options.js';
import * as sql from './sql.js';

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
 * keeps telemetry_locks 24 h) and flush sequences idle for flushSequenceRetentionMs. Pending
 * reports are never deleted. Three independent statements: each is correct on its own.
 */
export async function purgeExpired(settings: ResolvedReporterOptions): Promise<PurgeResult> {
  const { prisma, reportRetentionMs, flushSequenceRetentionMs, clock } = settings;
  const cutoff = new Date(readClock(clock).getTime() - reportRetentionMs);
  try {
    const reports = await prisma.$executeRaw(sql.deleteDeliveredReports(cutoff));
    const locks = await prisma.$executeRaw(sql.deleteExpiredLocks(cutoff));
    const flushSequences = await prisma.$executeRaw(
      sql.deleteIdleFlushSequences(flushSequenceRetentionMs),
    );
    return { reports, locks, flushSequences };
  } catch (error) {
    throw toDatabaseError(error);
  }
}
