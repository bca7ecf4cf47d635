/** The shape of docs/perf/results.json. */
import type { BenchSettings } from '../lib/context.js';
import type { ServerInfo } from '../lib/database.js';
import type { PgbenchInfo } from '../lib/pgbench.js';
import type { BaselinesReport } from '../lib/baselines.js';
import type { CadenceSectionResult } from '../sections/cadence.js';
import type { CapacitySectionResult } from '../sections/capacity.js';
import type { ContentionSectionResult } from '../sections/contention.js';
import type { CutoverSectionResult } from '../sections/cutover.js';
import type { FlushSectionResult } from '../sections/flush.js';
import type { ProfileSectionResult } from '../sections/profile.js';
import type { TrackerSectionResult } from '../sections/tracker.js';
import type { UniquesSectionResult } from '../sections/uniques.js';

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  platform: string;
  release: string;
  /** 1, 5 and 15 minute load averages when the run started: other work on the machine shows here. */
  loadAverageAtStart: number[];
}

export type GoalStatus = 'PASS' | 'MISS' | 'NOT MEASURED';

export interface Goal {
  id: string;
  description: string;
  target: string;
  actual: number | undefined;
  actualText: string;
  status: GoalStatus;
}

export interface BenchResults {
  /**
   * 2: durable server by default, coder's protocol as contenders k and l, capacity section,
   * raw baselines recorded from the wire (`baselines` instead of `baselineSql`).
   */
  schemaVersion: 2;
  mode: 'quick' | 'full';
  command: string;
  date: string;
  durationSeconds: number;
  git: { commit: string | undefined; dirtyPaths: number | undefined };
  machine: MachineInfo;
  node: string;
  postgres: Omit<ServerInfo, 'postmasterPid'> & { serverCpuMeasured: boolean };
  pgbench: PgbenchInfo | null;
  settings: BenchSettings;
  /** The store's statements the raw contenders replayed, recorded in this run. */
  baselines: BaselinesReport;
  flush?: FlushSectionResult;
  cutover?: CutoverSectionResult;
  contention?: ContentionSectionResult;
  tracker?: TrackerSectionResult;
  uniques?: UniquesSectionResult;
  cadence?: CadenceSectionResult;
  capacity?: CapacitySectionResult;
  profile?: ProfileSectionResult;
  /** Sections that failed, with the error; the run goes on without them. */
  failures: Array<{ section: string; error: string }>;
  goals: Goal[];
}
