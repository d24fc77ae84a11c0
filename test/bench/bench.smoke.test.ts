/**
 * Smoke test of the benchmark harness: the mmu-init group runs with tiny
 * sizes and returns well-formed results; the CLI rejects unknown names with a
 * usage error. Timings are never checked here: they belong in bench/README.md.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { BENCH_GROUPS, resolveGroups, runBenchmarks, throughputGroup, UnknownBenchError } from '../../bench/index.js';
import { MMU_INIT_CASES, MMU_INIT_PATHS, makeProbe } from '../../bench/mmu-init.js';
import { formatRun, writeRunFiles } from '../../bench/report.js';
import { renderChart } from '../../bench/svg.js';
import type { BenchRow, Timing } from '../../bench/types.js';
import { benchCommand, checkBenchNames, registerBench } from '../../src/cli/bench.js';
import { UsageError } from '../../src/cli/io.js';
import { STRATEGY_NAMES } from '../../src/mmu/strategies.js';

const TINY: Timing = { timeMs: 2, rounds: 2, warmupMs: 1, minSamples: 4, targetSampleNs: 2_000, prewarmCalls: 50 };

/** A sink for the CLI's output in tests. */
function capture(): { text: () => string; stream: NodeJS.WritableStream & { isTTY?: boolean } } {
  let buf = '';
  const stream = { write: (s: string) => ((buf += s), true), isTTY: false } as unknown as NodeJS.WritableStream & { isTTY?: boolean };
  return { text: () => buf, stream };
}

function expectWellFormed(r: BenchRow): void {
  expect(Number.isFinite(r.opsPerSec) && r.opsPerSec > 0, `${r.id} ops/s`).toBe(true);
  for (const v of [r.medianNs, r.p99Ns]) expect(v !== null && Number.isFinite(v) && v > 0, `${r.id} ns`).toBe(true);
  expect(r.p99Ns!).toBeGreaterThanOrEqual(r.medianNs!);
  expect(r.samples!).toBeGreaterThan(0);
  expect(Number.isInteger(r.batch) && r.batch! >= 1).toBe(true);
}

