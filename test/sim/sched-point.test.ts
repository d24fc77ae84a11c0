/**
 * The scheduling points inside a vCPU step (src/layout/sched-point.ts), driven
 * by hand on one shadow-paging vCPU: where each is reached (never with
 * mmu_lock held), a write-tracking zap nested inside a lockless walk (the walk
 * reads the cleared SPTE; its epoch keeps the zapped page out of the free
 * list), the prove-mode check that would catch a page freed under a walk, and
 * a zap nested between a fault's guest walk and mmu_lock (the fault sees its
 * root obsolete and retries).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { schedPoint, type SchedPointKind } from '../../src/layout/sched-point.js';
import { walkEnv } from '../../src/paging/index.js';
import { PAGE_STATE, reclaimLimbo, trackedWrite, WALK } from '../../src/shadow/index.js';
import { DATA_GPA, shadowSetup } from '../shadow/fixtures.js';

const GVA = 0x4000_0000n;
const ZAPPER = 1;
const READ = walkEnv({});

/** A long-mode guest with GVA mapped and shadowed (one fault), and the gfn of its level-1 guest table. */
function mapped() {
  const s = shadowSetup('long4');
  s.pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
  s.vcpu.guest = s.pt.root;
  expect(s.vcpu.access(GVA)).toEqual({ kind: 'hit', gpa: DATA_GPA, faults: 1 });
  return { ...s, l1Gfn: Math.floor(s.pt.entry(GVA, 1)!.pa / 4096) };
}

afterEach(() => {
  schedPoint.hook = null;
});

describe('scheduling points', () => {
  it('a lockless walk reaches one point per SPTE read, each with mmu_lock free', () => {
    const { vm, vcpu } = mapped();
    const seen: [SchedPointKind, number][] = [];
    schedPoint.hook = (kind, level) => {
      expect(vm.lock.holder()).toBe(-1);
      seen.push([kind, level]);
    };
    expect(vcpu.walk(GVA, READ)).toBe(DATA_GPA);
    expect(seen).toEqual([4, 3, 2, 1].map((l) => ['lockless-walk', l]));
  });

  it('a write-tracking zap nested before the level-1 read: the walk reads the cleared SPTE and faults; the page waits in limbo until the walk ends', () => {
    const { vm, vcpu, l1Gfn } = mapped();
    let zappedPage = -1;
    schedPoint.hook = (kind, level, page) => {
      if (kind !== 'lockless-walk' || level !== 1) return;
      expect(vm.stateOf(page)).toBe(PAGE_STATE.ACTIVE);
      expect(trackedWrite(vm, ZAPPER, l1Gfn * 4096)).toBe(1);
      zappedPage = page;
      // Grace period: the walker's epoch holds the page back from the free list.
      vm.lock.with(ZAPPER, () => reclaimLimbo(vm, ZAPPER));
      expect(vm.stateOf(page)).toBe(PAGE_STATE.LIMBO);
    };
    expect(vcpu.walk(GVA, READ)).toBe(WALK.NOT_PRESENT);
    schedPoint.hook = null;
    expect(zappedPage).toBeGreaterThanOrEqual(0);
    vm.lock.with(ZAPPER, () => reclaimLimbo(vm, ZAPPER));
    expect(vm.stateOf(zappedPage)).toBe(PAGE_STATE.FREE);
    expect(vcpu.access(GVA)).toEqual({ kind: 'hit', gpa: DATA_GPA, faults: 1 });
  });

  it('prove mode catches a page freed under a lockless walk (a walker that did not publish its epoch)', () => {
    const { vm, vcpu, l1Gfn } = mapped();
    schedPoint.hook = (kind, level) => {
      if (kind !== 'lockless-walk' || level !== 1) return;
      // What a missing walk_shadow_page_lockless_begin would allow: the zapped page is freed at once.
      Atomics.store(vm.agentEpoch[vcpu.agent]!, 0, 0);
      trackedWrite(vm, ZAPPER, l1Gfn * 4096);
    };
    expect(() => vcpu.walk(GVA, READ)).toThrow(/was freed while a lockless walk was reading it/);
  });

  it("a zap nested between a fault's guest walk and mmu_lock: the fault finds its root obsolete and retries", () => {
    const { vm, vcpu, pt } = mapped();
    const other = GVA + 0x20_0000n;
    pt.map({ gva: other, gpa: BigInt(DATA_GPA + 0x1000) });
    const points: [SchedPointKind, number][] = [];
    schedPoint.hook = (kind, level) => {
      expect(vm.lock.holder()).toBe(-1);
      points.push([kind, level]);
      // The root's guest table is written: its shadow page (our root) is zapped.
      if (kind === 'fault-lock') trackedWrite(vm, ZAPPER, pt.rootPa);
    };
    const t = vcpu.walk(other, READ);
    expect(t).toBe(WALK.NOT_PRESENT);
    expect(vcpu.fault(other, READ, t)).toEqual({ kind: 'retry' });
    expect(vm.isObsolete(vcpu.roots.rootHpa)).toBe(true);
    // The guest walk set the accessed bits the first access had not (levels 2 and 1: the new
    // entries), one A/D point each, then the fault reached mmu_lock with a level-1 guest leaf.
    expect(points.filter(([k]) => k !== 'lockless-walk')).toEqual([['ad-write', 2], ['ad-write', 1], ['fault-lock', 1]]);
  });
});
