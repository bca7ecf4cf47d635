/**
 * The flush-throughput chart, as SVG written by hand: four lines over 1–64 replicas on a log₂
 * axis. A chart library would be a dependency for one picture; this is 100 lines.
 */
import type { FlushCell, FlushContenderId } from '../sections/flush.js';

export const CHART_CONTENDERS: ReadonlyArray<{
  id: FlushContenderId;
  label: string;
  color: string;
  dash?: string;
}> = [
  { id: 'a', label: 'a the default flush', color: '#1f77b4' },
  { id: 'l', label: "l coder's protocol, shared lock (baseline)", color: '#d62728', dash: '6 4' },
  {
    id: 'k',
    label: "k coder's protocol, exclusive lock (as shipped)",
    color: '#ff7f0e',
    dash: '2 3',
  },
  { id: 'h', label: "h raw node-postgres, a's statement prepared", color: '#2ca02c' },
];

const WIDTH = 760;
const HEIGHT = 440;
const MARGIN = { left: 78, right: 24, top: 48, bottom: 120 };

export function flushThroughputSvg(cells: readonly FlushCell[], subtitle: string): string {
  const concurrencies = [...new Set(cells.map((c) => c.replicas))].sort((x, y) => x - y);
  const plotted = CHART_CONTENDERS.filter((c) => cells.some((cell) => cell.contender === c.id));
  const values = cells
    .filter((c) => plotted.some((p) => p.id === c.contender))
    .map((c) => c.flushesPerSecond)
    .filter(Number.isFinite);
  const yMax = niceCeiling(Math.max(1, ...values) * 1.05);
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (replicas: number) => {
    const i = concurrencies.indexOf(replicas);
    return (
      MARGIN.left +
      (concurrencies.length === 1 ? plotWidth / 2 : (i / (concurrencies.length - 1)) * plotWidth)
    );
  };
  const y = (value: number) => MARGIN.top + plotHeight - (value / yMax) * plotHeight;

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${WIDTH / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Flush throughput vs concurrent replicas</text>`,
    `<text x="${WIDTH / 2}" y="37" text-anchor="middle" fill="#555">${escapeXml(subtitle)}</text>`,
  );
  for (const tick of yTicks(yMax)) {
    const ty = y(tick).toFixed(1);
    parts.push(
      `<line x1="${MARGIN.left}" y1="${ty}" x2="${WIDTH - MARGIN.right}" y2="${ty}" stroke="#e5e5e5"/>`,
      `<text x="${MARGIN.left - 8}" y="${ty}" text-anchor="end" dominant-baseline="middle">${tick.toLocaleString('en-US')}</text>`,
    );
  }
  for (const replicas of concurrencies) {
    const tx = x(replicas).toFixed(1);
    parts.push(
      `<line x1="${tx}" y1="${MARGIN.top + plotHeight}" x2="${tx}" y2="${MARGIN.top + plotHeight + 5}" stroke="#333"/>`,
      `<text x="${tx}" y="${MARGIN.top + plotHeight + 19}" text-anchor="middle">${replicas}</text>`,
    );
  }
  parts.push(
    `<line x1="${MARGIN.left}" y1="${MARGIN.top + plotHeight}" x2="${WIDTH - MARGIN.right}" y2="${MARGIN.top + plotHeight}" stroke="#333"/>`,
    `<line x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${MARGIN.top + plotHeight}" stroke="#333"/>`,
    `<text x="${MARGIN.left + plotWidth / 2}" y="${MARGIN.top + plotHeight + 38}" text-anchor="middle">concurrent replicas (log scale)</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">flushes per second (median)</text>`,
  );
  plotted.forEach((contender, index) => {
    const points = concurrencies
      .map((replicas) => cells.find((c) => c.contender === contender.id && c.replicas === replicas))
      .filter((c): c is FlushCell => c !== undefined && Number.isFinite(c.flushesPerSecond))
      .map((c) => [x(c.replicas), y(c.flushesPerSecond)] as const);
    const dash = contender.dash ? ` stroke-dasharray="${contender.dash}"` : '';
    parts.push(
      `<polyline fill="none" stroke="${contender.color}" stroke-width="2.5"${dash} points="${points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(' ')}"/>`,
      ...points.map(
        ([px, py]) =>
          `<circle cx="${px.toFixed(1)}" cy="${py.toFixed(1)}" r="3.5" fill="${contender.color}"/>`,
      ),
    );
    const ly = MARGIN.top + plotHeight + 58 + Math.floor(index / 2) * 20;
    const lx = MARGIN.left + (index % 2) * (plotWidth / 2);
    parts.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 28}" y2="${ly}" stroke="${contender.color}" stroke-width="2.5"${dash}/>`,
      `<text x="${lx + 36}" y="${ly}" dominant-baseline="middle">${escapeXml(contender.label)}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** 1, 2 or 5 times a power of ten, at or above `value`. */
export function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function yTicks(max: number): number[] {
  const step = niceCeiling(max / 5);
  const ticks: number[] = [];
  for (let t = 0; t <= max + 1e-9; t += step) ticks.push(Math.round(t));
  return ticks;
}

function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}
