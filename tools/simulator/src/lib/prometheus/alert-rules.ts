import { parseArgs } from 'node:util';
import { parseDurationMs } from '../options.js';

/**
 * The Prometheus alert rules shipped in ops/prometheus/usagekit.rules.yml, rendered from one
 * template for a given timing.
 *
 * Why a template: every window in these rules is a multiple of the deployment's flush interval
 * or telemetry period ("no successful flush for 5 intervals", "no report for 1.5 periods").
 * PromQL cannot take a range from a metric's value, so the durations have to be written into
 * the rules. Production uses a 1-minute flush and a 30-minute period; the simulator runs a
 * 1-second flush and a 5-second period, and a rule file with hour-long windows would never fire
 * during its 30-second run. Rendering both from the same expressions means the live
 * `--prometheus` run exercises exactly the shipped rules, only with shorter windows; the
 * checked-in file is the production rendering, and a test fails when the two drift apart.
 * Thresholds (counts) are the same in both; only durations scale.
 */

export interface AlertTiming {
  /** The flush loop's interval (`startFlushLoop({ intervalMs })`). */
  flushIntervalSeconds: number;
  /** The telemetry period (`snapshotFrequencyMs`). */
  periodSeconds: number;
  /** The window over which reported and flushed requests must agree ("a day"). */
  driftWindowSeconds: number;
  /** Allowed relative difference between reported and flushed over that window. */
  driftTolerance: number;
  /** How long the drift must last before the alert fires. */
  driftForSeconds: number;
  /** Where the runbook lives; each rule links to an anchor in it. */
  runbookUrl: string;
}

/** What the checked-in file is rendered with: coder's 1-minute flush and 30-minute period. */
export const PRODUCTION_TIMING: AlertTiming = {
  flushIntervalSeconds: 60,
  periodSeconds: 1_800,
  driftWindowSeconds: 86_400,
  // Reports trail flushes by up to one period at each end of the window: 30 min of a day is
  // about 2 %; the offset below halves that, so 2 % leaves room for uneven traffic.
  driftTolerance: 0.02,
  driftForSeconds: 3_600,
  runbookUrl: 'docs/operations.md',
};

export const RULES_FILE_HEADER = `# usagekit alert rules (Prometheus 2.x and 3.x). Generated; do not edit by hand.
# Source: tools/simulator/src/lib/prometheus/alert-rules.ts, rendered for a 1-minute flush
# interval and a 30-minute telemetry period. For other timings render your own copy:
#   node tools/simulator/bin/run.js __render-rules --flush-interval 30s --period 1h > usagekit.rules.yml
# Assumes the default metric prefix (usagekit_). Runbook: docs/operations.md (replace the
# relative runbook_url with where your copy of the runbook is served).
`;

/** A Prometheus duration: the largest whole unit (1d, 45m, 90s, 2500ms). */
export function promDuration(seconds: number): string {
  const ms = Math.round(seconds * 1_000);
  if (ms <= 0) return '0s';
  const units: [string, number][] = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ];
  for (const [unit, size] of units) if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

interface AlertRule {
  alert: string;
  expr: string;
  forSeconds: number;
  severity: 'critical' | 'warning';
  summary: string;
  description: string;
  anchor: string;
}

