/**
 * Contender e: pgbench (PostgreSQL's own C load generator, no Node at all) running the
 * store's interactive flush as recorded from the wire (./baselines.ts), like contender d. Each pgbench client is one replica and flushes its own replica_id,
 * built from the run's random id prefix and pgbench's :client_id exactly as the Node
 * contenders build theirs; its :seq variable rises per client like a replica's flush sequence.
 * (Drawing a random replica per transaction instead would make clients collide on rows and
 * wait on row locks, which none of the other contenders do.)
 */
import { spawn } from 'node:child_process';
import {
  accessSync,
  constants,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { cpuPerOperation, type CpuPerOperation, type CpuProbe } from './cpu.js';
import type { RecordedFlush } from './baselines.js';
import { summarizeLatencies, type LatencySummary } from './stats.js';

export interface PgbenchInfo {
  path: string;
  version: string;
}

/** pgbench on the PATH, else the newest Debian/Ubuntu postgresql-client's. */
export function findPgbench(
  env: Readonly<Record<string, string | undefined>> = process.env,
): string | undefined {
  const candidates = (env['PATH'] ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, 'pgbench'));
  try {
    const versions = readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+$/.test(v))
      .sort((x, y) => Number(y) - Number(x));
    candidates.push(...versions.map((v) => join('/usr/lib/postgresql', v, 'bin', 'pgbench')));
  } catch {
    // Not a Debian-style layout.
  }
  return candidates.find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export async function pgbenchInfo(path: string): Promise<PgbenchInfo> {
  const { stdout } = await run(path, ['--version']);
  return { path, version: stdout.trim() };
}

/** A pgbench script and the --define variables it reads. */
export interface PgbenchScript {
  script: string;
  variables: Record<string, string>;
}

/** A parameter as pgbench passes it (text): arrays as PostgreSQL array literals. */
export function pgbenchValue(value: unknown): string {
  if (Array.isArray(value)) return `{${value.map((v) => String(v)).join(',')}}`;
  return String(value);
}

/**
 * The pgbench script for a recorded flush: its statements in BEGIN … COMMIT (when the store
 * used a transaction), every $n bound to a pgbench variable (sent as a parameter under
 * -M extended, like node-postgres sends its values). The replica id becomes the client's own
 * (the run's prefix and :client_id, as the Node contenders build theirs) and the sequence a
 * per-client counter; every other parameter is passed as recorded.
 */
export function pgbenchScript(flush: RecordedFlush): PgbenchScript {
  const replica = `(:prefix::text || lpad(:client_id::text, 12, '0'))`;
  const variables: Record<string, string> = {};
  const statements = flush.call.statements.map((statement, i) =>
    statement.text.replace(/\$(\d+)/g, (placeholder, digits: string) => {
      const index = Number(digits) - 1;
      if (index < 0 || index >= statement.values.length) {
        throw new Error(`pgbenchScript: no parameter for ${placeholder} in statement ${i + 1}`);
      }
      const value = statement.values[index];
      if (typeof value === 'string' && value === flush.replicaId) return replica;
      if (String(value) === flush.sequence.toString()) return ':seq';
      const name = `p${i + 1}_${index + 1}`;
      variables[name] = pgbenchValue(value);
      return `:${name}`;
    }),
  );
  const script = [
    '\\set seq :seq + 1',
    ...(flush.call.transaction ? ['BEGIN;'] : []),
    ...statements.map((text) => `${text.trim()};`),
    ...(flush.call.transaction ? ['COMMIT;'] : []),
    '',
  ].join('\n');
  return { script, variables };
}

export interface PgbenchResult {
  flushesPerSecond: number;
  flushes: number;
  latency: LatencySummary;
  errors: number;
  firstError: string | undefined;
  cpu: CpuPerOperation;
  /** Whether client CPU is pgbench's (via the shell's `times`), or unknown. */
  clientCpuMeasured: boolean;
}

export interface PgbenchRunOptions {
  pgbench: string;
  databaseUrl: string;
  clients: number;
  seconds: number;
  replicaIdPrefix: string;
  /** The recorded flush pgbench runs (the store's interactive flush). */
  flush: RecordedFlush;
  cpu: CpuProbe;
  signal: AbortSignal;
}

