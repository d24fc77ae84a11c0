/**
 * The page-fault handlers that fill SPTEs (Linux v5.17): direct faults —
 * direct_page_fault / __direct_map in mmu.c, for TDP and for guests with
 * paging off — and shadow faults — FNAME(page_fault) / FNAME(fetch) in
 * paging_tmpl.h, which walk the guest's tables with the guest walker and
 * build SPTEs from the guest entries' permissions — with their common parts
 * (is_page_fault_stale, page_fault_handle_page_track, mmu_set_spte).
 * Taking mmu_lock after the unlocked part of a fault is a scheduling point
 * (src/layout/sched-point.ts).
 *
 * Not modelled, on purpose: the TDP MMU (kvm.tdp_mmu=0: direct faults use
 * the shadow MMU's hash and mmu_lock for write), fast_page_fault (no dirty
 * logging or access tracking), prefetching, huge SPTEs (host memory is
 * backed by 4 KiB pages, so every leaf is 4 KiB and guest large pages are
 * shadowed by direct pages, as KVM does), MMIO SPTEs (a gfn without a
 * memslot is reported), unsync pages.
 */
import { schedPoint } from '../layout/sched-point.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { GEOMETRY, PFERR, ptIndex, type WalkerGeometry } from '../paging/format.js';
import { gpteAccess } from '../paging/permission.js';
import { walkAddrGeneric } from '../paging/walker.js';
import { GuestWalker, type WalkFault, type WalkRoot } from '../paging/walker-state.js';
import { ACC, PR } from '../role/page-role.js';
import type { ShadowVm } from './arena.js';
import { NIL } from './layout.js';
import { getPage, gfnTracked, remoteTlbFlush } from './page-cache.js';
import { INVALID_PAGE, type RootSet } from './roots.js';
import { walkStart, type WalkView } from './shadow-walk.js';
import { childOf, dropParentPte, dropSpte, linkShadowPage, setLeaf, slotOf, spteRead } from './spte.js';
import { isLargePte, isLastSpte, isShadowPresent, makeSpte, sptePfn } from './spte-format.js';
import { makePagesAvailable } from './zap.js';

/** What the fault handlers read from the faulting context (src/mmu's MmuContext satisfies it). */
export interface ShadowMmuView extends WalkView {
  /** mmu->page_fault: direct for 'tdp' and 'nonpaging', a walker instance otherwise. */
  readonly pageFault: 'tdp' | 'nonpaging' | 'paging32' | 'paging64' | 'ept' | null;
  /** is_cr0_wp(mmu). */
  cr0Wp(reader: string): boolean;
}

export interface FaultRequest {
  /** cr2_or_gpa: a GPA for direct contexts, a GVA (or an L2 GPA for shadow EPT/NPT) otherwise. */
  readonly addr: bigint;
  /** PFERR.WRITE/USER/FETCH of the access, plus PFERR.PRESENT when a present leaf denied it. */
  readonly errorCode: number;
  /** get_guest_pgd / get_pdptr of the context (shadow faults only). */
  readonly guest: WalkRoot;
  /** CPL, EFLAGS.AC and PKRU for the guest walk (default CPL 0, AC clear, PKRU 0). */
  readonly cpl?: number;
  readonly eflagsAc?: boolean;
  readonly pkru?: number;
  /** The context is vcpu->arch.walk_mmu (its guest faults are not nested). Default true. */
  readonly isWalkMmu?: boolean;
  /** kvm_test_request(KVM_REQ_MMU_RELOAD): the stale check for roots without a shadow page. */
  readonly reloadPending?: () => boolean;
  /** The vCPU's walker, reused across faults (a fresh one if absent). */
  readonly walker?: GuestWalker;
}

export type FaultResult =
  /** RET_PF_FIXED: an SPTE was installed; retry the access. */
  | { readonly kind: 'fixed' }
  /** RET_PF_SPURIOUS: the SPTE already allowed the access. */
  | { readonly kind: 'spurious' }
  /** RET_PF_RETRY: stale root or a guest entry changed under the fault; re-enter and retry. */
  | { readonly kind: 'retry' }
  /** RET_PF_EMULATE: a write to a write-tracked gfn; the caller emulates it (zap.ts trackedWrite). */
  | { readonly kind: 'emulate'; readonly gpa: number }
  /** The guest's own tables fault: inject this page fault (or nested fault). */
  | { readonly kind: 'guest-fault'; readonly fault: Readonly<WalkFault> }
  /** The gfn has no memslot (KVM would emulate MMIO). */
  | { readonly kind: 'no-memslot'; readonly gpa: number }
  /** No page for the cache (-ENOSPC from make_mmu_pages_available, or an empty arena). */
  | { readonly kind: 'no-pages' };

