/**
 * Single-thread tests of roots: shared direct roots and their counts, the
 * previous-roots cache and the fast CR3 switch rule, roots across a fast
 * zap-all (never reused before the last holder lets go), write tracking,
 * and a root without a memslot.
 */
import { describe, expect, it } from 'vitest';
import { FrameAllocator, PageTableBuilder } from '../../src/paging/index.js';
import { PAGE_ROLE, PR } from '../../src/role/page-role.js';
import {
  agentStats,
  audit,
  getPage,
  makePagesAvailable,
  INVALID_PAGE,
  PAGE_STATE,
  pagesOfGfn,
  trackedWrite,
  zapAllFast,
  type ReloadBroadcast,
} from '../../src/shadow/index.js';
import { context, DATA_GPA, shadowSetup, tdpSetup } from './fixtures.js';
import { SimVcpu } from './sim-vcpu.js';

const GVA = 0x4000_0000n;

/** A reload broadcast for one thread: records the request, nothing to wait for. */
function recordReload(): ReloadBroadcast<void> & { requests: number } {
  const r = {
    requests: 0,
    request: () => {
      r.requests++;
    },
    wait: async () => {},
  };
  return r;
}

/** Root counts every RootSet implies: what audit() compares against. */
function expectedRoots(...vcpus: SimVcpu[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const v of vcpus) for (const p of v.roots.heldPages()) m.set(p, (m.get(p) ?? 0) + 1);
  return m;
}

describe('direct roots', () => {
  it('contexts with one role share one root page; each holder is one reference', () => {
    const { vm, mem, vcpu } = tdpSetup();
    const other = new SimVcpu(vm, 1, context('long4'), mem, { pgd: 0n });
    expect(vcpu.access(BigInt(DATA_GPA)).kind).toBe('hit');
    expect(other.access(BigInt(DATA_GPA)).kind).toBe('hit');
    expect(other.roots.rootHpa).toBe(vcpu.roots.rootHpa);
    expect(vm.rootCountOf(vcpu.roots.rootHpa)).toBe(2);
    // The second holder finds the root by lookup, and its SPTEs already filled by the first.
    expect(agentStats(vm, 1)).toMatchObject({ hashHits: 1, pagesCreated: 0, faults: 0, accessHits: 1 });
    expect(audit(vm, expectedRoots(vcpu, other))).toEqual([]);
    vcpu.unload();
    other.unload();
    expect(audit(vm, new Map())).toEqual([]);
  });

  it('a direct context keeps its root across any CR3 (role.direct ignores the pgd)', () => {
    const { vcpu } = tdpSetup();
    expect(vcpu.access(BigInt(DATA_GPA)).kind).toBe('hit');
    const root = vcpu.roots.rootHpa;
    expect(vcpu.switchPgd({ pgd: 0x1234_0000n })).toBe(true);
    expect(vcpu.roots.rootHpa).toBe(root);
  });
});

