/**
 * kvm_zap_obsolete_pages' lock break (Linux v5.17 mmu.c): after
 * BATCH_ZAP_PAGES zaps it calls cond_resched_rwlock_write and, when it
 * dropped mmu_lock, restarts from the old end of active_mmu_pages; the pages
 * it prepared stay on kvm->arch.zapped_obsolete_pages until its final
 * kvm_mmu_commit_zap_page — or until the shrinker (mmu_shrink_scan) commits
 * them for memory. Single thread: the "contended" answer is forced, other
 * agents run between the breaks.
 */
import { describe, expect, it } from 'vitest';
import { agentStats, audit, BATCH_ZAP_PAGES, MIN_FREE_MMU_PAGES, PAGE_STATE, zapAllFastFlip, zapObsoleteUntilBreak, type ShadowVm } from '../../src/shadow/index.js';
import { DATA_GPA, shadowSetup } from './fixtures.js';
import type { SimVcpu } from './sim-vcpu.js';

const ZAPPER = 3;
/** 48 level-1 tables, one per 2 MiB of address space: 48 + 3 shadow pages once every address was touched. */
const TABLES = 48;
const gvaOf = (i: number): bigint => BigInt(i) * 0x20_0000n;

function populated(o: { capacity?: number; maxPages?: number } = {}) {
  const s = shadowSetup('long4', { agents: 4, maxPages: o.maxPages ?? 128, capacity: o.capacity });
  for (let i = 0; i < TABLES; i++) s.pt.map({ gva: gvaOf(i), gpa: BigInt(DATA_GPA + i * 0x1000) });
  s.vcpu.guest = s.pt.root;
  for (let i = 0; i < TABLES; i++) expect(s.vcpu.access(gvaOf(i))).toMatchObject({ kind: 'hit' });
  return s;
}

/** Flip the generation (the first critical section of kvm_mmu_zap_all_fast); the vCPU handles its MMU_RELOAD. */
function flip(vm: ShadowVm, vcpu: SimVcpu): number[] {
  const old = [...Array(vm.capacity).keys()].filter((p) => vm.stateOf(p) === PAGE_STATE.ACTIVE);
  vm.lock.with(ZAPPER, () => zapAllFastFlip(vm, ZAPPER, { request: () => undefined }));
  vcpu.unload();
  return old;
}

const held = (vcpu: SimVcpu) => new Map(vcpu.roots.heldPages().map((p) => [p, 1]));
const parked = (vm: ShadowVm) => Atomics.load(vm.h.zappedObsoleteCount, 0);

describe('kvm_zap_obsolete_pages lock break', () => {
  it('breaks only after BATCH_ZAP_PAGES zaps, parks what it prepared, lets a vCPU fault in between, and frees every old page in the end', () => {
    const { vm, vcpu } = populated();
    const old = flip(vm, vcpu);
    expect(old.length).toBe(TABLES + 3);
    let zapped = 0;
    let breaks = 0;
    for (;;) {
      const r = vm.lock.with(ZAPPER, () => zapObsoleteUntilBreak(vm, ZAPPER, () => true));
      zapped += r.zapped;
      if (r.done) break;
      breaks++;
      // A break comes after exactly one batch (the old pages here have no children to zap with them).
      expect(r.zapped).toBe(BATCH_ZAP_PAGES);
      expect(parked(vm)).toBe(zapped);
      // An audit in between finds every parked page on zapped_obsolete_pages, none freed yet.
      expect(audit(vm, held(vcpu))).toEqual([]);
      // The vCPU that waited for the lock reloads and faults in the new generation meanwhile.
      expect(vcpu.access(gvaOf(breaks * 7))).toMatchObject({ kind: 'hit', gpa: DATA_GPA + breaks * 7 * 0x1000 });
      expect(vm.genOf(vcpu.roots.rootHpa)).toBe(vm.mmuValidGen);
    }
    expect(breaks).toBe(Math.floor((old.length - 1) / BATCH_ZAP_PAGES));
    expect(zapped).toBe(old.length);
    expect(parked(vm)).toBe(0);
    // Every old page is gone (limbo or free, or handed out again to the new generation); nothing obsolete is left.
    for (let p = 0; p < vm.capacity; p++) {
      if (vm.stateOf(p) === PAGE_STATE.ACTIVE || vm.stateOf(p) === PAGE_STATE.ZAPPED) expect(vm.isObsolete(p), `page ${p}`).toBe(false);
    }
    expect(audit(vm, held(vcpu))).toEqual([]);
  });

  it('never breaks while nobody waits: one hold, as before', () => {
    const { vm, vcpu } = populated();
    const old = flip(vm, vcpu);
    const r = vm.lock.with(ZAPPER, () => zapObsoleteUntilBreak(vm, ZAPPER, () => vm.lock.contended()));
    expect(r).toEqual({ zapped: old.length, done: true });
    expect(parked(vm)).toBe(0);
  });

  it('an allocation short of free pages commits the parked pages, as the shrinker does; the resumed zap finishes', () => {
    // Capacity = n_max = pages in use + MIN_FREE_MMU_PAGES + 1: filling it recycles nothing; then, while
    // old pages are parked, n_used says there is room (make_mmu_pages_available zaps nothing) but the
    // arena runs below MIN_FREE_MMU_PAGES free pages during the vCPU's reload and fault.
    const size = TABLES + 3 + MIN_FREE_MMU_PAGES + 1;
    const { vm, vcpu } = populated({ capacity: size, maxPages: size });
    expect(agentStats(vm, 0).recycled).toBe(0);
    flip(vm, vcpu);
    const r1 = vm.lock.with(ZAPPER, () => zapObsoleteUntilBreak(vm, ZAPPER, () => true));
    expect(r1.done).toBe(false);
    expect(parked(vm)).toBe(BATCH_ZAP_PAGES);
    // The reload and the first fault take four of the six free pages; six more tables need more pages
    // than are free: the shrinker frees the parked ones (without it the fourth would get no page).
    for (let i = 0; i < 7; i++) expect(vcpu.access(gvaOf(5 + i)), `access ${i}`).toMatchObject({ kind: 'hit', gpa: DATA_GPA + (5 + i) * 0x1000 });
    expect(agentStats(vm, 0).obsoleteCommitsByShrinker).toBe(1);
    expect(agentStats(vm, 0).noPages).toBe(0);
    expect(parked(vm)).toBe(0);
    expect(audit(vm, held(vcpu))).toEqual([]);
    let r = r1;
    while (!r.done) r = vm.lock.with(ZAPPER, () => zapObsoleteUntilBreak(vm, ZAPPER, () => true));
    expect(parked(vm)).toBe(0);
    expect(audit(vm, held(vcpu))).toEqual([]);
  });
});
