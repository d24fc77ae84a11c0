/**
 * Two-dimensional walks (KVM v5.17: nested_mmu walks L2's tables; every L2
 * table address and the final address go through kvm_translate_gpa →
 * translate_nested_gpa → guest_mmu's walker; SDM vol. 3A §28.3.3 "guest
 * paging-structure accesses" under EPT). A fault in L2's tables is L2's #PF
 * (not nested); a violation in L1's nested tables is nested and names the L2
 * level whose table was being read (0: the final address).
 */
import { describe, expect, it } from 'vitest';
import { reservedGpaBits } from '../../src/cpuid/cpuid.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MmuContext } from '../../src/mmu/context.js';
import { initShadowEptMmu, initTdpMmu, setRoleRegisters } from '../../src/mmu/init.js';
import { runInitStep } from '../../src/mmu/probe.js';
import { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import {
  EPTE,
  FrameAllocator,
  loadPdptrs,
  nestedTdp,
  PageTableBuilder,
  PFERR,
  PTE,
  walkGuest,
  type NestedTdp,
  type TableFormat,
} from '../../src/paging/index.js';
import { CR0, CR4, EFER } from '../../src/role/regs.js';
import { formatOf, x86Regs, type X86Mode } from './helpers.js';

const L2_TABLES = { start: 0x200000, end: 0x300000 };
const GVA = 0x7f00_1234_5000n;
const DATA_L2 = 0x4000_0000n;
const DATA_L1 = 0x50_0000n;

interface Nested {
  vcpu: VcpuMmu;
  l2: MmuContext;
  n: NestedTdp;
  mem: GuestMemory;
  npt: PageTableBuilder;
  l2pt: PageTableBuilder;
}

/**
 * L1 runs L2 with EPT (or NPT). L2's tables live in L1 memory that the
 * nested tables map 1:1; L2's data page at L2 GPA 1 GiB is L1 GPA 5 MiB.
 */
function nestedSetup(l1: 'ept' | 'npt', l2Mode: X86Mode = 'long4', eptAd = true): Nested {
  const vcpu = new VcpuMmu();
  const l2 = x86Regs(l2Mode);
  setRoleRegisters(vcpu, l2.cr0, l2.cr4, l2.efer, false, true);
  initTdpMmu(vcpu);
  const hf = { smm: false, guestMode: true };
  if (l1 === 'ept') {
    runInitStep(vcpu, 'shadow-ept', { cr0: 0n, cr4: 0n, efer: 0n, ...hf }, { execonly: false, accessedDirty: eptAd, level: 4, hugePageLevel: 3 });
  } else {
    const cr4 = BigInt(CR4.PAE);
    runInitStep(vcpu, 'shadow-npt', { cr0: BigInt(CR0.PG >>> 0), cr4, efer: BigInt(EFER.LME | EFER.LMA | EFER.NX), ...hf }, undefined);
  }
  const ctx = runInitStep(vcpu, 'nested', { cr0: BigInt(l2.cr0), cr4: BigInt(l2.cr4), efer: BigInt(l2.efer), ...hf }, undefined).ctx;
  const mem = GuestMemory.create(16 << 20);
  const nptFormat: TableFormat = l1 === 'ept' ? { kind: 'ept', levels: 4, accessedDirty: eptAd } : { kind: 'long', levels: 4 };
  const npt = PageTableBuilder.create(mem, FrameAllocator.create(mem, { start: 0x100000, end: 0x200000 }), nptFormat);
  npt.map({ gva: BigInt(L2_TABLES.start), gpa: BigInt(L2_TABLES.start), size: L2_TABLES.end - L2_TABLES.start });
  npt.map({ gva: DATA_L2, gpa: DATA_L1 });
  const l2pt = PageTableBuilder.create(mem, FrameAllocator.create(mem, L2_TABLES), formatOf(l2Mode));
  if (l2Mode === 'long4' || l2Mode === 'long5') l2pt.map({ gva: GVA, gpa: DATA_L2 });
  return { vcpu, l2: ctx, n: nestedTdp(vcpu.guestMmu, { pgd: npt.pgd }), mem, npt, l2pt };
}

describe('two-dimensional walk, L1 with EPT', () => {
  it('translates an L2 GVA to an L1 GPA through both tables', () => {
    const s = nestedSetup('ept');
    expect(s.vcpu.walkMmu).toBe(s.vcpu.nestedMmu);
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA | 0xabcn, { user: true }, { nested: s.n });
    expect(r).toMatchObject({ ok: true, gpa: DATA_L1 | 0xabcn, pageSize: 4096, level: 1 });
  });

  it('L2 table reads are EPT writes when L2 has A/D: the EPT leaves of L2\'s table pages get A and D', () => {
    const s = nestedSetup('ept');
    walkGuest(s.l2, s.mem, s.l2pt.root, GVA, {}, { nested: s.n });
    const tablePage = BigInt(s.l2pt.rootPa);
    expect(s.npt.leaf(tablePage)!.value & BigInt(EPTE.A | EPTE.D)).toBe(BigInt(EPTE.A | EPTE.D));
    // The data page was translated for a read: A only.
    expect(s.npt.leaf(DATA_L2)!.value & BigInt(EPTE.A | EPTE.D)).toBe(BigInt(EPTE.A));
    // And L2's own entries got A.
    expect(s.l2pt.leaf(GVA)!.value & BigInt(PTE.A)).toBe(BigInt(PTE.A));
  });

  it('a non-present L2 entry is L2\'s own page fault (not nested)', () => {
    const s = nestedSetup('ept');
    s.l2pt.unmap(GVA);
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, { write: true, user: true }, { nested: s.n });
    expect(r).toMatchObject({ ok: false, fault: { errorCode: PFERR.WRITE | PFERR.USER, nested: false, level: 1 } });
  });

  it('an L2 table page missing from EPT is a nested fault at that L2 level, for a user write', () => {
    const s = nestedSetup('ept');
    const pdPage = s.l2pt.entry(GVA, 2)!.pa & ~0xfff;
    s.npt.unmap(BigInt(pdPage));
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, {}, { nested: s.n });
    expect(r).toMatchObject({ ok: false, fault: { nested: true, outerLevel: 2, address: BigInt(pdPage), errorCode: PFERR.WRITE | PFERR.USER, level: 1 } });
  });

  it('an L2 table page mapped read-only in EPT faults: table accesses are writes (tmpl.h nested_access)', () => {
    const s = nestedSetup('ept');
    s.npt.clearBits(BigInt(s.l2pt.rootPa), 1, BigInt(EPTE.W));
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, {}, { nested: s.n });
    expect(r).toMatchObject({ ok: false, fault: { nested: true, outerLevel: 4, errorCode: PFERR.PRESENT | PFERR.WRITE | PFERR.USER } });
  });

  it('the final address violating EPT is a nested fault with outer level 0', () => {
    const s = nestedSetup('ept');
    s.npt.clearBits(DATA_L2, 1, BigInt(EPTE.W));
    expect(walkGuest(s.l2, s.mem, s.l2pt.root, GVA, { user: true }, { nested: s.n }).ok).toBe(true);
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, { write: true }, { nested: s.n });
    expect(r).toMatchObject({ ok: false, fault: { nested: true, outerLevel: 0, address: DATA_L2, errorCode: PFERR.PRESENT | PFERR.WRITE | PFERR.USER } });
  });

  it('a faulting L2 walk leaves L2\'s tables untouched', () => {
    const s = nestedSetup('ept');
    s.l2pt.clearBits(GVA, 1, BigInt(PTE.RW));
    const before = [1, 2, 3, 4].map((l) => s.l2pt.entry(GVA, l)!.value);
    expect(walkGuest(s.l2, s.mem, s.l2pt.root, GVA, { write: true, user: true }, { nested: s.n }).ok).toBe(false);
    expect([1, 2, 3, 4].map((l) => s.l2pt.entry(GVA, l)!.value)).toEqual(before);
  });

  it('PAE L2: the PDPTEs are loaded through EPT (load_pdptrs on the nested MMU)', () => {
    const s = nestedSetup('ept', 'pae');
    s.l2pt.map({ gva: 0x8000_1000n, gpa: DATA_L2 });
    const load = loadPdptrs(s.mem, s.l2pt.pgd, reservedGpaBits(46), s.n);
    expect(load.ok).toBe(true);
    if (!load.ok) return;
    const r = walkGuest(s.l2, s.mem, { pgd: s.l2pt.pgd, pdptes: load.pdptes }, 0x8000_1004n, {}, { nested: s.n });
    expect(r).toMatchObject({ ok: true, gpa: DATA_L1 | 4n });
    s.npt.unmap(BigInt(s.l2pt.rootPa));
    expect(loadPdptrs(s.mem, s.l2pt.pgd, reservedGpaBits(46), s.n).ok).toBe(false);
  });

  it('KVM v5.17: translate_nested_gpa adds USER ("read" for EPT), so an execute-only EPT page cannot be fetched through it', () => {
    const s = nestedSetup('ept');
    s.npt.writeEntry(DATA_L2, 1, (s.npt.leaf(DATA_L2)!.value & ~7n) | BigInt(EPTE.X));
    // With exec-only support the entry itself is valid; a direct EPT fetch (no USER) succeeds...
    const execonly = nestedTdp(s.vcpu.guestMmu, { pgd: s.npt.pgd });
    initShadowEptMmu(s.vcpu, { execonly: true, accessedDirty: true, level: 4, hugePageLevel: 3 });
    expect(walkGuest(s.vcpu.guestMmu, s.mem, execonly.root, DATA_L2, { fetch: true }, { isWalkMmu: false }).ok).toBe(true);
    // ...but L2's fetch through the nested walk is an EPT violation (read required).
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, { fetch: true }, { nested: execonly });
    expect(r).toMatchObject({ ok: false, fault: { nested: true, outerLevel: 0, errorCode: PFERR.PRESENT | PFERR.USER } });
  });

  it('32-bit L2 over EPT without A/D', () => {
    const s = nestedSetup('ept', 'paging32', false);
    s.l2pt.map({ gva: 0x1000n, gpa: DATA_L2 });
    expect(walkGuest(s.l2, s.mem, s.l2pt.root, 0x1010n, { write: true }, { nested: s.n })).toMatchObject({ ok: true, gpa: DATA_L1 | 0x10n });
    expect(s.npt.leaf(DATA_L2)!.value & BigInt(EPTE.A | EPTE.D)).toBe(0n);
  });
});

describe('two-dimensional walk, L1 with NPT', () => {
  it('translates through the nested CR3\'s 4-level tables', () => {
    const s = nestedSetup('npt');
    expect(walkGuest(s.l2, s.mem, s.l2pt.root, GVA | 8n, { user: true }, { nested: s.n })).toMatchObject({ ok: true, gpa: DATA_L1 | 8n });
  });

  it('NPT walks are user walks: a supervisor-only nested page faults with U set', () => {
    const s = nestedSetup('npt');
    s.npt.clearBits(DATA_L2, 1, BigInt(PTE.US));
    const r = walkGuest(s.l2, s.mem, s.l2pt.root, GVA, {}, { nested: s.n });
    expect(r).toMatchObject({ ok: false, fault: { nested: true, outerLevel: 0, errorCode: PFERR.PRESENT | PFERR.USER } });
  });
});
