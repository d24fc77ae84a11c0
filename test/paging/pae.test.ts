/**
 * PAE paging (SDM vol. 3A §4.4, Tables 4-7 to 4-11; §4.4.1 PDPTE
 * registers), as KVM v5.17 implements it: load_pdptrs checks the four
 * PDPTEs when they are loaded; the paging64 walker with root level 3 uses
 * the loaded values and starts reading memory at the PDE.
 */
import { describe, expect, it } from 'vitest';
import { reservedGpaBits } from '../../src/cpuid/cpuid.js';
import { loadPdptrs, PAGE_2M, PFERR, PTE, walkGuest } from '../../src/paging/index.js';
import { fixture, x86Context } from './helpers.js';

const F = { kind: 'pae' } as const;
const NX = 1n << 63n;

describe('PAE: the PDPTE registers (SDM §4.4.1, Table 4-8; x86.c load_pdptrs)', () => {
  it('loads four valid PDPTEs', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0xc0000000n, gpa: 0x5000n });
    const r = loadPdptrs(mem, pt.pgd, reservedGpaBits(46));
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.pdptes[3]! & 1n).toBe(1n);
  });

  it('rejects a present PDPTE with bits 2:1, 8:5, or MAXPHYADDR..63 set', () => {
    const bits = [1, 2, 5, 6, 7, 8, 40, 51, 52, 62, 63];
    for (const bit of bits) {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x40000000n, gpa: 0x5000n });
      pt.setBits(0x40000000n, 3, 1n << BigInt(bit));
      const r = loadPdptrs(mem, pt.pgd, reservedGpaBits(40));
      expect(r.ok, `bit ${bit}`).toBe(false);
    }
  });

  it('accepts bits 3, 4 (PWT, PCD), 9-11 and address bits below MAXPHYADDR', () => {
    for (const bit of [3, 4, 9, 10, 11, 39]) {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x40000000n, gpa: 0x5000n });
      pt.setBits(0x40000000n, 3, 1n << BigInt(bit));
      expect(loadPdptrs(mem, pt.pgd, reservedGpaBits(40)).ok, `bit ${bit}`).toBe(true);
    }
  });

  it('does not check a non-present PDPTE', () => {
    const { mem, pt } = fixture(F);
    mem.store64(pt.rootPa + 16, 0x1ffn << 1n);
    expect(loadPdptrs(mem, pt.pgd, reservedGpaBits(36)).ok).toBe(true);
  });

  it('the walker uses the loaded registers: a later change to the PDPT in memory is not seen', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    const load = loadPdptrs(mem, pt.pgd, reservedGpaBits(46));
    if (!load.ok) throw new Error(load.reason);
    pt.clearBits(0x1000n, 3, 1n);
    const ctx = x86Context('pae');
    expect(walkGuest(ctx, mem, { pgd: pt.pgd, pdptes: load.pdptes }, 0x1000n, {})).toMatchObject({ ok: true, gpa: 0x5000n });
    expect(walkGuest(ctx, mem, pt.root, 0x1000n, { write: true })).toMatchObject({ ok: false, fault: { errorCode: PFERR.WRITE, level: 3 } });
  });

  it('the walker does not re-check reserved bits of a loaded PDPTE', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    const pdptes = pt.root.pdptes!.map((e, i) => (i === 0 ? e | (1n << 6n) : e));
    expect(walkGuest(x86Context('pae'), mem, { pgd: pt.pgd, pdptes }, 0x1000n, {}).ok).toBe(true);
  });

  it('never sets A in a PDPTE (it is not read from memory by the walk)', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    expect(walkGuest(x86Context('pae'), mem, pt.root, 0x1000n, { write: true }).ok).toBe(true);
    expect(pt.entry(0x1000n, 3)!.value & BigInt(PTE.A)).toBe(0n);
    expect(pt.entry(0x1000n, 2)!.value & BigInt(PTE.A)).toBe(BigInt(PTE.A));
    expect(pt.entry(0x1000n, 1)!.value & BigInt(PTE.A | PTE.D)).toBe(BigInt(PTE.A | PTE.D));
  });
});

describe('PAE: PDEs and PTEs (SDM Tables 4-9 to 4-11)', () => {
  it('translates 4 KiB and 2 MiB pages', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0xbfe01000n, gpa: 0x1234_5000n });
    pt.map({ gva: 0x40200000n, gpa: 0x8_0060_0000n, pageSize: PAGE_2M });
    const ctx = x86Context('pae');
    expect(walkGuest(ctx, mem, pt.root, 0xbfe01fffn, {})).toMatchObject({ ok: true, gpa: 0x1234_5fffn, pageSize: 4096 });
    expect(walkGuest(ctx, mem, pt.root, 0x402abcden, {})).toMatchObject({ ok: true, gpa: 0x8_006a_bcden, pageSize: PAGE_2M });
  });

  it('reserves bits MAXPHYADDR..62 at every level, even with MAXPHYADDR = 52 (KVM: high bits up to 62 for PAE)', () => {
    for (const [maxPhyAddr, bit] of [[36, 36], [40, 47], [46, 51], [52, 52], [52, 58], [40, 62]] as const) {
      for (const level of [1, 2]) {
        const { mem, pt } = fixture(F);
        pt.map({ gva: 0x1000n, gpa: 0x5000n });
        pt.setBits(0x1000n, level, 1n << BigInt(bit));
        const r = walkGuest(x86Context('pae', { cpuid: { maxPhyAddr } }), mem, pt.root, 0x1000n, {});
        expect(r, `M=${maxPhyAddr} bit ${bit} level ${level}`).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.RSVD, level } });
      }
    }
  });

  it('an address bit just below MAXPHYADDR is not reserved', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 1n << 39n });
    expect(walkGuest(x86Context('pae', { cpuid: { maxPhyAddr: 40 } }), mem, pt.root, 0x1000n, {})).toMatchObject({ ok: true, gpa: 1n << 39n });
  });

  it('reserves bits 20:13 of a 2 MiB PDE; bit 12 is PAT', () => {
    for (let bit = 12; bit <= 20; bit++) {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x200000n, gpa: 0x400000n, pageSize: PAGE_2M, perms: { extraBits: 1n << BigInt(bit) } });
      const r = walkGuest(x86Context('pae'), mem, pt.root, 0x200000n, {});
      if (bit === 12) expect(r).toMatchObject({ ok: true, gpa: 0x400000n });
      else expect(r, `bit ${bit}`).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.RSVD, level: 2 } });
    }
  });

  it('bit 63 is XD with EFER.NXE = 1 and reserved with NXE = 0 (SDM §4.4.2)', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n, perms: { exec: false } });
    expect(walkGuest(x86Context('pae', { nx: true }), mem, pt.root, 0x1000n, { fetch: true })).toMatchObject({
      ok: false,
      fault: { errorCode: PFERR.PRESENT | PFERR.FETCH, level: 1 },
    });
    expect(walkGuest(x86Context('pae', { nx: true }), mem, pt.root, 0x1000n, {}).ok).toBe(true);
    expect(walkGuest(x86Context('pae', { nx: false }), mem, pt.root, 0x1000n, {})).toMatchObject({
      ok: false,
      fault: { errorCode: PFERR.PRESENT | PFERR.RSVD, level: 1 },
    });
  });

  it('XD in the PDE makes the whole 2 MiB region non-executable', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    pt.setBits(0x1000n, 2, NX);
    expect(walkGuest(x86Context('pae'), mem, pt.root, 0x1000n, { fetch: true })).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.FETCH } });
  });
});
