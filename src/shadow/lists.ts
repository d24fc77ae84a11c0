/**
 * The lists a page moves between (Linux v5.17 mmu.c kvm_mmu_alloc_page and
 * active_mmu_pages; the free list and limbo are ours):
 *
 *   FREE --alloc--> ACTIVE --zap--> ZAPPED --commit--> LIMBO --grace--> FREE
 *
 * (kvm_zap_obsolete_pages parks its ZAPPED pages on zapped_obsolete_pages
 * while it has dropped mmu_lock, and commits them when it is done.)
 *
 * A page zapped while it is a root stays ZAPPED (hashed, counted) until its
 * last holder lets go; only then is it committed.
 *
 * Limbo is KVM's "flush remote TLBs, then free" (kvm_mmu_commit_zap_page) in
 * a form that needs no waiting on other vCPUs: a lockless walker publishes
 * the zap sequence it started at (walk_shadow_page_lockless_begin, in its
 * agent's walkEpoch word); a zapped page, stamped with the sequence after
 * its SPTE links were cleared, goes back to the free list only when every
 * walker still walking started at or after that stamp — such a walker read
 * the cleared links, so it cannot reach the page. Allocation therefore
 * never hands out a page some walker may still read, and never a page that
 * is still allocated.
 *
 * Every function here requires mmu_lock (asserted in prove mode where the
 * agent is known).
 */
import { ShadowArenaError, type ShadowVm } from './arena.js';
import { NIL, PAGE_STATE, SPTES_PER_PAGE } from './layout.js';

/**
 * How long an allocation that finds only limbo pages waits for the walkers
 * holding them back to finish their walk (a walk takes microseconds; a
 * preempted walker thread may take longer) before it reports no page.
 */
export const GRACE_WAIT_MS = 200;

/** kvm_mmu_alloc_page's list part: take a free page (reclaiming limbo if needed); NIL when none. */
export function takeFreePage(vm: ShadowVm, agent: number): number {
  vm.assertLocked(agent, 'takeFreePage');
  const h = vm.h;
  if (h.freeHead[0] === NIL && reclaimLimbo(vm, agent) === 0 && Atomics.load(h.limboCount, 0) > 0) waitForGrace(vm, agent);
  const p = h.freeHead[0]!;
  if (p === NIL) {
    vm.count(agent, 'noPages');
    return NIL;
  }
  const b = p * vm.sw32;
  h.freeHead[0] = vm.i32[b + vm.oListNext]!;
  Atomics.sub(h.freeCount, 0, 1);
  if (vm.prove) assertEmptyFree(vm, p);
  Atomics.add(vm.i32, b + vm.oAllocSeq, 1);
  return p;
}

/** Put an unhashed page on the active list head (newest) as ACTIVE, counted in n_used. */
export function activate(vm: ShadowVm, p: number): void {
  const h = vm.h;
  const b = p * vm.sw32;
  const head = h.activeHead[0]!;
  vm.i32[b + vm.oListPrev] = NIL;
  vm.i32[b + vm.oListNext] = head;
  if (head !== NIL) vm.i32[head * vm.sw32 + vm.oListPrev] = p;
  else h.activeTail[0] = p;
  h.activeHead[0] = p;
  Atomics.add(h.nUsedPages, 0, 1);
  vm.setState(p, PAGE_STATE.ACTIVE);
}

/** list_del(&sp->link) from active_mmu_pages. */
export function unlinkActive(vm: ShadowVm, p: number): void {
  const h = vm.h;
  const b = p * vm.sw32;
  const next = vm.i32[b + vm.oListNext]!;
  const prev = vm.i32[b + vm.oListPrev]!;
  if (prev !== NIL) vm.i32[prev * vm.sw32 + vm.oListNext] = next;
  else h.activeHead[0] = next;
  if (next !== NIL) vm.i32[next * vm.sw32 + vm.oListPrev] = prev;
  else h.activeTail[0] = prev;
  vm.i32[b + vm.oListNext] = vm.i32[b + vm.oListPrev] = NIL;
}

/** Append an unhashed, unlinked page to limbo with `stamp`. */
export function toLimbo(vm: ShadowVm, p: number, stamp: number): void {
  const h = vm.h;
  const b = p * vm.sw32;
  vm.i32[b + vm.oZapStamp] = stamp;
  vm.i32[b + vm.oListNext] = NIL;
  const tail = h.limboTail[0]!;
  if (tail !== NIL) vm.i32[tail * vm.sw32 + vm.oListNext] = p;
  else h.limboHead[0] = p;
  h.limboTail[0] = p;
  Atomics.add(h.limboCount, 0, 1);
  vm.setState(p, PAGE_STATE.LIMBO);
}