/** The rules, as data; `renderAlertRules` writes them as YAML. */
export function alertRules(timing: AlertTiming): AlertRule[] {
  const flush = timing.flushIntervalSeconds;
  const period = timing.periodSeconds;
  const d = promDuration;
  const stallWindow = d(5 * flush);
  const lockWindow = d(10 * flush);
  const abandonWindow = d(15 * flush);
  const recoveryWindow = d(60 * flush);
  const reportWindow = d(1.5 * period);
  const deliveryWindow = d(period);
  const drift = d(timing.driftWindowSeconds);
  const driftOffset = d(period / 2);
  return [
    {
      alert: 'UsagekitTelemetryStalled',
      // A flush loop that is alive completes a flush every interval: `flushed` when it wrote
      // something, `idle` when nothing was tracked. A flush stuck on a silent connection or
      // failing on every attempt completes neither, so the counter stops. An idle replica
      // keeps counting `idle` and never fires: this is "no successful flush while requests
      // are tracked" without a gauge of tracked requests.
      expr: `sum by (job, instance) (increase(usagekit_boundary_flushes_total[${stallWindow}])) == 0`,
      forSeconds: flush,
      severity: 'critical',
      summary: 'usagekit on {{ $labels.instance }} has not completed a flush for 5 intervals',
      description:
        `No flush completed on {{ $labels.instance }} (job {{ $labels.job }}) in the last ${stallWindow}: ` +
        'the flush loop is stuck on a database call or every attempt fails. Tracked usage stays in ' +
        'memory and is lost if the process dies.',
      anchor: 'usagekittelemetrystalled',
    },
    {
      alert: 'UsagekitNoReportWritten',
      // The second half keeps a deployment that started less than 1.5 periods ago (its
      // counters start at 0 and its first report may still be due) from firing.
      expr:
        `sum by (job) (increase(usagekit_telemetry_snapshots_total{outcome="reported"}[${reportWindow}])) == 0\n` +
        `and on (job)\n` +
        `sum by (job) (present_over_time(usagekit_telemetry_snapshots_total[${stallWindow}] offset ${reportWindow})) > 0`,
      forSeconds: flush,
      severity: 'critical',
      summary: 'No usagekit telemetry report written for 1.5 periods',
      description:
        `No reporter of job {{ $labels.job }} cut over a period in the last ${reportWindow} (1.5 periods): ` +
        'collections fail, hang, or no reporter runs. Flushed rows wait in usagekit.boundary_usage_stats and ' +
        'rows older than the staleness bound will be reported apart as stale.',
      anchor: 'usagekitnoreportwritten',
    },
    {
      alert: 'UsagekitOutboxBacklogAgeing',
      expr: `max by (job) (usagekit_telemetry_outbox_oldest_pending_age_seconds) > ${period}`,
      forSeconds: flush,
      severity: 'warning',
      summary: 'A usagekit report has waited in the outbox for more than a period',
      description:
        'The oldest undelivered report of job {{ $labels.job }} is {{ $value | humanizeDuration }} old ' +
        `(more than one period, ${d(period)}). Reports are kept until delivered, but the receiver is ` +
        'falling behind.',
      anchor: 'usagekitoutboxbacklogageing',
    },
    {
      alert: 'UsagekitDeliveryFailing',
      expr:
        `sum by (job) (increase(usagekit_telemetry_delivery_attempts_total{result="failed"}[${deliveryWindow}])) > 0\n` +
        `unless\n` +
        `sum by (job) (increase(usagekit_telemetry_delivery_attempts_total{result="delivered"}[${deliveryWindow}])) > 0`,
      // Five intervals: a refused POST whose retry succeeds a moment later is not an outage.
      forSeconds: 5 * flush,
      severity: 'critical',
      summary: 'Every usagekit report delivery failed for a period',
      description:
        `Job {{ $labels.job }} tried to deliver reports in the last ${deliveryWindow} and none was ` +
        'acknowledged: the receiver is down, refusing, or unreachable. Reports stay in the outbox ' +
        'and are retried.',
      anchor: 'usagekitdeliveryfailing',
    },
    {
      // A gauge, not increase(): a rejected report waits for an operator however long ago it
      // was rejected, so the alert holds until retryRejectedReports (or a fix) empties it.
      alert: 'UsagekitReportsRejected',
      expr: `max by (job) (usagekit_telemetry_outbox_rejected_reports) > 0`,
      forSeconds: flush,
      severity: 'warning',
      summary: 'The receiver refused usagekit reports permanently; they wait for an operator',
      description:
        '{{ $value | humanize }} report(s) of job {{ $labels.job }} were refused permanently by the ' +
        'receiver (400, 401, 403, 404, 413, 422, …) and set aside as rejected. They are kept and ' +
        'not retried: fix the cause, then send them again with retryRejectedReports.',
      anchor: 'usagekitreportsrejected',
    },
    {
      alert: 'UsagekitReportedDriftingFromFlushed',
      // Reports trail flushes by up to a period, so flushes are compared half a period back.
      expr:
        `abs(\n` +
        `  sum by (job) (increase(usagekit_telemetry_reported_requests_total[${drift}]))\n` +
        `  - sum by (job) (increase(usagekit_boundary_flushed_requests_total[${drift}] offset ${driftOffset}))\n` +
        `)\n` +
        `/ sum by (job) (increase(usagekit_boundary_flushed_requests_total[${drift}] offset ${driftOffset}))\n` +
        `> ${timing.driftTolerance}`,
      forSeconds: timing.driftForSeconds,
      severity: 'warning',
      summary: `usagekit reported requests differ from flushed requests by more than ${timing.driftTolerance * 100}% over ${drift}`,
      description:
        `Over ${drift}, job {{ $labels.job }} reported and flushed request counts differ by ` +
        '{{ $value | humanizePercentage }}. Exact accounting means they agree; check stale rows, ' +
        'a reporter on another prefix or job, or scrapes missing a replica.',
      anchor: 'usagekitreporteddriftingfromflushed',
    },
    {
      alert: 'UsagekitFlushAbandoned',
      expr: `sum by (job, instance) (increase(usagekit_boundary_flush_abandoned_total[${abandonWindow}])) > 0`,
      forSeconds: 0,
      severity: 'warning',
      summary: 'usagekit on {{ $labels.instance }} abandoned flushes at a deadline',
      description:
        `{{ $labels.instance }} abandoned {{ $value | humanize }} flush attempt(s) in the last ${abandonWindow} ` +
        'at a client-side deadline (a silent connection, a partition or a failover). The batch is ' +
        'retried on a fresh connection; repeated abandons mean the database path is unhealthy.',
      anchor: 'usagekitflushabandoned',
    },
    {
      alert: 'UsagekitTelemetryAbandoned',
      expr: `sum by (job, instance, stage) (increase(usagekit_telemetry_abandoned_total[${abandonWindow}])) > 0`,
      forSeconds: 0,
      severity: 'warning',
      summary:
        'usagekit on {{ $labels.instance }} abandoned telemetry {{ $labels.stage }} calls at a deadline',
      description:
        `{{ $labels.instance }} abandoned {{ $value | humanize }} telemetry {{ $labels.stage }} call(s) in the last ` +
        `${abandonWindow} at a deadline. Nothing is lost (a collection rolls back, a delivery retries), ` +
        'but the database or the receiver is not answering.',
      anchor: 'usagekittelemetryabandoned',
    },
    {
      alert: 'UsagekitSequenceRecoveries',
      expr: `sum by (job, instance) (increase(usagekit_boundary_flush_sequence_recoveries_total[${recoveryWindow}])) > 0`,
      forSeconds: 0,
      severity: 'warning',
      summary: 'usagekit on {{ $labels.instance }} found its flush sequence behind the stored one',
      description:
        `{{ $labels.instance }} resequenced {{ $value | humanize }} batch(es) in the last ${recoveryWindow}: ` +
        'the stored sequence for its replica id was ahead. Its clock stepped back, or two processes ' +
        'share one replica id. Data was resent, not lost; find the cause.',
      anchor: 'usagekitsequencerecoveries',
    },
    {
      alert: 'UsagekitLockTimeoutsRising',
      expr:
        `sum by (job) (increase({__name__=~"usagekit_boundary_flush_errors_total|usagekit_telemetry_errors_total", code="LOCK_TIMEOUT"}[${lockWindow}]))\n` +
        `> 3`,
      forSeconds: 2 * flush,
      severity: 'warning',
      summary: 'usagekit flushes and cutovers are timing out on the advisory lock',
      description:
        `Job {{ $labels.job }} saw {{ $value | humanize }} lock timeouts in the last ${lockWindow}. ` +
        'Something holds the boundary-usage lock (a cutover that does not finish, a session idle in ' +
        'transaction, DDL queued on the tables).',
      anchor: 'usagekitlocktimeoutsrising',
    },
  ];
}

