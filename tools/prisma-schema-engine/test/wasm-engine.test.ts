/**
 * The wasm engine tool itself, where it differs from plain @prisma/adapter-pg (README: "What
 * the tool adds"): scripts sent whole, `"char"` catalog columns, `?schema=` as search_path,
 * shadow databases dropped, the native binary's JSON-RPC and `cli` contracts. These run the
 * tool directly, native engine installed or not.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { WASM_SCHEMA_ENGINE_BINARY, runPrisma } from '../src/index.js';
import { CLI_TIMEOUT_MS, expectExit, query, Sandbox } from './support/prisma-harness.js';

const sandbox = new Sandbox();
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await sandbox.cleanUp();
});

jest.setTimeout(180_000);

const wasm = { kind: 'wasm', path: WASM_SCHEMA_ENGINE_BINARY } as const;

test('prisma migrate deploy through the tool: a script with ";" inside a COMMENT string runs whole, in the ?schema= schema, history there too', async () => {
  const databaseUrl = await sandbox.emptyDatabase('usagekit_engine');
  const app = sandbox.tempDir();
  mkdirSync(join(app, 'migrations', '20250101000000_commented'), { recursive: true });
  writeFileSync(join(app, 'migrations', 'migration_lock.toml'), 'provider = "postgresql"\n');
  writeFileSync(
    join(app, 'migrations', '20250101000000_commented', 'migration.sql'),
    `CREATE TABLE notes (id int PRIMARY KEY);\nCOMMENT ON TABLE notes IS 'one; two; three';\n`,
  );
  writeFileSync(join(app, 'schema.prisma'), 'datasource db {\n  provider = "postgresql"\n}\n');
  writeFileSync(
    join(app, 'prisma.config.ts'),
    `export default { schema: 'schema.prisma', migrations: { path: 'migrations' }, datasource: { url: process.env.URL } };\n`,
  );
  const url = new URL(databaseUrl);
  url.searchParams.set('schema', 'app_schema');
  const deploy = await runPrisma(['migrate', 'deploy'], {
    cwd: app,
    env: { PATH: process.env.PATH, URL: url.toString() },
    timeoutMs: CLI_TIMEOUT_MS,
    engine: wasm,
  });
  expectExit(deploy, 0);
  const rows = await query<{ comment: string; migrations: string }>(
    databaseUrl,
    `SELECT obj_description('app_schema.notes'::regclass) AS comment,
            (SELECT string_agg(migration_name, ',') FROM app_schema._prisma_migrations) AS migrations`,
  );
  expect(rows).toEqual([{ comment: 'one; two; three', migrations: '20250101000000_commented' }]);
  expect(await query(databaseUrl, `SELECT 1 FROM pg_tables WHERE schemaname = 'public'`)).toEqual(
    [],
  );
});

test('JSON-RPC over stdio like the native binary: answers on stdout one line each, reads "char" catalog columns, reports errors in its shape, exits when stdin closes', async () => {
  const databaseUrl = await sandbox.emptyDatabase('usagekit_engine');
  await query(
    databaseUrl,
    `CREATE TABLE widgets (id int PRIMARY KEY, kind text NOT NULL CHECK (kind <> ''));
     CREATE INDEX widgets_kind ON widgets (kind)`,
  );
  const engine = spawnEngine(['--datasource', JSON.stringify({ url: databaseUrl })]);
  const started = performance.now();
  const version = await engine.request('getDatabaseVersion', {});
  const firstAnswerMs = performance.now() - started;
  expect(version.result).toMatch(/^PostgreSQL \d+/);

  // Describing the database reads pg_class.relkind, pg_constraint.contype… ("char").
  const diff = await engine.request('diff', {
    from: {
      tag: 'schemaDatasource',
      files: [
        { path: 'schema.prisma', content: 'datasource db {\n  provider = "postgresql"\n}\n' },
      ],
      configDir: '/',
    },
    to: { tag: 'empty' },
    script: true,
    exitCode: true,
    filters: { externalTables: [], externalEnums: [] },
  });
  expect(diff.result).toEqual({ exitCode: 2 });
  expect(engine.printed.join('\n')).toContain('DROP TABLE "public"."widgets";');

  const unknown = await engine.request('getDatabaseDescription', {});
  expect(unknown.error).toMatchObject({
    code: 4466,
    data: { is_panic: false, message: expect.stringContaining('getDatabaseDescription') },
  });
  await expect(engine.close()).resolves.toBe(0);
  // Not a benchmark: printed so the README's numbers can be checked on any machine.
  console.log(`wasm engine: first answer ${firstAnswerMs.toFixed(0)} ms after spawn`);
});

test('cli can-connect-to-database: P1003 for a missing database as an ERROR line on stderr, exit 1 (the CLI then creates it)', async () => {
  const databaseUrl = await sandbox.emptyDatabase('usagekit_engine');
  const missing = new URL(databaseUrl);
  missing.pathname = '/usagekit_no_such_database';
  const result = await runEngineOnce([
    '--datasource',
    JSON.stringify({ url: missing.toString() }),
    'cli',
    'can-connect-to-database',
  ]);
  expect(result.exitCode).toBe(1);
  const lines = result.stderr
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => JSON.parse(line));
  expect(lines).toContainEqual(
    expect.objectContaining({
      level: 'ERROR',
      target: 'schema_engine::logger',
      fields: expect.objectContaining({ error_code: 'P1003' }),
    }),
  );
  const ok = await runEngineOnce([
    '--datasource',
    JSON.stringify({ url: databaseUrl }),
    'cli',
    'can-connect-to-database',
  ]);
  expect(ok.exitCode).toBe(0);
});

test('cli can-connect-to-database against a server that accepts TCP and never answers: gives up after ?connect_timeout= seconds, not minutes', async () => {
  const held: Socket[] = [];
  const silent = createServer((socket) => {
    held.push(socket); // accept the connection, never send a byte
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as { port: number };
  try {
    const url = `postgresql://postgres@127.0.0.1:${port}/postgres?schema=usagekit&connect_timeout=2`;
    const started = performance.now();
    const result = await runEngineOnce(
      ['--datasource', JSON.stringify({ url }), 'cli', 'can-connect-to-database'],
      30_000,
    );
    const elapsedMs = performance.now() - started;
    expect(result.exitCode).toBe(1);
    expect(held.length).toBeGreaterThan(0);
    // The deadline is the URL's 2 s (not pg's "forever", not the 5 s default).
    expect(elapsedMs).toBeGreaterThanOrEqual(1_900);
    expect(elapsedMs).toBeLessThan(4_900);
  } finally {
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});

interface RpcAnswer {
  result?: unknown;
  error?: unknown;
}

function spawnEngine(args: string[]) {
  const child = spawn(process.execPath, [WASM_SCHEMA_ENGINE_BINARY, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  const waiting = new Map<number, (answer: RpcAnswer) => void>();
  const printed: string[] = [];
  let nextId = 1;
  createInterface({ input: child.stdout }).on('line', (line) => {
    const message = JSON.parse(line) as {
      id: number;
      method?: string;
      params?: { content: string };
    };
    if (message.method === 'print') {
      printed.push(message.params!.content);
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id: message.id, result: {} })}\n`);
      return;
    }
    waiting.get(message.id)?.(message as RpcAnswer);
    waiting.delete(message.id);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return {
    printed,
    request(method: string, params: unknown): Promise<RpcAnswer> {
      const id = nextId++;
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
      return withDeadline(new Promise((resolve) => waiting.set(id, resolve)), `${method} answer`);
    },
    close(): Promise<number | null> {
      child.stdin.end();
      return withDeadline(exited, 'engine exit');
    },
  };
}

function runEngineOnce(
  args: string[],
  deadlineMs?: number,
): Promise<{ exitCode: number | null; stderr: string }> {
  const child = spawn(process.execPath, [WASM_SCHEMA_ENGINE_BINARY, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return withDeadline(
    new Promise((resolve) => child.on('close', (exitCode) => resolve({ exitCode, stderr }))),
    `schema-engine ${args.join(' ')}`,
    deadlineMs,
  );
}

function withDeadline<T>(promise: Promise<T>, what: string, ms = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
