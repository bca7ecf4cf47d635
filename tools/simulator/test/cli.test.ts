import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { testServerUrl } from './support/server.js';

const RUN_SCRIPT = join(__dirname, '..', 'bin', 'run.js');

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as `npm start` would; `interrupt` sends SIGINT once stderr shows `interrupt.when`. */
function runCli(args: string[], interrupt?: { when: string; afterMs: number }): Promise<Finished> {
  const env = { ...process.env };
  delete env['DATABASE_URL'];
  const child = spawn(process.execPath, [RUN_SCRIPT, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let signalled = false;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    if (interrupt && !signalled && stderr.includes(interrupt.when)) {
      signalled = true;
      setTimeout(() => child.kill('SIGINT'), interrupt.afterMs);
    }
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('the command line', () => {
  it('exits with 2 and says what is wrong with a bad flag', async () => {
    const result = await runCli(['--replicas', 'many']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('simulator: --replicas must be a whole number, got "many"');
    expect(result.stderr).toContain('Run with --help');
    expect(result.stdout).toBe('');
  }, 30_000);

  it('exits with 2 for an unknown flag', async () => {
    const result = await runCli(['--replica', '3']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown flag --replica');
  }, 30_000);

  it('prints the flags with --help and exits with 0', async () => {
    const result = await runCli(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage: npm start -- [flags]');
    for (const flag of [
      '--replicas',
      '--duration',
      '--flush-interval',
      '--period',
      '--rate',
      '--lock-mode',
      '--json',
      '--chaos',
    ]) {
      expect(result.stdout).toContain(flag);
    }
  }, 30_000);

  it('ends early on Ctrl-C (SIGINT), still stops the replicas gracefully and prints a balanced report', async () => {
    const startedAt = Date.now();
    const result = await runCli(
      [
        '--database-url',
        testServerUrl(),
        '--duration',
        '60s',
        '--replicas',
        '2',
        '--rate',
        '50',
        '--period',
        '2s',
        '--json',
      ],
      { when: 'running 2 replicas', afterMs: 2_500 },
    );
    expect(result.code).toBe(0);
    expect(Date.now() - startedAt).toBeLessThan(45_000);
    expect(result.stderr).toContain('SIGINT: ending the run early');
    const report = JSON.parse(result.stdout) as {
      interrupted: boolean;
      balanced: boolean;
      trafficMs: number;
      account: { generated: { total: number }; reported: { total: number } };
    };
    expect(report.interrupted).toBe(true);
    expect(report.trafficMs).toBeLessThan(60_000);
    expect(report.balanced).toBe(true);
    expect(report.account.generated.total).toBeGreaterThan(0);
    expect(report.account.reported.total).toBe(report.account.generated.total);
  }, 60_000);
});
