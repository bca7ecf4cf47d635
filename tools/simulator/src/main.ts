import { runSimulation } from './lib/run.js';
import { HELP_TEXT, parseOptions, UsageError, type SimulatorOptions } from './lib/options.js';
import { formatReport, reportToJson } from './lib/report/format.js';

/**
 * The command line: parse the flags (exit 2 on a bad one), run, print the report on stdout
 * (progress goes to stderr), exit 0 only when the account balances. The first Ctrl-C (or
 * SIGTERM) ends the traffic early and still prints the report; a second one aborts at once.
 */
export function main(argv: readonly string[]): void {
  let options: SimulatorOptions;
  try {
    options = parseOptions(argv, process.env);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`simulator: ${error.message}\nRun with --help to see every flag.\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  if (options.help) {
    process.stdout.write(`${HELP_TEXT}\n`);
    return;
  }

  const interrupt = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write(
        `\n${signal}: ending the run early; the report follows (again to abort at once)\n`,
      );
      interrupt.abort();
      return;
    }
    process.stderr.write(`\n${signal} again: aborting without a report\n`);
    // Exiting closes every IPC channel: replicas and the PostgreSQL keeper see it and stop.
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  runSimulation(options, { signal: interrupt.signal }).then(
    (report) => {
      process.stdout.write(`${options.json ? reportToJson(report) : formatReport(report)}\n`);
      process.exitCode = report.balanced ? 0 : 1;
    },
    (error: unknown) => {
      process.stderr.write(
        `simulator: the run failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exitCode = 1;
    },
  );
}
