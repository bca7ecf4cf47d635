import {
  createPrismaClient,
  Deadline,
  disconnectWithin,
  DeadlineExceededError,
  finishSchemaUpgrade,
  migrate,
  MigrationChecksumMismatchError,
  MigrationFailedError,
  MigrationLockTimeoutError,
  redactDatabaseUrl,
} from '@usagekit/db';
import { retryRejectedReports } from '@usagekit/telemetry';
import type { Client } from 'pg';
import { HELP_TEXT, parseCommand, type Command, type CommonOptions } from './lib/args.js';
import { connect, describe, isUnreachable } from './lib/connection.js';
import { ExitCode, type ExitCodeValue } from './lib/exit-codes.js';
import {
  hasDeadLetters,
  listOutbox,
  makePendingDue,
  type RetryResult,
  type RetryTarget,
} from './lib/outbox.js';
import { renderFinished, renderOutbox, renderRetry, renderStatus } from './lib/render.js';
import { collectStatus } from './lib/status.js';
import { usagekitTables } from './lib/tables.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

/**
 * Runs one command and returns its exit code; never throws. Errors go to stderr as one line
 * (`usagekit <command>: <what>`), with the database URL's password removed.
 */
export async function runCli(argv: string[], io: CliIo): Promise<ExitCodeValue> {
  let command: Command;
  try {
    command = parseCommand(argv, io.env);
  } catch (error) {
    io.stderr(`usagekit: ${(error as Error).message}\nRun "usagekit --help" for usage.\n`);
    return ExitCode.usage;
  }
  if (command.name === 'help') {
    io.stdout(HELP_TEXT);
    return ExitCode.ok;
  }
  const options = command.options;
  const deadline = new Deadline(`usagekit ${command.name}`, options.timeoutMs);
  try {
    return await deadline.race(run(command, io, deadline));
  } catch (error) {
    const code = exitCodeFor(error);
    const text = describe(error, options.databaseUrl);
    // Say which database, redacted, unless the message already does (connect()'s does).
    const database = redactDatabaseUrl(options.databaseUrl);
    const where = text.includes(database) ? '' : `${database}: `;
    io.stderr(`usagekit ${command.name.replace('-', ' ')}: ${where}${text}\n`);
    return code;
  } finally {
    deadline.clear();
  }
}

function exitCodeFor(error: unknown): ExitCodeValue {
  if (
    error instanceof MigrationFailedError ||
    error instanceof MigrationChecksumMismatchError ||
    error instanceof MigrationLockTimeoutError
  )
    return ExitCode.migrations;
  if (error instanceof DeadlineExceededError || isUnreachable(error)) return ExitCode.unreachable;
  return ExitCode.failure;
}

async function run(command: Exclude<Command, { name: 'help' }>, io: CliIo, deadline: Deadline) {
  const options = command.options;
  const output = (json: unknown, text: string) =>
    io.stdout(options.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  const database = redactDatabaseUrl(options.databaseUrl);
  if (command.name === 'migrate' && command.options.finishUpgrade) {
    const finished = await finishSchemaUpgrade({
      databaseUrl: options.databaseUrl,
      connectTimeoutMs: options.connectTimeoutMs,
      schema: options.schema,
    });
    output(
      { database, schema: options.schema, finished },
      renderFinished(database, options.schema, finished),
    );
    return ExitCode.ok;
  }
  if (command.name === 'migrate') {
    const { applied, upgraded } = await migrate({
      databaseUrl: options.databaseUrl,
      migrationsDir: options.migrationsDir,
      connectTimeoutMs: options.connectTimeoutMs,
      schema: options.schema,
    });
    const moved = upgraded
      ? `moved ${upgraded.tables.length} table(s) from public into schema ${options.schema}` +
        (upgraded.legacyViews
          ? ' (views left in public for replicas still on the old version: run `usagekit migrate --finish-upgrade` once all run this one)\n'
          : '\n')
      : '';
    output(
      { database, schema: options.schema, applied, ...(upgraded ? { upgraded } : {}) },
      moved +
        (applied.length === 0
          ? `${database} (schema ${options.schema}): migrations current, nothing to apply\n`
          : `${database} (schema ${options.schema}): applied ${applied.length} migration(s)\n${applied.map((name) => `  ${name}\n`).join('')}`),
    );
    return ExitCode.ok;
  }
  return withClient(options, deadline, async (client) => {
    const tables = usagekitTables(options.schema);
    switch (command.name) {
      case 'status': {
        const status = await collectStatus(client, tables, options.migrationsDir, database);
        output(status, renderStatus(status));
        if (!status.migrations.current) return ExitCode.migrations;
        const attention = status.outbox.failing.length > 0 || status.outbox.rejected > 0;
        return attention ? ExitCode.telemetry : ExitCode.ok;
      }
      case 'outbox-list': {
        const deadLetters = await hasDeadLetters(client, tables);
        const reports = await listOutbox(client, tables, command.options, deadLetters);
        output({ database, reports }, renderOutbox(reports, command.options.state));
        return ExitCode.ok;
      }
      case 'outbox-retry': {
        const { allPending, allRejected, reportIds } = command.options;
        const target: RetryTarget = allPending
          ? { allPending: true }
          : allRejected
            ? { allRejected: true }
            : { reportIds };
        const deadLetters = await hasDeadLetters(client, tables);
        const ids = 'reportIds' in target ? target.reportIds : null;
        const due =
          'allRejected' in target ? [] : await makePendingDue(client, tables, ids, deadLetters);
        const revived =
          deadLetters && !('allPending' in target)
            ? await reviveRejected(options, ids, deadline)
            : [];
        const found = new Set([...due, ...revived]);
        const result: RetryResult = {
          due,
          revived,
          notPending: ids === null ? [] : ids.filter((id) => !found.has(id)),
        };
        output({ database, ...result }, renderRetry(result));
        return result.notPending.length > 0 ? ExitCode.telemetry : ExitCode.ok;
      }
    }
  });
}

/**
 * Rejected reports (dead letters) become pending again through @usagekit/telemetry's
 * retryRejectedReports(), the one definition of what that means (refusals reset, due now), on
 * a usagekit client of one connection, closed within a second whatever happens.
 */
async function reviveRejected(
  options: CommonOptions,
  reportIds: string[] | null,
  deadline: Deadline,
): Promise<string[]> {
  const prisma = createPrismaClient({
    databaseUrl: options.databaseUrl,
    schema: options.schema,
    maxConnections: 1,
    connectTimeoutMs: options.connectTimeoutMs,
  });
  try {
    const result = await deadline.race(
      retryRejectedReports(prisma, reportIds === null ? {} : { reportIds }),
    );
    return result.reportIds;
  } finally {
    await disconnectWithin(prisma, 1_000);
  }
}

async function withClient(
  options: CommonOptions,
  deadline: Deadline,
  work: (client: Client) => Promise<ExitCodeValue>,
): Promise<ExitCodeValue> {
  const client = await connect(options, deadline);
  try {
    return await work(client);
  } finally {
    // Bounded: a connection that went silent is not waited for (the process exits anyway).
    await Promise.race([
      client.end().catch(() => undefined),
      new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]);
  }
}
