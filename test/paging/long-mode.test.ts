/**
 * 4-level and 5-level paging (SDM vol. 3A §4.5, Tables 4-14 to 4-20;
 * §4.1.4 GBPAGES), with KVM v5.17's reserved-bit masks
 * (__reset_rsvds_bits_mask, levels 4 and 5).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_1G, PAGE_2M, PFERR, PTE, walkGuest } from '../../src/paging/index.js';
import { fixture, x86Context, type X86Mode } from './helpers.js';

const RSVD = PFERR.PRESENT | PFERR.RSVD;

for (const mode of ['long4', 'long5'] as const satisfies readonly X86Mode[]) {
  const levels = mode === 'long5' ? 5 : 4;
  const F = { kind: 'long', levels } as const;

  describe(`${levels}-level paging: translation`, () => {
    it('translates 4 KiB, 2 MiB and 1 GiB pages of a canonical high address', () => {
      const { mem, pt } = fixture(F);
      const hi = levels === 5 ? 0xff80_0000_0000_0000n : 0xffff_8000_0000_0000n;
      pt.map({ gva: hi | 0x1000n, gpa: 0xa000n });
      pt.map({ gva: hi | 0x4020_0000n, gpa: 0x3_0000_0000n, pageSize: PAGE_2M });
      pt.map({ gva: hi | 0x8000_0000n, gpa: 0x40_4000_0000n, pageSize: PAGE_1G });
      const ctx = x86Context(mode);
      expect(walkGuest(ctx, mem, pt.root, hi | 0x1234n, {})).toMatchObject({ ok: true, gpa: 0xa234n, pageSize: 4096 });
      expect(walkGuest(ctx, mem, pt.root, hi | 0x4030_0001n, {})).toMatchObject({ ok: true, gpa: 0x3_0010_0001n, pageSize: PAGE_2M });
      expect(walkGuest(ctx, mem, pt.root, hi | 0xbfff_ffffn, {})).toMatchObject({ ok: true, gpa: 0x40_7fff_ffffn, pageSize: PAGE_1G });
    });

    it('sets A at every level walked and D only in the leaf of a write', () => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0xa000n });
      walkGuest(x86Context(mode), mem, pt.root, 0x1000n, { write: true });
      for (let l = levels; l >= 1; l--) {
        const e = pt.entry(0x1000n, l)!.value;
        expect(e & BigInt(PTE.A), `level ${l}`).toBe(BigInt(PTE.A));
        expect(e & BigInt(PTE.D), `level ${l}`).toBe(l === 1 ? BigInt(PTE.D) : 0n);
      }
    });
  });

  describe(`${levels}-level paging: reserved bits that depend on MAXPHYADDR (SDM §4.5.4)`, () => {
    it('bits MAXPHYADDR..51 are reserved at every level', () => {
      for (const maxPhyAddr of [36, 40, 46, 51]) {
        for (let level = 1; level <= levels; level++) {
          const { mem, pt } = fixture(F);
          pt.map({ gva: 0x1000n, gpa: 0xa000n });
          pt.setBits(0x1000n, level, 1n << BigInt(maxPhyAddr));
          const r = walkGuest(x86Context(mode, { cpuid: { maxPhyAddr } }), mem, pt.root, 0x1000n, { user: true });
          expect(r, `M=${maxPhyAddr} level ${level}`).toMatchObject({ ok: false, fault: { errorCode: RSVD | PFERR.USER, level } });
        }
      }
    });

    it('bits 52..62 are ignored (not reserved) without protection keys, even with MAXPHYADDR = 52', () => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0xa000n });
      for (let level = 1; level <= levels; level++) pt.setBits(0x1000n, level, 0x7ffn << 52n);
      expect(walkGuest(x86Context(mode, { cpuid: { maxPhyAddr: 52 } }), mem, pt.root, 0x1000n, {}).ok).toBe(true);
    });

    it('the faulting level is the highest level with a reserved bit', () => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0xa000n });
      pt.setBits(0x1000n, 1, 1n << 45n);
      pt.setBits(0x1000n, 3, 1n << 45n);
      expect(walkGuest(x86Context(mode, { cpuid: { maxPhyAddr: 40 } }), mem, pt.root, 0x1000n, {})).toMatchObject({ ok: false, fault: { level: 3 } });
    });
  });

  describe(`${levels}-level paging: NX (SDM §4.5.4, Table 4-20)`, () => {
    it('bit 63 is reserved when EFER.NXE = 0, at any level', () => {
      for (let level = 1; level <= levels; level++) {
        const { mem, pt } = fixture(F);
        pt.map({ gva: 0x1000n, gpa: 0xa000n });
        pt.setBits(0x1000n, level, 1n << 63n);
        expect(walkGuest(x86Context(mode, { nx: false }), mem, pt.root, 0x1000n, {}), `level ${level}`).toMatchObject({ ok: false, fault: { errorCode: RSVD, level } });
        expect(walkGuest(x86Context(mode, { nx: true }), mem, pt.root, 0x1000n, {}).ok).toBe(true);
      }
    });
  });

  describe(`${levels}-level paging: page-size bits`, () => {
    it(`bit 7 is reserved in the PML4E${levels === 5 ? ' and PML5E' : ''}`, () => {
      for (let level = 4; level <= levels; level++) {
        const { mem, pt } = fixture(F);
        pt.map({ gva: 0x1000n, gpa: 0xa000n });
        pt.setBits(0x1000n, level, BigInt(PTE.PS));
        expect(walkGuest(x86Context(mode), mem, pt.root, 0x1000n, {}), `level ${level}`).toMatchObject({ ok: false, fault: { errorCode: RSVD, level } });
      }
    });

    it('reserves bits 29:13 of a 1 GiB PDPTE and 20:13 of a 2 MiB PDE; bit 12 is PAT', () => {
      const cases: Array<[number, number]> = [
        [3, 12], [3, 13], [3, 20], [3, 21], [3, 29], [2, 12], [2, 13], [2, 20],
      ];
      for (const [level, bit] of cases) {
        const { mem, pt } = fixture(F);
        pt.map({ gva: 0n, gpa: 0n, pageSize: level === 3 ? PAGE_1G : PAGE_2M, perms: { extraBits: 1n << BigInt(bit) } });
        const r = walkGuest(x86Context(mode), mem, pt.root, 0x1234n, {});
        if (bit === 12) expect(r).toMatchObject({ ok: true, gpa: 0x1234n });
        else expect(r, `level ${level} bit ${bit}`).toMatchObject({ ok: false, fault: { errorCode: RSVD, level } });
      }
    });
  });

  describe(`${levels}-level paging: 1 GiB pages and GBPAGES (SDM §4.1.4; KVM guest_can_use_gbpages)`, () => {
    const walk1g = (o: Parameters<typeof x86Context>[1]) => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x4000_0000n, gpa: 0x8000_0000n, pageSize: PAGE_1G });
      return walkGuest(x86Context(mode, o), mem, pt.root, 0x4000_0000n, {});
    };

    it('shadow paging: the guest CPUID GBPAGES bit decides', () => {
      expect(walk1g({ shadow: true, cpuid: { gbpages: true } }).ok).toBe(true);
      expect(walk1g({ shadow: true, cpuid: { gbpages: false } })).toMatchObject({ ok: false, fault: { errorCode: RSVD, level: 3 } });
    });

    it('TDP: the host GBPAGES capability decides, not the guest CPUID', () => {
      expect(walk1g({ cpuid: { gbpages: false }, host: { gbpages: true } }).ok).toBe(true);
      expect(walk1g({ cpuid: { gbpages: true }, host: { gbpages: false } })).toMatchObject({ ok: false, fault: { level: 3 } });
    });
  });

  describe(`${levels}-level paging: guest vendor (KVM: AMD reserves bit 8 of non-leaf PML4E/PML5E)`, () => {
    it('bit 8 of the top-level entries is reserved for AMD/Hygon guests only', () => {
      for (let level = 4; level <= levels; level++) {
        for (const vendor of ['intel', 'amd', 'hygon'] as const) {
          const { mem, pt } = fixture(F);
          pt.map({ gva: 0x1000n, gpa: 0xa000n });
          pt.setBits(0x1000n, level, 1n << 8n);
          const r = walkGuest(x86Context(mode, { cpuid: { vendor } }), mem, pt.root, 0x1000n, {});
          expect(r.ok, `${vendor} level ${level}`).toBe(vendor === 'intel');
        }
      }
      // Bit 8 of a PDPTE is G/ignored for every vendor.
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0xa000n });
      pt.setBits(0x1000n, 3, 1n << 8n);
      expect(walkGuest(x86Context(mode, { cpuid: { vendor: 'amd' } }), mem, pt.root, 0x1000n, {}).ok).toBe(true);
    });
  });
}

describe('5-level paging indexes bits 56:48 with the PML5', () => {
  it('two addresses differing only in bit 48 use different PML5 entries', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 5 });
    pt.map({ gva: 0x0000_0000_1000n, gpa: 0xa000n });
    pt.map({ gva: 0x1_0000_0000_1000n, gpa: 0xb000n });
    const ctx = x86Context('long5');
    expect(walkGuest(ctx, mem, pt.root, 0x1000n, {})).toMatchObject({ ok: true, gpa: 0xa000n });
    expect(walkGuest(ctx, mem, pt.root, 0x1_0000_0000_1000n, {})).toMatchObject({ ok: true, gpa: 0xb000n });
    // A 4-level context ignores bit 48 and walks the PML5 page as a PML4 (a stale context's answer).
    expect(walkGuest(x86Context('long4'), mem, pt.root, 0x1_0000_0000_1000n, {}).ok).toBe(false);
  });
});
