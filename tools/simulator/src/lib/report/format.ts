import type { LatencySummary } from './stats.js';
import type { Counts, SimulationReport } from './report.js';

/** The report as JSON: counters that fit a double are numbers, larger ones decimal strings. */
export function reportToJson(report: SimulationReport): string {
  return JSON.stringify(
    report,
    (_key, value: unknown) =>
      typeof value === 'bigint'
        ? value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(value)
          : value.toString()
        : value,
    2,
  );
}

/** The report as text for a terminal or a log. */
export function formatReport(report: SimulationReport): string {
  const lines: string[] = [];
  const s = report.settings;
  lines.push(
    `usagekit simulator: ${s.replicas} replicas × ${num(s.ratePerReplica)} req/s for ${seconds(report.trafficMs)}` +
      `${report.interrupted ? ` (interrupted; ${seconds(s.durationMs)} planned)` : ''}, flush every ${ms(s.flushIntervalMs)},` +
      ` period ${ms(s.periodMs)}, lock mode ${s.lockMode}${s.chaos ? ', chaos' : ''}`,
  );
  lines.push(`${report.database.source}, database ${report.database.name}`);
  lines.push('');

  const a = report.account;
  lines.push('Account (requests)');
  const accountRows: string[][] = [
    ['', 'allowed', 'denied', 'total'],
    countRow('generated', a.generated),
    countRow('flushed', a.flushed),
    countRow('reported', a.reported),
  ];
  if (a.reportedStale.total > 0n)
    accountRows.push(countRow('  of which stale rows', a.reportedStale));
  if (report.chaos?.killed)
    accountRows.push(countRow('lost with killed replica', a.lostWithKilledReplica));
  accountRows.push(countRow('unflushed (live replicas)', a.unflushed));
  accountRows.push(countRow('reported − flushed', a.reportedMinusFlushed));
  lines.push(...table(accountRows, { indent: 2, rightAlignFrom: 1 }));
  lines.push('');

  const finalMarked = report.periods.some((row) => row.finalCollection);
  lines.push(
    `Periods: ${report.periods.length} reports received` +
      ` (${report.collector.duplicates} duplicate deliveries ignored${finalMarked ? '; * = the final collection after the replicas stopped' : ''})`,
  );
  lines.push(
    '  workspaces and users: exact distinct counts across replicas; coder Σ: the sum of per-replica counts',
  );
  const periodTable: string[][] = [
    [
      '#',
      'period (UTC)',
      'data window (UTC)',
      'replicas',
      'workspaces',
      'coder Σ',
      'users',
      'coder Σ',
      'allowed',
      'denied',
      'stale',
    ],
  ];
  report.periods.forEach((row, position) => {
    periodTable.push([
      `${position + 1}${row.finalCollection ? '*' : ''}`,
      `${clock(row.periodStart, false)} +${ms(row.periodDurationMs)}`,
      row.windowStart && row.windowEnd
        ? `${clock(row.windowStart, true)}–${clock(row.windowEnd, true)}`
        : '(no rows)',
      String(row.replicas),
      num(row.uniqueWorkspaces),
      num(row.uniqueWorkspacesReplicaSum),
      num(row.uniqueUsers),
      num(row.uniqueUsersReplicaSum),
      num(row.allowed),
      num(row.denied),
      row.staleReplicas > 0
        ? `${row.staleReplicas} row(s): ${num(row.staleAllowed + row.staleDenied)}`
        : '-',
    ]);
  });
  lines.push(...table(periodTable, { indent: 2, rightAlignFrom: 3 }));
  lines.push('');

  lines.push('Replicas');
  const replicaTable: string[][] = [
    [
      '#',
      'pid',
      'replica id',
      'ended',
      'generated',
      'flushed',
      'unflushed',
      'flushes',
      'periods won',
      'delivered/tried',
    ],
  ];
  for (const replica of report.replicas) {
    replicaTable.push([
      String(replica.index),
      replica.pid === null ? '-' : String(replica.pid),
      replica.replicaId ? `${replica.replicaId.slice(0, 8)}…` : '-',
      replica.outcome,
      num(replica.generated.total),
      num(replica.flushed.total),
      num(replica.unflushed.total),
      num(replica.flushes),
      num(replica.periodsReported),
      `${replica.deliveriesAcknowledged}/${replica.deliveries}`,
    ]);
  }
  lines.push(...table(replicaTable, { indent: 2, rightAlignFrom: 4 }));
  lines.push('');

  lines.push(
    ...table(
      [
        ['Latency', 'p50', 'p99', 'max', 'samples'],
        latencyRow('flush', report.latency.flush),
        latencyRow('cutover (claim + cutover + outbox, one transaction)', report.latency.cutover),
      ],
      { indent: 0, rightAlignFrom: 1 },
    ),
  );
  const w = report.lockWaits;
  lines.push(
    `Lock waits (pg_locks sampled every ${w.intervalMs} ms): ` +
      (w.samplesWithWaiters === 0
        ? `no backend seen waiting for the advisory lock in ${num(w.samples)} samples`
        : `a backend was waiting for the advisory lock in ${num(w.samplesWithWaiters)} of ${num(w.samples)} samples` +
          ` (at most ${w.maxWaiting} at once)`) +
      `; lock timeouts: ${w.lockTimeouts}`,
  );
  lines.push(`Errors by class: ${formatErrors(report.errors)}`);
  const c = report.collector;
  lines.push(
    `Collector: ${c.posts} POSTs, ${c.accepted} reports stored, ${c.duplicates} duplicates ignored` +
      `${c.refused + c.acknowledgementsDropped > 0 ? `, ${c.refused} refused (503) and ${c.acknowledgementsDropped} acknowledgements dropped on purpose` : ''}` +
      `${c.malformed > 0 ? `, ${c.malformed} malformed` : ''}`,
  );
  if (report.chaos) {
    const k = report.chaos.killed;
    lines.push(
      `Chaos: ${report.chaos.backendsTerminated} backends terminated with pg_terminate_backend; ` +
        (k
          ? `replica ${k.index} SIGKILLed at ${seconds(k.atMs)} having tracked ${num(k.tracked.total)} and flushed ${num(k.flushed.total)}: ` +
            `${num(k.lost.total)} requests lost (allowed ${num(k.lost.allowed)}, denied ${num(k.lost.denied)})` +
            `${k.ambiguousBatch === 'none' ? '' : `; its last, failed flush was ${k.ambiguousBatch} in the database`}`
          : 'no replica was killed (the run ended before the kill)'),
    );
    lines.push(...formatFaults(report.chaos, report.settings.statementDeadlineMs));
  }
  if (report.alerts) lines.push(...formatAlerts(report.alerts));
  if (report.flushResultShortfall.total !== 0n) {
    lines.push(
      `Note: FlushResult of successful flushes accounts for ${num(report.flushResultShortfall.total)} fewer requests than the store confirmed` +
        ' (a flush that confirmed a resent batch and then failed loses its result); the store’s count is used.',
    );
  }
  lines.push('');
  for (const check of report.checks)
    lines.push(`${check.ok ? 'ok  ' : 'FAIL'} ${check.name}: ${check.detail}`);
  lines.push('');
  lines.push(verdict(report));
  return lines.join('\n');
}

