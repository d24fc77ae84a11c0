/**
 * Finding or creating the shadow page for (gfn, role) — Linux v5.17 mmu.c
 * kvm_mmu_get_page, kvm_mmu_alloc_page, account_shadowed — and the
 * write-tracking side of it.
 *
 * The role of a page is the faulting context's base role (mmu_role.base)
 * with level, direct and access replaced, and, when the guest uses 4-byte
 * entries, the quadrant of the address; nothing else of the context goes
 * into the key, and a lookup compares the whole word, so two roles for one
 * gfn always get two pages.
 *
 * Write tracking, in its simplest correct form: every indirect page
 * write-tracks its gfn (gfn_track + 1) and write-protects every leaf SPTE
 * mapping that gfn. KVM v5.17 tracks only upper-level pages and lets 4 KiB
 * pages go unsync instead; the unsync machinery is not modelled, so a write
 * to any shadowed guest table is caught and zaps (zap.ts unprotectGfn).
 */
import { ACC, PR } from '../role/page-role.js';
import { ShadowArenaError, type ShadowVm } from './arena.js';
import { bucketFirst, bucketNext, hashGfn, hashInsert } from './hash.js';
import { NIL } from './layout.js';
import { activate, takeFreePage } from './lists.js';
import { rmapWriteProtect } from './spte.js';
import { mutant } from '../check/mutants.js';

/** What kvm_mmu_get_page reads from vcpu->arch.mmu. */
export interface PageRoleSource {
  /** mmu->mmu_role.base.word. */
  readonly roleBase: number;
  /** mmu->direct_map. */
  readonly directMap: boolean;
}

/**
 * The role kvm_mmu_get_page looks up: `base` with level, direct and access
 * replaced; with has_4_byte_gpte, quadrant = (gaddr >> (12 + 9·level)) &
 * ((1 << level) − 1), kept to the field's two bits.
 */
export function pageRole(base: number, gaddr: bigint, level: number, direct: boolean, access: number): number {
  let role = (base & ~(PR.LEVEL_MASK | PR.DIRECT | PR.ACCESS_MASK)) | level | (direct ? PR.DIRECT : 0) | ((access & ACC.ALL) << PR.ACCESS_SHIFT);
  if (role & PR.HAS_4_BYTE_GPTE) {
    const q = Number((BigInt.asUintN(64, gaddr) >> BigInt(12 + 9 * level)) & BigInt((1 << level) - 1)) & 3;
    role = (role & ~PR.QUADRANT_MASK) | (q << PR.QUADRANT_SHIFT);
  }
  return role >>> 0;
}

/**
 * kvm_mmu_get_page: the page for (gfn, role of `mmu` at this level), or NIL
 * when a page is needed and the arena has none (reported by the caller).
 * Requires mmu_lock. The lookup walks the gfn's bucket skipping obsolete
 * pages (for_each_valid_sp), counting collisions; a miss allocates a page of
 * the current generation at the head of active_mmu_pages and, for an
 * indirect page, write-tracks the gfn.
 */