/** The rules file as YAML (hand-written: the shapes are fixed and the output stays diffable). */
export function renderAlertRules(timing: AlertTiming, header = RULES_FILE_HEADER): string {
  const lines = [header.trimEnd(), 'groups:', '  - name: usagekit', '    rules:'];
  for (const rule of alertRules(timing)) {
    lines.push(`      - alert: ${rule.alert}`);
    lines.push('        expr: |');
    for (const line of rule.expr.split('\n')) lines.push(`          ${line}`);
    if (rule.forSeconds > 0) lines.push(`        for: ${promDuration(rule.forSeconds)}`);
    lines.push('        labels:');
    lines.push(`          severity: ${rule.severity}`);
    lines.push('        annotations:');
    lines.push(`          summary: ${yamlString(rule.summary)}`);
    lines.push(`          description: ${yamlString(rule.description)}`);
    lines.push(`          runbook_url: ${yamlString(`${timing.runbookUrl}#${rule.anchor}`)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** A double-quoted YAML scalar (JSON strings are valid YAML). */
function yamlString(value: string): string {
  return JSON.stringify(value);
}

/**
 * `bin/run.js __render-rules [--flush-interval D] [--period D] [--runbook-url URL]`: prints the
 * rules for another timing (the drift window stays a day).
 */
export function renderRulesCommand(argv: readonly string[]): void {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      'flush-interval': { type: 'string' },
      period: { type: 'string' },
      'runbook-url': { type: 'string' },
    },
  });
  const seconds = (flag: string, raw: string | undefined, fallback: number): number => {
    if (raw === undefined) return fallback;
    const ms = parseDurationMs(raw);
    if (ms === undefined || ms <= 0)
      throw new Error(`${flag} must be a duration such as 30s or 1h`);
    return ms / 1_000;
  };
  const timing: AlertTiming = {
    ...PRODUCTION_TIMING,
    flushIntervalSeconds: seconds(
      '--flush-interval',
      values['flush-interval'],
      PRODUCTION_TIMING.flushIntervalSeconds,
    ),
    periodSeconds: seconds('--period', values.period, PRODUCTION_TIMING.periodSeconds),
    runbookUrl: values['runbook-url'] ?? PRODUCTION_TIMING.runbookUrl,
  };
  process.stdout.write(renderAlertRules(timing));
}