function formatFaults(
  chaos: NonNullable<SimulationReport['chaos']>,
  statementDeadlineMs: number,
): string[] {
  const lines: string[] = [];
  const p = chaos.partition;
  if (p) {
    lines.push(
      `Partition: at ${seconds(p.beganMs)} ${p.connectionsFrozen} replica connection(s) and every new one went silent (no FIN, no RST)` +
        (p.newConnectionsMs === null
          ? ''
          : `; new connections worked again at ${seconds(p.newConnectionsMs)}`) +
        (p.thawedMs === null
          ? '; it never healed'
          : `; healed at ${seconds(p.thawedMs)} (the ${p.connectionsDropped ?? 0} silent connection(s) still open were dropped)`) +
        `; replicas abandon a statement after ${ms(statementDeadlineMs)} (--statement-deadline)`,
    );
    lines.push(
      '  stall: the longest time without a completed flush; recovery: the flush that ended the stall the partition caused',
    );
    const rows = [['#', 'longest stall', 'from', 'to', 'recovered after start', 'after heal']];
    for (const r of p.replicas) {
      rows.push([
        String(r.index),
        seconds(r.longestGapMs),
        seconds(r.gapFromMs),
        seconds(r.gapToMs),
        r.recoveredAfterPartitionMs === null ? 'never' : seconds(r.recoveredAfterPartitionMs),
        r.recoveredAfterThawMs === null
          ? '-'
          : r.recoveredAfterThawMs < 0
            ? `${seconds(-r.recoveredAfterThawMs)} before`
            : seconds(r.recoveredAfterThawMs),
      ]);
    }
    lines.push(...table(rows, { indent: 2, rightAlignFrom: 1 }));
  }
  if (chaos.lockHeld) {
    const l = chaos.lockHeld;
    lines.push(
      l.error
        ? `Lock holder: holding the exclusive boundary-usage lock failed: ${l.error}`
        : `Lock holder: the exclusive boundary-usage lock was held from ${seconds(l.fromMs)} to ${l.toMs === null ? '?' : seconds(l.toMs)} (every flush and cutover waited lock_timeout)`,
    );
  }
  if (chaos.collectorOutage) {
    const o = chaos.collectorOutage;
    lines.push(
      `Collector outage: every POST refused with 503 from ${seconds(o.fromMs)} to ${o.toMs === null ? '?' : seconds(o.toMs)}`,
    );
  }
  return lines;
}

