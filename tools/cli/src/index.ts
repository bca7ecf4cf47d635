export { runCli } from './main.js';
export type { CliIo } from './main.js';
export { ExitCode } from './lib/exit-codes.js';
export type { ExitCodeValue } from './lib/exit-codes.js';
export { parseCommand, UsageError, HELP_TEXT } from './lib/args.js';
export type { StatusReport, ReplicaStatus, LockSession, OutboxStatus } from './lib/status.js';
export type { MigrationsStatus } from './lib/migrations.js';
export type { OutboxReportRow, RetryResult } from './lib/outbox.js';
