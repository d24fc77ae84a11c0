/**
 * Zapping shadow pages (Linux v5.17 mmu.c): __kvm_mmu_prepare_zap_page,
 * kvm_mmu_commit_zap_page, kvm_mmu_zap_oldest_mmu_pages,
 * make_mmu_pages_available, kvm_mmu_change_mmu_pages,
 * kvm_mmu_unprotect_page (the write-tracking zap), kvm_zap_obsolete_pages,
 * kvm_mmu_zap_all_fast and kvm_mmu_zap_all.
 *
 * A zap happens in two steps, as in KVM: prepare (under mmu_lock: unlink the
 * page's children and parents, set role.invalid, take it off
 * active_mmu_pages) and commit (flush remote TLBs, unhash, free). A page
 * still used as a root is prepared but not committed: it stays hashed and
 * counted until its last holder lets go (roots.ts freeRootPage), so it is
 * never reused under a vCPU. Committed pages go to limbo and are reused
 * only after the lockless walkers' grace period (arena.ts).
 */
import { PR } from '../role/page-role.js';
import type { ShadowVm } from './arena.js';
import { bucketFirst, bucketNext, hashGfn, hashRemove } from './hash.js';
import { NIL, PAGE_STATE, SPTES_PER_PAGE } from './layout.js';
import { parkZappedObsolete, reclaimLimbo, takeZappedObsolete, toLimbo, unlinkActive } from './lists.js';
import { remoteTlbFlush, unaccountShadowed } from './page-cache.js';
import { childOf, dropParentPte, dropSpte, firstParent, parentCount, slotOf, spteRead } from './spte.js';
import { isLastSpte, isShadowPresent } from './spte-format.js';
import { mutant } from '../check/mutants.js';

/** KVM_MIN_FREE_MMU_PAGES and KVM_REFILL_PAGES (kvm_host.h). */
export const MIN_FREE_MMU_PAGES = 5;
export const REFILL_PAGES = 25;

export class ShadowZapError extends Error {
  override name = 'ShadowZapError';
}

/** Pages prepared for freeing, committed together (KVM's invalid_list). */
export type InvalidList = number[];

/**
 * __kvm_mmu_prepare_zap_page. Returns the pages zapped (children zapped on
 * the way, plus this one unless it is still a root); "unstable" (children
 * were zapped, so list walks must restart) is `children > 0`.
 */
export function prepareZapPage(vm: ShadowVm, agent: number, page: number, invalid: InvalidList): { zapped: number; children: number } {
  vm.assertLocked(agent, '__kvm_mmu_prepare_zap_page');
  vm.hooks[agent]?.trace?.prepareZap(vm.gfnOf(page), vm.roleOf(page), vm.rootCountOf(page), vm.genOf(page));
  vm.count(agent, 'zapped');
  const children = unlinkChildren(vm, agent, page, invalid);
  unlinkParents(vm, page);
  const role = vm.roleOf(page);
  if (!(role & PR.INVALID) && !(role & PR.DIRECT)) unaccountShadowed(vm, vm.gfnOf(page));
  let zapped = children;
  const onActive = vm.stateOf(page) === PAGE_STATE.ACTIVE;
  if (vm.rootCountOf(page) === 0) {
    zapped++;
    // KVM: list_move from active_mmu_pages, or list_add for an already-invalid (former root) page.
    if (onActive) unlinkActive(vm, page);
    invalid.push(page);
    Atomics.sub(vm.h.nUsedPages, 0, 1);
    vm.setState(page, PAGE_STATE.ZAPPED);
  } else {
    if (onActive) unlinkActive(vm, page);
    vm.setState(page, PAGE_STATE.ZAPPED);
    // Obsolete pages are unusable by every vCPU already (a generation flip comes with MMU_RELOAD).
    if (!vm.isObsolete(page)) {
      vm.count(agent, 'reloadRequests');
      vm.hooks[agent]?.reloadRemoteMmus?.();
    }
  }
  Atomics.or(vm.i32, page * vm.sw32 + vm.oRole, PR.INVALID);
  return { zapped, children };
}

