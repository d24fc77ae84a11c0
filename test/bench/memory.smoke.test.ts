/**
 * Smoke test of the memory group at its smoke sizes (N = 1 and 2, idle and
 * busy): one fresh process per (load, N), well-formed samples, the table and
 * the charts. Memory figures are not checked beyond "a VM is not free".
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBenchmarks } from '../../bench/index.js';
import { MEMORY_SETTINGS } from '../../bench/memory.js';
import { writeRunFiles } from '../../bench/report.js';
import type { Timing } from '../../bench/types.js';

/** Shorter than --quick: the group takes its smoke sizes. */
const TINY: Timing = { timeMs: 2, rounds: 2, warmupMs: 1, minSamples: 4, targetSampleNs: 2_000, prewarmCalls: 50 };

describe('bench memory (smoke sizes)', () => {
  it('measures RSS per vCPU in a fresh process per (load, N) and reports creation time', async () => {
    const s = MEMORY_SETTINGS.smoke;
    const run = await runBenchmarks({ names: ['memory'], timing: TINY });
    const g = run.groups[0]!;
    expect(g.rows.map((r) => r.id)).toEqual(s.ns.flatMap((n) => s.modes.map((m) => `${m}/N=${n}`)));
    const samples = (g.extra as { samples: { n: number; baselineRss: number; rss: number; createMs: number; guestOps: number; mode: string }[] }).samples;
    for (const x of samples) {
      expect(x.baselineRss).toBeGreaterThan(0);
      // A vCPU is a worker thread with its own V8 isolate: the VM cannot be free.
      expect(x.rss - x.baselineRss, `${x.mode} N=${x.n}`).toBeGreaterThan(0);
      expect(x.createMs).toBeGreaterThan(0);
      if (x.mode === 'busy') expect(x.guestOps).toBeGreaterThan(0);
      else expect(x.guestOps).toBeLessThanOrEqual(x.n);
    }
    expect(g.tables![0]!.rows).toHaveLength(s.ns.length);
    expect(g.chart?.series.map((x) => x.name)).toEqual([...s.modes]);
    const dir = mkdtempSync(join(tmpdir(), 'bench-mem-'));
    try {
      writeRunFiles(run, dir);
      expect(readdirSync(dir).sort()).toEqual(['memory-create.svg', 'memory.svg', 'results.json']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
