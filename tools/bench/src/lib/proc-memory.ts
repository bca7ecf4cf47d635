/**
 * Memory of one process from /proc (Linux), for what a warm connection costs: a PostgreSQL
 * backend, or PgBouncer per client. Private memory (USS: pages only this process maps) is what
 * closing the connection would give back; RSS also counts shared_buffers pages the backend
 * touched, which belong to the server whether the connection exists or not.
 */
import { readFileSync } from 'node:fs';

export interface ProcessMemory {
  rssBytes: number;
  /** Private_Clean + Private_Dirty. */
  privateBytes: number;
  /** Proportional set size: shared pages divided among the processes that map them. */
  pssBytes: number;
  /** Anonymous memory (heap, stacks): RssAnon of /proc/<pid>/status. */
  anonymousBytes: number | undefined;
}

/** `Name:   123 kB` lines to bytes by name. */
function kbFields(text: string): Map<string, number> {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\w+):\s+(\d+) kB$/.exec(line.trim());
    if (match) fields.set(match[1], Number(match[2]) * 1024);
  }
  return fields;
}

/** Parses /proc/<pid>/smaps_rollup (and optionally /proc/<pid>/status for RssAnon). */
export function parseProcessMemory(
  smapsRollup: string,
  status?: string,
): ProcessMemory | undefined {
  const rollup = kbFields(smapsRollup);
  const rss = rollup.get('Rss');
  const pss = rollup.get('Pss');
  const clean = rollup.get('Private_Clean');
  const dirty = rollup.get('Private_Dirty');
  if (rss === undefined || pss === undefined || clean === undefined || dirty === undefined) {
    return undefined;
  }
  return {
    rssBytes: rss,
    privateBytes: clean + dirty,
    pssBytes: pss,
    anonymousBytes: status === undefined ? undefined : kbFields(status).get('RssAnon'),
  };
}

/** The memory of `pid`, or undefined when /proc cannot tell (not Linux, no permission, gone). */
export function processMemory(pid: number): ProcessMemory | undefined {
  try {
    return parseProcessMemory(
      readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'),
      readFileSync(`/proc/${pid}/status`, 'utf8'),
    );
  } catch {
    return undefined;
  }
}
