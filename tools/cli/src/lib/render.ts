import type { FinishSchemaUpgradeResult } from '@usagekit/db';
import type { OutboxReportRow, OutboxState, RetryResult } from './outbox.js';
import type { LockSession, StatusReport } from './status.js';

/** `status` for a person: one section per key of the JSON, the problems first in each. */
export function renderStatus(status: StatusReport): string {
  const lines: string[] = [`database  ${status.database} (schema ${status.schema})`, ''];
  const m = status.migrations;
  lines.push(
    `migrations  ${m.current ? 'current' : 'NOT CURRENT'}: ${m.applied.length} applied, ${m.pending.length} pending` +
      `${m.failed.length ? `, ${m.failed.length} FAILED` : ''}${m.changed.length ? `, ${m.changed.length} CHANGED` : ''}`,
  );
  for (const name of m.pending) lines.push(`  pending  ${name}`);
  for (const failed of m.failed)
    lines.push(`  failed   ${failed.name}: ${failed.error ?? '(no log)'}`);
  for (const name of m.changed)
    lines.push(`  changed  ${name} (file differs from what was applied)`);
  for (const name of m.unknown)
    lines.push(`  unknown  ${name} (in the database, not in the files)`);

  lines.push('', `replicas  ${status.replicas.length}`);
  if (status.replicas.length > 0) {
    lines.push(
      '  replica id                            last flush (age)              writers  awaiting cutover (allowed/denied)',
    );
    for (const replica of status.replicas) {
      const pending = replica.awaitingCutover
        ? `${replica.awaitingCutover.allowedRequests}/${replica.awaitingCutover.deniedRequests}`
        : '-';
      lines.push(
        `  ${replica.replicaId}  ${(replica.lastFlushAt ?? '-').padEnd(24)} ${age(replica.lastFlushAgeMs).padStart(5)}  ${String(replica.writers).padStart(7)}  ${pending}`,
      );
    }
  }

  lines.push('', `lock  ${status.lock.held.length} held, ${status.lock.waiting.length} waiting`);
  for (const session of status.lock.held) lines.push(`  held     ${describeSession(session)}`);
  for (const session of status.lock.waiting) lines.push(`  waiting  ${describeSession(session)}`);

  const last = status.periods.lastClaimed;
  lines.push(
    '',
    `periods  ${status.periods.claimedPeriods} claimed; last: ${last ? `${last.periodEndingAt} (${last.eventType}, ${periodAge(last.ageMs)})` : 'none'}`,
  );

  const o = status.outbox;
  lines.push(
    '',
    `outbox  ${o.pending} pending${o.oldestPendingAgeMs === null ? '' : `, oldest ${age(o.oldestPendingAgeMs)}`}; ` +
      `last delivered ${o.lastDeliveredAt ?? 'never'}; ${o.failing.length} failing; ${o.rejected} rejected`,
  );
  for (const report of o.failing) lines.push(`  failing  ${describeReport(report)}`);
  for (const report of o.rejectedReports) lines.push(`  rejected ${describeReport(report)}`);
  return lines.join('\n') + '\n';
}

export function renderOutbox(reports: OutboxReportRow[], state: OutboxState): string {
  if (reports.length === 0) {
    if (state === 'delivered') return 'no delivered reports\n';
    return state === 'rejected' ? 'no rejected reports\n' : 'outbox empty: nothing pending\n';
  }
  return reports.map((report) => describeReport(report)).join('\n') + '\n';
}

export function renderRetry(result: RetryResult): string {
  const lines = [`${result.due.length} report(s) due now: ${result.due.join(' ') || '-'}`];
  if (result.revived.length > 0) {
    lines.push(
      `${result.revived.length} rejected report(s) pending again: ${result.revived.join(' ')}`,
    );
  }
  if (result.notPending.length > 0) {
    lines.push(
      `neither pending nor rejected (unknown or already delivered): ${result.notPending.join(' ')}`,
    );
  }
  return lines.join('\n') + '\n';
}

function describeReport(report: OutboxReportRow): string {
  const state = report.deliveredAt
    ? `delivered ${report.deliveredAt}`
    : report.rejectedAt
      ? `rejected ${report.rejectedAt} after ${report.rejections} refusal(s)`
      : `next attempt ${report.nextAttemptAt}`;
  return (
    `${report.reportId}  period ${report.periodStartingAt}  age ${age(report.ageMs)}  attempts ${report.attempts}  ${state}` +
    (report.lastError ? `  last error: ${report.lastError}` : '')
  );
}

function describeSession(session: LockSession): string {
  return (
    `${session.lock} ${session.mode} pid ${session.pid} ${session.applicationName ?? '?'} ${session.state ?? '?'}` +
    ` in transaction ${age(session.inTransactionMs)}${session.waitEvent ? ` waiting on ${session.waitEvent}` : ''}` +
    (session.query ? `: ${session.query.replace(/\s+/g, ' ')}` : '')
  );
}

/** A final collection claims the period in progress: its end is still ahead. */
function periodAge(ageMs: number): string {
  return ageMs < 0 ? `in progress, ends in ${age(-ageMs)}` : `ended ${age(ageMs)} ago`;
}

/** `migrate --finish-upgrade` for a person: what was dropped, or that nothing was left. */
export function renderFinished(
  database: string,
  schema: string,
  finished: FinishSchemaUpgradeResult,
): string {
  const { views, historyRows, droppedHistoryTable } = finished;
  if (views.length === 0 && historyRows === 0 && !droppedHistoryTable) {
    return `${database} (schema ${schema}): upgrade already finished, nothing left in public to drop\n`;
  }
  const lines = [`${database} (schema ${schema}): upgrade finished`];
  lines.push(`  dropped ${views.length} compatibility view(s) from public`);
  for (const view of views) lines.push(`    public.${view}`);
  lines.push(`  removed ${historyRows} usagekit row(s) from public._prisma_migrations`);
  if (droppedHistoryTable) {
    lines.push('  dropped public._prisma_migrations (nothing else was recorded in it)');
  }
  return `${lines.join('\n')}\n`;
}

/** 950 → "950ms", 61_000 → "1m1s", 7_300_000 → "2h1m". */
export function age(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))}ms`;
  const seconds = Math.floor(ms / 1_000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d${hours % 24}h`;
}
