import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flushThroughputSvg } from './chart.js';
import { extractNotes, renderReadme } from './readme.js';
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
  writeFileSync(readme, renderReadme(results, CHART_FILE, extractNotes(existing)));
  files.push(readme);
  return files;
}
