import type { RpcError } from './json-rpc-stdio.js';
import { takePanicMessage } from './wasm-engine.js';

/** The code and message the native engine's JSON-RPC server puts on every error. */
const ENGINE_ERROR_CODE = 4466;
const ENGINE_ERROR_MESSAGE = 'An error happened. Check the data field for details.';

/** An error with a Prisma error code, raised by this tool itself (createDatabase, arguments). */
export class EngineUserError extends Error {
  constructor(
    readonly errorCode: string | undefined,
    message: string,
    readonly meta?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** True once the wasm instance has trapped: no call on it is safe after that. */
export function isWasmPanic(error: unknown): boolean {
  return error instanceof WebAssembly.RuntimeError;
}

/**
 * Errors in the shape the native engine answers with ({ is_panic, message, error_code, meta }
 * under `data`), which is what the CLI reads to print "Error: P3018 …" or report a panic.
 * The wasm engine throws `SchemaConnectorError`s whose `code` is set for user-facing errors
 * (P1012 for a schema that does not validate, P3006…) and whose message ends in a span trace
 * ("   0: sql_schema_connector::…"); the trace stays in the logs, not in what the user reads.
 * A migration script that fails comes back without a code (the wasm connector wraps it as
 * "external connector error"); the native engine calls that P3018 and names the migration,
 * so we do the same from the span trace.
 */
export function toNativeRpcError(error: unknown): RpcError {
  if (isWasmPanic(error)) {
    const message = takePanicMessage() ?? (error as Error).message;
    return rpcError({ is_panic: true, message, error_code: undefined });
  }
  if (error instanceof EngineUserError) {
    return rpcError({
      is_panic: false,
      message: error.message,
      error_code: error.errorCode,
      meta: error.meta,
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^P\d{4}$/.test(code)) {
    return rpcError({ is_panic: false, message: withoutSpanTrace(message), error_code: code });
  }
  const failedMigration = /apply_script\s+with migration_name="([^"]+)"/.exec(message)?.[1];
  if (failedMigration) {
    const databaseError = withoutSpanTrace(message).replace(/^external connector error\n/, '');
    return rpcError({
      is_panic: false,
      error_code: 'P3018',
      message:
        'A migration failed to apply. New migrations cannot be applied before the error is ' +
        'recovered from. Read more about how to resolve migration issues in a production ' +
        'database: https://pris.ly/d/migrate-resolve\n\n' +
        `Migration name: ${failedMigration}\n\nDatabase error:\n${databaseError}`,
      meta: { migration_name: failedMigration, database_error: databaseError },
    });
  }
  return rpcError({ is_panic: false, message: withoutSpanTrace(message), error_code: undefined });
}

function rpcError(data: {
  is_panic: boolean;
  message: string;
  error_code: string | undefined;
  meta?: Record<string, unknown>;
}): RpcError {
  return {
    code: ENGINE_ERROR_CODE,
    message: ENGINE_ERROR_MESSAGE,
    data: { ...data, meta: data.meta ?? null },
  };
}

/** Drops the tracing span list the wasm connector appends ("\n   0: module::fn …"). */
export function withoutSpanTrace(message: string): string {
  const cut = message.search(/\n\s+0: /);
  return (cut === -1 ? message : message.slice(0, cut)).trimEnd();
}
