/**
 * Statistics of the shadow cache, per agent (each vCPU, the coordinator) and
 * per VM (the sum), read from shared memory as snapshots: counters are
 * owner-only plain writes, so a value read by another thread may lag.
 * Names and meanings: layout.ts SHADOW_STATS. The VM-wide gauges (pages in
 * use, free, in limbo, the generation, the longest bucket walk) come from
 * the header.
 */
import type { ShadowVm } from './arena.js';
import { SHADOW_STAT_INDEX, SHADOW_STATS, type ShadowStat } from './layout.js';

export type ShadowCounters = Record<ShadowStat, number>;

export interface ShadowGauges {
  /** n_max_mmu_pages, n_used_mmu_pages. */
  readonly maxPages: number;
  readonly usedPages: number;
  readonly freePages: number;
  readonly limboPages: number;
  readonly capacity: number;
  readonly generation: number;
  readonly indirectShadowPages: number;
  /** max_mmu_page_hash_collisions. */
  readonly maxCollisions: number;
}

/** One agent's counters. */
export function agentStats(vm: ShadowVm, agent: number): ShadowCounters {
  vm.checkAgent(agent);
  const s = vm.agentStats[agent]!;
  return Object.fromEntries(SHADOW_STATS.map((k) => [k, s[SHADOW_STAT_INDEX[k]]!])) as ShadowCounters;
}

/** The VM's counters: the sum over agents. */
export function vmStats(vm: ShadowVm): ShadowCounters {
  const t = Object.fromEntries(SHADOW_STATS.map((k) => [k, 0])) as ShadowCounters;
  for (const s of vm.agentStats) for (const k of SHADOW_STATS) t[k] += s[SHADOW_STAT_INDEX[k]]!;
  return t;
}

export function vmGauges(vm: ShadowVm): ShadowGauges {
  return {
    maxPages: vm.nMax,
    usedPages: vm.nUsed,
    freePages: vm.freeCount,
    limboPages: vm.limboCount,
    capacity: vm.capacity,
    generation: vm.mmuValidGen,
    indirectShadowPages: Atomics.load(vm.h.indirectShadowPages, 0),
    maxCollisions: Atomics.load(vm.h.maxCollisions, 0),
  };
}
