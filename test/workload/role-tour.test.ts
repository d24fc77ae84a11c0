/**
 * The built-in role tour: deterministic for a seed, and what it finds per
 * design (the comparison `npm start` prints).
 */
import { describe, expect, it } from 'vitest';
import { STRATEGY_NAMES } from '../../src/mmu/strategies.js';
import { runTour } from '../../src/workload/role-tour.js';

const tour = { vcpus: 8, opsPerVcpu: 20_000, seed: 1 };

describe('role tour', () => {
  it('is deterministic: the same seed gives the same counts', () => {
    const a = runTour('valid-bit', { ...tour, opsPerVcpu: 4000 });
    const b = runTour('valid-bit', { ...tour, opsPerVcpu: 4000 });
    expect(a.stats).toEqual(b.stats);
    expect(a.checks).toEqual(b.checks);
  });

  const results = Object.fromEntries(STRATEGY_NAMES.map((s) => [s, runTour(s, tour)]));

  it('every design runs the same guest operations (the designs differ only in the MMU)', () => {
    for (const s of STRATEGY_NAMES) {
      expect(results[s]!.stats.guestOps).toBe(results['valid-bit']!.stats.guestOps);
      expect(results[s]!.stats.accesses).toBeGreaterThan(0);
      expect(results[s]!.cpuidBroadcasts).toBeGreaterThan(0);
    }
  });

  it('word-zero: the nested walk reads a wrong value from the zeroed guest_mmu role (observable)', () => {
    const r = results['word-zero']!;
    expect(r.checks.invalidReadObservable).toBeGreaterThan(0);
    const f = r.findings.find((x) => x.severity === 'observable');
    expect(f?.detail).toMatch(/FNAME\(walk_addr_generic\) read guest_mmu\.mmu_role\.base\.efer_nx = 0/);
  });

  it('level-zero: misses rebuilds of nested_mmu, all latent', () => {
    const r = results['level-zero']!;
    expect(r.checks.missedRebuildLatent).toBeGreaterThan(0);
    expect(r.checks.missedRebuildObservable).toBe(0);
  });

  it('valid-bit, cpuid-stale, invalid-bit and level-zero show nothing observable', () => {
    for (const s of ['valid-bit', 'cpuid-stale', 'invalid-bit', 'level-zero'] as const) {
      expect(results[s]!.checks.invalidReadObservable + results[s]!.checks.missedRebuildObservable, s).toBe(0);
    }
  });
});
