import { readFileSync } from 'node:fs';
import { type ConnectionTarget, parseConnectionTarget } from './connection-target.js';
import { createDatabase } from './database-admin.js';
import { EngineUserError, isWasmPanic } from './engine-errors.js';
import { PgSchemaEngineAdapterFactory } from './pg-adapter-factory.js';
import { toConnectionError } from './pg-errors.js';
import { startWasmEngine, type WasmSchemaEngine } from './wasm-engine.js';

/** The native engine's --datasource: URLs from prisma.config.ts. */
export interface DatasourceUrls {
  url?: string;
  shadowDatabaseUrl?: string;
}

export interface EngineSessionOptions {
  datamodelPaths: string[];
  datasource: DatasourceUrls;
  /** Sends text to the CLI's stdout (the native engine's `print` request). */
  print: (content: string) => Promise<void>;
  /** One tracing event as a JSON line (the native engine logs these to stderr). */
  log: (line: string) => void;
}

/** JSON-RPC methods that go to the wasm engine under the same name. */
const PASSED_THROUGH = new Set([
  'applyMigrations',
  'createMigration',
  'dbExecute',
  'devDiagnostic',
  'diagnoseMigrationHistory',
  'ensureConnectionValidity',
  'evaluateDataLoss',
  'introspect',
  'introspectSql',
  'markMigrationApplied',
  'markMigrationRolledBack',
  'reset',
  'schemaPush',
]);

type EngineMethod = (params: unknown) => Promise<unknown>;

/**
 * One CLI session: the native engine's JSON-RPC methods answered by the wasm engine. The
 * engine starts on the first method that needs the database (it connects when constructed),
 * so `--version`-like calls and a bad URL cost nothing until used, as with the native engine.
 */
export class EngineSession {
  private engine: Promise<WasmSchemaEngine> | undefined;
  private readonly connection:
    { target: ConnectionTarget; factory: PgSchemaEngineAdapterFactory } | undefined;
  private broken = false;

  constructor(private readonly options: EngineSessionOptions) {
    if (options.datasource.url) {
      const target = parseConnectionTarget(options.datasource.url);
      this.connection = {
        target,
        factory: new PgSchemaEngineAdapterFactory(target, options.datasource.shadowDatabaseUrl),
      };
    }
  }

  async handle(method: string, params: unknown): Promise<unknown> {
    if (this.broken) {
      throw new EngineUserError(undefined, 'The wasm schema engine panicked earlier; restart it.');
    }
    try {
      return await this.dispatch(method, params);
    } catch (error) {
      if (isWasmPanic(error)) this.broken = true;
      throw error;
    }
  }

  /** True after a Rust panic: the instance is unusable and the process should exit (101). */
  get panicked(): boolean {
    return this.broken;
  }

  async close(): Promise<void> {
    const engine = await this.engine?.catch(() => undefined);
    if (engine && !this.broken) engine.free();
    await this.connection?.factory.close();
  }

  private async dispatch(method: string, params: unknown): Promise<unknown> {
    if (method === 'createDatabase') {
      const url = connectionStringOf(params) ?? this.requireConnection().target.url;
      return { databaseName: await createDatabase(parseConnectionTarget(url)) };
    }
    if (method === 'getDatabaseVersion') return (await this.start()).version();
    if (method === 'debugPanic') return (await this.start()).debugPanic();
    if (method === 'diff') return this.diff(params);
    if (PASSED_THROUGH.has(method)) {
      const engine = await this.start();
      const call = (engine as unknown as Record<string, EngineMethod>)[method] as EngineMethod;
      // Called as a method: wasm-bindgen needs `this` to find the Rust object.
      return call.call(engine, params);
    }
    throw new EngineUserError(
      undefined,
      `The wasm schema engine does not implement the JSON-RPC method "${method}".`,
    );
  }

  /**
   * The native engine prints a diff through the CLI (a `print` request) and answers with the
   * exit code only; the wasm one returns the text. We print it the native way, so `migrate
   * diff` and its `--output` capture behave the same.
   */
  private async diff(params: unknown): Promise<unknown> {
    const engine = await this.start();
    const result = await engine.diff(params as Parameters<WasmSchemaEngine['diff']>[0]);
    if (result.stdout) await this.options.print(result.stdout.replace(/\n$/, ''));
    return { exitCode: result.exitCode };
  }

  private start(): Promise<WasmSchemaEngine> {
    this.engine ??= this.startEngine();
    return this.engine;
  }

  private async startEngine(): Promise<WasmSchemaEngine> {
    const { target, factory } = this.requireConnection();
    const datamodels = this.options.datamodelPaths.map(
      (path) => [path, readFileSync(path, 'utf8')] as [string, string],
    );
    try {
      return await startWasmEngine({
        datamodels: datamodels.length > 0 ? datamodels : undefined,
        adapterFactory: factory,
        onLog: this.options.log,
      });
    } catch (error) {
      throw toConnectionError(error, target);
    }
  }

  private requireConnection(): { target: ConnectionTarget; factory: PgSchemaEngineAdapterFactory } {
    if (!this.connection) {
      throw new EngineUserError(
        undefined,
        'No datasource URL: set `datasource.url` in prisma.config.ts (the CLI passes it as --datasource).',
      );
    }
    return this.connection;
  }
}

function connectionStringOf(params: unknown): string | undefined {
  const datasource = (params as { datasource?: { tag?: string; url?: string } } | undefined)
    ?.datasource;
  return datasource?.tag === 'ConnectionString' ? datasource.url : undefined;
}
