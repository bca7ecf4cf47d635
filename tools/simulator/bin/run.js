#!/usr/bin/env node
// The simulator's one executable. `node bin/run.js [flags]` is the CLI (`npm start`); the
// simulator forks this same file with an internal role as the first argument for its replica
// processes and for the process that keeps embedded PostgreSQL.
// Loads the TypeScript sources directly (tools/scripts/register-ts.js says how). A workspace
// script, not a project, so the module-boundary rule has nothing to check here.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../scripts/register-ts.js').register();

const role = process.argv[2];
if (role === '__replica') {
  require('../src/lib/replica/replica-process.ts').runReplicaProcess();
} else if (role === '__postgres-keeper') {
  require('../src/lib/database/postgres-keeper.ts').runPostgresKeeper();
} else if (role === '__render-rules') {
  require('../src/lib/prometheus/alert-rules.ts').renderRulesCommand(process.argv.slice(3));
} else {
  require('../src/main.ts').main(process.argv.slice(2));
}
