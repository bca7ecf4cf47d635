import { DEFAULT_OPTIONS, parseDurationMs, parseOptions, UsageError } from '../src/index.js';

function usageError(argv: string[], env: Record<string, string> = {}): string {
  try {
    parseOptions(argv, env);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as UsageError).message;
  }
  throw new Error(`parseOptions(${JSON.stringify(argv)}) did not throw`);
}

describe('parseOptions', () => {
  it('gives the defaults for an empty command line', () => {
    expect(parseOptions([], {})).toEqual({ ...DEFAULT_OPTIONS, databaseUrl: undefined });
  });

  it('reads every flag, in both --flag value and --flag=value form', () => {
    const options = parseOptions(
      [
        '--replicas',
        '3',
        '--duration=45s',
        '--flush-interval',
        '250ms',
        '--period',
        '1m',
        '--statement-deadline=5s',
        '--rate',
        '1000',
        '--workspaces',
        '7',
        '--users=3',
        '--lock-mode',
        'exclusive',
        '--json',
        '--chaos',
        '--prometheus',
        '--database-url',
        'postgresql://postgres@127.0.0.1:5432/postgres',
        '--keep-database',
      ],
      {},
    );
    expect(options).toEqual({
      replicas: 3,
      durationMs: 45_000,
      flushIntervalMs: 250,
      periodMs: 60_000,
      statementDeadlineMs: 5_000,
      ratePerReplica: 1000,
      workspaces: 7,
      users: 3,
      lockMode: 'exclusive',
      json: true,
      chaos: true,
      prometheus: true,
      databaseUrl: 'postgresql://postgres@127.0.0.1:5432/postgres',
      keepDatabase: true,
      help: false,
    });
  });

  it('takes DATABASE_URL from the environment unless --database-url is given', () => {
    const env = { DATABASE_URL: 'postgres://a@host/db' };
    expect(parseOptions([], env).databaseUrl).toBe('postgres://a@host/db');
    expect(parseOptions(['--database-url', 'postgres://b@host/db'], env).databaseUrl).toBe(
      'postgres://b@host/db',
    );
    expect(parseOptions([], { DATABASE_URL: '  ' }).databaseUrl).toBeUndefined();
  });

  it('recognises --help and -h', () => {
    expect(parseOptions(['--help'], {}).help).toBe(true);
    expect(parseOptions(['-h'], {}).help).toBe(true);
  });

  it('parses durations with ms, s, m or no unit (seconds)', () => {
    expect(parseDurationMs('500ms')).toBe(500);
    expect(parseDurationMs('1.5s')).toBe(1_500);
    expect(parseDurationMs('2m')).toBe(120_000);
    expect(parseDurationMs('30')).toBe(30_000);
    expect(parseDurationMs('thirty')).toBeUndefined();
    expect(parseDurationMs('-1s')).toBeUndefined();
  });

  it.each([
    [['--bogus'], 'unknown flag --bogus'],
    [['-x'], 'unknown flag -x'],
    [['--replicas'], '--replicas needs a value'],
    [['--replicas', 'four'], '--replicas must be a whole number, got "four"'],
    [['--replicas', '2.5'], '--replicas must be a whole number, got "2.5"'],
    [['--replicas', '0'], '--replicas must be between 1 and 64, got 0'],
    [['--rate', '-5'], '--rate needs a value (write --rate=VALUE for one that starts with -)'],
    [['--rate=-5'], '--rate must be a whole number, got "-5"'],
    [['--duration', 'soon'], '--duration must be a duration such as 500ms, 5s, 1.5s or 2m'],
    [['--duration', '100ms'], '--duration must be between 500ms and 24h, got 100ms'],
    [['--flush-interval', '5ms'], '--flush-interval must be between 20ms and 1h, got 5ms'],
    [['--period', '0'], '--period must be between 200ms and 24h, got 0ms'],
    [['--lock-mode', 'none'], '--lock-mode must be shared or exclusive, got "none"'],
    [['--json=yes'], '--json is a switch and takes no value'],
    [['--chaos', '--replicas', '1'], '--chaos kills one replica, so it needs --replicas 2 or more'],
    [
      ['--database-url', 'mysql://x@y/z'],
      '--database-url must be a postgres:// or postgresql:// URL, got protocol mysql:',
    ],
    [['--database-url', 'not a url'], '--database-url must be a postgres:// or postgresql:// URL'],
    [['replicas=3'], 'unexpected argument "replicas=3"; flags start with --'],
  ])('rejects %j with a clear message', (argv, message) => {
    expect(usageError(argv)).toContain(message);
  });

  it('never echoes a password from a bad --database-url', () => {
    expect(usageError(['--database-url', 'postgres://me:secret@host:notaport/db'])).not.toContain(
      'secret',
    );
  });
});
