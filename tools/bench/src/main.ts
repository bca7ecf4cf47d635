/**
 * The bench CLI. Starts (or connects to) PostgreSQL, migrates a fresh database, runs the
 * sections, prints tables and goals, writes docs/perf, and always stops what it started:
 * on success, on an error, and on Ctrl-C.
 */
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { parseArgs, UsageError, USAGE, type BenchOptions, type SectionName } from './lib/args.js';
import { settingsFor, type BenchContext } from './lib/context.js';
import { createCpuProbe } from './lib/cpu.js';
import { describeServer, openBenchDatabase } from './lib/database.js';
import { baselinesReport, captureBaselines } from './lib/baselines.js';
import { replicaIdPrefix } from './lib/fleet.js';
import { commandLine, gitState, machineInfo } from './lib/machine.js';
import { createOutput, type Output } from './lib/output.js';
import { findPgbench, pgbenchInfo } from './lib/pgbench.js';
import { evaluateGoals } from './report/goals.js';
import type { BenchResults } from './report/results.js';
import { writeReport } from './report/write.js';
import { runCadenceSection } from './sections/cadence.js';
import { runCapacitySection } from './sections/capacity.js';
import { runContentionSection } from './sections/contention.js';
import { runCutoverSection } from './sections/cutover.js';
import { runFlushSection } from './sections/flush.js';
import { runProfileSection } from './sections/profile.js';
import { runTrackerSection } from './sections/tracker.js';
import { runUniquesSection } from './sections/uniques.js';

const WORKSPACE_ROOT = resolve(__dirname, '../../..');

