export {
  chooseSchemaEngine,
  installedNativeSchemaEngine,
  WASM_SCHEMA_ENGINE_BINARY,
} from './lib/engine-binary.js';
export type { SchemaEngineChoice } from './lib/engine-binary.js';
export { PrismaCliTimeoutError, runPrisma } from './lib/prisma-cli.js';
export type { PrismaCliResult, RunPrismaOptions } from './lib/prisma-cli.js';
export { parseConnectionTarget } from './lib/connection-target.js';
export type { ConnectionTarget } from './lib/connection-target.js';
