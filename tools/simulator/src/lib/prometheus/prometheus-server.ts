import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findFreePort } from '@usagekit/testing';
import { PRODUCTION_TIMING, renderAlertRules, type AlertTiming } from './alert-rules.js';

/** The job name the replicas are scraped under (the `job` label of every alert). */
export const SIMULATOR_JOB = 'usagekit-sim';

/**
 * The shipped rules, rendered for the simulator's timing. The drift rule compares a "day" of
 * reported and flushed requests; a run lasts seconds, in which the lag of reports behind
 * flushes (a period, or a whole partition) is a large share of everything counted. So its
 * window is 12 periods, its tolerance 25 % and it must hold for 6 periods: it fires only on a
 * drift that lasts most of a run, and is expected not to fire.
 */
export function simulatorAlertTiming(input: {
  flushIntervalMs: number;
  periodMs: number;
}): AlertTiming {
  return {
    flushIntervalSeconds: input.flushIntervalMs / 1_000,
    periodSeconds: input.periodMs / 1_000,
    driftWindowSeconds: (12 * input.periodMs) / 1_000,
    driftTolerance: 0.25,
    driftForSeconds: (6 * input.periodMs) / 1_000,
    runbookUrl: PRODUCTION_TIMING.runbookUrl,
  };
}

/** Debian's prometheus package installs /usr/bin/prometheus; anything on PATH will do. */
export function findPrometheus(): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      accessSync(join(dir, 'prometheus'), constants.X_OK);
      return join(dir, 'prometheus');
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

export interface ScrapeTarget {
  /** host:port serving /metrics. */
  address: string;
  /** Extra labels on every series of this target, e.g. { replica: '0' }. */
  labels: Record<string, string>;
}

/** One alert instance's firing interval, as Prometheus recorded it in its ALERTS series. */
export interface AlertInterval {
  alertname: string;
  severity: string;
  /** The labels that tell instances apart (instance, replica, stage…), without the fixed ones. */
  labels: Record<string, string>;
  /** Epoch ms of the first and last evaluation at which it was firing. */
  firingFromMs: number;
  firingToMs: number;
  /** Still firing at the end (Prometheus's /api/v1/alerts). */
  stillFiring: boolean;
}

export interface PrometheusServer {
  url: string;
  /** Evaluation and scrape interval. */
  intervalMs: number;
  /** Resolves when every target has been scraped successfully at least once. */
  waitForTargets(timeoutMs: number): Promise<void>;
  /** Alerts currently pending or firing, by /api/v1/alerts. */
  activeAlerts(): Promise<
    Array<{ alertname: string; state: string; labels: Record<string, string> }>
  >;
  /** Firing intervals between two instants, from the ALERTS series via /api/v1/query_range. */
  alertHistory(fromMs: number, toMs: number): Promise<AlertInterval[]>;
  /** Stops Prometheus (SIGTERM, SIGKILL after 10 s) and removes its directory. */
  stop(): Promise<void>;
}

const FIXED_LABELS = new Set(['alertname', 'alertstate', 'severity', 'job', '__name__']);

/**
 * Starts a real Prometheus in a temporary directory on a loopback port, scraping the targets
 * and evaluating the rules every `intervalMs`. Throws if it does not become ready in 30 s.
 */
