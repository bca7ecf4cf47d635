import { readFileSync } from 'node:fs';
import { bindMigrationAwareSqlAdapterFactory } from '@prisma/driver-adapter-utils';
import type { SqlMigrationAwareDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import type { SchemaEngine } from '@prisma/schema-engine-wasm';

export type WasmSchemaEngine = SchemaEngine;

interface WasmBindgenRuntime {
  SchemaEngine: typeof SchemaEngine;
  __wbg_set_wasm(exports: WebAssembly.Exports): void;
}

interface PanicRegistry {
  set_message(message: string): void;
}

let lastPanicMessage: string | undefined;
let engineClass: typeof SchemaEngine | undefined;

/**
 * The Rust side reports a panic's message through this global before it traps with
 * `unreachable` (schema-engine-wasm's register_panic_hook); without it the message is lost.
 */
function installPanicRegistry(): void {
  const registry: PanicRegistry = {
    set_message(message) {
      lastPanicMessage = message;
    },
  };
  (globalThis as { PRISMA_WASM_PANIC_REGISTRY?: PanicRegistry }).PRISMA_WASM_PANIC_REGISTRY =
    registry;
}

/** The message of the last Rust panic, if the engine panicked. */
export function takePanicMessage(): string | undefined {
  const message = lastPanicMessage;
  lastPanicMessage = undefined;
  return message;
}

/**
 * Instantiates the wasm module once per process, the way Prisma's own loader did
 * (@prisma/internals WasmSchemaEngineLoader, Prisma 6): the package's entry point imports the
 * `.wasm` file as a module, which Node cannot do, so we compile the bytes ourselves and hand
 * the instance to the wasm-bindgen glue. wasm-bindgen keeps one instance per glue module;
 * loading it twice breaks it, hence the cache.
 */
function loadEngineClass(): typeof SchemaEngine {
  if (engineClass) return engineClass;
  installPanicRegistry();
  // The glue is an ES module; Node 20.19+ (what Prisma 7 requires) loads it through require.
  const runtime = require('@prisma/schema-engine-wasm/schema_engine_bg') as WasmBindgenRuntime;
  const wasmPath = require
    .resolve('@prisma/schema-engine-wasm/schema_engine_bg')
    .replace(/\.js$/, '.wasm');
  const module = new WebAssembly.Module(readFileSync(wasmPath));
  const instance = new WebAssembly.Instance(module, {
    './schema_engine_bg.js': runtime as unknown as WebAssembly.ModuleImports,
  });
  runtime.__wbg_set_wasm(instance.exports);
  (instance.exports.__wbindgen_start as () => void)();
  engineClass = runtime.SchemaEngine;
  return engineClass;
}

export interface StartWasmEngineOptions {
  /** Prisma schema files as [path, content] pairs (the native engine's --datamodels). */
  datamodels: Array<[string, string]> | undefined;
  adapterFactory: SqlMigrationAwareDriverAdapterFactory;
  /** Receives the engine's tracing events, one JSON line each. */
  onLog: (line: string) => void;
}

/** Starts the engine; it connects to the database at once (the native one connects lazily). */
export async function startWasmEngine(options: StartWasmEngineOptions): Promise<WasmSchemaEngine> {
  const SchemaEngineClass = loadEngineClass();
  return SchemaEngineClass.new(
    { datamodels: options.datamodels },
    options.onLog,
    bindMigrationAwareSqlAdapterFactory(options.adapterFactory),
  );
}

/** The commit of prisma-engines the wasm build was made from (what `--version` prints). */
export function wasmEngineVersion(): string {
  loadEngineClass();
  const runtime = require('@prisma/schema-engine-wasm/schema_engine_bg') as { version(): string };
  return runtime.version();
}