describe('previous roots (cached_root_available)', () => {
  /** A shadow long4 vCPU with `n` address spaces, each mapping GVA to its own data page. */
  function spaces(n: number) {
    const s = shadowSetup('long4');
    const tables = [s.pt, ...Array.from({ length: n - 1 }, () => PageTableBuilder.create(s.mem, s.alloc, { kind: 'long', levels: 4 }))];
    tables.forEach((t, i) => t.map({ gva: GVA, gpa: BigInt(DATA_GPA + i * 0x1000) }));
    return { ...s, tables };
  }

  it('rotates most-recently-used first, reuses a cached root for the same pgd and role, frees the oldest on a miss', () => {
    const { vm, vcpu, tables } = spaces(5);
    const rootOf: bigint[] = [];
    const visit = (i: number): boolean => {
      const switched = vcpu.switchPgd(tables[i]!.root);
      expect(vcpu.access(GVA)).toMatchObject({ kind: 'hit', gpa: DATA_GPA + i * 0x1000 });
      rootOf[i] = BigInt(vcpu.roots.rootHpa);
      return switched;
    };
    expect(visit(0)).toBe(false);
    expect([visit(1), visit(2), visit(3)]).toEqual([false, false, false]);
    // Current 3; prev = [2, 1, 0] (pgds).
    expect(vcpu.roots.prevRoots.map((r) => r.pgd)).toEqual([2, 1, 0].map((i) => tables[i]!.pgd));
    expect(visit(1)).toBe(true);
    expect(vcpu.roots.prevRoots.map((r) => r.pgd)).toEqual([3, 2, 0].map((i) => tables[i]!.pgd));
    // A fifth space: a miss; the oldest (space 0) is freed, the rest shift.
    const root0 = Number(rootOf[0]);
    expect(visit(4)).toBe(false);
    expect(vcpu.roots.prevRoots.map((r) => r.pgd)).toEqual([1, 3, 2].map((i) => tables[i]!.pgd));
    expect(vm.rootCountOf(root0)).toBe(0);
    // Misses: the first load and each new space (0, 1, 2, 3, 4); one hit (back to 1).
    expect(agentStats(vm, 0)).toMatchObject({ prevRootHits: 1, prevRootMisses: 5 });
    expect(audit(vm, expectedRoots(vcpu))).toEqual([]);
  });

  it('a different role word for the same pgd is not reused', () => {
    const { vcpu, tables } = spaces(2);
    vcpu.switchPgd(tables[0]!.root);
    vcpu.access(GVA);
    vcpu.switchPgd(tables[1]!.root);
    vcpu.access(GVA);
    const otherRole = (vcpu.ctx.roleBase ^ PR.CR0_WP) >>> 0;
    expect(vcpu.switchPgd(tables[0]!.root, otherRole)).toBe(false);
    expect(vcpu.roots.rootHpa).toBe(INVALID_PAGE);
  });

  it('an obsolete cached root is not reused (generation flipped, MMU_RELOAD not yet handled)', async () => {
    const { vm, vcpu, tables } = spaces(2);
    vcpu.switchPgd(tables[0]!.root);
    vcpu.access(GVA);
    vcpu.switchPgd(tables[1]!.root);
    vcpu.access(GVA);
    const reload = recordReload();
    await zapAllFast(vm, 1, reload);
    expect(reload.requests).toBe(1);
    expect(vcpu.switchPgd(tables[0]!.root)).toBe(false);
    // The vCPU handles MMU_RELOAD: every root goes, the zapped ones are freed by their last holder.
    vcpu.unload();
    expect(audit(vm, new Map())).toEqual([]);
    expect(vm.nUsed).toBe(0);
    expect(vm.freeCount).toBe(vm.capacity);
  });

  it('32-bit and PAE guests never switch fast: the current root is freed', () => {
    const { vcpu, pt } = shadowSetup('paging32');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    vcpu.access(GVA);
    const held = vcpu.roots.heldPages();
    expect(held).toHaveLength(4);
    expect(vcpu.switchPgd(pt.root)).toBe(false);
    expect(vcpu.roots.heldPages()).toEqual([]);
    for (const p of held) expect(vcpu.vm.rootCountOf(p)).toBe(0);
  });
});

describe('zap-all and roots', () => {
  it('a root zapped while held stays allocated (and is never handed out) until its last holder lets go', async () => {
    const { vm, vcpu, pt } = shadowSetup('long4', { maxPages: 16, capacity: 20 });
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), size: 0x10_0000 });
    vcpu.guest = pt.root;
    expect(vcpu.access(GVA).kind).toBe('hit');
    const root = vcpu.roots.rootHpa;
    const seq = vm.allocSeqOf(root);
    await zapAllFast(vm, 1, recordReload());
    expect(vm.stateOf(root)).toBe(PAGE_STATE.ZAPPED);
    expect(PAGE_ROLE.get(vm.roleOf(root), 'invalid')).toBe(1);
    // Another agent churns through every page the arena has, ten times over.
    const direct = { roleBase: PAGE_ROLE.encode({ level: 4, access: 7 }), directMap: true };
    for (let i = 0; i < 10 * vm.capacity; i++) {
      vm.lock.with(1, () => {
        expect(makePagesAvailable(vm, 1)).toBe(true);
        expect(getPage(vm, 1, direct, 1000 + i, 0n, 1, true, 7)).toBeGreaterThanOrEqual(0);
      });
    }
    expect(agentStats(vm, 1).recycled).toBeGreaterThan(0);
    expect(vm.allocSeqOf(root)).toBe(seq);
    expect(vm.stateOf(root)).toBe(PAGE_STATE.ZAPPED);
    // A fault on the zapped root is stale: retried, never linked under it.
    expect(vcpu.fault(GVA, { pfec: 0, cpl: 0, eflagsAc: false, pkru: 0 }, -1).kind).toBe('retry');
    vcpu.unload();
    expect(vm.stateOf(root)).toBe(PAGE_STATE.FREE);
    expect(audit(vm, new Map())).toEqual([]);
  });
});

