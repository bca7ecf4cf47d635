import { parseArgs } from 'node:util';
import { redactDatabaseUrl } from '@usagekit/db';

/** Everything one simulation run needs. Durations are milliseconds, rates per second. */
export interface SimulatorOptions {
  /** Replica processes to fork. */
  replicas: number;
  /** How long traffic runs, from the moment every replica is ready. */
  durationMs: number;
  /** Each replica's flush loop interval. */
  flushIntervalMs: number;
  /** The telemetry period (the reporter's snapshot frequency). */
  periodMs: number;
  /**
   * Each replica client's statement deadline (createPrismaClient's statementDeadlineMs): a
   * query with no answer by then is abandoned and retried on a fresh connection. The
   * simulator compresses time (a 5 s period stands for coder's 30 min, a 1 s flush for its
   * minute), so it shortens the library's 15 s default too: 9 s lets a --chaos partition end
   * by deadline well before the partition heals (at 13.5 s), while the stall still lasts
   * longer than the stall alert's five flush intervals, so --prometheus sees it fire.
   */
  statementDeadlineMs: number;
  /** Requests generated per second by each replica. */
  ratePerReplica: number;
  /** Distinct workspaces and users the traffic draws from (shared by all replicas). */
  workspaces: number;
  users: number;
  lockMode: 'shared' | 'exclusive';
  /** Print the report as JSON on stdout instead of text. */
  json: boolean;
  /**
   * Terminate random backends, partition the replicas' network, hold the cutover lock, take
   * the collector down, and SIGKILL one replica.
   */
  chaos: boolean;
  /**
   * Start a real Prometheus (Debian's /usr/bin/prometheus) scraping every replica with the
   * shipped alert rules, and report which alerts fired and when.
   */
  prometheus: boolean;
  /**
   * A PostgreSQL server to use instead of starting embedded PostgreSQL. The simulator creates
   * a database of its own there and drops it afterwards.
   */
  databaseUrl?: string;
  /** Keep the simulator's database afterwards (to inspect it). */
  keepDatabase: boolean;
  help: boolean;
}

export const DEFAULT_OPTIONS = {
  replicas: 4,
  durationMs: 30_000,
  flushIntervalMs: 1_000,
  periodMs: 5_000,
  statementDeadlineMs: 9_000,
  // Modest on purpose: four replicas, the reporter and PostgreSQL share two cores on the
  // machines this runs on, and a run must be reliable there. `--rate 2000` is fine on a laptop.
  ratePerReplica: 200,
  workspaces: 40,
  users: 12,
  lockMode: 'shared',
  json: false,
  chaos: false,
  prometheus: false,
  keepDatabase: false,
  help: false,
} as const satisfies Omit<SimulatorOptions, 'databaseUrl'>;

