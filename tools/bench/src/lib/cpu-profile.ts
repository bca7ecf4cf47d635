/**
 * Reads a V8 CPU profile (the .cpuprofile format `node --cpu-prof` and the inspector write)
 * and says where the samples went, by layer: Prisma's client runtime and its query compiler,
 * the driver adapter, node-postgres, our packages, Node internals, GC, idle.
 */

export interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export type ProfileCategory =
  | 'prisma client runtime'
  | 'prisma query compiler (wasm)'
  | 'prisma adapter-pg'
  | 'generated prisma client'
  | 'node-postgres (pg, pg-protocol)'
  | 'usagekit packages'
  | 'bench harness'
  | 'socket writes (syscall)'
  | 'node internals'
  | 'V8 / Node builtins'
  | 'garbage collector'
  | 'idle (waiting for PostgreSQL)'
  | 'native / program'
  | 'other';

/**
 * Native functions that write to a socket. On loopback the syscall also wakes the PostgreSQL
 * backend, and on a busy machine the sampled time includes being preempted by it: read this
 * category as "handing work to the server", not as Node's own cost.
 */
const SOCKET_WRITES = new Set([
  'writev',
  'writeBuffer',
  'writeUtf8String',
  'writeLatin1String',
  'writeAsciiString',
  'utf8Write',
]);

export function categorize(node: CpuProfileNode): ProfileCategory {
  const { url, functionName } = node.callFrame;
  if (functionName === '(garbage collector)') return 'garbage collector';
  if (functionName === '(idle)') return 'idle (waiting for PostgreSQL)';
  if (functionName === '(program)' || functionName === '(root)') return 'native / program';
  if (url.startsWith('wasm://') || /query_compiler/.test(url))
    return 'prisma query compiler (wasm)';
  if (/node_modules\/@prisma\/adapter-pg\//.test(url)) return 'prisma adapter-pg';
  if (/node_modules\/@prisma\//.test(url)) return 'prisma client runtime';
  if (/packages\/db\/src\/generated\//.test(url)) return 'generated prisma client';
  if (
    /node_modules\/(pg|pg-protocol|pg-types|pg-pool|pg-connection-string|postgres-array)\//.test(
      url,
    )
  ) {
    return 'node-postgres (pg, pg-protocol)';
  }
  if (/\/packages\/[^/]+\/src\//.test(url)) return 'usagekit packages';
  if (/\/tools\/bench\//.test(url)) return 'bench harness';
  if (url === '' && SOCKET_WRITES.has(functionName)) return 'socket writes (syscall)';
  if (url.startsWith('node:')) return 'node internals';
  if (url === '' && functionName !== '') return 'V8 / Node builtins';
  return 'other';
}

export interface ProfileBreakdown {
  totalMs: number;
  byCategory: Array<{ category: ProfileCategory; ms: number; share: number }>;
  topFunctions: Array<{ name: string; category: ProfileCategory; ms: number; share: number }>;
}

/** Self time per category and the heaviest functions, from a profile's samples. */
export function breakdown(profile: CpuProfile, topN = 10): ProfileBreakdown {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // timeDeltas[i] is the time *before* sample i; attribute each interval to the sample ending it.
  for (let i = 0; i < samples.length; i++) {
    const delta = Math.max(0, deltas[i] ?? 0);
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + delta);
  }
  const categories = new Map<ProfileCategory, number>();
  const functions = new Map<string, { category: ProfileCategory; us: number }>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    total += us;
    const category = categorize(node);
    categories.set(category, (categories.get(category) ?? 0) + us);
    const where = node.callFrame.url ? shortUrl(node.callFrame.url) : '';
    const name = `${node.callFrame.functionName || '(anonymous)'}${where ? ` ${where}:${node.callFrame.lineNumber + 1}` : ''}`;
    const entry = functions.get(name) ?? { category, us: 0 };
    entry.us += us;
    functions.set(name, entry);
  }
  const share = (us: number) => (total > 0 ? us / total : 0);
  return {
    totalMs: total / 1000,
    byCategory: [...categories]
      .map(([category, us]) => ({ category, ms: us / 1000, share: share(us) }))
      .sort((x, y) => y.ms - x.ms),
    topFunctions: [...functions]
      .filter(([, f]) => f.category !== 'idle (waiting for PostgreSQL)')
      .map(([name, f]) => ({ name, category: f.category, ms: f.us / 1000, share: share(f.us) }))
      .sort((x, y) => y.ms - x.ms)
      .slice(0, topN),
  };
}

function shortUrl(url: string): string {
  const nodeModules = url.lastIndexOf('node_modules/');
  if (nodeModules >= 0) return url.slice(nodeModules + 'node_modules/'.length);
  const workspace = /\/(packages|tools)\/.*$/.exec(url);
  if (workspace) return workspace[0].slice(1);
  return url.replace(/^file:\/\//, '');
}
