import { ArgumentError, type CliCommand, parseArguments } from './lib/arguments.js';
import { parseConnectionTarget } from './lib/connection-target.js';
import { checkConnection, createDatabase, dropDatabase } from './lib/database-admin.js';
import { EngineUserError, toNativeRpcError } from './lib/engine-errors.js';
import { EngineSession } from './lib/engine-session.js';
import { StdioJsonRpc } from './lib/json-rpc-stdio.js';
import { wasmEngineVersion } from './lib/wasm-engine.js';

/** How long the CLI gets to acknowledge a `print` request (it answers at once). */
const PRINT_ACK_TIMEOUT_MS = 30_000;
/** After SIGTERM, what is left to close gets this long (the native engine allows 4 s). */
const SHUTDOWN_TIMEOUT_MS = 4_000;

const HELP = `prisma-schema-engine: Prisma's schema engine (the wasm build in @prisma/schema-engine-wasm)
over @prisma/adapter-pg, speaking the native schema-engine binary's command line and JSON-RPC.

Use it through the Prisma CLI:  PRISMA_SCHEMA_ENGINE_BINARY=${process.argv[1]} npx prisma migrate status

  --datamodels, -d <file>    a Prisma schema file (repeatable)
  --datasource <json>        {"url": "...", "shadowDatabaseUrl": "..."} from prisma.config.ts
  cli can-connect-to-database | create-database | drop-database
  --version                  the engine's commit hash
With no cli command it serves JSON-RPC 2.0 on stdin/stdout, one message per line.`;

/** The entry point of bin/schema-engine.js. */
export async function main(argv: readonly string[]): Promise<void> {
  let invocation;
  try {
    invocation = parseArguments(argv);
  } catch (error) {
    if (!(error instanceof ArgumentError)) throw error;
    process.stderr.write(`prisma-schema-engine: ${error.message}\n\n${HELP}\n`);
    process.exit(2);
  }
  switch (invocation.kind) {
    case 'version':
      process.stdout.write(`schema-engine-cli ${wasmEngineVersion()}\n`);
      return;
    case 'help':
      process.stdout.write(`${HELP}\n`);
      return;
    case 'cli':
      return runCliCommand(invocation.command, invocation.datasource.url);
    case 'server':
      return serve(invocation.datamodelPaths, invocation.datasource);
  }
}

/**
 * The native engine's `cli` subcommands, with its output contract: JSON tracing lines on
 * stderr (the CLI skips the first and parses the rest), exit 0 on success; on failure an
 * ERROR line from target `schema_engine::logger` with `error_code` and `message` (the CLI
 * creates the database on P1003), exit 1.
 */
async function runCliCommand(command: CliCommand, url: string | undefined): Promise<void> {
  logLine('INFO', 'schema_engine', { message: 'Starting schema engine CLI' });
  try {
    if (!url) throw new EngineUserError(undefined, 'No datasource URL given (--datasource).');
    const target = parseConnectionTarget(url);
    let message: string;
    if (command === 'can-connect-to-database') {
      await checkConnection(target);
      message = 'Connection successful';
    } else if (command === 'create-database') {
      message = `Database '${await createDatabase(target)}' was successfully created.`;
    } else {
      await dropDatabase(target);
      message = 'The database was successfully dropped.';
    }
    logLine('INFO', 'schema_engine', { message });
  } catch (error) {
    const { data } = toNativeRpcError(error) as {
      data: { message: string; error_code?: string };
    };
    logLine('ERROR', 'schema_engine::logger', {
      is_panic: false,
      error_code: data.error_code ?? '',
      message: data.message,
    });
    process.exit(1);
  }
}

async function serve(
  datamodelPaths: string[],
  datasource: { url?: string; shadowDatabaseUrl?: string },
): Promise<void> {
  // The session prints through the RPC channel, which needs the session to answer requests.
  const printer: { rpc?: StdioJsonRpc } = {};
  const session = new EngineSession({
    datamodelPaths,
    datasource,
    print: async (content) => {
      await printer.rpc?.call('print', { content }, PRINT_ACK_TIMEOUT_MS);
    },
    log: (line) => process.stderr.write(`${line}\n`),
  });
  const rpc = new StdioJsonRpc(
    process.stdin,
    process.stdout,
    async (method, params) => {
      try {
        return await session.handle(method, params);
      } finally {
        // A Rust panic leaves the instance unusable; the native engine exits 101 on one.
        if (session.panicked) setImmediate(() => process.exit(101));
      }
    },
    toNativeRpcError,
  );
  printer.rpc = rpc;
  // The CLI stops the engine by closing stdin and, on Unix, sending SIGTERM right after.
  process.on('SIGTERM', () => {
    const deadline = setTimeout(() => process.exit(1), SHUTDOWN_TIMEOUT_MS);
    void session.close().finally(() => {
      clearTimeout(deadline);
      process.exit(0);
    });
  });
  logLine('INFO', 'schema_engine', { message: 'Starting schema engine RPC server (wasm)' });
  await rpc.serve();
  await session.close();
  process.exit(0);
}

function logLine(level: 'INFO' | 'ERROR', target: string, fields: Record<string, unknown>): void {
  process.stderr.write(
    `${JSON.stringify({ timestamp: new Date().toISOString(), level, fields, target })}\n`,
  );
}
