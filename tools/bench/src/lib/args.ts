/**
 * The bench's command line. Hand-written (a dozen flags do not need a parser dependency);
 * every mistake is a {@link UsageError}, which the CLI prints with the usage and exit code 2.
 */

export const SECTION_NAMES = [
  'flush',
  'cutover',
  'contention',
  'tracker',
  'uniques',
  'cadence',
  'capacity',
  'profile',
] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

export interface BenchOptions {
  /** Short durations and fewer rounds: finishes in well under 3 minutes. */
  quick: boolean;
  /** A server to create (and afterwards drop) the bench's databases on; else embedded PostgreSQL. */
  databaseUrl: string | undefined;
  /**
   * Start the embedded server with durability off (fsync=off, synchronous_commit=off,
   * full_page_writes=off), as the bench did before issue 13. The default is a durable
   * server, as production runs. Contradicts --database-url (that server's settings are its own).
   */
  fastServer: boolean;
  /** Print the results JSON on stdout (the tables then go to stderr). */
  json: boolean;
  help: boolean;
  /**
   * Whether to run the CPU-profile section (contender a vs d). Default: on for a full run,
   * off for --quick; --cpu-prof / --no-cpu-prof override.
   */
  cpuProfile: boolean;
  /** Where the .cpuprofile files go (default: a new directory under the OS temp dir). */
  cpuProfileDir: string | undefined;
  /** Sections to run; all of them by default. */
  sections: readonly SectionName[];
  /** Where results.json, README.md and the chart are written; undefined: do not write. */
  outDir: string | undefined;
}

export const DEFAULT_OUT_DIR = 'docs/perf';

export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly code = 'USAGE';
}

export const USAGE = `Usage: npm run bench -- [flags]

Measures usagekit's flush, cutover and tracker against raw node-postgres and pgbench on a real
PostgreSQL (embedded PostgreSQL 18 unless a server is given), prints tables and writes
docs/perf/results.json, docs/perf/README.md and docs/perf/flush-throughput.svg.

Flags:
  --quick                 short durations and 2 rounds (under 3 minutes); the default is the
                          full run (about 10 minutes)
  --database-url URL      use this PostgreSQL server instead of embedded (also: DATABASE_URL);
                          the bench creates its own databases there and drops them afterwards
  --fast-server           embedded server with durability off (fsync, synchronous_commit and
                          full_page_writes off); the default is durable, as production runs
  --json                  print the results JSON on stdout (tables and progress go to stderr)
  --only LIST             run only these sections, comma-separated:
                          ${SECTION_NAMES.join(', ')}
                          (a partial run prints but does not write docs/perf unless --out-dir)
  --cpu-prof              also profile contenders a and d (on by default in a full run)
  --no-cpu-prof           skip the profile section
  --cpu-prof-dir DIR      where to keep the .cpuprofile files (default: a temp directory)
  --out-dir DIR           where to write results (default: ${DEFAULT_OUT_DIR})
  --no-write              print only; write nothing
  -h, --help              this text
`;

const FLAGS_WITH_VALUES = new Set(['--database-url', '--only', '--cpu-prof-dir', '--out-dir']);
const BOOLEAN_FLAGS = new Set([
  '--quick',
  '--json',
  '--help',
  '-h',
  '--cpu-prof',
  '--no-cpu-prof',
  '--no-write',
  '--fast-server',
]);

export function parseArgs(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
): BenchOptions {
  const seen = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (FLAGS_WITH_VALUES.has(flag)) {
      let value: string | undefined;
      if (eq > 0) {
        value = arg.slice(eq + 1);
      } else {
        value = argv[i + 1];
        if (value === undefined || value.startsWith('-')) {
          throw new UsageError(`${flag} needs a value`);
        }
        i++;
      }
      if (value.length === 0) throw new UsageError(`${flag} needs a value`);
      if (seen.has(flag)) throw new UsageError(`${flag} given twice`);
      seen.set(flag, value);
    } else if (BOOLEAN_FLAGS.has(flag)) {
      if (eq > 0) throw new UsageError(`${flag} takes no value`);
      seen.set(flag === '-h' ? '--help' : flag, true);
    } else if (arg.startsWith('-')) {
      throw new UsageError(`unknown flag ${flag}`);
    } else {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)} (flags start with --)`);
    }
  }

  if (seen.has('--cpu-prof') && seen.has('--no-cpu-prof')) {
    throw new UsageError('--cpu-prof and --no-cpu-prof contradict each other');
  }
  if (seen.has('--out-dir') && seen.has('--no-write')) {
    throw new UsageError('--out-dir and --no-write contradict each other');
  }

  const flagUrl = seen.get('--database-url');

  const databaseUrl = typeof flagUrl === 'string' ? flagUrl : nonEmpty(env['DATABASE_URL']);
  if (databaseUrl !== undefined)
    assertPostgresUrl(databaseUrl, typeof flagUrl === 'string' ? '--database-url' : 'DATABASE_URL');
  if (seen.has('--fast-server') && databaseUrl !== undefined) {
    throw new UsageError(
      `--fast-server applies to the embedded server only; the server of ${typeof flagUrl === 'string' ? '--database-url' : 'DATABASE_URL'} keeps its own settings`,
    );
  }

  const onlyValue = seen.get('--only');
  const partial = typeof onlyValue === 'string';
  const requested = partial ? parseSections(onlyValue) : [...SECTION_NAMES];
  const quick = seen.has('--quick');
  const cpuProfile = seen.has('--cpu-prof')
    ? true
    : seen.has('--no-cpu-prof')
      ? false
      : partial
        ? requested.includes('profile')
        : !quick;
  const sections = SECTION_NAMES.filter((name) =>
    name === 'profile' ? cpuProfile : requested.includes(name),
  );

  const outDirFlag = seen.get('--out-dir');
  let outDir: string | undefined;
  if (typeof outDirFlag === 'string') outDir = outDirFlag;
  else if (!seen.has('--no-write') && !partial) outDir = DEFAULT_OUT_DIR;
  const profileDir = seen.get('--cpu-prof-dir');

  return {
    quick,
    databaseUrl,
    fastServer: seen.has('--fast-server'),
    json: seen.has('--json'),
    help: seen.has('--help'),
    cpuProfile,
    cpuProfileDir: typeof profileDir === 'string' ? profileDir : undefined,
    sections,
    outDir,
  };
}

function parseSections(value: string): SectionName[] {
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new UsageError('--only needs at least one section');
  for (const name of names) {
    if (!(SECTION_NAMES as readonly string[]).includes(name)) {
      throw new UsageError(
        `--only: unknown section ${JSON.stringify(name)}; choose from ${SECTION_NAMES.join(', ')}`,
      );
    }
  }
  return SECTION_NAMES.filter((name) => names.includes(name));
}

function assertPostgresUrl(value: string, source: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(
      `${source} is not a URL (expected postgres://user:password@host:port/database)`,
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new UsageError(
      `${source} must be a postgres:// or postgresql:// URL, got ${url.protocol}//…`,
    );
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value !== undefined && value.length > 0 ? value : undefined;
}
