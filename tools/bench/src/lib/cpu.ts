/**
 * CPU accounting for "where the time goes". On a small machine the bench's Node process and
 * PostgreSQL share the same cores, so CPU microseconds per flush, client side and server side,
 * explain throughput better than any wall-clock figure.
 *
 * Server CPU comes from /proc (Linux, server on this machine): the postmaster's own time,
 * plus the time of the children it has reaped (cutime/cstime: backends that ended), plus the
 * time of its live children (backends, autovacuum, checkpointer). When the server is elsewhere,
 * or /proc is unreadable, server figures are left out rather than guessed.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CpuSample {
  clientUs: number;
  /** Undefined when the server's CPU cannot be read. */
  serverUs: number | undefined;
}

export interface CpuProbe {
  sample(): CpuSample;
  /** Whether server CPU is measured. */
  readonly serverMeasured: boolean;
}

export function clientCpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

let ticksPerSecond: number | undefined;
function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond =
        Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime, in clock ticks. */
  own: number;
  /** cutime + cstime: children this process has waited for. */
  reaped: number;
}

/** Parses /proc/<pid>/stat. The command name may hold spaces and parentheses: split after the last ')'. */
export function parseProcStat(pid: number, content: string): ProcStat | undefined {
  const close = content.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = content.slice(close + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
  const ppid = Number(fields[1]);
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const cutime = Number(fields[13]);
  const cstime = Number(fields[14]);
  if (![ppid, utime, stime, cutime, cstime].every(Number.isFinite)) return undefined;
  return { pid, ppid, own: utime + stime, reaped: cutime + cstime };
}

function readStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(pid, readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * A live process's CPU time in µs from /proc/<pid>/schedstat (nanoseconds on the CPU), or
 * undefined. /proc/<pid>/stat counts whole clock ticks (10 ms): summed over a few dozen
 * backends that is ±0.1 s per sample, more than a thousand flushes cost; schedstat is exact.
 */
function runtimeUs(pid: number): number | undefined {
  try {
    const ns = Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
    return Number.isFinite(ns) ? ns / 1_000 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time of one process (not its children), in microseconds; e.g. PgBouncer's. */
export function processCpuUs(pid: number): number | undefined {
  const precise = runtimeUs(pid);
  if (precise !== undefined) return precise;
  const stat = readStat(pid);
  return stat ? (stat.own * 1_000_000) / clockTicksPerSecond() : undefined;
}

/** CPU time of a postmaster and everything it started, in microseconds. */
export function serverTreeCpuUs(postmasterPid: number): number | undefined {
  const root = readStat(postmasterPid);
  if (!root) return undefined;
  const usPerTick = 1_000_000 / clockTicksPerSecond();
  // Live processes from schedstat (exact), the reaped children's total from stat (one
  // truncation to a tick for all of them together).
  const own = (stat: ProcStat) => runtimeUs(stat.pid) ?? stat.own * usPerTick;
  let us = own(root) + root.reaped * usPerTick;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return undefined;
  }
  for (const entry of entries) {
    const c = entry.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    const stat = readStat(Number(entry));
    if (stat && stat.ppid === postmasterPid) us += own(stat) + stat.reaped * usPerTick;
  }
  return us;
}

/**
 * Finds the postmaster of a local server from its data directory (needs a superuser or
 * pg_read_all_settings, which the bench has on embedded PostgreSQL).
 */
export function postmasterPidFromDataDirectory(
  dataDirectory: string | undefined,
): number | undefined {
  if (!dataDirectory || process.platform !== 'linux') return undefined;
  try {
    const pid = Number(readFileSync(join(dataDirectory, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!(pid > 0)) return undefined;
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return /postgres|postmaster/.test(comm) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function createCpuProbe(postmasterPid: number | undefined): CpuProbe {
  const pid =
    postmasterPid !== undefined && serverTreeCpuUs(postmasterPid) !== undefined
      ? postmasterPid
      : undefined;
  return {
    serverMeasured: pid !== undefined,
    sample: () => ({
      clientUs: clientCpuUs(),
      serverUs: pid !== undefined ? serverTreeCpuUs(pid) : undefined,
    }),
  };
}

export interface CpuPerOperation {
  clientUsPerOp: number;
  serverUsPerOp: number | undefined;
}

export function cpuPerOperation(
  start: CpuSample,
  end: CpuSample,
  operations: number,
): CpuPerOperation {
  if (operations <= 0) return { clientUsPerOp: Number.NaN, serverUsPerOp: undefined };
  const ops = operations;
  return {
    clientUsPerOp: (end.clientUs - start.clientUs) / ops,
    serverUsPerOp:
      start.serverUs !== undefined && end.serverUs !== undefined
        ? (end.serverUs - start.serverUs) / ops
        : undefined,
  };
}
