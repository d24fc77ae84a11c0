/**
 * A small hand-written SVG chart generator for benchmark groups: grouped bars
 * or lines over categories, linear or log-10 y axis, legend, and a <title>
 * tooltip per data point. No dependency; output is a standalone SVG file.
 */
import type { ChartSpec } from './types.js';

const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7'];
const M = { left: 96, right: 24, top: 64, bottom: 120 };
const PLOT_H = 320;
const MIN_GROUP_W = 44;

export const escapeXml = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Three significant digits, with k/M/G suffixes for large values. */
export function shortNumber(v: number): string {
  const a = Math.abs(v);
  const trim = (t: string): string => (t.includes('.') ? t.replace(/\.?0+$/, '') : t);
  const fmt = (x: number): string => trim(Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
  if (a >= 1e9) return `${fmt(v / 1e9)}G`;
  if (a >= 1e6) return `${fmt(v / 1e6)}M`;
  if (a >= 1e4) return `${fmt(v / 1e3)}k`;
  return a === 0 ? '0' : fmt(v);
}

interface Scale {
  readonly y: (v: number) => number;
  readonly ticks: readonly number[];
}

/** Linear ticks at 1, 2 or 5 times a power of ten, from 0. */
function linearScale(max: number): Scale {
  const top = max > 0 ? max : 1;
  const raw = top / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? 10 * pow;
  const end = Math.ceil(top / step) * step;
  const ticks: number[] = [];
  for (let t = 0; t <= end + step / 2; t += step) ticks.push(t);
  return { y: (v) => PLOT_H - (v / end) * PLOT_H, ticks };
}

/** Log-10 ticks at every power of ten spanning [min, max]. */
function logScale(min: number, max: number): Scale {
  const lo = Math.floor(Math.log10(min > 0 ? min : 1));
  let hi = Math.ceil(Math.log10(max > 0 ? max : 10));
  if (hi === lo) hi = lo + 1;
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  const y = (v: number): number => PLOT_H - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * PLOT_H;
  return { y, ticks };
}

function axes(spec: ChartSpec, scale: Scale, plotW: number): string[] {
  const out: string[] = [];
  for (const t of scale.ticks) {
    const y = scale.y(t).toFixed(1);
    out.push(`<line x1="0" x2="${plotW}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle">${shortNumber(t)}</text>`);
  }
  out.push(`<line x1="0" x2="0" y1="0" y2="${PLOT_H}" stroke="#333"/>`);
  out.push(`<line x1="0" x2="${plotW}" y1="${PLOT_H}" y2="${PLOT_H}" stroke="#333"/>`);
  out.push(
    `<text transform="translate(${-M.left + 16},${PLOT_H / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}${spec.logY ? ' (log)' : ''}</text>`,
  );
  return out;
}

function categoryLabels(spec: ChartSpec, groupW: number): string[] {
  return spec.categories.map((c, i) => {
    const x = (i + 0.5) * groupW;
    return `<text transform="translate(${x.toFixed(1)},${PLOT_H + 10}) rotate(-40)" text-anchor="end" dominant-baseline="middle">${escapeXml(c)}</text>`;
  });
}

function legend(spec: ChartSpec): string[] {
  return spec.series.map((s, i) => {
    const x = M.left + i * 120;
    const color = PALETTE[i % PALETTE.length];
    return `<rect x="${x}" y="34" width="12" height="12" fill="${color}"/><text x="${x + 16}" y="44">${escapeXml(s.name)}</text>`;
  });
}

function bars(spec: ChartSpec, scale: Scale, groupW: number): string[] {
  const out: string[] = [];
  const n = Math.max(1, spec.series.length);
  const barW = (groupW * 0.8) / n;
  spec.series.forEach((s, si) => {
    s.values.forEach((v, ci) => {
      if (v === null || !Number.isFinite(v) || (spec.logY && v <= 0)) return;
      const x = ci * groupW + groupW * 0.1 + si * barW;
      const y = scale.y(v);
      const h = PLOT_H - y;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[si % PALETTE.length]}">` +
          `<title>${escapeXml(`${spec.categories[ci]} ${s.name}: ${shortNumber(v)}`)}</title></rect>`,
      );
    });
  });
  return out;
}

function lines(spec: ChartSpec, scale: Scale, groupW: number): string[] {
  const out: string[] = [];
  spec.series.forEach((s, si) => {
    const color = PALETTE[si % PALETTE.length];
    const pts: string[] = [];
    s.values.forEach((v, ci) => {
      if (v === null || !Number.isFinite(v) || (spec.logY && v <= 0)) return;
      const x = ((ci + 0.5) * groupW).toFixed(1);
      const y = scale.y(v).toFixed(1);
      pts.push(`${x},${y}`);
      out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${color}"><title>${escapeXml(`${spec.categories[ci]} ${s.name}: ${shortNumber(v)}`)}</title></circle>`);
    });
    if (pts.length > 1) out.unshift(`<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
  });
  return out;
}

/** The chart as a standalone SVG document. */
export function renderChart(spec: ChartSpec): string {
  const values = spec.series.flatMap((s) => s.values).filter((v): v is number => v !== null && Number.isFinite(v) && (!spec.logY || v > 0));
  const max = values.length ? Math.max(...values) : 1;
  const min = values.length ? Math.min(...values) : 1;
  const scale = spec.logY ? logScale(min, max) : linearScale(max);
  const minGroupW = Math.max(MIN_GROUP_W, spec.series.length * 12);
  const plotW = Math.max(360, spec.categories.length * minGroupW);
  // Categories share the plot width evenly.
  const groupW = plotW / Math.max(1, spec.categories.length);
  const width = M.left + plotW + M.right;
  const height = M.top + PLOT_H + M.bottom;
  const body = [
    ...axes(spec, scale, plotW),
    ...(spec.kind === 'bar' ? bars(spec, scale, groupW) : lines(spec, scale, groupW)),
    ...categoryLabels(spec, groupW),
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${M.left}" y="20" font-size="14" font-weight="bold">${escapeXml(spec.title)}</text>`,
    ...legend(spec),
    `<g transform="translate(${M.left},${M.top})">`,
    ...body.map((l) => `  ${l}`),
    '</g>',
    '</svg>',
    '',
  ].join('\n');
}