describe('bench mmu-init (tiny sizes)', () => {
  it('measures every (path, design, case) and pairs the ratios with the rows they compare', async () => {
    const seen: number[] = [];
    const run = await runBenchmarks({ names: ['mmu-init'], timing: TINY, onCase: (p) => seen.push(p.index) });
    expect(run.groups.map((g) => g.group)).toEqual(['mmu-init']);
    const g = run.groups[0]!;
    const expected = MMU_INIT_PATHS.length * STRATEGY_NAMES.length * MMU_INIT_CASES.length;
    expect(g.rows).toHaveLength(expected);
    expect(seen).toEqual(Array.from({ length: expected }, (_, i) => i + 1));
    for (const path of MMU_INIT_PATHS)
      for (const s of STRATEGY_NAMES)
        for (const c of MMU_INIT_CASES) expect(g.rows.some((r) => r.id === `${path}/${s}/${c}`)).toBe(true);
    g.rows.forEach(expectWellFormed);
    // Three ratios per (path, design); each names two rows of this run and is their quotient.
    expect(g.ratios).toHaveLength(MMU_INIT_PATHS.length * STRATEGY_NAMES.length * 3);
    const byId = new Map(g.rows.map((r) => [r.id, r]));
    for (const q of g.ratios) {
      expect(byId.get(q.numerator.row)?.medianNs).toBe(q.numerator.medianNs);
      expect(byId.get(q.denominator.row)?.medianNs).toBe(q.denominator.medianNs);
      expect(q.value).toBeCloseTo(q.numerator.medianNs / q.denominator.medianNs, 10);
    }
    expect(g.notes.some((n) => n.includes('storeRole(0, 0)'))).toBe(true);
    expect(g.chart?.series.map((s) => s.name)).toEqual([...MMU_INIT_CASES]);
    expect(g.chart?.categories).toHaveLength(MMU_INIT_PATHS.length * STRATEGY_NAMES.length);
    expect(run.machine.cpus).toBeGreaterThan(0);
    expect(formatRun(run)).toContain('fast-path speedup');

    const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
    try {
      const files = writeRunFiles(run, dir);
      expect(files.map((f) => f.slice(dir.length + 1)).sort()).toEqual(['mmu-init.svg', 'results.json']);
      const json = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
      expect(json.tool).toBe('kvm-mmu-emu bench');
      expect(json.groups[0].rows).toHaveLength(expected);
      const svg = readFileSync(join(dir, 'mmu-init.svg'), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain('tdp valid-bit');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('each case takes the path it claims (fast hits the fast path, rebuild and baseline never do)', () => {
    for (const path of MMU_INIT_PATHS) {
      for (const s of STRATEGY_NAMES) {
        const fast = makeProbe(path, s, 'fast');
        const rebuild = makeProbe(path, s, 'rebuild');
        const baseline = makeProbe(path, s, 'baseline');
        const limit = makeProbe(path, s, 'limit');
        for (let i = 0; i < 4; i++) {
          expect(fast.op()).toBe(1);
          expect(rebuild.op()).toBe(0);
          expect(baseline.op()).toBe(0);
          limit.op();
        }
        for (const p of [fast, rebuild, baseline, limit]) expect(p.verify?.() ?? null).toBeNull();
      }
    }
  });
});

describe('bench registry and CLI', () => {
  it('resolves names and rejects unknown ones, listing the valid ones', () => {
    expect(resolveGroups([]).map((g) => g.name)).toEqual(BENCH_GROUPS.map((g) => g.name));
    expect(resolveGroups(['mmu-init']).map((g) => g.name)).toEqual(['mmu-init']);
    expect(() => resolveGroups(['nope'])).toThrow(UnknownBenchError);
    expect(() => checkBenchNames(['mmu-init', 'nope'])).toThrow(UsageError);
    expect(() => checkBenchNames(['nope'])).toThrow(/"nope".*valid: .*mmu-init/);
  });

  it('`bench nope` fails as a usage error (exit code 2 in main) before measuring anything', async () => {
    const out = capture();
    const err = capture();
    const program = new Command('kvm-mmu-emu').exitOverride();
    registerBench(program, { out: out.stream, err: err.stream });
    await expect(program.parseAsync(['bench', 'nope'], { from: 'user' })).rejects.toThrow(UsageError);
    expect(err.text()).toBe('');
  });

  it('`bench --list` prints every group', async () => {
    const out = capture();
    await benchCommand([], { list: true }, { out: out.stream, err: capture().stream });
    for (const g of BENCH_GROUPS) expect(out.text()).toContain(g.name);
  });

  it('`bench --json FILE --out DIR` writes the JSON and the charts, progress on stderr', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-cli-'));
    try {
      const out = capture();
      const err = capture();
      const json = join(dir, 'r.json');
      await benchCommand(['mmu-init'], { json, out: join(dir, 'out') }, { out: out.stream, err: err.stream }, TINY);
      expect(JSON.parse(readFileSync(json, 'utf8')).groups[0].group).toBe('mmu-init');
      expect(readFileSync(join(dir, 'out', 'mmu-init.svg'), 'utf8')).toContain('</svg>');
      expect(err.text()).toMatch(/^\[mmu-init 1\/60\] tdp\/valid-bit\/limit: /m);
      expect(out.text()).toContain('rebuild/baseline');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('throughputGroup adapts a rates-only measurement (the walker group plugs in this way)', async () => {
    const walker = throughputGroup('walker', 'walks/s', 'walks/s', async () => [
      { name: 'paging64', opsPerSec: 1e6 },
      { name: 'ept', opsPerSec: 2e6 },
    ]);
    const run = await runBenchmarks({ groups: [walker], timing: TINY });
    const g = run.groups[0]!;
    expect(g.rows.map((r) => [r.id, r.opsPerSec, r.medianNs])).toEqual([
      ['paging64', 1e6, null],
      ['ept', 2e6, null],
    ]);
    expect(renderChart(g.chart!)).toContain('paging64');
  });
});