const FIXED: FaultResult = { kind: 'fixed' };
const SPURIOUS: FaultResult = { kind: 'spurious' };
const RETRY: FaultResult = { kind: 'retry' };
const NO_PAGES: FaultResult = { kind: 'no-pages' };

/** kvm_mmu_page_fault → mmu->page_fault: the direct or the shadow handler. */
export function pageFault(vm: ShadowVm, agent: number, roots: RootSet, mmu: ShadowMmuView, mem: GuestMemory, req: FaultRequest): FaultResult {
  const h = mmu.pageFault;
  if (h === null) throw new RangeError('page fault on a context without a page_fault handler (nested_mmu, or never initialised)');
  vm.count(agent, 'faults');
  const r = h === 'tdp' || h === 'nonpaging' ? directPageFault(vm, agent, roots, mmu, mem, req) : shadowPageFault(vm, agent, roots, mmu, mem, req, GEOMETRY[h]);
  countResult(vm, agent, r);
  return r;
}

function countResult(vm: ShadowVm, agent: number, r: FaultResult): void {
  const stat = ({ fixed: 'faultsFixed', spurious: 'faultsSpurious', retry: 'faultsRetried', emulate: 'faultsEmulated', 'guest-fault': 'guestFaults', 'no-memslot': 'noMemslot', 'no-pages': null } as const)[r.kind];
  if (stat) vm.count(agent, stat);
}

const visibleGfn = (vm: ShadowVm, mem: GuestMemory, gfn: number): boolean => gfn < vm.guestPages && mem.contains(gfn * 4096, 4096);

/** page_fault_handle_page_track: a write to a present, write-tracked page goes to the emulator. */
const pageTrackActive = (vm: ShadowVm, errorCode: number, gfn: number): boolean =>
  (errorCode & (PFERR.RSVD | PFERR.PRESENT | PFERR.WRITE)) === (PFERR.PRESENT | PFERR.WRITE) && gfnTracked(vm, gfn);

/**
 * is_page_fault_stale: the root page is obsolete, or (roots without a page)
 * an MMU reload is pending. Also true with no root at all (KVM WARNs).
 */
function isStale(vm: ShadowVm, roots: RootSet, req: FaultRequest): boolean {
  if (roots.rootHpa === INVALID_PAGE) return true;
  if (roots.rootHpa >= 0) return vm.isObsolete(roots.rootHpa);
  return req.reloadPending?.() ?? false;
}

/** direct_page_fault (TDP, or guest paging off), with __direct_map under mmu_lock. */
function directPageFault(vm: ShadowVm, agent: number, roots: RootSet, mmu: ShadowMmuView, mem: GuestMemory, req: FaultRequest): FaultResult {
  const gfn = Number(BigInt.asUintN(64, req.addr) >> 12n);
  if (!visibleGfn(vm, mem, gfn)) return { kind: 'no-memslot', gpa: gfn * 4096 };
  if (pageTrackActive(vm, req.errorCode, gfn)) return { kind: 'emulate', gpa: gfn * 4096 + Number(req.addr & 0xfffn) };
  // Scheduling point (src/layout/sched-point.ts): another actor may zap or request a reload before the lock.
  schedPoint.hook?.('fault-lock', 0, -1);
  return vm.lock.with(agent, () => {
    if (isStale(vm, roots, req)) return RETRY;
    if (!makePagesAvailable(vm, agent)) return NO_PAGES;
    return directMap(vm, agent, roots, mmu, req.addr, gfn, (req.errorCode & PFERR.WRITE) !== 0);
  });
}

/** Walk state of the fault paths (the kvm_shadow_walk_iterator). */
interface Iter {
  page: number;
  level: number;
  lo: number;
  hi: number;
}

function iterStart(roots: RootSet, mmu: ShadowMmuView, addr: bigint): Iter {
  const a = BigInt.asUintN(64, addr);
  const it = { page: 0, level: 0, lo: Number(a & 0xffff_ffffn), hi: Number(a >> 32n) };
  it.page = walkStart(roots, mmu, it.lo, it);
  if (it.page === INVALID_PAGE) it.level = 0;
  return it;
}

const iterSlot = (it: Iter): number => slotOf(it.page, ptIndex(GEOMETRY.paging64, it.lo, it.hi, it.level));

