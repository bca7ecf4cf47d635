// A Jest reporter that appends this run's totals to the file named by
// USAGEKIT_TEST_SUMMARY_FILE (one JSON line per Jest run), so .ci/run can print one plain
// "N passed, N failed" line for the whole workspace. Does nothing when the variable is unset.
const { appendFileSync } = require('node:fs');

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const file = process.env.USAGEKIT_TEST_SUMMARY_FILE;
    if (!file) return;
    const line = {
      passed: results.numPassedTests,
      failed: results.numFailedTests + results.numRuntimeErrorTestSuites,
      skipped: results.numPendingTests + results.numTodoTests,
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  }
}

module.exports = SummaryReporter;
