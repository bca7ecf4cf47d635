#!/usr/bin/env node
// Prisma's schema engine for machines where the native binary cannot be downloaded: the
// Prisma CLI runs this file through PRISMA_SCHEMA_ENGINE_BINARY, exactly as it runs
// node_modules/@prisma/engines/schema-engine-<platform>. See ../README.md.
// Loads the TypeScript sources directly (tools/scripts/register-ts.js says how). A workspace
// script, not a project, so the module-boundary rule has nothing to check here.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../scripts/register-ts.js').register();

require('../src/main.ts')
  .main(process.argv.slice(2))
  .catch((error) => {
    process.stderr.write(`prisma-schema-engine: ${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  });
