/**
 * Single-thread tests of lookups and faults: the page role KVM derives, one
 * page per (gfn, role), direct (TDP) faults, shadow faults in every guest
 * paging mode, permissions taken from the guest entries, no guest walk once
 * mapped, guest faults, and the statistics they leave.
 */
import { describe, expect, it } from 'vitest';
import { PFERR, PTE } from '../../src/paging/index.js';
import { ACC, PAGE_ROLE, PR } from '../../src/role/page-role.js';
import { agentStats, audit, getPage, pageRole, PAGE_STATE, pagesOfGfn, SPECIAL_ROOT, vmStats } from '../../src/shadow/index.js';
import { DATA_GPA, shadowSetup, tdpSetup } from './fixtures.js';
import { SimVcpu } from './sim-vcpu.js';

const GVA = 0x4000_0000n;

describe('page role (kvm_mmu_get_page)', () => {
  it('replaces level, direct and access, and keeps every other bit of the base role', () => {
    const base = PAGE_ROLE.encode({ level: 4, access: 7, efer_nx: 1, cr0_wp: 1, smm: 1, guest_mode: 1, ad_disabled: 1 });
    const r = PAGE_ROLE.decode(pageRole(base, 0x1234_5000n, 2, true, ACC.WRITE | ACC.USER));
    expect(r).toMatchObject({ level: 2, direct: 1, access: 6, efer_nx: 1, cr0_wp: 1, smm: 1, guest_mode: 1, ad_disabled: 1, quadrant: 0, invalid: 0 });
  });

  it('computes the quadrant only for 4-byte guest entries: bit 21 at level 1, bits 31:30 at level 2', () => {
    const base = PAGE_ROLE.encode({ level: 2, has_4_byte_gpte: 1, access: 7 });
    expect(PAGE_ROLE.get(pageRole(base, 0xc020_0000n, 1, false, 7), 'quadrant')).toBe(1);
    expect(PAGE_ROLE.get(pageRole(base, 0xc000_0000n, 1, false, 7), 'quadrant')).toBe(0);
    expect(PAGE_ROLE.get(pageRole(base, 0xc000_0000n, 2, false, 7), 'quadrant')).toBe(3);
    expect(PAGE_ROLE.get(pageRole(base, 0x4000_0000n, 2, false, 7), 'quadrant')).toBe(1);
    const base8 = PAGE_ROLE.encode({ level: 4, access: 7 });
    expect(PAGE_ROLE.get(pageRole(base8, 0xc020_0000n, 1, false, 7), 'quadrant')).toBe(0);
  });

  it('one page per (gfn, role); two roles for one gfn get two pages; hits and misses are counted', () => {
    const { vm } = tdpSetup();
    const a = { roleBase: PAGE_ROLE.encode({ level: 4, access: 7, cr0_wp: 1 }), directMap: true };
    const b = { roleBase: PAGE_ROLE.encode({ level: 4, access: 7 }), directMap: true };
    const pages = vm.lock.with(0, () => [
      getPage(vm, 0, a, 42, 0n, 1, true, 7),
      getPage(vm, 0, a, 42, 0n, 1, true, 7),
      getPage(vm, 0, b, 42, 0n, 1, true, 7),
      getPage(vm, 0, a, 42, 0n, 1, true, 5),
      getPage(vm, 0, a, 42, 0n, 2, true, 7),
    ]);
    expect(pages[0]).toBe(pages[1]);
    expect(new Set(pages).size).toBe(4);
    expect(vm.lock.with(0, () => pagesOfGfn(vm, 42)).sort()).toEqual([...new Set(pages)].sort());
    const s = agentStats(vm, 0);
    expect([s.hashHits, s.hashMisses, s.pagesCreated]).toEqual([1, 4, 4]);
    expect(audit(vm)).toEqual([]);
  });
});