describe('write tracking', () => {
  it('a guest write to a shadowed table zaps its pages; the next access sees the new entry', () => {
    const { vm, vcpu, pt } = shadowSetup('long4');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), size: 0x2000 });
    vcpu.guest = pt.root;
    expect(vcpu.access(GVA + 0x1000n)).toMatchObject({ kind: 'hit', gpa: DATA_GPA + 0x1000 });
    const leaf = pt.entry(GVA + 0x1000n, 1)!;
    const tableGfn = Math.floor(leaf.pa / 4096);
    const before = pagesOfGfn(vm, tableGfn);
    pt.remap(GVA + 0x1000n, 0x60_0000n);
    expect(trackedWrite(vm, 0, leaf.pa)).toBe(1);
    expect(vm.stateOf(before[0]!)).not.toBe(PAGE_STATE.ACTIVE);
    expect(Atomics.load(vm.h.gfnTrack, tableGfn)).toBe(0);
    expect(vcpu.access(GVA + 0x1000n)).toMatchObject({ kind: 'hit', gpa: 0x60_0000, faults: 1 });
    // A write to an unshadowed page is not tracked.
    expect(trackedWrite(vm, 0, DATA_GPA)).toBe(0);
    expect(agentStats(vm, 0).trackedWrites).toBe(1);
    expect(audit(vm, expectedRoots(vcpu))).toEqual([]);
  });

  it('a vCPU write through a mapping of its own page table is emulated and zaps the shadow of that table', () => {
    const { vm, vcpu, pt } = shadowSetup('long4');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    const leaf = pt.entry(GVA, 1)!;
    const tableGpa = leaf.pa & ~0xfff;
    // The guest maps its own level-1 table at GVA + 1 MiB.
    pt.map({ gva: GVA + 0x10_0000n, gpa: BigInt(tableGpa) });
    vcpu.guest = pt.root;
    expect(vcpu.access(GVA).kind).toBe('hit');
    expect(vcpu.access(GVA + 0x10_0000n)).toMatchObject({ kind: 'hit', gpa: tableGpa });
    const out = vcpu.access(GVA + 0x10_0000n, { write: true });
    expect(out).toMatchObject({ kind: 'emulated', gpa: tableGpa });
    expect(agentStats(vm, 0).faultsEmulated).toBe(1);
    expect(pagesOfGfn(vm, tableGpa / 4096).every((p) => vm.stateOf(p) !== PAGE_STATE.ACTIVE)).toBe(true);
    expect(audit(vm, expectedRoots(vcpu))).toEqual([]);
  });
});

describe('root allocation errors', () => {
  it('a root outside guest memory is a triple fault, with nothing allocated', () => {
    const { vm, vcpu } = shadowSetup('long4');
    vcpu.guest = { pgd: 0x4000_0000_0000n };
    expect(vcpu.access(GVA)).toMatchObject({ kind: 'load-failed', load: 'triple-fault' });
    expect(vm.nUsed).toBe(0);
  });

  it('tables in another allocator range still shadow correctly (a second builder on the same memory)', () => {
    const { mem, vcpu } = shadowSetup('long4');
    const other = PageTableBuilder.create(mem, FrameAllocator.create(mem, { start: 0x30_0000, end: 0x38_0000 }), { kind: 'long', levels: 4 });
    other.map({ gva: GVA, gpa: 0x70_0000n });
    vcpu.switchPgd(other.root);
    expect(vcpu.access(GVA)).toMatchObject({ kind: 'hit', gpa: 0x70_0000 });
  });
});