/** Runs the CLI and resolves to the process exit code (0 ok, 1 failure, 2 usage, 130 interrupted). */
export async function runCli(argv: readonly string[]): Promise<number> {
  let options: BenchOptions;
  try {
    options = parseArgs(argv, process.env);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(
        `bench: ${error.message}\nRun \`npm run bench -- --help\` for the flags.\n`,
      );
      return 2;
    }
    throw error;
  }
  if (options.help) {
    process.stdout.write(USAGE);
    return 0;
  }

  const out = createOutput(options.json ? process.stderr : process.stdout);
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      out.line(`\n${signal}: stopping; cleaning up (PostgreSQL is stopped before exit)…`);
      controller.abort(new Error(`interrupted by ${signal}`));
    } else {
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const results = await runBench(options, argv, out, controller.signal);
    if (options.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    return results.failures.length > 0 ? 1 : 0;
  } catch (error) {
    if (controller.signal.aborted) {
      out.line('interrupted; PostgreSQL stopped.');
      return 130;
    }
    process.stderr.write(
      `bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

type SectionResults = Pick<
  BenchResults,
  'flush' | 'cutover' | 'contention' | 'tracker' | 'uniques' | 'cadence' | 'capacity' | 'profile'
>;

async function runBench(
  options: BenchOptions,
  argv: readonly string[],
  out: Output,
  signal: AbortSignal,
): Promise<BenchResults> {
  const startedAt = new Date();
  const started = performance.now();
  const machine = machineInfo();
  const settings = settingsFor(options.quick);
  const mode = options.quick ? 'quick' : 'full';
  out.line(
    `usagekit bench, ${mode} run: ${options.sections.join(', ')} | ${machine.cpuModel}, ${machine.cores} cores, node ${process.version}`,
  );

  const pgbenchPath = findPgbench();
  const pgbench = pgbenchPath ? await pgbenchInfo(pgbenchPath).catch(() => undefined) : undefined;
  out.line(
    pgbench ? `pgbench: ${pgbench.version} (${pgbench.path})` : 'pgbench not found, skipped',
  );

  const db = await openBenchDatabase({
    databaseUrl: options.databaseUrl,
    fastServer: options.fastServer,
    log: (l) => out.line(l),
  });
  try {
    signal.throwIfAborted();
    const cpu = createCpuProbe(db.info.postmasterPid);
    if (!cpu.serverMeasured)
      out.line(
        'PostgreSQL CPU: not measurable here (server not local or /proc unreadable); reported as –',
      );

    if (!db.info.durable) {
      out.line(
        `NOTE: this server is not durable (${describeServer(db.info)}): commits skip the disk, unlike production`,
      );
    }
    const baselines = await captureBaselines(db.databaseUrl);
    const baselinesSummary = baselinesReport(baselines);
    out.line(
      `raw baselines: the store's default flush (${baselinesSummary.defaultFlushPrepared ? 'sent as prepared statements' : 'sent unnamed'}), interactive flush and cutover recorded from the wire; d, e, f, h and the raw cutovers replay them`,
    );
    for (const problem of baselines.problems) out.line(`WARNING: ${problem}`);

    const ctx: BenchContext = {
      db,
      out,
      settings,
      cpu,
      signal,
      replicaIdPrefix: replicaIdPrefix(randomUUID()),
      pgbench: pgbench?.path,
      baselines,
    };
    const sections: SectionResults = {};
    const failures: BenchResults['failures'] = [];
    const run = async <K extends keyof SectionResults>(
      name: SectionName,
      key: K,
      title: string,
      work: () => Promise<SectionResults[K]>,
    ) => {
      if (!options.sections.includes(name)) return;
      out.line(`\n== ${title}`);
      const sectionStarted = performance.now();
      try {
        sections[key] = await work();
      } catch (error) {
        if (signal.aborted) throw error;
        const message = error instanceof Error ? error.message : String(error);
        failures.push({ section: name, error: message });
        out.line(`section ${name} FAILED: ${message}`);
      }
      out.line(`   (${((performance.now() - sectionStarted) / 1000).toFixed(1)} s)`);
    };

    await run('flush', 'flush', '1. Flush throughput and latency', () => runFlushSection(ctx));
    await run('cutover', 'cutover', '2. Cutover latency', () => runCutoverSection(ctx));
    await run('contention', 'contention', '3. Writers under contention', () =>
      runContentionSection(ctx),
    );
    await run('tracker', 'tracker', '4. Tracker.track()', () => runTrackerSection(ctx));
    await run('uniques', 'uniques', '5. Exact uniques', () => runUniquesSection(ctx));
    await run('cadence', 'cadence', '7. The flush at production cadence', () =>
      runCadenceSection(ctx),
    );
    await run('capacity', 'capacity', '6. Capacity', () =>
      runCapacitySection(ctx, sections.flush, sections.cadence),
    );
    await run('profile', 'profile', 'Where the time goes (CPU profile of a vs l)', () =>
      runProfileSection(ctx, options.cpuProfileDir),
    );

    const goals = evaluateGoals(sections);
    out.table(
      'Goals',
      ['goal', 'target', 'this run', ''],
      goals.map((g) => [g.description, g.target, g.actualText, g.status]),
    );

    const { postmasterPid: _pid, ...postgres } = db.info;
    const results: BenchResults = {
      schemaVersion: 2,
      mode,
      command: commandLine(argv, process.env),
      date: startedAt.toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      git: gitState(WORKSPACE_ROOT),
      machine,
      node: process.version,
      postgres: { ...postgres, serverCpuMeasured: cpu.serverMeasured },
      pgbench: pgbench ?? null,
      settings,
      baselines: baselinesSummary,
      ...sections,
      failures,
      goals,
    };
    if (options.outDir) {
      const files = writeReport(resolve(WORKSPACE_ROOT, options.outDir), results);
      out.line(`\nwrote ${files.map((f) => f.replace(`${WORKSPACE_ROOT}/`, '')).join(', ')}`);
    } else {
      out.line('\n(partial or --no-write run: docs/perf left as it was)');
    }
    out.line(`done in ${results.durationSeconds.toFixed(0)} s`);
    return results;
  } finally {
    await db.close();
  }
}
