/**
 * Smoke test of the zap-all group at its smoke sizes (N = 1 and 2, two
 * rounds): both protocols run on real vCPU workers on a shadow-paging host,
 * every result is well formed and verified (every vCPU reloaded after every
 * zap, the cache audit is clean at teardown), tables and charts come out.
 * Timings are never checked here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBenchmarks } from '../../bench/index.js';
import { formatRun, writeRunFiles } from '../../bench/report.js';
import type { BenchRow, Timing } from '../../bench/types.js';
import { callRow, reloadRow, ZAP_ALL_SETTINGS, ZAP_PROTOCOLS, zapRatios, type ZapCellResult, type ZapSample } from '../../bench/zap-all.js';

/** Shorter than --quick: the groups take their smoke sizes. */
const TINY: Timing = { timeMs: 2, rounds: 2, warmupMs: 1, minSamples: 4, targetSampleNs: 2_000, prewarmCalls: 50 };

function expectWellFormed(r: BenchRow, rounds: number): void {
  expect(Number.isFinite(r.opsPerSec) && r.opsPerSec >= 0, `${r.id} rate`).toBe(true);
  expect(r.medianNs !== null && Number.isFinite(r.medianNs) && r.medianNs > 0, `${r.id} median`).toBe(true);
  expect(r.p99Ns!).toBeGreaterThanOrEqual(r.medianNs!);
  expect(r.samples).toBe(rounds);
}

describe('bench zap-all (smoke sizes)', () => {
  it('runs zap-all-fast and one-by-one at N = 1 and 2 on busy vCPUs, verified, with ratios, tables and two charts', async () => {
    const s = ZAP_ALL_SETTINGS.smoke;
    const run = await runBenchmarks({ names: ['zap-all'], timing: TINY });
    const g = run.groups[0]!;
    expect(g.group).toBe('zap-all');
    expect(g.rows).toHaveLength(s.ns.length * ZAP_PROTOCOLS.length * 2);
    for (const n of s.ns)
      for (const p of ZAP_PROTOCOLS)
        for (const fig of ['call', 'reload']) {
          const row = g.rows.find((r) => r.id === `N=${n}/${p}/${fig}`);
          expect(row, `N=${n}/${p}/${fig}`).toBeDefined();
          expectWellFormed(row!, s.minRounds);
          if (fig === 'reload') expect(row!.opsPerSec).toBeGreaterThan(0);
        }
    // Two ratios per N, each the quotient of two rows of this run.
    expect(g.ratios).toHaveLength(s.ns.length * 2);
    const byId = new Map(g.rows.map((r) => [r.id, r]));
    for (const q of g.ratios) {
      expect(byId.get(q.numerator.row)?.medianNs).toBe(q.numerator.medianNs);
      expect(byId.get(q.denominator.row)?.medianNs).toBe(q.denominator.medianNs);
    }
    const cells = (g.extra as { cells: { n: number; warmPages: number; protocols: Record<string, { zapped: { p50: number }; callMs: number[] }> }[] }).cells;
    expect(cells.map((c) => c.n)).toEqual([...s.ns]);
    for (const c of cells) {
      expect(c.warmPages).toBeGreaterThan(0);
      for (const p of ZAP_PROTOCOLS) expect(c.protocols[p]!.callMs).toHaveLength(s.minRounds);
    }
    expect(g.tables).toHaveLength(2);
    expect(g.tables![0]!.rows.map((r) => r[0])).toEqual(s.ns.map(String));
    expect(g.chart?.series.map((x) => x.name)).toEqual([...ZAP_PROTOCOLS]);
    expect(g.moreCharts?.map((c) => c.name)).toEqual(['reload']);
    const text = formatRun(run);
    expect(text).toContain('one-by-one/fast');
    expect(text).toContain('fast lock breaks');
    expect(text).toContain('pages/s');
    const dir = mkdtempSync(join(tmpdir(), 'bench-zap-'));
    try {
      expect(writeRunFiles(run, dir).map((f) => f.slice(dir.length + 1)).sort()).toEqual(['results.json', 'zap-all-reload.svg', 'zap-all.svg']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a call row is pages zapped / call time, a reload row N / mean time; ratios divide p50s', () => {
    const sample = (callMs: number, reloadMs: number, zapped: number): ZapSample => ({ callMs, reloadMs, zapped, usedBefore: zapped, underfilled: false, lockBreaks: 0 });
    const fast = [sample(1, 2, 100), sample(3, 4, 300)];
    const slow = [sample(4, 8, 100), sample(4, 8, 100)];
    const fc = callRow(2, 'fast', fast);
    expect(fc.opsPerSec).toBeCloseTo(400 / 0.004, 6);
    expect(fc.medianNs).toBe(2e6);
    const fr = reloadRow(2, 'fast', fast);
    expect(fr.opsPerSec).toBeCloseTo(2 / 0.003, 6);
    const cell: ZapCellResult = {
      n: 2,
      createMs: 1,
      warmMs: 1,
      warmPages: 100,
      targetPages: 90,
      rounds: 2,
      cellMs: 1,
      samples: new Map([
        ['fast', fast],
        ['one-by-one', slow],
      ]),
      callRows: new Map([
        ['fast', fc],
        ['one-by-one', callRow(2, 'one-by-one', slow)],
      ]),
      reloadRows: new Map([
        ['fast', fr],
        ['one-by-one', reloadRow(2, 'one-by-one', slow)],
      ]),
    };
    expect(zapRatios([cell]).map((r) => [r.label, r.value])).toEqual([
      ['N=2 one-by-one/fast call', 2],
      ['N=2 one-by-one/fast reload', 8 / 3],
    ]);
  });
});
