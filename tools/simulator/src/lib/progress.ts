import { formatErrors, num } from './report/format.js';

export interface ProgressSnapshot {
  elapsedMs: number;
  durationMs: number;
  replicasRunning: number;
  replicas: number;
  generated: bigint;
  flushed: bigint;
  reported: bigint;
  periods: number;
  errors: Readonly<Record<string, number>>;
}

export interface ProgressView {
  /** Live numbers; drawn in place on a TTY, or as a plain line every few seconds. */
  update(snapshot: ProgressSnapshot): void;
  /** A one-off line (a phase starts, chaos struck). */
  message(line: string): void;
  /** Leaves the last numbers on screen and ends the live display. */
  finish(): void;
}

export type ProgressMode = 'auto' | 'tty' | 'plain' | 'none';

interface OutputStream {
  write(chunk: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

/**
 * Picks the display: in place on a terminal; plain periodic lines otherwise (a pipe, a log,
 * CI) and also under Nx, whose stream output style prefixes every line with the project name
 * and turns carriage returns into new lines, so an in-place display would scroll as garbage.
 */
export function createProgressView(
  stream: OutputStream,
  mode: ProgressMode = 'auto',
  env: Readonly<Record<string, string | undefined>> = process.env,
): ProgressView {
  if (mode === 'none')
    return { update: () => undefined, message: () => undefined, finish: () => undefined };
  const inPlace =
    mode === 'tty' || (mode === 'auto' && stream.isTTY === true && !env['NX_TASK_TARGET_PROJECT']);
  return inPlace ? new InPlaceView(stream) : new PlainView(stream);
}

function progressLine(s: ProgressSnapshot): string {
  return (
    `generated ${num(s.generated)} · flushed ${num(s.flushed)} · reported ${num(s.reported)}` +
    ` · periods ${s.periods} · errors: ${formatErrors(s.errors)}`
  );
}

function clockPart(s: ProgressSnapshot): string {
  return `${(s.elapsedMs / 1000).toFixed(1).padStart(5)}s/${(s.durationMs / 1000).toFixed(0)}s`;
}

class PlainView implements ProgressView {
  private lastPrintedAt = -Infinity;

  constructor(
    private readonly stream: OutputStream,
    private readonly everyMs = 5_000,
  ) {}

  update(s: ProgressSnapshot): void {
    if (s.elapsedMs - this.lastPrintedAt < this.everyMs) return;
    this.lastPrintedAt = s.elapsedMs;
    this.stream.write(
      `[${clockPart(s)}] replicas ${s.replicasRunning}/${s.replicas} · ${progressLine(s)}\n`,
    );
  }

  message(line: string): void {
    this.stream.write(`${line}\n`);
  }

  finish(): void {
    this.lastPrintedAt = -Infinity;
  }
}

class InPlaceView implements ProgressView {
  private drawn: string[] = [];

  constructor(private readonly stream: OutputStream) {}

  update(s: ProgressSnapshot): void {
    const width = 24;
    const done = Math.min(width, Math.round((s.elapsedMs / s.durationMs) * width));
    const bar = `${'█'.repeat(done)}${'░'.repeat(width - done)}`;
    this.draw([
      `${clockPart(s)} ${bar}  replicas ${s.replicasRunning}/${s.replicas} running`,
      progressLine(s),
    ]);
  }

  message(line: string): void {
    const block = this.drawn;
    this.clear();
    this.stream.write(`${line}\n`);
    if (block.length > 0) this.draw(block);
  }

  finish(): void {
    if (this.drawn.length > 0) this.stream.write('\n');
    this.drawn = [];
  }

  private draw(lines: string[]): void {
    this.clear();
    const columns = this.stream.columns ?? 120;
    const fitted = lines.map((line) =>
      line.length >= columns ? `${line.slice(0, columns - 2)}…` : line,
    );
    this.stream.write(fitted.join('\n'));
    this.drawn = fitted;
  }

  /** Moves back to the first line of the block and erases it and everything below. */
  private clear(): void {
    if (this.drawn.length === 0) return;
    const up = this.drawn.length - 1;
    this.stream.write(`\r${up > 0 ? `\u001b[${up}A` : ''}\u001b[J`);
    this.drawn = [];
  }
}
