import { DEFAULT_OUT_DIR, parseArgs, runCli, UsageError } from '../src/index';

describe('parseArgs', () => {
  it('defaults to a full run that writes docs/perf, profiles, and uses embedded PostgreSQL', () => {
    const options = parseArgs([], {});
    expect(options).toMatchObject({
      quick: false,
      json: false,
      help: false,
      databaseUrl: undefined,
      cpuProfile: true,
    });
    expect(options.outDir).toBe(DEFAULT_OUT_DIR);
    expect(options.sections).toEqual([
      'flush',
      'cutover',
      'contention',
      'tracker',
      'uniques',
      'cadence',
      'capacity',
      'profile',
    ]);
    expect(options.fastServer).toBe(false);
  });

  it('--fast-server turns durability off on the embedded server only', () => {
    expect(parseArgs(['--fast-server'], {}).fastServer).toBe(true);
    expect(() => parseArgs(['--fast-server', '--database-url', 'postgres://u@h/db'], {})).toThrow(
      /--fast-server applies to the embedded server only/,
    );
    expect(() => parseArgs(['--fast-server'], { DATABASE_URL: 'postgres://u@h/db' })).toThrow(
      /DATABASE_URL keeps its own settings/,
    );
    expect(() => parseArgs(['--fast-server=1'], {})).toThrow(UsageError);
  });

  it('--quick skips the profile unless --cpu-prof asks for it', () => {
    expect(parseArgs(['--quick'], {}).sections).not.toContain('profile');
    expect(parseArgs(['--quick', '--cpu-prof'], {}).sections).toContain('profile');
    expect(parseArgs(['--no-cpu-prof'], {}).sections).not.toContain('profile');
  });

  it('takes the server from --database-url (both spellings), else DATABASE_URL', () => {
    const url = 'postgresql://u:p@localhost:5432/postgres';
    expect(parseArgs(['--database-url', url], {}).databaseUrl).toBe(url);
    expect(parseArgs([`--database-url=${url}`], {}).databaseUrl).toBe(url);
    expect(parseArgs([], { DATABASE_URL: url }).databaseUrl).toBe(url);
    expect(
      parseArgs(['--database-url', url], { DATABASE_URL: 'postgres://other/db' }).databaseUrl,
    ).toBe(url);
    expect(parseArgs([], { DATABASE_URL: '' }).databaseUrl).toBeUndefined();
  });

  it('a partial run (--only) prints but does not write docs/perf unless told where', () => {
    expect(parseArgs(['--only', 'tracker,cutover'], {})).toMatchObject({
      sections: ['cutover', 'tracker'],
      outDir: undefined,
      cpuProfile: false,
    });
    expect(parseArgs(['--only=tracker', '--out-dir', '/tmp/x'], {}).outDir).toBe('/tmp/x');
    expect(parseArgs(['--only', 'profile'], {}).sections).toEqual(['profile']);
    expect(parseArgs(['--no-write'], {}).outDir).toBeUndefined();
  });

  it.each([
    [['--bogus'], /unknown flag --bogus/],
    [['-x'], /unknown flag -x/],
    [['quick'], /unexpected argument "quick"/],
    [['--database-url'], /--database-url needs a value/],
    [['--database-url', '--quick'], /--database-url needs a value/],
    [['--database-url='], /--database-url needs a value/],
    [['--database-url', 'mysql://x/y'], /postgres:\/\/ or postgresql:\/\//],
    [['--database-url', 'not a url'], /is not a URL/],
    [['--only', 'flush,nope'], /unknown section "nope"/],
    [['--quick=yes'], /--quick takes no value/],
    [['--cpu-prof', '--no-cpu-prof'], /contradict/],
    [['--out-dir', 'x', '--no-write'], /contradict/],
    [['--only', 'flush', '--only', 'tracker'], /given twice/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseArgs(argv, {})).toThrow(UsageError);
    expect(() => parseArgs(argv, {})).toThrow(message);
  });

  it('rejects a malformed DATABASE_URL too, naming the variable', () => {
    expect(() => parseArgs([], { DATABASE_URL: 'http://x' })).toThrow(
      /DATABASE_URL must be a postgres/,
    );
  });
});

describe('runCli', () => {
  it('exits with 2 and a one-line reason on a bad flag, before touching any database', async () => {
    const written: string[] = [];
    const spy = jest
      .spyOn(process.stderr, 'write')
      .mockImplementation((chunk: string | Uint8Array) => {
        written.push(String(chunk));
        return true;
      });
    try {
      await expect(runCli(['--frobnicate'])).resolves.toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(written.join('')).toMatch(
      /^bench: unknown flag --frobnicate\nRun `npm run bench -- --help`/,
    );
  });

  it('prints the usage for --help and exits 0', async () => {
    const written: string[] = [];
    const spy = jest
      .spyOn(process.stdout, 'write')
      .mockImplementation((chunk: string | Uint8Array) => {
        written.push(String(chunk));
        return true;
      });
    try {
      await expect(runCli(['--help'])).resolves.toBe(0);
    } finally {
      spy.mockRestore();
    }
    expect(written.join('')).toContain('Usage: npm run bench -- [flags]');
  });
});
