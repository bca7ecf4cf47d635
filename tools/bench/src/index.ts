export { parseArgs, UsageError, USAGE, SECTION_NAMES, DEFAULT_OUT_DIR } from './lib/args.js';
export type { BenchOptions, SectionName } from './lib/args.js';
export { percentile, median, summarizeLatencies, LatencyRecorder, ratio } from './lib/stats.js';
export type { LatencySummary } from './lib/stats.js';
export * as rawSql from './lib/raw-sql.js';
export {
  createRawPool,
  rawFlushInteractive,
  rawFlushSingleStatement,
  rawCutover,
} from './lib/raw-pg.js';
export { checkBaselineSql, recordQueries, normalizeSql } from './lib/sql-drift.js';
export type { DriftReport } from './lib/sql-drift.js';
export { pgbenchScript, parsePgbenchLog, childrenCpuUs, findPgbench } from './lib/pgbench.js';
export { parseProcStat } from './lib/cpu.js';
export { breakdown, categorize } from './lib/cpu-profile.js';
export { flushThroughputSvg, niceCeiling } from './report/chart.js';
export { evaluateGoals } from './report/goals.js';
export { renderReadme, extractNotes } from './report/readme.js';
export type { BenchResults, Goal } from './report/results.js';
export { callOrder, SetBaseline, trackerConstructor } from './sections/tracker.js';
export { flushValues, FLUSH_CONTENDERS } from './sections/flush.js';
export { runCli } from './main.js';