export async function runPgbench(options: PgbenchRunOptions): Promise<PgbenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'usagekit-pgbench-'));
  try {
    const script = join(dir, 'flush.sql');
    const generated = pgbenchScript(options.flush);
    writeFileSync(script, generated.script);
    const variables: Record<string, string> = {
      ...generated.variables,
      prefix: options.replicaIdPrefix,
      // Above the prime flush's sequence 1 of the Node contenders; tables are emptied between segments.
      seq: '1',
    };
    const args = [
      '--no-vacuum',
      '--protocol=extended',
      `--file=${script}`,
      `--client=${options.clients}`,
      `--jobs=${Math.min(options.clients, 2)}`,
      // pgbench's --time includes connecting its clients (its tps does not); one more second
      // keeps 64 connections on a busy machine from eating the whole run.
      `--time=${options.seconds + 1}`,
      '--log',
      `--log-prefix=${join(dir, 'tx')}`,
      ...Object.entries(variables).map(([name, value]) => `--define=${name}=${value}`),
      options.databaseUrl,
    ];
    const bash = findExecutable('bash');
    // Through a shell whose `times` builtin reports its children's CPU: pgbench's own cost.
    const command = bash ?? options.pgbench;
    const commandArgs = bash
      ? ['-c', '"$0" "$@"; rc=$?; times >&2; exit $rc', options.pgbench, ...args]
      : args;
    const before = options.cpu.sample();
    const { stdout, stderr, code } = await run(command, commandArgs, options.signal);
    const after = options.cpu.sample();
    if (code !== 0) {
      throw new Error(`pgbench exited with ${code}: ${lastLines(stderr || stdout, 5)}`);
    }
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1]);
    const processed = Number(
      /number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? 0,
    );
    const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
    const latencies = readLatenciesMs(dir);
    const clientUs = bash ? childrenCpuUs(stderr) : undefined;
    const perOp = cpuPerOperation(before, after, processed);
    if (processed === 0 || !Number.isFinite(tps)) {
      return {
        flushesPerSecond: Number.NaN,
        flushes: 0,
        latency: summarizeLatencies([]),
        errors: 1,
        firstError: `pgbench completed no transaction: ${lastLines(stdout || stderr, 2)}`,
        cpu: { clientUsPerOp: Number.NaN, serverUsPerOp: undefined },
        clientCpuMeasured: false,
      };
    }
    return {
      flushesPerSecond: tps,
      flushes: processed,
      latency: summarizeLatencies(latencies),
      errors: failed,
      firstError: failed > 0 ? lastLines(stderr, 1) : undefined,
      cpu: {
        clientUsPerOp: clientUs !== undefined ? clientUs / Math.max(1, processed) : Number.NaN,
        serverUsPerOp: perOp.serverUsPerOp,
      },
      clientCpuMeasured: clientUs !== undefined,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** pgbench --log lines: client_id transaction_no time_us script_no epoch epoch_us [...]. */
export function parsePgbenchLog(content: string, into: number[]): void {
  for (const line of content.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const us = Number(fields[2]);
    if (Number.isFinite(us)) into.push(us / 1000);
  }
}

function readLatenciesMs(dir: string): number[] {
  const latencies: number[] = [];
  for (const file of readdirSync(dir)) {
    if (file.startsWith('tx.')) parsePgbenchLog(readFileSync(join(dir, file), 'utf8'), latencies);
  }
  return latencies;
}

/** The second line of bash's `times`: the children's user and system time, e.g. "0m1.234s 0m0.567s". */
export function childrenCpuUs(stderr: string): number | undefined {
  const lines = stderr
    .trim()
    .split('\n')
    .filter((l) => /^\d+m[\d.]+s \d+m[\d.]+s$/.test(l.trim()));
  const children = lines[lines.length - 1];
  if (!children || lines.length < 2) return undefined;
  let total = 0;
  for (const part of children.trim().split(' ')) {
    const match = /^(\d+)m([\d.]+)s$/.exec(part);
    if (!match) return undefined;
    total += (Number(match[1]) * 60 + Number(match[2])) * 1_000_000;
  }
  return total;
}

function findExecutable(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter).filter(Boolean)) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}

function run(
  command: string,
  args: string[],
  signal?: AbortSignal,
): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const abort = () => child.kill('SIGTERM');
    signal?.addEventListener('abort', abort, { once: true });
    child.on('error', (error) => {
      signal?.removeEventListener('abort', abort);
      reject(error);
    });
    child.on('close', (code) => {
      signal?.removeEventListener('abort', abort);
      if (signal?.aborted) reject(signal.reason ?? new Error('aborted'));
      else resolve({ stdout, stderr, code });
    });
  });
}
