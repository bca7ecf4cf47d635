/**
 * PostgreSQL on a core of its own, the bench (every replica) on the other: the layout of
 * production, where the database never shares its CPUs with the application's replicas.
 *
 * On one 2-core machine shared by both, a flush's Node CPU and the server's CPU come out of
 * the same two cores, so a client stack that spends more Node CPU to save the server work
 * (one statement instead of four) is charged for it twice: in its own time and in the server's
 * lost share. Pinning both sides with `taskset` (util-linux; sched_setaffinity) keeps each
 * side's cost on its side. New backends inherit the postmaster's affinity at fork, so pinning
 * the postmaster and the processes it already has covers the connections opened later.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export interface CoreSplit {
  /** e.g. "PostgreSQL on CPU 0, the bench on CPU 1". */
  layout: string;
  /** Puts every process back on the CPUs it had. */
  restore(): void;
}

export type CoreSplitAttempt =
  { status: 'split'; split: CoreSplit } | { status: 'unavailable'; reason: string };

/** Pins the server (postmaster and its processes) to the first CPU and this process to the second. */
export function splitCores(serverPid: number | undefined): CoreSplitAttempt {
  if (process.platform !== 'linux') return unavailable('needs Linux (sched_setaffinity)');
  if (serverPid === undefined) {
    return unavailable(
      'the server does not run on this machine, or its postmaster pid cannot be read',
    );
  }
  const cpus = allowedCpus(process.pid);
  if (cpus === undefined) return unavailable('`taskset` (util-linux) not found');
  if (cpus.length < 2 || availableParallelism() < 2) return unavailable('needs 2 CPUs');
  const serverCpus = allowedCpus(serverPid);
  if (serverCpus === undefined) return unavailable('cannot read the server processes\u2019 CPUs');
  const [serverCpu, benchCpu] = cpus;
  try {
    pinTree(serverPid, [serverCpu]);
    pin(process.pid, [benchCpu]);
  } catch (error) {
    restoreAll(serverPid, serverCpus, cpus);
    return unavailable(`taskset failed: ${(error as Error).message.split('\n')[0]}`);
  }
  return {
    status: 'split',
    split: {
      layout: `PostgreSQL on CPU ${serverCpu}, the bench (every replica) on CPU ${benchCpu}`,
      restore: () => restoreAll(serverPid, serverCpus, cpus),
    },
  };
}

function unavailable(reason: string): CoreSplitAttempt {
  return { status: 'unavailable', reason };
}

function restoreAll(serverPid: number, serverCpus: number[], benchCpus: number[]): void {
  try {
    pinTree(serverPid, serverCpus);
  } finally {
    pin(process.pid, benchCpus);
  }
}

/** The CPUs a process may run on (`taskset -pc`), or undefined when taskset is missing. */
function allowedCpus(pid: number): number[] | undefined {
  let output: string;
  try {
    output = execFileSync('taskset', ['-pc', String(pid)], { encoding: 'utf8' });
  } catch {
    return undefined;
  }
  // "pid 123's current affinity list: 0,2-3"
  const list = output.slice(output.lastIndexOf(':') + 1).trim();
  const cpus: number[] = [];
  for (const part of list.split(',')) {
    const [from, to] = part.split('-').map(Number);
    for (let cpu = from; cpu <= (to ?? from); cpu++) cpus.push(cpu);
  }
  return cpus.every(Number.isInteger) && cpus.length > 0 ? cpus : undefined;
}

/** Every thread of `pid` (`-a`), e.g. libuv's pool and V8's helpers in this process. */
function pin(pid: number, cpus: readonly number[]): void {
  execFileSync('taskset', ['-apc', cpus.join(','), String(pid)], { stdio: 'ignore' });
}

/** `pid` and its descendants (a backend that exits meanwhile is skipped). */
function pinTree(pid: number, cpus: readonly number[]): void {
  pin(pid, cpus);
  for (const child of childrenOf(pid)) {
    try {
      pinTree(child, cpus);
    } catch {
      // Gone between the listing and the call: nothing to pin.
    }
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}