/**
 * kvm_zap_obsolete_pages dropping mmu_lock: park its prepared, uncommitted
 * pages (ZAPPED, root count 0) on the VM's zapped_obsolete_pages, so that a
 * holder in between (an audit, say) finds every page on a list.
 */
export function parkZappedObsolete(vm: ShadowVm, invalid: number[]): void {
  const h = vm.h;
  for (const p of invalid) {
    vm.i32[p * vm.sw32 + vm.oListNext] = h.zappedObsoleteHead[0]!;
    h.zappedObsoleteHead[0] = p;
  }
  Atomics.add(h.zappedObsoleteCount, 0, invalid.length);
  invalid.length = 0;
}

/** Take the parked pages back (oldest first) when kvm_zap_obsolete_pages holds mmu_lock again. */
export function takeZappedObsolete(vm: ShadowVm): number[] {
  const h = vm.h;
  const out: number[] = [];
  for (let p = h.zappedObsoleteHead[0]!; p !== NIL; ) {
    const next = vm.i32[p * vm.sw32 + vm.oListNext]!;
    vm.i32[p * vm.sw32 + vm.oListNext] = NIL;
    out.push(p);
    p = next;
  }
  h.zappedObsoleteHead[0] = NIL;
  Atomics.store(h.zappedObsoleteCount, 0, 0);
  return out.reverse();
}

/**
 * The oldest zap sequence any walker may still be using: the minimum
 * (epoch - 1) over walking agents, or +Infinity when nobody walks.
 */
export function oldestWalk(vm: ShadowVm): number {
  let min = Infinity;
  for (const e of vm.agentEpoch) {
    const v = Atomics.load(e, 0);
    if (v !== 0 && v - 1 < min) min = v - 1;
  }
  return min;
}

/** Move limbo pages whose grace period is over to the free list; returns how many. */
export function reclaimLimbo(vm: ShadowVm, agent: number): number {
  vm.assertLocked(agent, 'reclaimLimbo');
  const h = vm.h;
  const oldest = oldestWalk(vm);
  let n = 0;
  for (let p = h.limboHead[0]!; p !== NIL && vm.i32[p * vm.sw32 + vm.oZapStamp]! <= oldest; p = h.limboHead[0]!) {
    const b = p * vm.sw32;
    h.limboHead[0] = vm.i32[b + vm.oListNext]!;
    if (h.limboHead[0] === NIL) h.limboTail[0] = NIL;
    Atomics.sub(h.limboCount, 0, 1);
    vm.i32[b + vm.oListNext] = h.freeHead[0]!;
    h.freeHead[0] = p;
    Atomics.add(h.freeCount, 0, 1);
    vm.setState(p, PAGE_STATE.FREE);
    n++;
  }
  if (n) vm.count(agent, 'limboReclaimed', n);
  return n;
}

/**
 * Wait (bounded) until some limbo page's grace period ends: park on the
 * epoch word of a walker that holds the oldest limbo page back until it
 * changes (walkers do not notify: 1 ms slices), then reclaim again.
 */
function waitForGrace(vm: ShadowVm, agent: number): void {
  const deadline = performance.now() + GRACE_WAIT_MS;
  while (vm.h.freeHead[0] === NIL && performance.now() < deadline) {
    const stamp = vm.i32[vm.h.limboHead[0]! * vm.sw32 + vm.oZapStamp]!;
    const blocker = vm.agentEpoch.find((e) => {
      const v = Atomics.load(e, 0);
      return v !== 0 && v - 1 < stamp;
    });
    if (blocker) {
      const v = Atomics.load(blocker, 0);
      if (v !== 0) Atomics.wait(blocker, 0, v, 1);
    }
    reclaimLimbo(vm, agent);
  }
}

/** is_empty_shadow_page and clean links: what a free page must look like (prove mode). */
function assertEmptyFree(vm: ShadowVm, p: number): void {
  if (vm.stateOf(p) !== PAGE_STATE.FREE) throw new ShadowArenaError(`page ${p} on the free list is in state ${vm.stateOf(p)}`);
  if (vm.rootCountOf(p) !== 0) throw new ShadowArenaError(`free page ${p} has root count ${vm.rootCountOf(p)}`);
  const b = p * vm.sw32;
  if (vm.i32[b + vm.oParentHead] !== NIL) throw new ShadowArenaError(`free page ${p} still has parents`);
  for (let i = 0; i < SPTES_PER_PAGE; i++) {
    if (Atomics.load(vm.u64, vm.spteIndex(p, i)) !== 0n) throw new ShadowArenaError(`free page ${p} has a non-zero SPTE at ${i}`);
  }
}