/** A bad command line. The CLI prints the message and the usage line and exits with 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'USAGE';
}

export const HELP_TEXT = `usagekit simulator: a fleet of replica processes counting boundary usage on PostgreSQL,
one telemetry reporter per period and a collector, then an account that must balance:
requests generated = flushed = reported.

Usage: npm start -- [flags]        (or: node tools/simulator/bin/run.js [flags])

Flags (durations take ms, s or m; a bare number means seconds):
  --replicas N           replica processes                          (default ${DEFAULT_OPTIONS.replicas})
  --duration D           how long traffic runs                      (default ${DEFAULT_OPTIONS.durationMs / 1000}s)
  --flush-interval D     each replica's flush interval              (default ${DEFAULT_OPTIONS.flushIntervalMs / 1000}s)
  --period D             telemetry period (snapshot frequency)      (default ${DEFAULT_OPTIONS.periodMs / 1000}s)
  --statement-deadline D each replica client's statement deadline   (default ${DEFAULT_OPTIONS.statementDeadlineMs / 1000}s; library: 15s)
  --rate N               requests per second per replica            (default ${DEFAULT_OPTIONS.ratePerReplica})
  --workspaces N         distinct workspaces in the traffic         (default ${DEFAULT_OPTIONS.workspaces})
  --users N              distinct users (workspace owners)          (default ${DEFAULT_OPTIONS.users})
  --lock-mode MODE       shared (writers share the lock) or exclusive (coder's protocol)
                                                                    (default ${DEFAULT_OPTIONS.lockMode})
  --chaos                terminate random backends (pg_terminate_backend), fail some POSTs,
                         partition the replicas' connections (existing ones go silent, new
                         ones hang for a few seconds), hold the cutover lock, take the
                         collector down for a while, and SIGKILL one replica; only that
                         replica's unflushed requests may be missing
  --prometheus           start a real Prometheus (if installed) that scrapes every replica's
                         /metrics with the shipped alert rules; report which alerts fired
  --json                 print the report as JSON on stdout
  --database-url URL     use this PostgreSQL server instead of embedded PostgreSQL; the
                         simulator creates its own database there and drops it afterwards
                         (default: $DATABASE_URL, else embedded PostgreSQL)
  --keep-database        with --database-url: do not drop the simulator's database at the end
  -h, --help             show this help

Exit code: 0 when the account balances, 1 when it does not (or the run failed), 2 for bad flags.
Ctrl-C ends the run early and still prints the report; a second Ctrl-C aborts.`;

const LIMITS = {
  replicas: { min: 1, max: 64 },
  ratePerReplica: { min: 0, max: 100_000 },
  workspaces: { min: 1, max: 1_000_000 },
  users: { min: 1, max: 1_000_000 },
  durationMs: { min: 500, max: 24 * 3_600_000 },
  flushIntervalMs: { min: 20, max: 3_600_000 },
  periodMs: { min: 200, max: 24 * 3_600_000 },
  statementDeadlineMs: { min: 100, max: 3_600_000 },
} as const;

/**
 * Parses the command line. Throws UsageError with a message that names the flag and says what
 * it accepts. `env` supplies DATABASE_URL when --database-url is absent.
 */
