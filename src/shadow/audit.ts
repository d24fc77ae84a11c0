/**
 * A full consistency check of one VM's shadow cache (in the spirit of
 * Linux's mmu_audit.c and CONFIG_KVM_PROVE_MMU): every page on exactly one
 * list, counts that match, hash chains, parent and rmap links, write
 * protection of tracked gfns, unique valid keys. Read-only. Call it with
 * mmu_lock held (`auditLocked`) or while no thread uses the cache.
 */
import { PR } from '../role/page-role.js';
import type { ShadowVm } from './arena.js';
import { bucketFirst, bucketNext, hashGfn } from './hash.js';
import { HASH_BUCKETS, NIL, PAGE_STATE, SPTES_PER_PAGE } from './layout.js';
import { parentSlots, rmapSlots, slotOf, spteRead } from './spte.js';
import { isLastSpte, isShadowPresent, isWritable, sptePage, sptePfn } from './spte-format.js';

const MAX_REPORTS = 20;

/** Violations found (empty when consistent). `roots`: expected root count per page, if known. */
export function audit(vm: ShadowVm, roots?: ReadonlyMap<number, number>): string[] {
  const out: string[] = [];
  const bad = (msg: string): void => {
    if (out.length < MAX_REPORTS) out.push(msg);
  };
  const where = new Map<number, string>();
  const place = (p: number, list: string): void => {
    if (where.has(p)) bad(`page ${p} is on ${where.get(p)} and on ${list}`);
    where.set(p, list);
  };
  checkLists(vm, place, bad);
  checkPages(vm, where, bad, roots);
  checkHash(vm, bad);
  checkTracking(vm, bad);
  return out;
}

/** audit() with mmu_lock held by `agent`. */
export function auditLocked(vm: ShadowVm, agent: number, roots?: ReadonlyMap<number, number>): string[] {
  return vm.lock.with(agent, () => audit(vm, roots));
}

function checkLists(vm: ShadowVm, place: (p: number, l: string) => void, bad: (m: string) => void): void {
  const h = vm.h;
  const next = (p: number) => vm.i32[p * vm.sw32 + vm.oListNext]!;
  let n = 0;
  for (let p = h.freeHead[0]!; p !== NIL && n <= vm.capacity; p = next(p), n++) {
    place(p, 'the free list');
    if (vm.stateOf(p) !== PAGE_STATE.FREE) bad(`page ${p} on the free list has state ${vm.stateOf(p)}`);
  }
  if (n !== vm.freeCount) bad(`free list holds ${n} pages, freeCount says ${vm.freeCount}`);
  n = 0;
  let stamp = -Infinity;
  for (let p = h.limboHead[0]!; p !== NIL && n <= vm.capacity; p = next(p), n++) {
    place(p, 'limbo');
    if (vm.stateOf(p) !== PAGE_STATE.LIMBO) bad(`page ${p} in limbo has state ${vm.stateOf(p)}`);
    const s = vm.i32[p * vm.sw32 + vm.oZapStamp]!;
    if (s < stamp) bad(`limbo is not in stamp order at page ${p}`);
    stamp = s;
  }
  if (n !== vm.limboCount) bad(`limbo holds ${n} pages, limboCount says ${vm.limboCount}`);
  n = 0;
  for (let p = h.zappedObsoleteHead[0]!; p !== NIL && n <= vm.capacity; p = next(p), n++) {
    place(p, 'zapped_obsolete_pages');
    if (vm.stateOf(p) !== PAGE_STATE.ZAPPED) bad(`page ${p} on zapped_obsolete_pages has state ${vm.stateOf(p)}`);
  }
  if (n !== Atomics.load(h.zappedObsoleteCount, 0)) bad(`zapped_obsolete_pages holds ${n} pages, its count says ${Atomics.load(h.zappedObsoleteCount, 0)}`);
  n = 0;
  let prev = NIL;
  for (let p = h.activeHead[0]!; p !== NIL && n <= vm.capacity; prev = p, p = next(p), n++) {
    place(p, 'active_mmu_pages');
    if (vm.stateOf(p) !== PAGE_STATE.ACTIVE) bad(`page ${p} on active_mmu_pages has state ${vm.stateOf(p)}`);
    if (vm.i32[p * vm.sw32 + vm.oListPrev] !== prev) bad(`active_mmu_pages: page ${p} has a wrong back link`);
  }
  if (h.activeTail[0] !== prev) bad(`active_mmu_pages: tail is ${h.activeTail[0]}, last page is ${prev}`);
}

