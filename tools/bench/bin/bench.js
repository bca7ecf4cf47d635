#!/usr/bin/env node
// `npm run bench -- [flags]` lands here (see the "bench" target in ../package.json).
// Run it with --expose-gc so the tracker's heap figures are exact; without it they are skipped.
// Loads the TypeScript sources directly (tools/scripts/register-ts.js says how). A workspace
// script, not a project, so the module-boundary rule has nothing to check here.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../scripts/register-ts.js').register();
require('../src/main.ts')
  .runCli(process.argv.slice(2))
  .then((code) => process.exit(code));
