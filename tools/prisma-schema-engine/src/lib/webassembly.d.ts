// Node has WebAssembly at run time, but TypeScript declares it only in the DOM libraries,
// which this workspace does not load (lib es2023, types node). The members this tool uses:
declare namespace WebAssembly {
  type Exports = Record<string, unknown>;
  type ModuleImports = Record<string, unknown>;
  type Imports = Record<string, ModuleImports>;
  class Module {
    constructor(bytes: Uint8Array);
  }
  class Instance {
    constructor(module: Module, imports?: Imports);
    readonly exports: Exports;
  }
  /** What a Rust panic becomes once it traps (`unreachable`). */
  class RuntimeError extends Error {}
}
