/**
 * Roots: allocating, loading and freeing the roots of one MMU context
 * (Linux v5.17 mmu.c mmu_alloc_root, mmu_alloc_direct_roots,
 * mmu_alloc_shadow_roots, kvm_mmu_load, kvm_mmu_reload via its caller,
 * mmu_free_root_page, kvm_mmu_free_roots, kvm_mmu_unload).
 *
 * A context's root fields (root_hpa, root_pgd, prev_roots, pae_root) live in
 * a RootSet owned by the vCPU thread, as they live in `struct kvm_mmu`; the
 * cache does not know which context a RootSet belongs to — the caller passes
 * the set and the context's levels. Every root a RootSet holds (current,
 * previous, PAE) is one reference on the page's rootCount, changed only with
 * Atomics and only under mmu_lock; a page is freed only when its count is
 * zero, so a root is never reused while any vCPU holds it.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { ACC, LEVEL, PR } from '../role/page-role.js';
import type { ShadowVm } from './arena.js';
import { NIL } from './layout.js';
import { getPage, type PageRoleSource } from './page-cache.js';
import { commitZapPage, makePagesAvailable, prepareZapPage, ShadowZapError, type InvalidList } from './zap.js';

/** INVALID_PAGE: no root. */
export const INVALID_PAGE = -1;
/** root_hpa naming the context's pae_root table (behind pml4_root / pml5_root when deeper): no shadow page. */
export const SPECIAL_ROOT = -2;
/** INVALID_PAE_ROOT. */
export const INVALID_PAE_ROOT = -1;
/** KVM_MMU_NUM_PREV_ROOTS. */
export const NUM_PREV_ROOTS = 3;
/** KVM_MMU_ROOT_CURRENT, KVM_MMU_ROOT_PREVIOUS(i), KVM_MMU_ROOTS_ALL. */
export const ROOT_CURRENT = 1;
export const rootPrevious = (i: number): number => 2 << i;
export const ROOTS_ALL = ~0;

/** What root code reads from a context (`struct kvm_mmu`). */
export interface RootMmuView extends PageRoleSource {
  /** mmu->root_level (guest paging depth). */
  readonly rootLevel: number;
  /** mmu->shadow_root_level (depth of KVM's own table). */
  readonly shadowRootLevel: number;
}

/** `struct kvm_mmu_root_info`. */
export interface RootInfo {
  pgd: bigint;
  hpa: number;
}

/** The root fields of one context. Owner-only: the vCPU thread. */
export class RootSet {
  /** mmu->root_hpa: a page, SPECIAL_ROOT or INVALID_PAGE. */
  rootHpa = INVALID_PAGE;
  /** mmu->root_pgd. */
  rootPgd = 0n;
  /** mmu->prev_roots, most recently used first. */
  readonly prevRoots: RootInfo[] = Array.from({ length: NUM_PREV_ROOTS }, () => ({ pgd: 0n, hpa: INVALID_PAGE }));
  /** mmu->pae_root[4]: a page per 1 GiB quarter, or INVALID_PAE_ROOT. */
  readonly paeRoot: number[] = [INVALID_PAE_ROOT, INVALID_PAE_ROOT, INVALID_PAE_ROOT, INVALID_PAE_ROOT];
  /**
   * Frees that found root_hpa naming a table the context's levels do not
   * describe (KVM would free through a wrong pointer here); counted, not done.
   */
  mismatchedFrees = 0;

  /** Every page this set holds a reference on (current, PAE, previous). */
  heldPages(): number[] {
    const out: number[] = [];
    if (this.rootHpa >= 0) out.push(this.rootHpa);
    if (this.rootHpa === SPECIAL_ROOT) for (const p of this.paeRoot) if (p >= 0) out.push(p);
    for (const r of this.prevRoots) if (r.hpa >= 0) out.push(r.hpa);
    return out;
  }
}

/** Outcome of kvm_mmu_load. */
export type LoadResult =
  | 'ok'
  /** mmu_check_root: the root (or a present PDPTE) has no memslot; KVM requests TRIPLE_FAULT. */
  | 'triple-fault'
  /** The arena had no page (make_mmu_pages_available -ENOSPC, or no free page at all). */
  | 'no-pages'
  /** A root level KVM cannot allocate for (-EIO). */
  | 'bad-level';

/** The guest side of a shadow root: get_guest_pgd and get_pdptr. */
export interface GuestRootSource {
  readonly pgd: bigint;
  /** The four PDPTE registers for a PAE guest; read from memory at `pgd` when absent. */
  readonly pdptes?: readonly bigint[] | null;
}