function checkPages(vm: ShadowVm, where: Map<number, string>, bad: (m: string) => void, roots?: ReadonlyMap<number, number>): void {
  let used = 0;
  for (let p = 0; p < vm.capacity; p++) {
    const state = vm.stateOf(p);
    const rc = vm.rootCountOf(p);
    if (roots && rc !== (roots.get(p) ?? 0)) bad(`page ${p}: root count ${rc}, expected ${roots.get(p) ?? 0}`);
    if (state === PAGE_STATE.ZAPPED) {
      // Unless kvm_zap_obsolete_pages parked it during a lock break, a zapped page is a root still held.
      const parked = where.get(p) === 'zapped_obsolete_pages';
      if (parked && rc !== 0) bad(`page ${p} on zapped_obsolete_pages is held as a root`);
      else if (where.has(p) && !parked) bad(`zapped page ${p} is on ${where.get(p)}`);
      else if (rc === 0 && !parked) bad(`zapped page ${p} is held by no root but was not freed`);
      if (!(vm.roleOf(p) & PR.INVALID)) bad(`zapped page ${p} lacks role.invalid`);
    } else if (!where.has(p)) bad(`page ${p} (state ${state}) is on no list`);
    if (state === PAGE_STATE.ACTIVE || (state === PAGE_STATE.ZAPPED && rc > 0)) used++;
    if (state === PAGE_STATE.FREE || state === PAGE_STATE.LIMBO) {
      if (rc !== 0) bad(`${state === PAGE_STATE.FREE ? 'free' : 'limbo'} page ${p} has root count ${rc}`);
      if (vm.i32[p * vm.sw32 + vm.oParentHead] !== NIL) bad(`unallocated page ${p} still has parents`);
      for (let i = 0; i < SPTES_PER_PAGE; i++) if (spteRead(vm, slotOf(p, i)) !== 0n) bad(`unallocated page ${p} has SPTE ${i} set`);
      continue;
    }
    checkSptes(vm, p, bad);
    const parents = parentSlots(vm, p);
    if (parents.length !== vm.i32[p * vm.sw32 + vm.oParentCount]) bad(`page ${p}: parent count ${vm.i32[p * vm.sw32 + vm.oParentCount]}, list has ${parents.length}`);
    for (const s of parents) {
      const v = spteRead(vm, s);
      if (!isShadowPresent(v) || sptePage(v) !== p) bad(`page ${p}: parent slot ${s} does not link to it`);
    }
  }
  if (used !== vm.nUsed) bad(`n_used_mmu_pages is ${vm.nUsed}, ${used} pages are in use`);
}

function checkSptes(vm: ShadowVm, p: number, bad: (m: string) => void): void {
  const level = vm.roleOf(p) & PR.LEVEL_MASK;
  for (let i = 0; i < SPTES_PER_PAGE; i++) {
    const slot = slotOf(p, i);
    const v = spteRead(vm, slot);
    if (!isShadowPresent(v)) {
      if (v !== 0n) bad(`page ${p} SPTE ${i}: not present but non-zero`);
      continue;
    }
    if (isLastSpte(v, level)) {
      const gfn = sptePfn(v);
      if (gfn >= vm.guestPages) bad(`page ${p} SPTE ${i} maps gfn ${gfn}, outside guest memory`);
      else if (!rmapSlots(vm, gfn).includes(slot)) bad(`page ${p} SPTE ${i} is missing from the rmap of gfn ${gfn}`);
      else if (isWritable(v) && Atomics.load(vm.h.gfnTrack, gfn) !== 0) bad(`page ${p} SPTE ${i} maps write-tracked gfn ${gfn} writable`);
      continue;
    }
    const c = sptePage(v);
    if (c < 0 || c >= vm.capacity || vm.stateOf(c) !== PAGE_STATE.ACTIVE) bad(`page ${p} SPTE ${i} links to page ${c}, which is not active`);
    else if ((vm.roleOf(c) & PR.LEVEL_MASK) !== level - 1) bad(`page ${p} (level ${level}) links to page ${c} of level ${vm.roleOf(c) & PR.LEVEL_MASK}`);
    else if (!parentSlots(vm, c).includes(slot)) bad(`page ${p} SPTE ${i} is missing from page ${c}'s parents`);
  }
}