describe('direct (TDP) faults', () => {
  it('map a GPA with direct pages down to a 4 KiB leaf; the next access hits without a fault', () => {
    const { vm, vcpu } = tdpSetup();
    const gpa = BigInt(DATA_GPA + 0x3123);
    const first = vcpu.access(gpa, { write: true });
    expect(first).toEqual({ kind: 'hit', gpa: Number(gpa), faults: 1 });
    expect(vcpu.access(gpa, { fetch: true })).toEqual({ kind: 'hit', gpa: Number(gpa), faults: 0 });
    // One root (level 4, gfn 0) and three direct pages below it.
    const root = vcpu.roots.rootHpa;
    expect(PAGE_ROLE.decode(vm.roleOf(root))).toMatchObject({ level: 4, direct: 1, access: 7 });
    expect(vm.rootCountOf(root)).toBe(1);
    expect(vm.nUsed).toBe(4);
    const leafGfn = Number(gpa >> 12n);
    const l1 = pagesOfGfn(vm, leafGfn - (leafGfn % 512));
    expect(l1.map((p) => vm.roleOf(p) & PR.LEVEL_MASK)).toContain(1);
    const s = agentStats(vm, 0);
    expect(s).toMatchObject({ faults: 1, faultsFixed: 1, accessHits: 2, accessMisses: 1, rootsAllocated: 1 });
    expect(audit(vm)).toEqual([]);
  });

  it('reports a GPA without a memslot instead of mapping it', () => {
    const { vcpu } = tdpSetup();
    expect(vcpu.access(0x1_0000_0000n).kind).toBe('no-memslot');
  });

  it('the four PAE roots of a nonpaging shadow context are direct, for gfns i << 18', () => {
    const { vm, vcpu, ctx } = shadowSetup('long4');
    // A real-mode guest under shadow paging: direct_map with shadow_root_level 3.
    Object.assign(ctx, { directMap: true, shadowRootLevel: 3, rootLevel: 0, pageFault: 'nonpaging', gvaToGpa: 'nonpaging' });
    expect(vcpu.access(BigInt(DATA_GPA + 8))).toMatchObject({ kind: 'hit', gpa: DATA_GPA + 8 });
    expect(vcpu.roots.rootHpa).toBe(SPECIAL_ROOT);
    expect(vcpu.roots.paeRoot.map((p) => vm.gfnOf(p))).toEqual([0, 1 << 18, 2 << 18, 3 << 18]);
    expect(vcpu.roots.paeRoot.map((p) => PAGE_ROLE.get(vm.roleOf(p), 'level'))).toEqual([2, 2, 2, 2]);
    expect(audit(vm)).toEqual([]);
  });
});