/** kvm_mmu_page_unlink_children: drop every leaf, unlink every child; returns children zapped. */
function unlinkChildren(vm: ShadowVm, agent: number, page: number, invalid: InvalidList): number {
  const level = vm.roleOf(page) & PR.LEVEL_MASK;
  const recurse = vm.handle.options.host.tdpEnabled;
  let zapped = 0;
  for (let i = 0; i < SPTES_PER_PAGE; i++) {
    const slot = slotOf(page, i);
    const spte = spteRead(vm, slot);
    if (!isShadowPresent(spte)) continue;
    if (isLastSpte(spte, level)) {
      dropSpte(vm, slot);
      continue;
    }
    const child = childOf(spte);
    dropParentPte(vm, child, slot);
    // mmu_page_zap_pte: parentless nested-TDP pages are zapped with their parent.
    if (recurse && vm.roleOf(child) & PR.GUEST_MODE && parentCount(vm, child) === 0) {
      zapped += prepareZapPage(vm, agent, child, invalid).zapped;
    }
  }
  return zapped;
}

/** kvm_mmu_unlink_parents: clear every SPTE that links to `page`. */
function unlinkParents(vm: ShadowVm, page: number): void {
  for (let s = firstParent(vm, page); s !== NIL; s = firstParent(vm, page)) dropParentPte(vm, page, s);
}

/**
 * kvm_mmu_commit_zap_page: flush remote TLBs, then free — here: unhash,
 * stamp with the next zap sequence (after every link to the pages was
 * cleared) and put in limbo; limbo pages whose grace period is already over
 * go straight back to the free list.
 */
export function commitZapPage(vm: ShadowVm, agent: number, invalid: InvalidList): void {
  vm.assertLocked(agent, 'kvm_mmu_commit_zap_page');
  if (invalid.length === 0) return;
  remoteTlbFlush(vm, agent);
  const stamp = Atomics.add(vm.h.zapSeq, 0, 1) + 1;
  for (const p of invalid) {
    if (vm.prove && (!(vm.roleOf(p) & PR.INVALID) || vm.rootCountOf(p) !== 0)) {
      throw new ShadowZapError(`commit of page ${p}: role.invalid ${vm.roleOf(p) & PR.INVALID ? 'set' : 'clear'}, root count ${vm.rootCountOf(p)}`);
    }
    hashRemove(vm, p);
    toLimbo(vm, p, stamp);
  }
  invalid.length = 0;
  reclaimLimbo(vm, agent);
}

/** kvm_mmu_zap_oldest_mmu_pages: zap unused pages from the old end of active_mmu_pages. */
export function zapOldestPages(vm: ShadowVm, agent: number, toZap: number): number {
  vm.assertLocked(agent, 'kvm_mmu_zap_oldest_mmu_pages');
  const invalid: InvalidList = [];
  let total = 0;
  restart: for (;;) {
    for (let p = vm.h.activeTail[0]!; p !== NIL; ) {
      const prev = vm.i32[p * vm.sw32 + vm.oListPrev]!;
      // Active roots are not zapped: they could not be freed and vCPUs would just reload them.
      if (vm.rootCountOf(p) === 0) {
        const r = prepareZapPage(vm, agent, p, invalid);
        total += r.zapped;
        if (total >= toZap) break restart;
        if (r.children > 0) continue restart;
      }
      p = prev;
    }
    break;
  }
  commitZapPage(vm, agent, invalid);
  if (total) vm.count(agent, 'recycled', total);
  return total;
}

/** make_mmu_pages_available: keep MIN_FREE below n_max (a soft limit); false = -ENOSPC. */
export function makePagesAvailable(vm: ShadowVm, agent: number): boolean {
  vm.assertLocked(agent, 'make_mmu_pages_available');
  // The arena is the host's memory: when it runs short while kvm_zap_obsolete_pages has parked pages
  // across a lock break (they left n_used but are not free yet), free them as KVM's shrinker does
  // (mmu_shrink_scan: kvm_has_zapped_obsolete_pages, then kvm_mmu_commit_zap_page of that list).
  if (vm.freeCount < MIN_FREE_MMU_PAGES && Atomics.load(vm.h.zappedObsoleteCount, 0) > 0) {
    vm.count(agent, 'obsoleteCommitsByShrinker');
    commitZapPage(vm, agent, takeZappedObsolete(vm));
  }
  const avail = Math.max(0, vm.nMax - vm.nUsed);
  if (avail >= MIN_FREE_MMU_PAGES) return true;
  zapOldestPages(vm, agent, REFILL_PAGES - avail);
  if (vm.nMax - vm.nUsed > 0) return true;
  vm.count(agent, 'noPages');
  return false;
}

