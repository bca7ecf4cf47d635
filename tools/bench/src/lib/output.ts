/** Console output: progress lines and aligned tables, on stdout, or stderr when --json owns stdout. */

export interface Output {
  line(text?: string): void;
  table(title: string, headers: string[], rows: string[][], notes?: string[]): void;
}

export function createOutput(stream: NodeJS.WritableStream): Output {
  return {
    line: (text = '') => {
      stream.write(`${text}\n`);
    },
    table: (title, headers, rows, notes = []) => {
      stream.write(`\n${formatTable(title, headers, rows)}`);
      for (const note of notes) stream.write(`  ${note}\n`);
    },
  };
}

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function formatTable(title: string, headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (value: string, i: number) =>
    i === 0 ? value.padEnd(widths[i]) : value.padStart(widths[i]);
  const lines = [
    title,
    headers.map(cell).join('  '),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.map((r) => headers.map((_, i) => cell(r[i] ?? '', i)).join('  ')),
  ];
  return `${lines.join('\n')}\n`;
}

/** A Markdown table (for docs/perf/README.md): numbers right-aligned unless `textColumns`. */
export function markdownTable(headers: string[], rows: string[][], textColumns = false): string {
  const align = headers.map((_, i) => (i === 0 || textColumns ? '---' : '---:'));
  return [headers, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

/** Fixed-point with thousands separators; '–' for a missing value. */
export function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Milliseconds with precision that suits their size. */
export function fmtMs(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  if (value < 1) return value.toFixed(3);
  if (value < 10) return value.toFixed(2);
  if (value < 100) return value.toFixed(1);
  return value.toFixed(0);
}

export function fmtRatio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '–' : `${value.toFixed(2)}×`;
}
