#!/usr/bin/env node
// The operator CLI (`npx usagekit …` in the workspace). Loads the TypeScript sources directly
// (tools/scripts/register-ts.js says how), so it works right after `npm ci`, no build step.
// A workspace script, not a project, so the module-boundary rule has nothing to check here.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../scripts/register-ts.js').register();

require('../src/main.ts')
  .runCli(process.argv.slice(2), {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
  })
  // process.exit, not exitCode: a connection abandoned at a deadline must not keep us alive.
  // Writes to pipes and files are synchronous on Linux, so nothing printed is cut off.
  .then((code) => process.exit(code));
