import { createProgressView, type ProgressSnapshot } from '../src/lib/progress.js';

function recorder(isTTY: boolean) {
  const chunks: string[] = [];
  return {
    chunks,
    stream: { isTTY, columns: 200, write: (chunk: string) => chunks.push(chunk) > 0 },
  };
}

function at(elapsedMs: number): ProgressSnapshot {
  return {
    elapsedMs,
    durationMs: 30_000,
    replicasRunning: 4,
    replicas: 4,
    generated: 1_234n,
    flushed: 1_200n,
    reported: 800n,
    periods: 2,
    errors: { 'flush CONNECTION_LOST': 2 },
  };
}

describe('createProgressView', () => {
  it('redraws in place on a terminal', () => {
    const { chunks, stream } = recorder(true);
    const view = createProgressView(stream, 'auto', {});
    view.update(at(1_000));
    view.update(at(1_250));
    view.message('chaos: replica 1 SIGKILLed');
    view.finish();
    const output = chunks.join('');
    // The second frame moves the cursor back up to the first line of the block and erases it.
    expect(output).toContain('\r\u001b[1A\u001b[J');
    expect(output).toContain('generated 1,234 · flushed 1,200 · reported 800 · periods 2');
    expect(output).toContain('errors: flush CONNECTION_LOST ×2');
    expect(output).toContain('chaos: replica 1 SIGKILLed\n');
  });

  it('prints a plain line every 5 seconds elsewhere, and under Nx even on a terminal', () => {
    for (const [isTTY, env] of [
      [false, {}],
      [true, { NX_TASK_TARGET_PROJECT: '@usagekit/simulator' }],
    ] as const) {
      const { chunks, stream } = recorder(isTTY);
      const view = createProgressView(stream, 'auto', env);
      for (let ms = 0; ms <= 10_000; ms += 250) view.update(at(ms));
      expect(chunks).toHaveLength(3);
      expect(chunks[1]).toBe(
        '[  5.0s/30s] replicas 4/4 · generated 1,234 · flushed 1,200 · reported 800 · periods 2 · errors: flush CONNECTION_LOST ×2\n',
      );
      expect(chunks.join('')).not.toContain('\u001b[');
    }
  });

  it('prints nothing in mode none', () => {
    const { chunks, stream } = recorder(true);
    const view = createProgressView(stream, 'none');
    view.update(at(1_000));
    view.message('hello');
    expect(chunks).toEqual([]);
  });
});
