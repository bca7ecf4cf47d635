#!/usr/bin/env node
// `node tools/prisma-schema-engine/bin/prisma.js <prisma args>`: the workspace's Prisma CLI
// with a schema engine that runs here. Uses the native engine when it is installed (or when
// PRISMA_SCHEMA_ENGINE_BINARY is already set), else this tool's wasm engine. The Nx targets
// (`npx nx run @usagekit/prisma-schema-engine:migrate-status`, …) call this.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../scripts/register-ts.js').register();
const { spawnSync } = require('node:child_process');
const { chooseSchemaEngine } = require('../src/lib/engine-binary.ts');

const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY) {
  const engine = chooseSchemaEngine();
  if (engine.kind === 'wasm') env.PRISMA_SCHEMA_ENGINE_BINARY = engine.path;
}
const result = spawnSync(
  process.execPath,
  [require.resolve('prisma/build/index.js'), ...process.argv.slice(2)],
  { env, stdio: 'inherit' },
);
process.exit(result.status ?? 1);