/** mmu_alloc_root: kvm_mmu_get_page(..., ACC_ALL) and one root reference; NIL if no page. */
function allocRoot(vm: ShadowVm, agent: number, mmu: PageRoleSource, gfn: number, gaddr: bigint, level: number, direct: boolean): number {
  const p = getPage(vm, agent, mmu, gfn, gaddr, level, direct, ACC.ALL);
  if (p === NIL) return NIL;
  Atomics.add(vm.i32, p * vm.sw32 + vm.oRootCount, 1);
  vm.count(agent, 'rootsAllocated');
  return p;
}

/** Fill pae_root[0..3] with `alloc(i)`; on a missing page release what was taken (KVM cannot fail here). */
function allocPaeRoots(vm: ShadowVm, agent: number, roots: RootSet, alloc: (i: number) => number | null): boolean {
  for (let i = 0; i < 4; i++) {
    const p = alloc(i);
    if (p === null) continue;
    if (p === NIL) {
      const invalid: InvalidList = [];
      for (let j = 0; j < i; j++) {
        freeRootPage(vm, agent, roots.paeRoot[j]!, invalid);
        roots.paeRoot[j] = INVALID_PAE_ROOT;
      }
      commitZapPage(vm, agent, invalid);
      return false;
    }
    roots.paeRoot[i] = p;
  }
  return true;
}

/** mmu_alloc_direct_roots (without the TDP MMU: the shadow MMU's direct roots). */
function allocDirectRoots(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView): LoadResult {
  return vm.lock.with(agent, () => {
    if (!makePagesAvailable(vm, agent)) return 'no-pages';
    const level = mmu.shadowRootLevel;
    if (level >= LEVEL.PT64_ROOT_4) {
      const p = allocRoot(vm, agent, mmu, 0, 0n, level, true);
      if (p === NIL) return 'no-pages';
      roots.rootHpa = p;
    } else if (level === LEVEL.PT32E_ROOT) {
      // Four level-2 direct roots, one per GiB: gfn i << 18, address i << 30.
      if (!allocPaeRoots(vm, agent, roots, (i) => allocRoot(vm, agent, mmu, i << 18, BigInt(i) << 30n, LEVEL.PT32_ROOT, true))) return 'no-pages';
      roots.rootHpa = SPECIAL_ROOT;
    } else {
      return 'bad-level';
    }
    roots.rootPgd = 0n;
    return 'ok';
  });
}

/** get_pdptr for root allocation: the registers, or memory at the root (nested_svm_get_tdp_pdptr). */
function pdptesOf(guest: GuestRootSource, mem: GuestMemory): bigint[] {
  if (guest.pdptes) return [0, 1, 2, 3].map((i) => guest.pdptes![i] ?? 0n);
  return [0, 1, 2, 3].map((i) => {
    const pa = Number(guest.pgd) + 8 * i;
    return mem.contains(pa, 8) ? mem.read64Split(pa) : 0n;
  });
}

/** mmu_alloc_shadow_roots: roots that shadow the guest's top table(s). */
function allocShadowRoots(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView, guest: GuestRootSource, mem: GuestMemory): LoadResult {
  const rootPgd = guest.pgd;
  let rootGfn = Number(rootPgd >> 12n);
  const visible = (gfn: number): boolean => gfn < vm.guestPages && mem.contains(gfn * 4096, 4096);
  if (!visible(rootGfn)) return 'triple-fault';
  // Read before taking mmu_lock, as KVM does (on SVM the read may fault).
  let pdptes: bigint[] = [];
  if (mmu.rootLevel === LEVEL.PT32E_ROOT) {
    pdptes = pdptesOf(guest, mem);
    for (const e of pdptes) if (e & 1n && !visible(Number((e & 0x000f_ffff_ffff_f000n) >> 12n))) return 'triple-fault';
  }
  return vm.lock.with(agent, () => {
    if (!makePagesAvailable(vm, agent)) return 'no-pages';
    if (mmu.rootLevel >= LEVEL.PT64_ROOT_4) {
      const p = allocRoot(vm, agent, mmu, rootGfn, 0n, mmu.shadowRootLevel, false);
      if (p === NIL) return 'no-pages';
      roots.rootHpa = p;
    } else {
      // 32-bit or PAE guest: four level-2 roots. A 2-level guest uses the CR3 gfn four times;
      // the quadrant (address bits 31:30) makes them four pages.
      const ok = allocPaeRoots(vm, agent, roots, (i) => {
        if (mmu.rootLevel === LEVEL.PT32E_ROOT) {
          if (!(pdptes[i]! & 1n)) return null;
          rootGfn = Number((pdptes[i]! & 0x000f_ffff_ffff_f000n) >> 12n);
        }
        return allocRoot(vm, agent, mmu, rootGfn, BigInt(i) << 30n, LEVEL.PT32_ROOT, false);
      });
      if (!ok) return 'no-pages';
      // With shadow_root_level >= 4, pml4_root[0] (and pml5_root[0]) lead to pae_root.
      roots.rootHpa = SPECIAL_ROOT;
    }
    roots.rootPgd = rootPgd;
    return 'ok';
  });
}

