import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  createTestDatabase,
  dropDatabase,
  quoteIdentifier,
  type TestDatabase,
  uniqueDatabaseName,
  withAdminClient,
  withDatabase,
} from '@usagekit/testing';
import { Client } from 'pg';
import { type PrismaCliResult, runPrisma } from '../../src/index.js';

/** The workspace root: usagekit's own prisma.config.ts, schema and migrations. */
export const WORKSPACE_ROOT = resolve(__dirname, '../../../..');
const HOST_APP_FIXTURE = resolve(__dirname, '../fixtures/host-app');

/**
 * One Prisma CLI run: the CLI's own start (about 1.5 s of CPU here) plus the engine's. Generous,
 * because the machine running the suite may be busy; a run that hangs (a lock, a prompt) is
 * killed at this deadline and the test fails with what it printed.
 */
export const CLI_TIMEOUT_MS = 120_000;

/** Only what the CLI needs: no DIRECT_URL or DATABASE_URL leaking in from the caller. */
function cliEnvironment(extra: Record<string, string>): Record<string, string | undefined> {
  return { PATH: process.env.PATH, HOME: process.env.HOME, TZ: 'UTC', ...extra };
}

/** usagekit's `prisma …` (the repository's prisma.config.ts, which adds `?schema=usagekit`). */
export function usagekitPrisma(args: string[], databaseUrl: string): Promise<PrismaCliResult> {
  return runPrisma(args, {
    cwd: WORKSPACE_ROOT,
    env: cliEnvironment({ DATABASE_URL: databaseUrl }),
    timeoutMs: CLI_TIMEOUT_MS,
  });
}

/** The host app's `prisma …`, run in its own directory against the shared database. */
export function hostPrisma(
  appDir: string,
  args: string[],
  databaseUrl: string,
): Promise<PrismaCliResult> {
  return runPrisma(args, {
    cwd: appDir,
    env: cliEnvironment({ HOST_DATABASE_URL: databaseUrl }),
    timeoutMs: CLI_TIMEOUT_MS,
  });
}

/** Fails with everything the CLI printed unless it exited with `code`. */
export function expectExit(result: PrismaCliResult, code: number): PrismaCliResult {
  if (result.exitCode !== code) {
    throw new Error(
      `expected exit code ${code}, got ${result.exitCode} (signal ${result.signal}, ${result.engine.kind} engine)\n` +
        `--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`,
    );
  }
  return result;
}

/**
 * Databases and directories for one suite: empty databases on the test server (not template
 * clones, which are already migrated) and copies of the host app (migrate dev writes into its
 * migrations directory). Everything is removed in `cleanUp()`.
 */
export class Sandbox {
  private server: TestDatabase | undefined;
  private readonly databases: string[] = [];
  private readonly dirs: string[] = [];

  async emptyDatabase(prefix = 'usagekit_cli'): Promise<string> {
    this.server ??= await createTestDatabase();
    const name = uniqueDatabaseName(prefix);
    await withAdminClient(this.server.serverUrl, (client) =>
      client.query(`CREATE DATABASE ${quoteIdentifier(name)}`),
    );
    this.databases.push(name);
    return withDatabase(this.server.serverUrl, name);
  }

  /** A copy of test/fixtures/host-app in a temporary directory. */
  hostApp(): string {
    const dir = mkdtempSync(join(tmpdir(), 'usagekit-host-app-'));
    cpSync(HOST_APP_FIXTURE, dir, { recursive: true });
    this.dirs.push(dir);
    return dir;
  }

  tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'usagekit-cli-'));
    this.dirs.push(dir);
    return dir;
  }

  async cleanUp(): Promise<void> {
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
    if (!this.server) return;
    for (const name of this.databases) await dropDatabase(this.server.serverUrl, name);
    await this.server.drop();
  }
}

export async function query<Row extends Record<string, unknown>>(
  databaseUrl: string,
  sql: string,
  values: unknown[] = [],
): Promise<Row[]> {
  const client = new Client({ connectionString: databaseUrl });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query<Row>(sql, values)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Tables per schema, outside PostgreSQL's own. */
export async function tablesBySchema(databaseUrl: string): Promise<Record<string, string[]>> {
  const rows = await query<{ schema: string; name: string }>(
    databaseUrl,
    `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables
      WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`,
  );
  const result: Record<string, string[]> = {};
  for (const row of rows) (result[row.schema] ??= []).push(row.name);
  return result;
}
