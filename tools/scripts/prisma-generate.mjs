#!/usr/bin/env node
// Runs `prisma generate` so that it works on machines that cannot download Prisma's
// native schema engine. `generate` never runs that engine, but the CLI insists on a file
// for it before it starts; when none is installed and the caller did not choose one, we
// point PRISMA_SCHEMA_ENGINE_BINARY at this script for this one command. Where the engine
// is installed (or the user set the variable), Prisma runs exactly as usual.
// Arguments are passed on: `node tools/scripts/prisma-generate.mjs --config
// packages/demo-service/prisma.config.ts` generates a host package's own client the same way.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const workspaceRoot = fileURLToPath(new URL('../..', import.meta.url));

function installedSchemaEngine() {
  try {
    const enginesDir = dirname(require.resolve('@prisma/engines/package.json'));
    return readdirSync(enginesDir).find((name) => name.startsWith('schema-engine'));
  } catch {
    return undefined;
  }
}

const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY && !installedSchemaEngine()) {
  env.PRISMA_SCHEMA_ENGINE_BINARY = fileURLToPath(import.meta.url);
  console.log('prisma-generate: no schema engine installed; generate does not need one.');
}

const prismaCli = require.resolve('prisma/build/index.js');
if (!existsSync(prismaCli)) throw new Error(`Prisma CLI not found at ${prismaCli}; run npm ci`);
const result = spawnSync(process.execPath, [prismaCli, 'generate', ...process.argv.slice(2)], {
  cwd: workspaceRoot,
  env,
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
