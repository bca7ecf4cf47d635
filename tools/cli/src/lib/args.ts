import { parseArgs } from 'node:util';
import { DEFAULT_SCHEMA, validateSchemaName } from '@usagekit/db';
import type { OutboxState } from './outbox.js';

/** Bad command line: exit 1 with the message and a pointer to --help. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'USAGE';
}

export type Command =
  | { name: 'help' }
  | { name: 'migrate'; options: CommonOptions & { finishUpgrade: boolean } }
  | { name: 'status'; options: CommonOptions }
  | { name: 'outbox-list'; options: CommonOptions & { limit: number; state: OutboxState } }
  | {
      name: 'outbox-retry';
      options: CommonOptions & { reportIds: string[]; allPending: boolean; allRejected: boolean };
    };

export interface CommonOptions {
  databaseUrl: string;
  json: boolean;
  /** The whole command's deadline: connecting, every query, the migration lock. */
  timeoutMs: number;
  connectTimeoutMs: number;
  migrationsDir: string | undefined;
  /** usagekit's PostgreSQL schema (validated by @usagekit/db). */
  schema: string;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** migrate waits for another migrate (Prisma's advisory lock) and retries busy tables. */
export const DEFAULT_MIGRATE_TIMEOUT_MS = 300_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export const HELP_TEXT = `usagekit: operate usagekit on the database your fleet shares

Usage:
  usagekit migrate              apply usagekit's pending migrations (idempotent); moves a
                                database of the layout before the schema (tables in public)
                                into it, leaving views in public for replicas still old
  usagekit migrate --finish-upgrade
                                once every replica runs this version: drop those views and
                                usagekit's rows in public._prisma_migrations (idempotent)
  usagekit status               migrations, replicas, the advisory lock, periods, the outbox
  usagekit outbox list          pending reports, oldest first (--delivered: the latest
                                deliveries; --rejected: dead letters the receiver refused)
  usagekit outbox retry ID…     make the named reports due now; a rejected one becomes pending
                                again (--all-pending / --all-rejected: every one of those)

Options:
  --database-url URL       the database (default: $DATABASE_URL); never printed with its password
  --json                   one JSON document on stdout, for scripts
  --timeout-ms N           deadline for the whole command (default 30000; migrate 300000)
  --connect-timeout-ms N   deadline for connecting (default 10000)
  --schema NAME            usagekit's PostgreSQL schema (default ${DEFAULT_SCHEMA}); the same name
                           the fleet gives createPrismaClient
  --migrations-dir DIR     migrations to apply or compare (default: usagekit's prisma/migrations)
  --finish-upgrade         migrate: finish the upgrade from the layout before the schema
                           instead of applying migrations
  --limit N                outbox list: at most N reports (default 20)
  -h, --help               this text

Exit codes:
  0  ok (status: migrations current, no report failing delivery)
  1  usage error (bad flags, no database URL, a malformed report id)
  2  database unreachable, login refused, or the deadline passed
  3  migrations not current (pending, failed or changed), or migrate failed
     (--finish-upgrade included: e.g. the migration lock was not granted in time)
  4  telemetry needs attention (status: a pending report whose last delivery failed,
     or a rejected one (dead letter); outbox retry: an id that is neither pending nor
     rejected)
  5  any other failure (the message says what)
`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Parses argv (without node and the script) and the environment the CLI reads. */
export function parseCommand(argv: string[], env: NodeJS.ProcessEnv): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'database-url': { type: 'string' },
        json: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string' },
        'connect-timeout-ms': { type: 'string' },
        'migrations-dir': { type: 'string' },
        schema: { type: 'string' },
        limit: { type: 'string' },
        delivered: { type: 'boolean', default: false },
        rejected: { type: 'boolean', default: false },
        'all-pending': { type: 'boolean', default: false },
        'all-rejected': { type: 'boolean', default: false },
        'finish-upgrade': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0 || positionals[0] === 'help') return { name: 'help' };

  const [verb, sub, ...rest] = positionals;
  const name = commandName(verb, sub);
  const restPositionals = name.startsWith('outbox') ? rest : [sub, ...rest].filter(isDefined);
  if (name !== 'outbox-retry' && restPositionals.length > 0) {
    throw new UsageError(`unexpected argument "${restPositionals[0]}"`);
  }
  const databaseUrl = values['database-url'] ?? env['DATABASE_URL'];
  if (!databaseUrl) {
    throw new UsageError('no database: pass --database-url URL or set DATABASE_URL');
  }
  const common: CommonOptions = {
    databaseUrl,
    json: values.json,
    timeoutMs: positiveInteger(
      values['timeout-ms'],
      '--timeout-ms',
      name === 'migrate' ? DEFAULT_MIGRATE_TIMEOUT_MS : DEFAULT_TIMEOUT_MS,
    ),
    connectTimeoutMs: positiveInteger(
      values['connect-timeout-ms'],
      '--connect-timeout-ms',
      DEFAULT_CONNECT_TIMEOUT_MS,
    ),
    migrationsDir: values['migrations-dir'],
    schema: schemaName(values.schema),
  };
  if (values['finish-upgrade'] && name !== 'migrate') {
    throw new UsageError('--finish-upgrade belongs to migrate (usagekit migrate --finish-upgrade)');
  }
  switch (name) {
    case 'migrate':
      if (values['finish-upgrade'] && values['migrations-dir'] !== undefined) {
        throw new UsageError(
          'migrate --finish-upgrade applies no migrations: drop --migrations-dir',
        );
      }
      return { name, options: { ...common, finishUpgrade: values['finish-upgrade'] } };
    case 'status':
      return { name, options: common };
    case 'outbox-list':
      if (values.delivered && values.rejected) {
        throw new UsageError('outbox list: --delivered or --rejected, not both');
      }
      return {
        name,
        options: {
          ...common,
          limit: positiveInteger(values.limit, '--limit', 20),
          state: values.delivered ? 'delivered' : values.rejected ? 'rejected' : 'pending',
        },
      };
    case 'outbox-retry': {
      const malformed = restPositionals.find((id) => !UUID.test(id));
      if (malformed) throw new UsageError(`not a report id (a UUID): "${malformed}"`);
      const choices =
        (restPositionals.length > 0 ? 1 : 0) +
        (values['all-pending'] ? 1 : 0) +
        (values['all-rejected'] ? 1 : 0);
      if (choices !== 1) {
        throw new UsageError(
          'outbox retry: name report ids, or pass --all-pending or --all-rejected (one of them)',
        );
      }
      return {
        name,
        options: {
          ...common,
          reportIds: restPositionals.map((id) => id.toLowerCase()),
          allPending: values['all-pending'],
          allRejected: values['all-rejected'],
        },
      };
    }
  }
}

function commandName(
  verb: string | undefined,
  sub: string | undefined,
): 'migrate' | 'status' | 'outbox-list' | 'outbox-retry' {
  if (verb === 'migrate' || verb === 'status') return verb;
  if (verb === 'outbox') {
    if (sub === 'list' || sub === 'retry') return `outbox-${sub}`;
    throw new UsageError(`outbox: expected "list" or "retry", got ${sub ? `"${sub}"` : 'nothing'}`);
  }
  throw new UsageError(`unknown command "${verb}"`);
}

function positiveInteger(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed <= 0) {
    throw new UsageError(`${flag} must be a positive integer, got "${value}"`);
  }
  return parsed;
}

function schemaName(value: string | undefined): string {
  try {
    return validateSchemaName(value, '--schema');
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function isDefined<T>(value: T | undefined): value is T {
  return value !== undefined;
}