export function getPage(vm: ShadowVm, agent: number, mmu: PageRoleSource, gfn: number, gaddr: bigint, level: number, direct: boolean, access: number): number {
  vm.assertLocked(agent, 'kvm_mmu_get_page');
  const role = pageRole(mmu.roleBase, gaddr, level, direct, access);
  const bucket = hashGfn(gfn);
  const gen = vm.mmuValidGen;
  let collisions = 0;
  for (let p = bucketFirst(vm, bucket); p !== NIL; p = bucketNext(vm, p)) {
    const pRole = vm.roleOf(p);
    if (pRole & PR.INVALID || (vm.genOf(p) !== gen && !mutant['lookup-ignores-generation'])) {
      vm.count(agent, 'obsoleteSkipped');
      continue;
    }
    if (vm.gfnOf(p) !== gfn) {
      collisions++;
      continue;
    }
    // A different role for the same gfn: no unsync pages exist here, so nothing to zap (KVM zaps unsync ones).
    if (pRole !== role && !mutant['lookup-ignores-role']) continue;
    // Prove mode (stress invariant 3): a lookup hands out only a valid page of exactly the role asked for.
    if (vm.prove && (pRole !== role || vm.isObsolete(p))) {
      const why = pRole !== role ? `has role ${pRole.toString(16)}, the lookup asked for ${role.toString(16)}` : `is obsolete (generation ${vm.genOf(p)}, the VM's is ${gen})`;
      throw new ShadowArenaError(`kvm_mmu_get_page: page ${p} (gfn ${gfn}) ${why}`);
    }
    // direct_map: done; shadow: no unsync page to sync, no write-flooding count to clear.
    vm.count(agent, 'hashHits');
    noteCollisions(vm, agent, collisions);
    vm.hooks[agent]?.trace?.getPage(gfn, pRole, false, gen, vm.rootCountOf(p));
    return p;
  }
  vm.count(agent, 'hashMisses');
  noteCollisions(vm, agent, collisions);
  const p = allocPage(vm, agent);
  if (p === NIL) return NIL;
  vm.f64[p * vm.swF + vm.oGfn] = gfn;
  Atomics.store(vm.i32, p * vm.sw32 + vm.oRole, role | 0);
  hashInsert(vm, p, bucket);
  if (!direct) {
    accountShadowed(vm, gfn);
    // Every indirect page is write-tracked here, so existing writable leaves of the gfn lose W.
    if (rmapWriteProtect(vm, gfn)) remoteTlbFlush(vm, agent);
  }
  vm.count(agent, 'pagesCreated');
  vm.hooks[agent]?.trace?.getPage(gfn, role, true, gen, 0);
  return p;
}

function noteCollisions(vm: ShadowVm, agent: number, collisions: number): void {
  if (collisions === 0) return;
  vm.count(agent, 'collisions', collisions);
  if (collisions > vm.h.maxCollisions[0]!) Atomics.store(vm.h.maxCollisions, 0, collisions);
}

/** kvm_mmu_alloc_page: a free page, generation = the VM's, at the head of active_mmu_pages. */
function allocPage(vm: ShadowVm, agent: number): number {
  const p = takeFreePage(vm, agent);
  if (p === NIL) return NIL;
  const b = p * vm.sw32;
  Atomics.store(vm.i32, b + vm.oGen, vm.mmuValidGen);
  Atomics.store(vm.i32, b + vm.oRootCount, 0);
  vm.i32[b + vm.oParentHead] = NIL;
  vm.i32[b + vm.oParentCount] = 0;
  activate(vm, p);
  return p;
}

/** account_shadowed: indirect_shadow_pages + 1, gfn_track + 1 (kvm_slot_page_track_add_page). */
function accountShadowed(vm: ShadowVm, gfn: number): void {
  Atomics.add(vm.h.indirectShadowPages, 0, 1);
  Atomics.add(vm.h.gfnTrack, gfn, 1);
}

/** unaccount_shadowed. */
export function unaccountShadowed(vm: ShadowVm, gfn: number): void {
  Atomics.sub(vm.h.indirectShadowPages, 0, 1);
  Atomics.sub(vm.h.gfnTrack, gfn, 1);
}

/** kvm_slot_page_track_is_active(WRITE) for a gfn (lock-free read). */
export const gfnTracked = (vm: ShadowVm, gfn: number): boolean => gfn >= 0 && gfn < vm.guestPages && Atomics.load(vm.h.gfnTrack, gfn) !== 0;

/**
 * kvm_flush_remote_tlbs as seen from the cache: the agent's hook asks every
 * vCPU to flush (without waiting — the cache's safety does not depend on
 * it; see arena.ts), and the event is counted.
 */
export function remoteTlbFlush(vm: ShadowVm, agent: number): void {
  vm.count(agent, 'remoteTlbFlushes');
  vm.hooks[agent]?.flushRemoteTlbs?.();
}
