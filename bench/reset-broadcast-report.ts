/**
 * The terminal tables and the charts of the reset-broadcast group: one row
 * per vCPU count, one column per protocol, with the ratios next to the
 * figures they divide.
 */
import { formatRatio } from './report.js';
import type { CellResult, LoadMode, Protocol } from './reset-broadcast.js';
import { shortNumber } from './svg.js';
import type { ChartSpec, TextTableSpec } from './types.js';

/** A latency in ms as µs, ms or s with three significant digits. */
export function formatLatency(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '-';
  if (ms < 1) return `${(ms * 1000).toPrecision(3)} µs`;
  if (ms < 1000) return `${ms.toPrecision(3)} ms`;
  return `${(ms / 1000).toPrecision(3)} s`;
}

const p50Ms = (c: CellResult, p: Protocol): number | null => {
  const r = c.rows.get(p);
  return r?.medianNs == null ? null : r.medianNs / 1e6;
};

const RATIO_COLUMNS: readonly [Protocol, Protocol][] = [
  ['shm', 'limit'],
  ['shm', 'raw'],
  ['rpc', 'shm'],
  ['rpc-parallel', 'shm'],
];

/** Two tables for one load: rates with ratios, then p50 / p99 latencies. */
export function broadcastTables(cells: readonly CellResult[], mode: LoadMode, protocols: readonly Protocol[]): TextTableSpec[] {
  const mine = cells.filter((c) => c.mode === mode);
  const ratios = RATIO_COLUMNS.filter(([a, b]) => protocols.includes(a) && protocols.includes(b));
  const cellText = (c: CellResult, p: Protocol, fmt: () => string): string => (c.rows.has(p) ? fmt() : c.skipped.has(p) ? 'skipped' : '-');
  const rates: TextTableSpec = {
    title: `${mode}: vCPU resets/s (limit, raw: acks/s) = N / mean latency; ratios of p50 latency (x = times slower)`,
    header: ['N', 'create s', 'rounds', ...protocols, ...ratios.map(([a, b]) => `${a}/${b}`)],
    rows: mine.map((c) => [
      String(c.n),
      (c.createMs / 1000).toFixed(1),
      String(c.rounds),
      ...protocols.map((p) => cellText(c, p, () => shortNumber(c.rows.get(p)!.opsPerSec))),
      ...ratios.map(([a, b]) => {
        const x = p50Ms(c, a);
        const y = p50Ms(c, b);
        return x === null || y === null ? '-' : formatRatio(x / y);
      }),
    ]),
    rightAlign: [true, true, true, ...protocols.map(() => true), ...ratios.map(() => true)],
  };
  const latency: TextTableSpec = {
    title: `${mode}: broadcast latency p50 / p99`,
    header: ['N', ...protocols],
    rows: mine.map((c) => [
      String(c.n),
      ...protocols.map((p) =>
        cellText(c, p, () => {
          const r = c.rows.get(p)!;
          return `${formatLatency(r.medianNs! / 1e6)} / ${formatLatency(r.p99Ns! / 1e6)}`;
        }),
      ),
    ]),
    rightAlign: [true, ...protocols.map(() => true)],
  };
  return [rates, latency];
}

/** Rate against N, one line per protocol, log scale. */
export function lineChart(cells: readonly CellResult[], mode: LoadMode, protocols: readonly Protocol[]): ChartSpec {
  const mine = cells.filter((c) => c.mode === mode);
  return {
    kind: 'line',
    title: `reset-broadcast, ${mode} vCPUs: resets/s (limit, raw: acks/s)`,
    yLabel: 'vCPU resets/s',
    logY: true,
    categories: mine.map((c) => `N=${c.n}`),
    series: protocols.map((p) => ({ name: p, values: mine.map((c) => c.rows.get(p)?.opsPerSec ?? null) })),
  };
}
