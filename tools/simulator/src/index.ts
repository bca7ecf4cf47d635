export { runSimulation } from './lib/run.js';
export type { RunControls } from './lib/run.js';
export {
  parseOptions,
  parseDurationMs,
  DEFAULT_OPTIONS,
  HELP_TEXT,
  UsageError,
} from './lib/options.js';
export type { SimulatorOptions } from './lib/options.js';
export { formatReport, reportToJson } from './lib/report/format.js';
export { buildReport } from './lib/report/report.js';
export type { SimulationReport, RunObservations, Check, Counts } from './lib/report/report.js';
export type { PeriodRow } from './lib/report/periods.js';
export { TelemetryCollector } from './lib/collector.js';
export type { CollectorStats, ReceivedReport } from './lib/collector.js';