function formatAlerts(alerts: NonNullable<SimulationReport['alerts']>): string[] {
  if (alerts.status !== 'observed') {
    return [`Alerts: not observed: ${alerts.note ?? alerts.status}`];
  }
  const lines = [
    `Alerts (as Prometheus at ${alerts.url ?? '?'} reported them: ALERTS{alertstate="firing"} via /api/v1/query_range, scrape and evaluation every ${ms(alerts.intervalMs ?? 0)}; times into the traffic phase)`,
  ];
  if (alerts.fired.length === 0) {
    lines.push('  none fired');
    return lines;
  }
  const rows = [['alert', 'severity', 'labels', 'firing from', 'to', '']];
  for (const a of alerts.fired) {
    rows.push([
      a.alertname,
      a.severity,
      Object.entries(a.labels)
        .map(([name, value]) => `${name}=${value}`)
        .join(',') || '-',
      seconds(a.firingFromMs),
      seconds(a.firingToMs),
      a.stillFiring ? 'still firing at the end' : 'resolved',
    ]);
  }
  lines.push(...table(rows, { indent: 2, rightAlignFrom: 99 }));
  if (alerts.note) lines.push(`  ${alerts.note}`);
  return lines;
}

function verdict(report: SimulationReport): string {
  const a = report.account;
  if (!report.balanced) return 'NOT BALANCED: see the failed checks above.';
  if (report.chaos?.killed) {
    return (
      `BALANCED: generated ${num(a.generated.total)} = reported ${num(a.reported.total)}` +
      ` + lost with the killed replica ${num(a.lostWithKilledReplica.total)}; nothing else lost or counted twice.`
    );
  }
  return `BALANCED: generated ${num(a.generated.total)} = flushed ${num(a.flushed.total)} = reported ${num(a.reported.total)}.`;
}

function countRow(label: string, value: Counts): string[] {
  return [label, num(value.allowed), num(value.denied), num(value.total)];
}

function latencyRow(label: string, value: LatencySummary): string[] {
  const show = (x: number | null): string => (x === null ? '-' : `${x.toFixed(1)} ms`);
  return [`  ${label}`, show(value.p50Ms), show(value.p99Ms), show(value.maxMs), num(value.count)];
}

export function formatErrors(errors: Readonly<Record<string, number>>): string {
  const entries = Object.entries(errors).sort((x, y) => y[1] - x[1] || x[0].localeCompare(y[0]));
  return entries.length === 0
    ? 'none'
    : entries.map(([key, value]) => `${key} ×${value}`).join(', ');
}

export function num(value: number | bigint): string {
  return value.toLocaleString('en-US');
}

function seconds(milliseconds: number): string {
  return `${(milliseconds / 1000).toFixed(1)}s`;
}

function ms(milliseconds: number): string {
  return milliseconds % 1000 === 0 ? `${milliseconds / 1000}s` : `${milliseconds}ms`;
}

/** "HH:MM:SS" or "HH:MM:SS.mmm" of an ISO timestamp, UTC. */
function clock(iso: string, withMillis: boolean): string {
  const time = new Date(iso).toISOString().slice(11, withMillis ? 23 : 19);
  return time;
}

function table(rows: string[][], layout: { indent: number; rightAlignFrom: number }): string[] {
  const widths: number[] = [];
  for (const row of rows)
    row.forEach((cell, column) => (widths[column] = Math.max(widths[column] ?? 0, cell.length)));
  return rows.map(
    (row) =>
      ' '.repeat(layout.indent) +
      row
        .map((cell, column) =>
          column >= layout.rightAlignFrom
            ? cell.padStart(widths[column] ?? 0)
            : cell.padEnd(widths[column] ?? 0),
        )
        .join('  ')
        .trimEnd(),
  );
}
