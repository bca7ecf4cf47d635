import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** This tool's executable: what PRISMA_SCHEMA_ENGINE_BINARY points at to use it. */
export const WASM_SCHEMA_ENGINE_BINARY = resolve(__dirname, '../../bin/schema-engine.js');

export interface SchemaEngineChoice {
  kind: 'native' | 'wasm';
  path: string;
}

/**
 * The native engine, if `prisma`'s install step could download it
 * (node_modules/@prisma/engines/schema-engine-<platform>); undefined on machines like ours
 * where it cannot be.
 */
export function installedNativeSchemaEngine(): string | undefined {
  try {
    const enginesDir = dirname(require.resolve('@prisma/engines/package.json'));
    const name = readdirSync(enginesDir).find((file) => file.startsWith('schema-engine'));
    return name ? join(enginesDir, name) : undefined;
  } catch {
    return undefined;
  }
}

/** The native engine where it is installed (the real thing), else this tool. */
export function chooseSchemaEngine(): SchemaEngineChoice {
  const native = installedNativeSchemaEngine();
  return native
    ? { kind: 'native', path: native }
    : { kind: 'wasm', path: WASM_SCHEMA_ENGINE_BINARY };
}