/** kvm_mmu_load: allocate the roots the context needs (special roots need no page here). */
export function mmuLoad(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView, guest: GuestRootSource, mem: GuestMemory): LoadResult {
  // Sync roots, load pgd and flush: nothing to do (no unsync pages, no hardware TLB).
  return mmu.directMap ? allocDirectRoots(vm, agent, roots, mmu) : allocShadowRoots(vm, agent, roots, mmu, guest, mem);
}

/** kvm_mmu_reload: load only when the context has no root. */
export function mmuReload(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView, guest: GuestRootSource, mem: GuestMemory): LoadResult {
  return roots.rootHpa !== INVALID_PAGE ? 'ok' : mmuLoad(vm, agent, roots, mmu, guest, mem);
}

/** mmu_free_root_page: drop one root reference; a zapped page is zapped for good by its last holder. */
export function freeRootPage(vm: ShadowVm, agent: number, hpa: number, invalid: InvalidList): void {
  vm.assertLocked(agent, 'mmu_free_root_page');
  if (hpa < 0) return;
  const left = Atomics.sub(vm.i32, hpa * vm.sw32 + vm.oRootCount, 1) - 1;
  vm.count(agent, 'rootsFreed');
  if (left < 0) throw new ShadowZapError(`page ${hpa}: root count went below zero`);
  if (left === 0 && vm.roleOf(hpa) & PR.INVALID) prepareZapPage(vm, agent, hpa, invalid);
}

/** Whether kvm_mmu_free_roots has any work for `mask` (its lock-free early out). */
function anyToFree(roots: RootSet, mask: number): boolean {
  if (mask & ROOT_CURRENT && roots.rootHpa !== INVALID_PAGE) return true;
  return roots.prevRoots.some((r, i) => mask & rootPrevious(i) && r.hpa !== INVALID_PAGE);
}

/**
 * kvm_mmu_free_roots(mmu, mask): free the selected previous roots and, with
 * ROOT_CURRENT, the current one — one page if shadow_root_level >= 4 and
 * (root_level >= 4 or direct_map), else the four PAE roots. Reads the
 * context's levels and direct_map, not its role. Takes mmu_lock.
 */
export function freeRoots(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView, mask: number): void {
  if (!anyToFree(roots, mask)) return;
  vm.lock.with(agent, () => {
    const invalid: InvalidList = [];
    roots.prevRoots.forEach((r, i) => {
      if (!(mask & rootPrevious(i))) return;
      freeRootPage(vm, agent, r.hpa, invalid);
      r.hpa = INVALID_PAGE;
    });
    if (mask & ROOT_CURRENT) {
      if (mmu.shadowRootLevel >= LEVEL.PT64_ROOT_4 && (mmu.rootLevel >= LEVEL.PT64_ROOT_4 || mmu.directMap)) {
        if (roots.rootHpa === SPECIAL_ROOT) roots.mismatchedFrees++;
        else freeRootPage(vm, agent, roots.rootHpa, invalid);
      } else {
        if (roots.rootHpa >= 0) roots.mismatchedFrees++;
        for (let i = 0; i < 4; i++) {
          freeRootPage(vm, agent, roots.paeRoot[i]!, invalid);
          roots.paeRoot[i] = INVALID_PAE_ROOT;
        }
      }
      roots.rootHpa = INVALID_PAGE;
      roots.rootPgd = 0n;
    }
    commitZapPage(vm, agent, invalid);
  });
}

/** kvm_mmu_unload: free every root of root_mmu and of guest_mmu. */
export function mmuUnload(vm: ShadowVm, agent: number, contexts: ReadonlyArray<readonly [RootSet, RootMmuView]>): void {
  for (const [roots, mmu] of contexts) freeRoots(vm, agent, roots, mmu, ROOTS_ALL);
}
