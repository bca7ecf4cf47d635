/**
 * Section 7: where the time goes. Contender a (the default flush) and l (coder's protocol,
 * shared lock, in raw node-postgres) with 16
 * replicas, each under V8's sampling profiler (node:inspector, in this process), after the
 * measured sections so the profiler's overhead touches no reported figure. The profiles are
 * kept as .cpuprofile files (open them in Chrome DevTools or speedscope) and summarized here
 * per flush: microseconds of Node CPU per layer, plus the server's CPU per flush.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { BenchContext } from '../lib/context.js';
import { breakdown, type CpuProfile, type ProfileBreakdown } from '../lib/cpu-profile.js';
import { replicaId, runFleet } from '../lib/fleet.js';
import { fmt } from '../lib/output.js';
import { fleetEnv, openFleet } from './flush.js';

export interface ProfiledContender {
  contender: 'a' | 'l';
  file: string;
  flushes: number;
  flushesPerSecond: number;
  clientCpuUsPerFlush: number;
  serverCpuUsPerFlush: number | undefined;
  breakdown: ProfileBreakdown;
  /** Node CPU per flush by category, µs (idle excluded). */
  usPerFlushByCategory: Record<string, number>;
}

export interface ProfileSectionResult {
  replicas: number;
  seconds: number;
  directory: string;
  contenders: ProfiledContender[];
}

export async function runProfileSection(
  ctx: BenchContext,
  directory?: string,
): Promise<ProfileSectionResult> {
  const { settings } = ctx;
  const dir = directory
    ? resolve(directory)
    : mkdtempSync(join(tmpdir(), 'usagekit-bench-profiles-'));
  mkdirSync(dir, { recursive: true });
  const ids = Array.from({ length: settings.profileReplicas }, (_, i) =>
    replicaId(ctx.replicaIdPrefix, i),
  );
  const session = new Session();
  session.connect();
  const contenders: ProfiledContender[] = [];
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
    for (const contender of ['a', 'l'] as const) {
      await ctx.db.reset();
      const fleet = openFleet(contender, fleetEnv(ctx), ids);
      let profile: CpuProfile | undefined;
      try {
        let starting: Promise<unknown> | undefined;
        let stopping: Promise<unknown> | undefined;
        const result = await runFleet(fleet, {
          warmupMs: settings.flushWarmupMs,
          durationMs: settings.profileSeconds * 1000,
          signal: ctx.signal,
          cpu: ctx.cpu,
          // Profile exactly the measured window.
          onWindow: (open) => {
            if (open) starting = session.post('Profiler.start');
            else stopping = session.post('Profiler.stop');
          },
        });
        await starting;
        profile = ((await stopping) as { profile: CpuProfile } | undefined)?.profile;
        if (!profile) throw new Error('profiler produced no profile');
        const file = join(
          dir,
          `flush-${contender}-${settings.profileReplicas}-replicas.cpuprofile`,
        );
        writeFileSync(file, JSON.stringify(profile));
        const summary = breakdown(profile);
        const usPerFlushByCategory: Record<string, number> = {};
        for (const c of summary.byCategory) {
          if (c.category !== 'idle (waiting for PostgreSQL)') {
            usPerFlushByCategory[c.category] = (c.ms * 1000) / Math.max(1, result.flushes);
          }
        }
        contenders.push({
          contender,
          file,
          flushes: result.flushes,
          flushesPerSecond: result.flushesPerSecond,
          clientCpuUsPerFlush: result.cpu.clientUsPerOp,
          serverCpuUsPerFlush: result.cpu.serverUsPerOp,
          breakdown: summary,
          usPerFlushByCategory,
        });
      } finally {
        await fleet.close();
      }
    }
  } finally {
    await session.post('Profiler.disable').catch(() => undefined);
    session.disconnect();
  }

  const categories = [...new Set(contenders.flatMap((c) => Object.keys(c.usPerFlushByCategory)))];
  const [a, l] = contenders;
  categories.sort((x, y) => (a?.usPerFlushByCategory[y] ?? 0) - (a?.usPerFlushByCategory[x] ?? 0));
  ctx.out.table(
    `Where the time goes: Node CPU µs per flush by layer, ${settings.profileReplicas} replicas (profiled, ${settings.profileSeconds} s each)`,
    ['layer', 'a the default', "l coder's protocol, shared"],
    [
      ...categories.map((category) => [
        category,
        fmt(a?.usPerFlushByCategory[category], 1),
        fmt(l?.usPerFlushByCategory[category], 1),
      ]),
      [
        'total Node CPU (process.cpuUsage)',
        fmt(a?.clientCpuUsPerFlush, 1),
        fmt(l?.clientCpuUsPerFlush, 1),
      ],
      ['PostgreSQL CPU (/proc)', fmt(a?.serverCpuUsPerFlush, 1), fmt(l?.serverCpuUsPerFlush, 1)],
      ['flushes/s while profiled', fmt(a?.flushesPerSecond), fmt(l?.flushesPerSecond)],
    ],
    [`profiles: ${dir}`],
  );
  return {
    replicas: settings.profileReplicas,
    seconds: settings.profileSeconds,
    directory: dir,
    contenders,
  };
}
