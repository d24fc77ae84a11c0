/**
 * Turning a run into text and files: the terminal tables (rows, then ratios
 * with both compared figures beside each ratio), the JSON, and one SVG chart
 * per group.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderChart, shortNumber } from './svg.js';
import type { BenchRow, BenchRun, GroupResult, Timing } from './types.js';

/** ns with three significant digits (and thousands as "k"). */
export function formatNs(ns: number | null): string {
  if (ns === null || !Number.isFinite(ns)) return '-';
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)}M`;
  if (ns >= 1e4) return `${(ns / 1e3).toFixed(1)}k`;
  return ns >= 100 ? ns.toFixed(0) : ns >= 10 ? ns.toFixed(1) : ns.toFixed(2);
}

export const formatRatio = (x: number): string => (!Number.isFinite(x) ? '-' : x >= 100 ? `${x.toFixed(0)}x` : x >= 10 ? `${x.toFixed(1)}x` : `${x.toFixed(2)}x`);

/** Columns padded to their widest cell; numbers right-aligned. */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[], rightAlign: readonly boolean[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (rightAlign[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function rowCells(r: BenchRow): string[] {
  return [
    r.id,
    shortNumber(r.opsPerSec),
    formatNs(r.medianNs),
    formatNs(r.p99Ns),
    r.samples === null ? '-' : String(r.samples),
    r.batch === null ? '-' : String(r.batch),
    r.rmePct === null ? '-' : `±${r.rmePct.toFixed(1)}%`,
  ];
}

/** One group: notes, the row table, the ratio table. */
export function formatGroup(g: GroupResult): string {
  const out = [`== ${g.group}: ${g.description} (${(g.elapsedMs / 1000).toFixed(1)} s)`];
  for (const n of g.notes) out.push(`  * ${n}`);
  if (g.tables?.length) {
    for (const t of g.tables) out.push('', t.title, textTable(t.header, t.rows, t.rightAlign));
    return out.join('\n');
  }
  out.push('');
  out.push(
    textTable(
      ['case', 'ops/s', 'median ns', 'p99 ns', 'samples', 'batch', 'rme'],
      g.rows.map(rowCells),
      [false, true, true, true, true, true, true],
    ),
  );
  if (g.ratios.length) {
    out.push('');
    out.push(
      textTable(
        ['ratio', 'value', 'numerator', 'ns', 'denominator', 'ns'],
        g.ratios.map((r) => [
          r.label,
          formatRatio(r.value),
          r.numerator.row,
          formatNs(r.numerator.medianNs),
          r.denominator.row,
          formatNs(r.denominator.medianNs),
        ]),
        [false, true, false, true, false, true],
      ),
    );
    const meanings = [...new Map(g.ratios.map((r) => [r.label.split(' ').slice(1).join(' '), r.means])).entries()];
    for (const [kind, means] of meanings) out.push(`  ${kind}: ${means}`);
  }
  return out.join('\n');
}

export const describeTiming = (t: Timing): string =>
  `${t.timeMs} ms of samples in ${t.rounds} interleaved rounds after ${t.warmupMs} ms warm-up; each sample a batch of calls lasting >= ${t.targetSampleNs / 1000} µs`;

/** The whole run for the terminal. */
export function formatRun(run: BenchRun): string {
  const m = run.machine;
  const head = [
    `kvm-mmu-emu bench ${run.quick ? '(quick) ' : ''}— ${run.date}`,
    `machine: ${m.cpus} CPUs (${m.cpuModel}), Node ${m.node}, ${m.platform}/${m.arch}`,
    `timing per case: ${describeTiming(run.timing)}`,
    `command: ${run.command}`,
  ];
  return [head.join('\n'), ...run.groups.map(formatGroup)].join('\n\n') + '\n';
}

export const runToJson = (run: BenchRun): string => JSON.stringify(run, null, 2) + '\n';

/** Write results.json, one <group>.svg per group with a chart and one <group>-<name>.svg per further chart into `dir`; returns the paths. */
export function writeRunFiles(run: BenchRun, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const json = join(dir, 'results.json');
  writeFileSync(json, runToJson(run));
  written.push(json);
  for (const g of run.groups) {
    const charts = [...(g.chart ? [{ file: `${g.group}.svg`, chart: g.chart }] : []), ...(g.moreCharts ?? []).map((c) => ({ file: `${g.group}-${c.name}.svg`, chart: c.chart }))];
    for (const { file, chart } of charts) {
      const svg = join(dir, file);
      writeFileSync(svg, renderChart(chart));
      written.push(svg);
    }
  }
  return written;
}
