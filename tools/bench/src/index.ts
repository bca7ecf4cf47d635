export { parseArgs, UsageError, USAGE, SECTION_NAMES, DEFAULT_OUT_DIR } from './lib/args.js';
export type { BenchOptions, SectionName } from './lib/args.js';
export { percentile, median, summarizeLatencies, LatencyRecorder, ratio } from './lib/stats.js';
export type { LatencySummary } from './lib/stats.js';
export { createRawPool, inTransaction } from './lib/raw-pg.js';
export {
  recordQueries,
  recordCall,
  recordedCall,
  replayCall,
  substitute,
  normalizeSql,
} from './lib/replay.js';
export type { RecordedCall, CapturedStatement, Substitutions } from './lib/replay.js';
export {
  captureBaselines,
  baselinesReport,
  defaultFlushParams,
  rawCutover,
  rawDefaultFlush,
  rawInteractiveFlush,
} from './lib/baselines.js';
export type { Baselines, BaselinesReport, RecordedFlush } from './lib/baselines.js';
export { coderFlush, CODER_UPSERT } from './lib/coder.js';
export { pgbenchScript, parsePgbenchLog, childrenCpuUs, findPgbench } from './lib/pgbench.js';
export { parseProcStat } from './lib/cpu.js';
export { breakdown, categorize } from './lib/cpu-profile.js';
export { flushThroughputSvg, niceCeiling } from './report/chart.js';
export { evaluateGoals } from './report/goals.js';
export { renderReadme, extractNotes } from './report/readme.js';
export type { BenchResults, Goal } from './report/results.js';
export { callOrder, SetBaseline, trackerConstructor } from './sections/tracker.js';
export { FLUSH_CONTENDERS } from './sections/flush.js';
export { runCli } from './main.js';