/** shadow_walk_next: follow a present non-leaf SPTE, or end the walk. */
function iterNext(vm: ShadowVm, it: Iter): void {
  const spte = spteRead(vm, iterSlot(it));
  if (!isShadowPresent(spte) || isLastSpte(spte, it.level)) {
    it.level = 0;
    return;
  }
  it.page = childOf(spte);
  it.level--;
}

/** KVM_PAGES_PER_HPAGE(level). */
const pagesPerHpage = (level: number): number => 2 ** (9 * (level - 1));

/** __direct_map: link direct pages down to level 1, then set the leaf with ACC_ALL. */
function directMap(vm: ShadowVm, agent: number, roots: RootSet, mmu: ShadowMmuView, addr: bigint, gfn: number, write: boolean): FaultResult {
  const it = iterStart(roots, mmu, addr);
  for (; it.level >= 1; iterNext(vm, it)) {
    const baseGfn = gfn - (gfn % pagesPerHpage(it.level));
    if (it.level === 1) break;
    const slot = iterSlot(it);
    if (isShadowPresent(spteRead(vm, slot))) continue;
    const child = getPage(vm, agent, mmu, baseGfn, addr, it.level - 1, true, ACC.ALL);
    if (child === NIL) return NO_PAGES;
    linkShadowPage(vm, slot, child, (vm.roleOf(child) & PR.AD_DISABLED) !== 0);
  }
  if (it.level !== 1) return RETRY;
  return mmuSetSpte(vm, agent, iterSlot(it), it.page, ACC.ALL, gfn, write);
}

/**
 * mmu_set_spte for a 4 KiB leaf: replace a leaf mapping another frame,
 * build the SPTE (write-protected if the gfn is tracked), count a new
 * mapping in the gfn's rmap. A write that had to be write-protected is
 * handed to the emulator.
 */
function mmuSetSpte(vm: ShadowVm, agent: number, slot: number, page: number, access: number, gfn: number, write: boolean): FaultResult {
  let old = spteRead(vm, slot);
  let wasRmapped = false;
  if (isShadowPresent(old)) {
    if (sptePfn(old) !== gfn) {
      dropSpte(vm, slot);
      remoteTlbFlush(vm, agent);
      old = 0n;
    } else wasRmapped = true;
  }
  const { spte, wrprot } = makeSpte(vm.masks, { role: vm.roleOf(page), access, gfn, old, tracked: gfnTracked(vm, gfn), tdp: vm.handle.options.host.tdpEnabled });
  let r = FIXED;
  if (old === spte) r = SPURIOUS;
  else setLeaf(vm, slot, spte, gfn, !wasRmapped);
  if (wrprot && write) return { kind: 'emulate', gpa: gfn * 4096 };
  return r;
}

/** FNAME(page_fault): walk the guest's tables, then fetch under mmu_lock. */
function shadowPageFault(vm: ShadowVm, agent: number, roots: RootSet, mmu: ShadowMmuView, mem: GuestMemory, req: FaultRequest, g: WalkerGeometry): FaultResult {
  const w = req.walker ?? new GuestWalker();
  const env = { pfec: req.errorCode & (PFERR.WRITE | PFERR.USER | PFERR.FETCH), cpl: req.cpl ?? 0, eflagsAc: req.eflagsAc ?? false, pkru: req.pkru ?? 0 };
  // FNAME(walk_addr_generic) traces the address and the access KVM passes: the fault's error code less PFERR_RSVD.
  vm.hooks[agent]?.trace?.pagetableWalk(req.addr, req.errorCode & ~PFERR.RSVD);
  if (!walkAddrGeneric(w, g, mmu, mem, req.guest, BigInt.asUintN(64, req.addr), env, null, req.isWalkMmu ?? true)) {
    vm.hooks[agent]?.trace?.walkerError(w.fault.errorCode);
    return { kind: 'guest-fault', fault: { ...w.fault } };
  }
  const gfn = Number(w.gpa >> 12n);
  if (!visibleGfn(vm, mem, gfn)) return { kind: 'no-memslot', gpa: Number(w.gpa) };
  if (pageTrackActive(vm, req.errorCode, gfn)) return { kind: 'emulate', gpa: Number(w.gpa) };
  let access = w.pteAccess;
  const write = (req.errorCode & PFERR.WRITE) !== 0;
  // CR0.WP = 0: a supervisor write to a read-only page maps it writable and supervisor-only.
  if (write && !(access & ACC.WRITE) && !mmu.cr0Wp('FNAME(page_fault)') && !(req.errorCode & PFERR.USER)) {
    access = (access | ACC.WRITE) & ~ACC.USER;
    if (mmu.ext('cr4_smep', 'FNAME(page_fault)')) access &= ~ACC.EXEC;
  }
  // Scheduling point (src/layout/sched-point.ts): between the unlocked guest walk and mmu_lock, another
  // actor may edit the guest tables, zap, or flip the generation; gpte_changed and is_page_fault_stale
  // under the lock must see it.
  schedPoint.hook?.('fault-lock', w.level, -1);
  return vm.lock.with(agent, () => {
    if (isStale(vm, roots, req)) return RETRY;
    if (!makePagesAvailable(vm, agent)) return NO_PAGES;
    return fetch(vm, agent, roots, mmu, mem, req.addr, w, g, access, gfn, write);
  });
}

