/**
 * The SPTE helpers: the only code that writes SPTEs and the per-SPTE link
 * words (Linux v5.17 mmu.c mmu_spte_set / mmu_spte_update /
 * mmu_spte_clear_no_track, link_shadow_page, drop_parent_pte, drop_spte,
 * rmap_add, rmap_write_protect, pte_list_add / __pte_list_remove).
 *
 * Every write is an Atomics operation on the arena's BigInt64Array, made
 * under mmu_lock (asserted in prove mode by the callers' entry points).
 * Lock-free readers (the hardware walk) see each SPTE whole. Ordering: a new
 * child page is fully set up (role, gfn, empty SPTEs) before the SPTE that
 * links it is stored; a link is cleared before the child can be freed, and
 * freeing waits for the walkers' grace period (arena.ts).
 *
 * Link lists: a present non-leaf SPTE is on its child's parent list
 * (sp->parent_ptes); a present leaf SPTE is on the rmap of the gfn it maps.
 * Both lists are doubly linked through the slot's linkNext/linkPrev words,
 * slot id = page * 512 + index.
 */
import { NIL, SPTES_PER_PAGE } from './layout.js';
import type { ShadowVm } from './arena.js';
import { isShadowPresent, makeNonleafSpte, SPTE_WRITABLE, sptePage, sptePfn } from './spte-format.js';

/** Slot id of SPTE `index` of page `page`. */
export const slotOf = (page: number, index: number): number => page * SPTES_PER_PAGE + index;
export const slotPage = (slot: number): number => Math.floor(slot / SPTES_PER_PAGE);
export const slotIndex = (slot: number): number => slot % SPTES_PER_PAGE;

const u64Of = (vm: ShadowVm, slot: number): number => vm.spteIndex(slotPage(slot), slotIndex(slot));
const linkBase = (vm: ShadowVm, slot: number): number => slotPage(slot) * vm.sw32 + slotIndex(slot);

/** Read an SPTE (whole, Atomics.load). */
export const spteRead = (vm: ShadowVm, slot: number): bigint => Atomics.load(vm.u64, u64Of(vm, slot));

/** mmu_spte_set / mmu_spte_update / mmu_spte_clear_no_track: store a whole SPTE. */
function spteWrite(vm: ShadowVm, slot: number, value: bigint): void {
  Atomics.store(vm.u64, u64Of(vm, slot), value);
}

// --- doubly linked slot lists ------------------------------------------------

/** pte_list_add: push `slot` at the head of the list whose head word is heads[at]. */
function listAdd(vm: ShadowVm, heads: Int32Array, at: number, slot: number): void {
  const b = linkBase(vm, slot);
  const head = heads[at]!;
  vm.i32[b + vm.oLinkNext] = head;
  vm.i32[b + vm.oLinkPrev] = NIL;
  if (head !== NIL) vm.i32[linkBase(vm, head) + vm.oLinkPrev] = slot;
  heads[at] = slot;
}

/** __pte_list_remove: unlink `slot` from the list whose head word is heads[at]. */
function listRemove(vm: ShadowVm, heads: Int32Array, at: number, slot: number): void {
  const b = linkBase(vm, slot);
  const next = vm.i32[b + vm.oLinkNext]!;
  const prev = vm.i32[b + vm.oLinkPrev]!;
  if (prev !== NIL) vm.i32[linkBase(vm, prev) + vm.oLinkNext] = next;
  else heads[at] = next;
  if (next !== NIL) vm.i32[linkBase(vm, next) + vm.oLinkPrev] = prev;
  vm.i32[b + vm.oLinkNext] = vm.i32[b + vm.oLinkPrev] = NIL;
}

/** Walk a slot list. */
function* listSlots(vm: ShadowVm, first: number): Generator<number> {
  for (let s = first; s !== NIL; ) {
    const next = vm.i32[linkBase(vm, s) + vm.oLinkNext]!;
    yield s;
    s = next;
  }
}

// --- parents ---------------------------------------------------------------

/** link_shadow_page: point `slot` at `child` and add it to the child's parent_ptes. */
export function linkShadowPage(vm: ShadowVm, slot: number, child: number, adDisabled: boolean): void {
  spteWrite(vm, slot, makeNonleafSpte(vm.masks, child, adDisabled));
  listAdd(vm, vm.i32, child * vm.sw32 + vm.oParentHead, slot);
  vm.i32[child * vm.sw32 + vm.oParentCount]!++;
}

/** drop_parent_pte: remove `slot` from `child`'s parents and clear it (mmu_spte_clear_no_track). */
export function dropParentPte(vm: ShadowVm, child: number, slot: number): void {
  listRemove(vm, vm.i32, child * vm.sw32 + vm.oParentHead, slot);
  vm.i32[child * vm.sw32 + vm.oParentCount]!--;
  spteWrite(vm, slot, 0n);
}

/** The first parent slot of `page`, or NIL (rmap_get_first on parent_ptes). */
export const firstParent = (vm: ShadowVm, page: number): number => vm.i32[page * vm.sw32 + vm.oParentHead]!;
export const parentCount = (vm: ShadowVm, page: number): number => vm.i32[page * vm.sw32 + vm.oParentCount]!;
/** Every slot that links to `page` (audits). */
export const parentSlots = (vm: ShadowVm, page: number): number[] => [...listSlots(vm, firstParent(vm, page))];

/** The child page a present non-leaf SPTE links to. */
export const childOf = (spte: bigint): number => sptePage(spte);

// --- leaves and rmaps --------------------------------------------------------

/** mmu_spte_set/update of a leaf; `addRmap` for a slot that was not present (rmap_add). */
export function setLeaf(vm: ShadowVm, slot: number, value: bigint, gfn: number, addRmap: boolean): void {
  spteWrite(vm, slot, value);
  if (addRmap) listAdd(vm, vm.h.rmapHeads, gfn, slot);
}

/** drop_spte: clear a present leaf and remove it from its gfn's rmap. */
export function dropSpte(vm: ShadowVm, slot: number): void {
  const old = spteRead(vm, slot);
  if (!isShadowPresent(old)) return;
  listRemove(vm, vm.h.rmapHeads, sptePfn(old), slot);
  spteWrite(vm, slot, 0n);
}

/**
 * rmap_write_protect(gfn) via spte_write_protect(pt_protect = true): clear
 * W and MMU-writable in every leaf mapping `gfn`. Returns whether any SPTE
 * changed (the caller then flushes remote TLBs).
 */
export function rmapWriteProtect(vm: ShadowVm, gfn: number): boolean {
  const clear = SPTE_WRITABLE | vm.masks.mmuWritable;
  let changed = false;
  for (const slot of listSlots(vm, vm.h.rmapHeads[gfn]!)) {
    const old = Atomics.and(vm.u64, u64Of(vm, slot), BigInt.asUintN(64, ~clear));
    if ((old & SPTE_WRITABLE) !== 0n) changed = true;
  }
  return changed;
}

/** Every leaf slot mapping `gfn` (audits). */
export const rmapSlots = (vm: ShadowVm, gfn: number): number[] => [...listSlots(vm, vm.h.rmapHeads[gfn]!)];