function checkHash(vm: ShadowVm, bad: (m: string) => void): void {
  const hashed = new Set<number>();
  const keys = new Set<string>();
  const gen = vm.mmuValidGen;
  for (let b = 0; b < HASH_BUCKETS; b++) {
    let prev = NIL;
    for (let p = bucketFirst(vm, b); p !== NIL; prev = p, p = bucketNext(vm, p)) {
      if (hashed.has(p)) return bad(`hash bucket ${b} loops or repeats page ${p}`);
      hashed.add(p);
      if (hashGfn(vm.gfnOf(p)) !== b) bad(`page ${p} (gfn ${vm.gfnOf(p)}) is in bucket ${b}`);
      if (vm.i32[p * vm.sw32 + vm.oHashPrev] !== prev) bad(`hash bucket ${b}: page ${p} has a wrong back link`);
      const s = vm.stateOf(p);
      if (s !== PAGE_STATE.ACTIVE && s !== PAGE_STATE.ZAPPED) bad(`page ${p} in state ${s} is still hashed`);
      // One page per (gfn, role, generation): only zapped pages (role.invalid) may repeat a key.
      if (!(vm.roleOf(p) & PR.INVALID)) {
        const key = `${vm.gfnOf(p)}/${vm.roleOf(p)}/${vm.genOf(p)}`;
        if (keys.has(key)) bad(`two pages for gfn ${vm.gfnOf(p)}, role 0x${vm.roleOf(p).toString(16)}, generation ${vm.genOf(p)}${vm.genOf(p) === gen ? '' : ' (old)'}`);
        keys.add(key);
      }
    }
  }
  for (let p = 0; p < vm.capacity; p++) {
    const s = vm.stateOf(p);
    if ((s === PAGE_STATE.ACTIVE || s === PAGE_STATE.ZAPPED) && !hashed.has(p)) bad(`page ${p} in use is not hashed`);
  }
}

function checkTracking(vm: ShadowVm, bad: (m: string) => void): void {
  const track = new Map<number, number>();
  for (let p = 0; p < vm.capacity; p++) {
    if (vm.stateOf(p) !== PAGE_STATE.ACTIVE || vm.roleOf(p) & PR.DIRECT) continue;
    track.set(vm.gfnOf(p), (track.get(vm.gfnOf(p)) ?? 0) + 1);
  }
  let total = 0;
  for (let g = 0; g < vm.guestPages; g++) {
    const t = Atomics.load(vm.h.gfnTrack, g);
    total += t;
    if (t !== (track.get(g) ?? 0)) bad(`gfn ${g}: write-track count ${t}, ${track.get(g) ?? 0} indirect pages shadow it`);
    for (const s of rmapSlots(vm, g)) {
      const v = spteRead(vm, s);
      if (!isShadowPresent(v) || sptePfn(v) !== g) bad(`rmap of gfn ${g} holds slot ${s}, which does not map it`);
    }
  }
  if (total !== Atomics.load(vm.h.indirectShadowPages, 0)) bad(`indirect_shadow_pages is ${Atomics.load(vm.h.indirectShadowPages, 0)}, track counts sum to ${total}`);
}
