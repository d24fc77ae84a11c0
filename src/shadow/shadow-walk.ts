/**
 * Walking the shadow page tables: the hardware's lockless walk of a guest
 * access through the SPTEs (what the CPU does in guest mode), and the
 * shadow_walk iterator the fault paths use under mmu_lock (Linux v5.17
 * mmu.c shadow_walk_init_using_root, shadow_walk_okay, __shadow_walk_next,
 * walk_shadow_page_lockless_begin/end).
 *
 * The lockless walk reads each SPTE whole (Atomics.load) inside a walker
 * epoch: it publishes the zap sequence it started at, so no page it may
 * reach is reused before it ends (arena.ts). A hit never reads guest memory
 * and never walks the guest's tables: once mapped, an access costs one SPTE
 * read per level. Each SPTE read is a scheduling point
 * (src/layout/sched-point.ts), where the simulation may run a zap.
 *
 * The hardware permission check: for a shadow (indirect) root, the leaf's
 * W/U/X bits are checked with the context's permission bitmap (the guest's
 * CR0.WP, SMEP, SMAP semantics, as the CPU applies them with the guest's
 * control registers loaded; protection keys are not in SPTEs: PKU needs TDP
 * in KVM). For a direct root (TDP, or guest paging off), the leaf must grant
 * the access itself (write → W, fetch → X, and read permission).
 */
import { schedPoint } from '../layout/sched-point.js';
import { ptIndex, GEOMETRY, PFERR } from '../paging/format.js';
import type { WalkMmu } from '../paging/mmu-view.js';
import { permissionFault, type WalkEnv } from '../paging/permission.js';
import { ACC, LEVEL } from '../role/page-role.js';
import { ShadowArenaError, type ShadowVm } from './arena.js';
import { PAGE_STATE } from './layout.js';
import { INVALID_PAGE, type RootMmuView, type RootSet } from './roots.js';
import { leafAccess, SHADOW_PFN_BASE } from './spte-format.js';

/** translate() outcomes below zero. */
export const WALK = {
  /** No present leaf: a not-present fault (error code without PFERR.PRESENT). */
  NOT_PRESENT: -1,
  /** A present leaf denied the access: a protection fault (PFERR.PRESENT). */
  PROTECTION: -2,
  /** The context has no root (kvm_mmu_reload must run before entry). */
  NO_ROOT: -3,
} as const;

const G64 = GEOMETRY.paging64;
const TWO20 = 1 << 20;
const MAX_LEVELS = 5;

/** What the lockless walk reads from a context (src/mmu's MmuContext satisfies it). */
export interface WalkView extends RootMmuView, WalkMmu {}

/**
 * Thread-local scratch for the lockless walk: splits an SPTE into halves
 * without BigInt arithmetic, and (prove mode) remembers the pages visited.
 */
export class WalkScratch {
  private readonly q = new BigUint64Array(1);
  private readonly d = new Uint32Array(this.q.buffer);
  readonly visited = new Int32Array(MAX_LEVELS);
  readonly seqs = new Int32Array(MAX_LEVELS);
  /**
   * Prove mode: each visited page's role word as the walk saw it. A check made
   * after walk_shadow_page_lockless_end must use these, not the arena: from
   * then on the page may be zapped and handed out again under another role.
   */
  readonly roles = new Uint32Array(MAX_LEVELS);
  n = 0;
  level = 0;
  lo = 0;
  hi = 0;
  split(v: bigint): void {
    this.q[0] = v;
    this.lo = this.d[0]!;
    this.hi = this.d[1]!;
  }
}

/**
 * The first table of a walk for `addrLo` (shadow_walk_init_using_root):
 * returns its page and sets `out.level`, or returns INVALID_PAGE (no root,
 * or a PAE quarter without a root).
 */
export function walkStart(roots: RootSet, mmu: RootMmuView, addrLo: number, out: { level: number }): number {
  let page = roots.rootHpa;
  let level = mmu.shadowRootLevel;
  if (page === INVALID_PAGE) return INVALID_PAGE;
  // A 32-bit or PAE guest under a 4/5-level shadow table: start at the PAE table.
  if (level >= LEVEL.PT64_ROOT_4 && mmu.rootLevel < LEVEL.PT64_ROOT_4 && !mmu.directMap) level = LEVEL.PT32E_ROOT;
  if (level === LEVEL.PT32E_ROOT) {
    page = roots.paeRoot[(addrLo >>> 30) & 3]!;
    level--;
  }
  out.level = level;
  return page < 0 ? INVALID_PAGE : page;
}

