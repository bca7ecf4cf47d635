import { execFileSync } from 'node:child_process';
import { cpus, loadavg, platform, release, totalmem } from 'node:os';
import type { MachineInfo } from '../report/results.js';

export function machineInfo(): MachineInfo {
  const cores = cpus();
  return {
    cpuModel: cores[0]?.model.trim() ?? 'unknown',
    cores: cores.length,
    memoryBytes: totalmem(),
    platform: platform(),
    release: release(),
    loadAverageAtStart: loadavg(),
  };
}

/** The commit measured, and how many paths that affect the numbers differ from it. */
export function gitState(cwd: string): {
  commit: string | undefined;
  dirtyPaths: number | undefined;
} {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const status = execFileSync(
      'git',
      ['status', '--porcelain', '--', 'packages', 'prisma', 'tools/bench'],
      {
        cwd,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    return { commit, dirtyPaths: status.split('\n').filter(Boolean).length };
  } catch {
    return { commit: undefined, dirtyPaths: undefined };
  }
}

/** How this run was started, as a person would type it. */
export function commandLine(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): string {
  const args = argv
    .map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))
    .join(' ');
  if (env['npm_lifecycle_event'] === 'bench') return `npm run bench${args ? ` -- ${args}` : ''}`;
  return `node --expose-gc tools/bench/bin/bench.js${args ? ` ${args}` : ''}`;
}