describe('shadow faults', () => {
  for (const mode of ['long4', 'long5', 'pae', 'paging32'] as const) {
    it(`${mode}: walk the guest tables, shadow each table's gfn, then hit without walking them again`, () => {
      const { vm, vcpu, pt } = shadowSetup(mode);
      pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), size: 0x4000 });
      // CR3 load after the tables are built (PAE: the PDPTE registers are loaded now).
      vcpu.guest = pt.root;
      const r = vcpu.access(GVA + 0x1010n, { write: true });
      expect(r).toEqual({ kind: 'hit', gpa: DATA_GPA + 0x1010, faults: 1 });
      // Every shadowed guest table is write-tracked.
      const leaf = pt.entry(GVA + 0x1000n, 1)!;
      const tableGfn = Math.floor(leaf.pa / 4096);
      expect(Atomics.load(vm.h.gfnTrack, tableGfn)).toBe(1);
      const l1 = pagesOfGfn(vm, tableGfn);
      expect(l1).toHaveLength(1);
      expect(PAGE_ROLE.decode(vm.roleOf(l1[0]!))).toMatchObject({ level: 1, direct: 0, has_4_byte_gpte: mode === 'paging32' ? 1 : 0 });
      // Remap the guest entry behind KVM's back (no tracked write): the SPTE still answers.
      pt.remap(GVA + 0x1000n, 0x60_0000n);
      expect(vcpu.access(GVA + 0x1010n)).toEqual({ kind: 'hit', gpa: DATA_GPA + 0x1010, faults: 0 });
      expect(audit(vm)).toEqual([]);
    });
  }

  it('paging32: the four PAE roots shadow one CR3 gfn as four quadrants', () => {
    const { vm, vcpu, pt } = shadowSetup('paging32');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    expect(vcpu.access(GVA).kind).toBe('hit');
    const roots = vcpu.roots.paeRoot;
    expect(roots.map((p) => vm.gfnOf(p))).toEqual(Array(4).fill(pt.rootPa / 4096));
    expect(roots.map((p) => PAGE_ROLE.get(vm.roleOf(p), 'quadrant'))).toEqual([0, 1, 2, 3]);
    expect(new Set(roots).size).toBe(4);
  });

  it('pae: a non-present PDPTE leaves its quarter without a root and the walk faults in the guest', () => {
    const { vcpu, pt } = shadowSetup('pae');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    vcpu.guest = pt.root;
    expect(vcpu.access(GVA).kind).toBe('hit');
    expect(vcpu.roots.paeRoot.filter((p) => p >= 0)).toHaveLength(1);
    const miss = vcpu.access(0xc000_0000n);
    expect(miss.kind).toBe('guest-fault');
  });

  it('guest large pages are shadowed by direct pages with the large page access', () => {
    const { vm, vcpu, pt } = shadowSetup('long4');
    pt.map({ gva: 0x4020_0000n, gpa: 0x40_0000n, pageSize: 2 << 20, perms: { write: false, user: true } });
    expect(vcpu.access(0x4020_5008n, { user: true })).toMatchObject({ kind: 'hit', gpa: 0x40_5008 });
    const direct = [...Array(vm.capacity).keys()].filter((p) => vm.stateOf(p) === PAGE_STATE.ACTIVE && vm.roleOf(p) & PR.DIRECT);
    expect(direct).toHaveLength(1);
    expect(PAGE_ROLE.decode(vm.roleOf(direct[0]!))).toMatchObject({ level: 1, direct: 1, access: ACC.USER | ACC.EXEC });
    expect(vm.gfnOf(direct[0]!)).toBe(0x400);
    expect(vcpu.access(0x4020_5008n, { write: true, user: true }).kind).toBe('guest-fault');
    expect(audit(vm)).toEqual([]);
  });

  it('builds permissions from the guest entries: a user read of a supervisor page faults in the guest', () => {
    const { vcpu, pt } = shadowSetup('long4');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), perms: { user: false } });
    expect(vcpu.access(GVA).kind).toBe('hit');
    const r = vcpu.access(GVA, { user: true });
    expect(r.kind).toBe('guest-fault');
    if (r.kind === 'guest-fault') expect(r.fault.errorCode & (PFERR.PRESENT | PFERR.USER)).toBe(PFERR.PRESENT | PFERR.USER);
  });

  it('a read of a clean page maps it read-only; the first write faults again and sets the guest dirty bit', () => {
    const { vcpu, pt } = shadowSetup('long4');
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    expect(vcpu.access(GVA)).toMatchObject({ kind: 'hit', faults: 1 });
    expect(pt.leaf(GVA)!.value & BigInt(PTE.D)).toBe(0n);
    expect(vcpu.access(GVA, { write: true })).toMatchObject({ kind: 'hit', faults: 1 });
    expect(pt.leaf(GVA)!.value & BigInt(PTE.D)).toBe(BigInt(PTE.D));
    expect(vcpu.access(GVA, { write: true })).toMatchObject({ kind: 'hit', faults: 0 });
  });

  it('CR0.WP=0: a supervisor write to a read-only page is mapped writable and supervisor-only', () => {
    const { vcpu, pt } = shadowSetup('long4', { wp: false });
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), perms: { write: false, user: true } });
    expect(vcpu.access(GVA, { write: true })).toMatchObject({ kind: 'hit', faults: 1 });
    // The user read now misses (U was dropped) and is mapped again, without W.
    expect(vcpu.access(GVA, { user: true })).toMatchObject({ kind: 'hit', faults: 1 });
    expect(vcpu.access(GVA, { user: true, write: true }).kind).toBe('guest-fault');
  });

  it('different roles never share a page: WP=1 and WP=0 contexts on the same tables', () => {
    const a = shadowSetup('long4');
    const ctxB = shadowSetup('long4', { wp: false }).ctx;
    const b = new SimVcpu(a.vm, 1, ctxB, a.mem, a.pt.root);
    a.pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    expect(a.vcpu.access(GVA).kind).toBe('hit');
    expect(b.access(GVA).kind).toBe('hit');
    const tableGfn = Math.floor(a.pt.entry(GVA, 1)!.pa / 4096);
    const pages = pagesOfGfn(a.vm, tableGfn);
    expect(pages).toHaveLength(2);
    expect(pages.map((p) => (a.vm.roleOf(p) & PR.CR0_WP) !== 0).sort()).toEqual([false, true]);
    expect(a.vcpu.roots.rootHpa).not.toBe(b.roots.rootHpa);
    expect(Atomics.load(a.vm.h.gfnTrack, tableGfn)).toBe(2);
    expect(vmStats(a.vm).pagesCreated).toBe(8);
    expect(audit(a.vm)).toEqual([]);
  });
});
