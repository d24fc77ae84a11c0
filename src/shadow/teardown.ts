/**
 * The end of a VM's cache (kvm_mmu_uninit_vm after every vCPU's
 * kvm_mmu_destroy): no root reference may be left; zap every page, reclaim
 * limbo, and the audit must be clean with every page back on the free list.
 * Call it once no other agent uses the cache (mmu_lock is then uncontended).
 */
import type { ShadowVm } from './arena.js';
import { audit } from './audit.js';
import { reclaimLimbo } from './lists.js';
import { vmGauges, vmStats, type ShadowCounters, type ShadowGauges } from './stats.js';
import { zapAllLocked } from './zap.js';

/** What the cache looked like after teardown: every root given back, every page free. */
export interface ShadowTeardown {
  readonly stats: ShadowCounters;
  readonly gauges: ShadowGauges;
  /** Pages whose root count was not zero after every vCPU stopped (page → count). */
  readonly rootsLeft: ReadonlyMap<number, number>;
  /** Audit violations (audit.ts), empty when consistent. */
  readonly audit: readonly string[];
  /** Free pages after zap-all and reclaim, and the arena's capacity (equal when nothing leaked). */
  readonly freePages: number;
  readonly capacity: number;
}

export function teardownCache(vm: ShadowVm, agent: number): ShadowTeardown {
  const rootsLeft = new Map<number, number>();
  for (let p = 0; p < vm.capacity; p++) {
    const n = vm.rootCountOf(p);
    if (n !== 0) rootsLeft.set(p, n);
  }
  vm.lock.with(agent, () => {
    zapAllLocked(vm, agent);
    reclaimLimbo(vm, agent);
  });
  return { stats: vmStats(vm), gauges: vmGauges(vm), rootsLeft, audit: audit(vm), freePages: vm.freeCount, capacity: vm.capacity };
}

/** The teardown's problems as sentences (empty when the cache ended clean). */
export function teardownProblems(t: ShadowTeardown): string[] {
  return [
    ...[...t.rootsLeft].map(([p, n]) => `page ${p} still has ${n} root reference(s) after every vCPU stopped`),
    ...t.audit,
    ...(t.freePages !== t.capacity ? [`${t.capacity - t.freePages} of ${t.capacity} pages not free after teardown`] : []),
  ];
}