/**
 * A guest access through the SPTEs, without mmu_lock. Returns the guest
 * physical address accessed (>= 0), or a WALK code. `env.pfec` holds the
 * access (PFERR.WRITE/USER/FETCH).
 */
export function translate(vm: ShadowVm, agent: number, roots: RootSet, mmu: WalkView, addr: bigint, env: WalkEnv, s: WalkScratch): number {
  const epoch = vm.agentEpoch[agent]!;
  // walk_shadow_page_lockless_begin: publish the start before reading any SPTE (SC store).
  Atomics.store(epoch, 0, Atomics.load(vm.h.zapSeq, 0) + 1);
  let r: number;
  try {
    r = walk(vm, roots, mmu, addr, env, s);
    if (vm.prove) checkVisited(vm, s);
  } finally {
    // walk_shadow_page_lockless_end.
    Atomics.store(epoch, 0, 0);
  }
  vm.count(agent, r >= 0 ? 'accessHits' : 'accessMisses');
  return r;
}

function walk(vm: ShadowVm, roots: RootSet, mmu: WalkView, addr: bigint, env: WalkEnv, s: WalkScratch): number {
  s.split(addr);
  const lo = s.lo;
  const hi = s.hi;
  s.n = 0;
  if (roots.rootHpa === INVALID_PAGE) return WALK.NO_ROOT;
  let page = walkStart(roots, mmu, lo, s);
  if (page === INVALID_PAGE) return WALK.NOT_PRESENT;
  for (let level = s.level; ; level--) {
    if (vm.prove) remember(vm, s, page);
    // Scheduling point (src/layout/sched-point.ts), after `page` is remembered and before its SPTE
    // is read: another actor may zap, free or reuse pages now; only the walker epoch protects this
    // walk, and checkVisited sees any page of it that was freed or handed out again.
    schedPoint.hook?.('lockless-walk', level, page);
    s.split(Atomics.load(vm.u64, page * vm.sw64 + vm.oSpt + ptIndex(G64, lo, hi, level)));
    const slo = s.lo;
    if ((slo & 0x800) === 0) return WALK.NOT_PRESENT;
    const pfn = (s.hi & 0xfffff) * TWO20 + (slo >>> 12);
    if (level === 1 || (slo & 0x80) !== 0) {
      if (!permits(vm, mmu, env, slo, s.hi)) return WALK.PROTECTION;
      return pfn * 4096 + (lo & 0xfff);
    }
    page = pfn - SHADOW_PFN_BASE;
  }
}

function permits(vm: ShadowVm, mmu: WalkView, env: WalkEnv, lo: number, hi: number): boolean {
  const acc = leafAccess(vm.masks, lo, hi);
  const pfec = env.pfec;
  if (mmu.directMap) {
    const need = ACC.USER | (pfec & PFERR.WRITE ? ACC.WRITE : 0) | (pfec & PFERR.FETCH ? ACC.EXEC : 0);
    return (acc & need) === need;
  }
  // KVM runs shadow paging with EFER.NX forced on in hardware (update_transition_efer): a fetch from
  // an NX SPTE faults even when the guest's EFER.NX is clear, which the guest's permission bitmap
  // ignores ("!nx will cause pte.nx to fault"). KVM clears exec itself in such SPTEs, e.g. for a
  // user page made supervisor-writable under CR0.WP = 0 with SMEP.
  if (pfec & PFERR.FETCH && !(acc & ACC.EXEC)) return false;
  return permissionFault(mmu, env, acc, 0, pfec) === 0;
}

function remember(vm: ShadowVm, s: WalkScratch, page: number): void {
  if (page < 0 || page >= vm.capacity) throw new ShadowArenaError(`lockless walk reached page ${page}, outside the arena`);
  if (vm.stateOf(page) === PAGE_STATE.FREE) throw new ShadowArenaError(`lockless walk reached free page ${page}`);
  s.visited[s.n] = page;
  s.seqs[s.n] = vm.allocSeqOf(page);
  s.roles[s.n++] = vm.roleOf(page);
}

/**
 * Prove mode, before walk_shadow_page_lockless_end: no page visited was freed
 * (it may be zapped or in limbo, never free) or handed out again while the
 * walk ran.
 */
function checkVisited(vm: ShadowVm, s: WalkScratch): void {
  for (let i = 0; i < s.n; i++) {
    const p = s.visited[i]!;
    if (vm.allocSeqOf(p) !== s.seqs[i]) throw new ShadowArenaError(`page ${p} was reused while a lockless walk was reading it`);
    if (vm.stateOf(p) === PAGE_STATE.FREE) throw new ShadowArenaError(`page ${p} was freed while a lockless walk was reading it`);
  }
}
