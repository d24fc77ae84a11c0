/**
 * Smoke test of the reset-broadcast group at its smoke sizes (N = 1 and 2,
 * two rounds): every protocol runs on real vCPU workers, every result is well
 * formed and verified (each vCPU applied every CPUID change sent), tables and
 * charts come out. Timings are never checked here.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBenchmarks } from '../../bench/index.js';
import { RawBroadcaster } from '../../bench/raw-broadcast.js';
import { formatLatency } from '../../bench/reset-broadcast-report.js';
import { broadcastRatios, broadcastRow, LOAD_MODES, PROTOCOLS, RESET_BROADCAST_SETTINGS, type CellResult } from '../../bench/reset-broadcast.js';
import { formatRun, writeRunFiles } from '../../bench/report.js';
import type { BenchRow, Timing } from '../../bench/types.js';

/** Shorter than --quick: the groups take their smoke sizes. */
const TINY: Timing = { timeMs: 2, rounds: 2, warmupMs: 1, minSamples: 4, targetSampleNs: 2_000, prewarmCalls: 50 };

function expectWellFormed(r: BenchRow): void {
  expect(Number.isFinite(r.opsPerSec) && r.opsPerSec > 0, `${r.id} rate`).toBe(true);
  expect(r.medianNs !== null && Number.isFinite(r.medianNs) && r.medianNs > 0, `${r.id} median`).toBe(true);
  expect(r.p99Ns!).toBeGreaterThanOrEqual(r.medianNs!);
}

describe('bench reset-broadcast (smoke sizes)', () => {
  it('runs every protocol at N = 1 and 2, idle and busy, verified, with ratios, tables and one chart per load', async () => {
    const s = RESET_BROADCAST_SETTINGS.smoke;
    const run = await runBenchmarks({ names: ['reset-broadcast'], timing: TINY });
    const g = run.groups[0]!;
    expect(g.group).toBe('reset-broadcast');
    expect(g.rows).toHaveLength(s.ns.length * LOAD_MODES.length * PROTOCOLS.length);
    for (const mode of LOAD_MODES)
      for (const n of s.ns)
        for (const p of PROTOCOLS) {
          const row = g.rows.find((r) => r.id === `${mode}/N=${n}/${p}`);
          expect(row, `${mode}/N=${n}/${p}`).toBeDefined();
          expectWellFormed(row!);
          expect(row!.samples).toBe(s.minRounds);
        }
    // Four ratios per (load, N), each the quotient of two rows of this run.
    expect(g.ratios).toHaveLength(s.ns.length * LOAD_MODES.length * 4);
    const byId = new Map(g.rows.map((r) => [r.id, r]));
    for (const q of g.ratios) {
      expect(byId.get(q.numerator.row)?.medianNs).toBe(q.numerator.medianNs);
      expect(byId.get(q.denominator.row)?.medianNs).toBe(q.denominator.medianNs);
    }
    expect(g.tables?.map((t) => t.title.split(':')[0])).toEqual(['idle', 'idle', 'busy', 'busy']);
    expect(g.tables![0]!.rows.map((r) => r[0])).toEqual(s.ns.map(String));
    expect(g.moreCharts?.map((c) => c.name)).toEqual(['idle', 'busy']);
    expect(g.moreCharts![0]!.chart.series.map((x) => x.name)).toEqual([...PROTOCOLS]);
    const text = formatRun(run);
    expect(text).toContain('shm/limit');
    expect(text).toContain('p50 / p99');
    const dir = mkdtempSync(join(tmpdir(), 'bench-reset-'));
    try {
      expect(writeRunFiles(run, dir).map((f) => f.slice(dir.length + 1)).sort()).toEqual(['reset-broadcast-busy.svg', 'reset-broadcast-idle.svg', 'results.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a row is N / mean latency, with p50 and p99 per broadcast; ratios divide p50 latencies', () => {
    const row = broadcastRow('idle', 4, 'shm', [2, 1, 3]);
    expect(row.opsPerSec).toBeCloseTo(4 / 0.002, 6);
    expect(row.medianNs).toBe(2e6);
    expect(row.p99Ns).toBeCloseTo(2.98e6, 6);
    const rows = new Map([
      ['shm', row] as const,
      ['limit', broadcastRow('idle', 4, 'limit', [1, 1, 1])] as const,
      ['rpc', broadcastRow('idle', 4, 'rpc', [8, 8, 8])] as const,
    ]);
    const cell: CellResult = { mode: 'idle', n: 4, createMs: 1, rounds: 3, cellMs: 1, rows, skipped: new Map([['raw', 'not measured']]) };
    const ratios = broadcastRatios([cell]);
    expect(ratios.map((r) => [r.label, r.value])).toEqual([
      ['idle/N=4 shm/limit', 2],
      ['idle/N=4 rpc/shm', 4],
    ]);
    expect(formatLatency(0.0561)).toBe('56.1 µs');
    expect(formatLatency(12.34)).toBe('12.3 ms');
    expect(formatLatency(2500)).toBe('2.50 s');
  });

  it('the raw limit wakes each of its workers and hears back from all', async () => {
    const raw = new RawBroadcaster(3);
    try {
      await raw.ensure(3);
      for (const n of [1, 3, 2, 3]) {
        await raw.broadcast(n);
        expect(raw.lastAcks()).toBe(n);
      }
      await expect(raw.broadcast(4)).rejects.toThrow(RangeError);
    } finally {
      await raw.close();
    }
  });
});