/** FNAME(gpte_changed): the guest entry at `level` no longer holds what the walk read. */
function gpteChanged(mem: GuestMemory, w: GuestWalker, g: WalkerGeometry, level: number): boolean {
  const pa = w.ptePa[level - 1]!;
  const cur = g.entryBytes === 4 ? BigInt(mem.load32(pa)) : mem.load64(pa);
  return cur !== w.ptes[level - 1];
}

/**
 * walker->pt_access[level - 1]: the ACC bits of the entries above `level`
 * (levels level+1 .. max_level), as FNAME(gpte_access) computes them.
 */
function ptAccess(w: GuestWalker, g: WalkerGeometry, level: number): number {
  let lo = 0xffffffff;
  let anyNx = false;
  for (let l = w.maxLevel; l > level; l--) {
    const pte = w.ptes[l - 1]!;
    lo &= Number(pte & 0xffff_ffffn);
    if (g.nxHi !== 0 && pte >> 63n) anyNx = true;
  }
  return gpteAccess(g, lo >>> 0, anyNx);
}

/** FNAME(fetch): shadow the guest tables down to the guest leaf, then direct pages to level 1, then the leaf. */
function fetch(vm: ShadowVm, agent: number, roots: RootSet, mmu: ShadowMmuView, mem: GuestMemory, addr: bigint, w: GuestWalker, g: WalkerGeometry, access: number, gfn: number, write: boolean): FaultResult {
  const top = mmu.rootLevel === 3 ? 2 : mmu.rootLevel;
  if (gpteChanged(mem, w, g, top) || roots.rootHpa === INVALID_PAGE) return RETRY;
  const it = iterStart(roots, mmu, addr);
  for (; it.level >= 1 && it.level > w.level; iterNext(vm, it)) {
    const slot = iterSlot(it);
    let child = NIL;
    if (!isShadowPresent(spteRead(vm, slot))) {
      const tableGfn = Math.floor(w.tableGpa[it.level - 2]! / 4096);
      child = getPage(vm, agent, mmu, tableGfn, addr, it.level - 1, false, ptAccess(w, g, it.level - 1));
      if (child === NIL) return NO_PAGES;
    }
    // The guest entry must still be there now that its table is write-protected.
    if (gpteChanged(mem, w, g, it.level - 1)) return RETRY;
    if (child !== NIL) linkShadowPage(vm, slot, child, (vm.roleOf(child) & PR.AD_DISABLED) !== 0);
  }
  for (; it.level >= 1; iterNext(vm, it)) {
    const baseGfn = gfn - (gfn % pagesPerHpage(it.level));
    if (it.level === 1) break;
    const slot = iterSlot(it);
    validateDirectSpte(vm, agent, slot, access);
    if (!isShadowPresent(spteRead(vm, slot))) {
      const child = getPage(vm, agent, mmu, baseGfn, addr, it.level - 1, true, access);
      if (child === NIL) return NO_PAGES;
      linkShadowPage(vm, slot, child, (vm.roleOf(child) & PR.AD_DISABLED) !== 0);
    }
  }
  if (it.level !== 1) return RETRY;
  return mmuSetSpte(vm, agent, iterSlot(it), it.page, access, gfn, write);
}

/** validate_direct_spte: a direct child built for other access bits is unlinked (rebuilt by the caller). */
function validateDirectSpte(vm: ShadowVm, agent: number, slot: number, access: number): void {
  const spte = spteRead(vm, slot);
  if (!isShadowPresent(spte) || isLargePte(spte)) return;
  const child = childOf(spte);
  if (((vm.roleOf(child) & PR.ACCESS_MASK) >>> PR.ACCESS_SHIFT) === access) return;
  dropParentPte(vm, child, slot);
  remoteTlbFlush(vm, agent);
}
