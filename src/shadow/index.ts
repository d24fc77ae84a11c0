/**
 * The VM-wide shadow page cache (Linux v5.17 arch/x86/kvm/mmu/mmu.c,
 * paging_tmpl.h, spte.c without the TDP MMU), in shared memory so every
 * vCPU worker uses the same pages. Depends on layout, role, memory and
 * paging only; knows no vCPU: callers pass a context's levels and role, its
 * RootSet, and the hooks that reach other vCPUs.
 */
export { ShadowVm, ShadowArenaError, ARENA_SLACK, MAX_CAPACITY, type ShadowVmOptions, type ShadowVmHandle, type ShadowHooks } from './arena.js';
export { MmuLock, MmuLockError } from './mmu-lock.js';
export { SHADOW_STATS, PAGE_STATE, SPTES_PER_PAGE, HASH_BUCKETS, NIL, type ShadowStat, type PageState } from './layout.js';
export { hashGfn, pagesOfGfn } from './hash.js';
export { reclaimLimbo, GRACE_WAIT_MS } from './lists.js';
export { getPage, pageRole, gfnTracked, type PageRoleSource } from './page-cache.js';
export {
  RootSet,
  mmuLoad,
  mmuReload,
  mmuUnload,
  freeRoots,
  INVALID_PAGE,
  SPECIAL_ROOT,
  INVALID_PAE_ROOT,
  ROOT_CURRENT,
  ROOTS_ALL,
  rootPrevious,
  type RootMmuView,
  type RootInfo,
  type LoadResult,
  type GuestRootSource,
} from './roots.js';
export { newPgd, cachedRootAvailable, fastPgdSwitch, isRootUsable, ROOT_KEPT, ROOT_MISS } from './prev-roots.js';
export { pageFault, type FaultRequest, type FaultResult, type ShadowMmuView } from './faults.js';
export { translate, WALK, WalkScratch, type WalkView } from './shadow-walk.js';
export {
  zapAllFast,
  zapAllFastFlip,
  zapAll,
  zapObsoletePages,
  zapObsoleteUntilBreak,
  BATCH_ZAP_PAGES,
  zapOldestPages,
  changeMaxPages,
  unprotectGfn,
  trackedWrite,
  makePagesAvailable,
  MIN_FREE_MMU_PAGES,
  REFILL_PAGES,
  type ReloadBroadcast,
} from './zap.js';
export { spteMasksFor, makeSpte, makeNonleafSpte, type SpteMasks } from './spte-format.js';
export { audit, auditLocked } from './audit.js';
export { agentStats, vmStats, vmGauges, type ShadowCounters, type ShadowGauges } from './stats.js';
export { teardownCache, teardownProblems, type ShadowTeardown } from './teardown.js';