export async function startPrometheus(input: {
  binary: string;
  targets: ScrapeTarget[];
  rulesYaml: string;
  intervalMs: number;
}): Promise<PrometheusServer> {
  const dir = mkdtempSync(join(tmpdir(), 'usagekit-prometheus-'));
  const port = await findFreePort();
  const interval = `${input.intervalMs}ms`;
  writeFileSync(join(dir, 'usagekit.rules.yml'), input.rulesYaml);
  // JSON is YAML: the config needs no YAML writer.
  writeFileSync(
    join(dir, 'prometheus.yml'),
    JSON.stringify(
      {
        global: {
          scrape_interval: interval,
          scrape_timeout: `${Math.max(100, Math.floor(input.intervalMs * 0.8))}ms`,
          evaluation_interval: interval,
        },
        rule_files: ['usagekit.rules.yml'],
        scrape_configs: [
          {
            job_name: SIMULATOR_JOB,
            static_configs: input.targets.map((target) => ({
              targets: [target.address],
              labels: target.labels,
            })),
          },
        ],
      },
      null,
      2,
    ),
  );
  let stderrTail = '';
  const child: ChildProcess = spawn(
    input.binary,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--storage.tsdb.retention.time=1d',
      '--log.level=warn',
    ],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-2_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // A second Ctrl-C ends the simulator with process.exit(): take Prometheus along.
  const killOnExit = (): void => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);
  const url = `http://127.0.0.1:${port}`;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killTimer);
      }
      rmSync(dir, { recursive: true, force: true });
    })());

  const api = async <T>(path: string): Promise<T> => {
    const response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(5_000) });
    const body = (await response.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success')
      throw new Error(`Prometheus ${path}: ${body.error ?? body.status}`);
    return body.data;
  };

  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(
          `prometheus exited at startup: ${stderrTail.trim().split('\n').slice(-3).join(' | ')}`,
        );
      const ready = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) })
        .then((response) => response.ok)
        .catch(() => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error('prometheus did not become ready within 30 s');
      await sleep(100);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const activeAlerts: PrometheusServer['activeAlerts'] = async () => {
    const data = await api<{
      alerts: Array<{ labels: Record<string, string>; state: string }>;
    }>('/api/v1/alerts');
    return data.alerts.map((alert) => ({
      alertname: alert.labels['alertname'] ?? '?',
      state: alert.state,
      labels: alert.labels,
    }));
  };

  return {
    url,
    intervalMs: input.intervalMs,
    async waitForTargets(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const data = await api<{ activeTargets: Array<{ health: string }> }>('/api/v1/targets');
        const up = data.activeTargets.filter((target) => target.health === 'up').length;
        if (up >= input.targets.length) return;
        if (Date.now() > deadline)
          throw new Error(
            `only ${up} of ${input.targets.length} targets up after ${timeoutMs / 1_000} s`,
          );
        await sleep(100);
      }
    },
    activeAlerts,
    async alertHistory(fromMs, toMs) {
      const step = input.intervalMs / 1_000;
      const query = new URLSearchParams({
        query: 'ALERTS{alertstate="firing"}',
        start: String(fromMs / 1_000),
        end: String(toMs / 1_000),
        step: String(step),
      });
      const data = await api<{
        result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;
      }>(`/api/v1/query_range?${query.toString()}`);
      const active = await activeAlerts();
      const intervals: AlertInterval[] = [];
      for (const series of data.result) {
        const labels = Object.fromEntries(
          Object.entries(series.metric).filter(([name]) => !FIXED_LABELS.has(name)),
        );
        const alertname = series.metric['alertname'] ?? '?';
        const stillFiring = active.some(
          (alert) =>
            alert.state === 'firing' &&
            alert.alertname === alertname &&
            Object.entries(labels).every(([name, value]) => alert.labels[name] === value),
        );
        // Consecutive steps belong to one firing; a gap means it resolved and fired again.
        let current: AlertInterval | undefined;
        for (const [timestamp] of series.values) {
          const atMs = timestamp * 1_000;
          if (current && atMs - current.firingToMs <= 1.5 * input.intervalMs) {
            current.firingToMs = atMs;
            continue;
          }
          current = {
            alertname,
            severity: series.metric['severity'] ?? '',
            labels,
            firingFromMs: atMs,
            firingToMs: atMs,
            stillFiring: false,
          };
          intervals.push(current);
        }
        if (current) current.stillFiring = stillFiring;
      }
      return intervals.sort((a, b) => a.firingFromMs - b.firingFromMs);
    },
    stop,
  };
}

/** The shipped rules for this run, with the simulator's windows. */
export function simulatorRules(input: { flushIntervalMs: number; periodMs: number }): string {
  return renderAlertRules(
    simulatorAlertTiming(input),
    '# usagekit alert rules rendered for the simulator (see ops/prometheus/usagekit.rules.yml)\n',
  );
}