/** kvm_mmu_change_mmu_pages: a new n_max_mmu_pages, zapping down to it if needed. Takes mmu_lock. */
export function changeMaxPages(vm: ShadowVm, agent: number, goal: number): number {
  if (!Number.isInteger(goal) || goal < 1 || goal > vm.capacity) {
    throw new RangeError(`n_max_mmu_pages: expected an integer in 1..${vm.capacity} (the arena's capacity), got ${goal}`);
  }
  return vm.lock.with(agent, () => {
    let g = goal;
    if (vm.nUsed > g) {
      zapOldestPages(vm, agent, vm.nUsed - g);
      g = vm.nUsed;
    }
    Atomics.store(vm.h.nMaxPages, 0, g);
    return g;
  });
}

/** kvm_mmu_unprotect_page: zap every valid indirect page of `gfn`. Takes mmu_lock; returns pages prepared. */
export function unprotectGfn(vm: ShadowVm, agent: number, gfn: number): number {
  return vm.lock.with(agent, () => {
    const invalid: InvalidList = [];
    let n = 0;
    const gen = vm.mmuValidGen;
    for (let p = bucketFirst(vm, hashGfn(gfn)); p !== NIL; p = bucketNext(vm, p)) {
      const role = vm.roleOf(p);
      if (vm.gfnOf(p) !== gfn || role & (PR.DIRECT | PR.INVALID) || vm.genOf(p) !== gen) continue;
      prepareZapPage(vm, agent, p, invalid);
      n++;
    }
    commitZapPage(vm, agent, invalid);
    return n;
  });
}

/**
 * A guest write to guest physical address `gpa` (kvm_page_track_write →
 * kvm_mmu_pte_write, in its simplest correct form: zap the shadow pages of
 * the written gfn). Call it after the write reached guest memory: a fault
 * that shadows the gfn concurrently either re-reads the new entry
 * (gpte_changed) or is zapped here. Returns pages zapped.
 */
export function trackedWrite(vm: ShadowVm, agent: number, gpa: number): number {
  // The fast checks of kvm_mmu_pte_write (indirect_shadow_pages) and page_track (the gfn's count).
  if (Atomics.load(vm.h.indirectShadowPages, 0) === 0 || mutant['no-write-tracking']) return 0;
  const gfn = Math.floor(gpa / 4096);
  if (gfn < 0 || gfn >= vm.guestPages || Atomics.load(vm.h.gfnTrack, gfn) === 0) return 0;
  vm.count(agent, 'trackedWrites');
  return unprotectGfn(vm, agent, gfn);
}

/** BATCH_ZAP_PAGES (mmu.c): kvm_zap_obsolete_pages considers a lock break once it zapped this many pages. */
export const BATCH_ZAP_PAGES = 10;

/** kvm_zap_obsolete_pages in one mmu_lock hold (no lock break): zap old-generation pages from the old end of the FIFO. */
export function zapObsoletePages(vm: ShadowVm, agent: number): number {
  return zapObsoleteUntilBreak(vm, agent, () => false).zapped;
}

/**
 * kvm_zap_obsolete_pages up to its next lock break. Zaps old-generation
 * pages from the old end of the FIFO; once BATCH_ZAP_PAGES were zapped since
 * the last break, asks `needBreak` (cond_resched_rwlock_write: is the lock
 * contended?) before each further page, and if so parks the pages prepared
 * so far on zapped_obsolete_pages and returns `done: false` — the caller
 * drops mmu_lock, lets the waiter in, takes it again and calls again, which
 * restarts from the old end. Otherwise commits every page it prepared (this
 * call's and the parked ones: kvm_mmu_commit_zap_page) and returns `done: true`.
 * Requires mmu_lock.
 */
export function zapObsoleteUntilBreak(vm: ShadowVm, agent: number, needBreak: () => boolean): { zapped: number; done: boolean } {
  vm.assertLocked(agent, 'kvm_zap_obsolete_pages');
  const invalid = takeZappedObsolete(vm);
  // FIFO: no obsolete valid page is newer than a page of the current generation.
  const r = zapActive(vm, agent, 'oldest-first', invalid, (p) => !vm.isObsolete(p), needBreak);
  if (!r.done) parkZappedObsolete(vm, invalid);
  return r;
}

/**
 * Zap the valid pages of active_mmu_pages from one end, restarting from that
 * end whenever a zap unlinked children (the list changed under the walk), until
 * the end of the list or the first page `stop` accepts, then commit `invalid`.
 * With `needBreak`: once BATCH_ZAP_PAGES were zapped, stop without committing
 * (done: false) before the next page if it says so.
 */