export function parseOptions(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
): SimulatorOptions {
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(argv);
  } catch (error) {
    throw new UsageError(describeParseError(error));
  }
  const { values, positionals } = parsed;
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[0])}; flags start with --`,
    );
  }
  const lockMode = values['lock-mode'] ?? DEFAULT_OPTIONS.lockMode;
  if (lockMode !== 'shared' && lockMode !== 'exclusive') {
    throw new UsageError(
      `--lock-mode must be shared or exclusive, got ${JSON.stringify(lockMode)}`,
    );
  }
  const options: SimulatorOptions = {
    replicas: integerFlag('--replicas', values.replicas, DEFAULT_OPTIONS.replicas, LIMITS.replicas),
    durationMs: durationFlag(
      '--duration',
      values.duration,
      DEFAULT_OPTIONS.durationMs,
      LIMITS.durationMs,
    ),
    flushIntervalMs: durationFlag(
      '--flush-interval',
      values['flush-interval'],
      DEFAULT_OPTIONS.flushIntervalMs,
      LIMITS.flushIntervalMs,
    ),
    periodMs: durationFlag('--period', values.period, DEFAULT_OPTIONS.periodMs, LIMITS.periodMs),
    statementDeadlineMs: durationFlag(
      '--statement-deadline',
      values['statement-deadline'],
      DEFAULT_OPTIONS.statementDeadlineMs,
      LIMITS.statementDeadlineMs,
    ),
    ratePerReplica: integerFlag(
      '--rate',
      values.rate,
      DEFAULT_OPTIONS.ratePerReplica,
      LIMITS.ratePerReplica,
    ),
    workspaces: integerFlag(
      '--workspaces',
      values.workspaces,
      DEFAULT_OPTIONS.workspaces,
      LIMITS.workspaces,
    ),
    users: integerFlag('--users', values.users, DEFAULT_OPTIONS.users, LIMITS.users),
    lockMode,
    json: values.json ?? false,
    chaos: values.chaos ?? false,
    prometheus: values.prometheus ?? false,
    databaseUrl: databaseUrlFlag(values['database-url'] ?? emptyToUndefined(env['DATABASE_URL'])),
    keepDatabase: values['keep-database'] ?? false,
    help: values.help ?? false,
  };
  if (options.chaos && options.replicas < 2) {
    throw new UsageError('--chaos kills one replica, so it needs --replicas 2 or more');
  }
  return options;
}

function parseFlags(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: true,
    options: {
      replicas: { type: 'string' },
      duration: { type: 'string' },
      'flush-interval': { type: 'string' },
      period: { type: 'string' },
      'statement-deadline': { type: 'string' },
      rate: { type: 'string' },
      workspaces: { type: 'string' },
      users: { type: 'string' },
      'lock-mode': { type: 'string' },
      json: { type: 'boolean' },
      chaos: { type: 'boolean' },
      prometheus: { type: 'boolean' },
      'database-url': { type: 'string' },
      'keep-database': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

/** node:util's messages are good but long; keep their substance, name the flag first. */
function describeParseError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: string }).code;
  const unknown = /Unknown option '([^']+)'/.exec(message);
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
    return `unknown flag ${unknown[1]}`;
  }
  const missing = /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/.exec(message);
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && missing) {
    return `${missing[1]} needs a value`;
  }
  const ambiguous = /Option '(--[\w-]+)' argument is ambiguous/.exec(message);
  if (ambiguous)
    return `${ambiguous[1]} needs a value (write ${ambiguous[1]}=VALUE for one that starts with -)`;
  const noValue = /Option '(--[\w-]+)' does not take an argument/.exec(message);
  if (noValue) return `${noValue[1]} is a switch and takes no value`;
  return message;
}

function integerFlag(
  flag: string,
  raw: string | undefined,
  fallback: number,
  limits: { min: number; max: number },
): number {
  if (raw === undefined) return fallback;
  const trimmed = raw.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw new UsageError(`${flag} must be a whole number, got ${JSON.stringify(raw)}`);
  }
  const value = Number(trimmed);
  if (value < limits.min || value > limits.max) {
    throw new UsageError(`${flag} must be between ${limits.min} and ${limits.max}, got ${value}`);
  }
  return value;
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)?$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000 } as const;

/** "500ms", "1.5s", "2m", or a bare number of seconds. */
export function parseDurationMs(raw: string): number | undefined {
  const match = DURATION.exec(raw.trim());
  if (!match) return undefined;
  const unit = (match[2] ?? 's') as keyof typeof UNIT_MS;
  return Math.round(Number(match[1]) * UNIT_MS[unit]);
}

function durationFlag(
  flag: string,
  raw: string | undefined,
  fallback: number,
  limits: { min: number; max: number },
): number {
  if (raw === undefined) return fallback;
  const value = parseDurationMs(raw);
  if (value === undefined) {
    throw new UsageError(
      `${flag} must be a duration such as 500ms, 5s, 1.5s or 2m (a bare number means seconds), got ${JSON.stringify(raw)}`,
    );
  }
  if (value < limits.min || value > limits.max) {
    throw new UsageError(
      `${flag} must be between ${formatLimit(limits.min)} and ${formatLimit(limits.max)}, got ${formatLimit(value)}`,
    );
  }
  return value;
}

function formatLimit(ms: number): string {
  if (ms < 1_000 || ms % 1_000 !== 0) return `${ms}ms`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${ms / 1_000}s`;
}

function databaseUrlFlag(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(
      `--database-url must be a postgres:// or postgresql:// URL, got ${JSON.stringify(redactDatabaseUrl(raw))}`,
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new UsageError(
      `--database-url must be a postgres:// or postgresql:// URL, got protocol ${url.protocol}`,
    );
  }
  return raw;
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}
