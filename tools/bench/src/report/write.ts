import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flushThroughputSvg } from './chart.js';
import { extractNotes, renderReadme, type OtherRun } from './readme.js';
import type { BenchResults } from './results.js';

export const CHART_FILE = 'flush-throughput.svg';

/** Writes results.json, README.md and the chart into `dir`; returns the files written. */
export function writeReport(dir: string, results: BenchResults): string[] {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const json = join(dir, 'results.json');
  writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
  files.push(json);
  if (results.flush) {
    const chart = join(dir, CHART_FILE);
    const subtitle = `${results.machine.cores} cores, PostgreSQL ${results.postgres.serverVersion}, ${results.mode} run, ${results.date.slice(0, 10)}`;
    writeFileSync(chart, flushThroughputSvg(results.flush.cells, subtitle));
    files.push(chart);
  }
  const readme = join(dir, 'README.md');
  let existing: string | undefined;
  try {
    existing = readFileSync(readme, 'utf8');
  } catch {
    existing = undefined;
  }
  writeFileSync(readme, renderReadme(results, CHART_FILE, extractNotes(existing), otherRuns(dir)));
  files.push(readme);
  return files;
}

/**
 * Runs kept in subdirectories of the output directory (e.g. `--out-dir docs/perf/pg15` against
 * the machine's PostgreSQL 15), shown beside this run's goals. Unreadable or older-format
 * results are skipped.
 */
export function otherRuns(dir: string): OtherRun[] {
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
  const runs: OtherRun[] = [];
  for (const name of entries) {
    try {
      const results = JSON.parse(
        readFileSync(join(dir, name, 'results.json'), 'utf8'),
      ) as BenchResults;
      if (results.schemaVersion !== 2 || !Array.isArray(results.goals)) continue;
      runs.push({ directory: name, results });
    } catch {
      // No results there.
    }
  }
  return runs;
}