function zapActive(
  vm: ShadowVm,
  agent: number,
  from: 'oldest-first' | 'newest-first',
  invalid: InvalidList,
  stop: (p: number) => boolean = () => false,
  needBreak: () => boolean = () => false,
): { zapped: number; done: boolean } {
  let total = 0;
  const oldestFirst = from === 'oldest-first';
  restart: for (;;) {
    for (let p = oldestFirst ? vm.h.activeTail[0]! : vm.h.activeHead[0]!; p !== NIL; ) {
      const after = vm.i32[p * vm.sw32 + (oldestFirst ? vm.oListPrev : vm.oListNext)]!;
      if (stop(p)) break;
      if (!(vm.roleOf(p) & PR.INVALID)) {
        if (total >= BATCH_ZAP_PAGES && needBreak()) return { zapped: total, done: false };
        const r = prepareZapPage(vm, agent, p, invalid);
        total += r.zapped;
        if (r.children > 0) continue restart;
      }
      p = after;
    }
    break;
  }
  commitZapPage(vm, agent, invalid);
  return { zapped: total, done: true };
}

/** The VM side of a waiting KVM_REQ_MMU_RELOAD broadcast (the cache does not know vCPUs). */
export interface ReloadBroadcast<T> {
  /** Set KVM_REQ_MMU_RELOAD on every vCPU and kick them. Called under mmu_lock: must not wait. */
  request(): T;
  /** Resolve once every vCPU that was in guest mode has left it (KVM_REQUEST_WAIT). */
  wait(token: T): Promise<void>;
}

/**
 * kvm_mmu_zap_all_fast: under mmu_lock flip the generation and request
 * MMU_RELOAD of every vCPU (one critical section, so a vCPU that reloads
 * allocates its roots in the new generation); release the lock and wait for
 * the request's acknowledgements (KVM waits inside the lock for IPI acks
 * that need no lock; here a vCPU may need the lock to leave its fault path,
 * so the wait is outside); then, under the lock again, zap the obsolete
 * pages, dropping the lock every BATCH_ZAP_PAGES zaps while another agent
 * waits for it (kvm_zap_obsolete_pages' cond_resched_rwlock_write). Roots
 * still held are zapped but not freed until released.
 */
export async function zapAllFast<T>(vm: ShadowVm, agent: number, reload: ReloadBroadcast<T>): Promise<{ generation: number; zapped: number }> {
  await vm.lock.lockAsync(agent);
  let token: T;
  let generation: number;
  try {
    ({ generation, token } = zapAllFastFlip(vm, agent, reload));
  } finally {
    vm.lock.unlock(agent);
  }
  await reload.wait(token);
  await vm.lock.lockAsync(agent);
  let zapped = 0;
  try {
    for (;;) {
      const r = zapObsoleteUntilBreak(vm, agent, () => vm.lock.contended());
      zapped += r.zapped;
      if (r.done) return { generation, zapped };
      vm.count(agent, 'zapLockBreaks');
      await vm.lock.breakAsync(agent);
    }
  } finally {
    vm.lock.unlock(agent);
  }
}

/**
 * The first critical section of kvm_mmu_zap_all_fast, for callers that hold
 * mmu_lock themselves (an in-thread host runs the three phases as separate
 * scheduling steps): flip the generation and make the reload request.
 * Then wait for the request, then zapObsoletePages under the lock.
 */
export function zapAllFastFlip<T>(vm: ShadowVm, agent: number, reload: Pick<ReloadBroadcast<T>, 'request'>): { generation: number; token: T } {
  vm.assertLocked(agent, 'kvm_mmu_zap_all_fast');
  // trace_kvm_mmu_zap_all_fast comes before the flip: the old generation.
  vm.hooks[agent]?.trace?.zapAllFast(vm.mmuValidGen, vm.nUsed);
  const generation = vm.mmuValidGen ? 0 : 1;
  Atomics.store(vm.h.mmuValidGen, 0, generation);
  vm.count(agent, 'zapAllFast');
  return { generation, token: reload.request() };
}

/**
 * kvm_mmu_zap_all (VM teardown, after every vCPU unloaded its roots): zap
 * every page on active_mmu_pages. Returns pages zapped.
 */
export async function zapAll(vm: ShadowVm, agent: number): Promise<number> {
  await vm.lock.lockAsync(agent);
  try {
    return zapAllLocked(vm, agent);
  } finally {
    vm.lock.unlock(agent);
  }
}

/** kvm_mmu_zap_all's body, for callers that hold mmu_lock (an in-thread host). */
export function zapAllLocked(vm: ShadowVm, agent: number): number {
  vm.assertLocked(agent, 'kvm_mmu_zap_all');
  return zapActive(vm, agent, 'newest-first', []).zapped;
}
