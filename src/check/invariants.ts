/**
 * The eight stress invariants in one table: their names, the name their
 * findings carry, and which vCPU counters (vcpu-layout.ts VCPU_STATS) count
 * their checks and their latent and observable findings. Invariant 5 is
 * counted by the coordinator (lost-invalidation.ts), not by a vCPU; the
 * cache's assertions, dead threads and the teardown audit add to 3 and 4
 * where the runs are summed up (src/stress).
 */
import type { VcpuStat } from '../vcpu/vcpu-layout.js';

export interface InvariantDef {
  readonly id: number;
  readonly name: string;
  /** The `invariant` field of its findings (and of `sim --ignore`). */
  readonly finding: string;
  readonly checked: VcpuStat | null;
  readonly latent: readonly VcpuStat[];
  readonly observable: readonly VcpuStat[];
}

export const INVARIANTS = [
  { id: 1, name: 'fresh configuration', finding: 'fresh-configuration', checked: 'freshChecks', latent: ['freshLatent'], observable: ['freshObservable'] },
  { id: 2, name: 'correct accesses', finding: 'correct-accesses', checked: 'accessChecks', latent: [], observable: ['accessMismatches'] },
  { id: 3, name: 'shadow sharing', finding: 'shadow-sharing', checked: 'freshChecks', latent: [], observable: ['sharingViolations'] },
  { id: 4, name: 'no use after free', finding: 'no-use-after-free', checked: 'freshChecks', latent: [], observable: ['useAfterFree'] },
  { id: 5, name: 'no lost invalidation', finding: 'no-lost-invalidation', checked: null, latent: [], observable: [] },
  { id: 6, name: 'TLB coherence', finding: 'tlb-coherence', checked: 'tlbChecks', latent: [], observable: ['staleTranslations'] },
  { id: 7, name: 'no reads of invalidated roles', finding: 'no-invalid-role-reads', checked: 'invalidations', latent: ['invalidReadLatent'], observable: ['invalidReadObservable'] },
  { id: 8, name: 'effective invalidation', finding: 'effective-invalidation', checked: 'invalidations', latent: ['missedRebuildLatent'], observable: ['missedRebuildObservable'] },
] as const satisfies readonly InvariantDef[];

export type InvariantFinding = (typeof INVARIANTS)[number]['finding'];

/** Every vCPU counter of an observable violation. */
export const OBSERVABLE_STATS: readonly VcpuStat[] = INVARIANTS.flatMap((d) => d.observable);

/** Sum of `stats` over the named counters. */
export const sumOf = (read: (stat: VcpuStat) => number, stats: readonly VcpuStat[]): number => stats.reduce((a, k) => a + read(k), 0);
