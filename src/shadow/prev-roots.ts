/**
 * The previous-roots cache of a context and the fast CR3 switch (Linux v5.17
 * mmu.c is_root_usable, cached_root_available, fast_pgd_switch,
 * __kvm_mmu_new_pgd).
 *
 * Runs without mmu_lock, as in KVM: it only moves references between the
 * context's own slots (the counts do not change) and reads the pages' role
 * and generation, which are Atomics words; a page the set holds cannot be
 * freed meanwhile.
 *
 * One addition to v5.17, asked for by the issue: a cached root must also not
 * be obsolete. In v5.17 the role-word test already rejects a zapped page
 * (role.invalid is in the word); a page of the old generation that is not
 * zapped yet passes it, and KVM relies on the KVM_REQ_MMU_RELOAD that comes
 * with every generation flip to drop it before the next entry. Checking the
 * generation here only makes that window invisible; it never changes which
 * root a vCPU runs on after its reload.
 */
import { mutant } from '../check/mutants.js';
import { LEVEL, PR } from '../role/page-role.js';
import type { ShadowVm } from './arena.js';
import { freeRoots, ROOT_CURRENT, type RootInfo, type RootMmuView, type RootSet } from './roots.js';

/** is_root_usable, plus "not obsolete" (see above). */
export function isRootUsable(vm: ShadowVm, root: RootInfo, pgd: bigint, role: number): boolean {
  if (!((role & PR.DIRECT) !== 0 || root.pgd === pgd)) return false;
  // VALID_PAGE and to_shadow_page: special roots (pae_root) have no shadow page.
  if (root.hpa < 0) return false;
  return (vm.roleOf(root.hpa) === role >>> 0 || mutant['prev-root-ignores-role']) && !vm.isObsolete(root.hpa);
}

/** Where cached_root_available found the root: the current one, prev_roots[i] (1 + i), or nowhere. */
export const ROOT_KEPT = 0;
export const ROOT_MISS = -1;

/**
 * cached_root_available: keep the current root if usable (ROOT_KEPT); else
 * rotate it into prev_roots (most recent first) looking for a usable one.
 * On a hit at i (returns 1 + i), entries 0..i-1 shift down by one and the
 * hit becomes current; on a miss (ROOT_MISS) the oldest entry becomes
 * "current", for the caller to free.
 */
export function cachedRootAvailable(vm: ShadowVm, roots: RootSet, pgd: bigint, role: number): number {
  let root: RootInfo = { pgd: roots.rootPgd, hpa: roots.rootHpa };
  if (isRootUsable(vm, root, pgd, role)) return ROOT_KEPT;
  let i = 0;
  for (; i < roots.prevRoots.length; i++) {
    const cached = roots.prevRoots[i]!;
    roots.prevRoots[i] = root;
    root = cached;
    if (isRootUsable(vm, root, pgd, role)) break;
  }
  roots.rootHpa = root.hpa;
  roots.rootPgd = root.pgd;
  return i < roots.prevRoots.length ? 1 + i : ROOT_MISS;
}

/** fast_pgd_switch: only for 64-bit hosts and guests (no PDPTEs to deal with); ROOT_MISS otherwise. */
export function fastPgdSwitch(vm: ShadowVm, roots: RootSet, mmu: RootMmuView, pgd: bigint, role: number): number {
  if (mmu.shadowRootLevel >= LEVEL.PT64_ROOT_4 && mmu.rootLevel >= LEVEL.PT64_ROOT_4) return cachedRootAvailable(vm, roots, pgd, role);
  return ROOT_MISS;
}

/**
 * __kvm_mmu_new_pgd: switch the context to (pgd, role) from its cache, or
 * free the current root so the next entry allocates one. Returns true on a
 * switch: the caller then makes KVM_REQ_LOAD_MMU_PGD (and clears its MMIO
 * cache); the cache does not know requests.
 */
export function newPgd(vm: ShadowVm, agent: number, roots: RootSet, mmu: RootMmuView, pgd: bigint, role: number): boolean {
  const where = fastPgdSwitch(vm, roots, mmu, pgd, role);
  if (where === ROOT_MISS) {
    if (mmu.shadowRootLevel >= LEVEL.PT64_ROOT_4 && mmu.rootLevel >= LEVEL.PT64_ROOT_4) vm.count(agent, 'prevRootMisses');
    freeRoots(vm, agent, roots, mmu, ROOT_CURRENT);
    return false;
  }
  if (where > ROOT_KEPT) vm.count(agent, 'prevRootHits');
  // No write-flooding counts to clear: flooding detection is not modelled.
  return true;
}
