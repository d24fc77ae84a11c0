/**
 * EPT (SDM vol. 3A §28.3.2 translation, §28.3.3.1 EPT misconfigurations,
 * §28.3.5 accessed and dirty flags; Tables 28-1 to 28-6), walked by KVM
 * v5.17's EPT walker over a shadow-EPT guest_mmu context. KVM convention:
 * the error code's USER bit means "read" and the walker's result ACC_USER
 * means "readable"; a misconfiguration is reported as RSVD | PRESENT.
 */
import { describe, expect, it } from 'vitest';
import { EPTE, PAGE_1G, PAGE_2M, PFERR, walkGuest } from '../../src/paging/index.js';
import { eptContext, fixture } from './helpers.js';

const MISCONFIG = PFERR.PRESENT | PFERR.RSVD;
const READ = { user: true } as const;

for (const levels of [4, 5] as const) {
  describe(`EPT, ${levels} levels: translation and A/D`, () => {
    const F = { kind: 'ept', levels, accessedDirty: true } as const;

    it('translates 4 KiB, 2 MiB and 1 GiB pages; the EPTP carries WB, walk length and A/D enable', () => {
      const { mem, pt } = fixture(F);
      expect(pt.pgd & 0xfffn).toBe(BigInt(6 | ((levels - 1) << 3) | (1 << 6)));
      const top = levels === 5 ? 1n << 50n : 1n << 45n;
      pt.map({ gva: top | 0x1000n, gpa: 0x9000n });
      pt.map({ gva: 0x4000_0000n, gpa: 0x1_0000_0000n, pageSize: PAGE_1G });
      pt.map({ gva: 0x20_0000n, gpa: 0x60_0000n, pageSize: PAGE_2M });
      const ctx = eptContext({ levels });
      expect(walkGuest(ctx, mem, pt.root, top | 0x1abcn, READ)).toMatchObject({ ok: true, gpa: 0x9abcn, pageSize: 4096 });
      expect(walkGuest(ctx, mem, pt.root, 0x4123_4567n, READ)).toMatchObject({ ok: true, gpa: 0x1_0123_4567n, pageSize: PAGE_1G });
      expect(walkGuest(ctx, mem, pt.root, 0x2f_ffffn, READ)).toMatchObject({ ok: true, gpa: 0x6f_ffffn, pageSize: PAGE_2M });
    });

    it('with EPTP A/D enabled (ept_ad): A at every level (bit 8), D in the leaf of a write (bit 9)', () => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0x9000n });
      walkGuest(eptContext({ levels, ad: true }), mem, pt.root, 0x1000n, { write: true });
      for (let l: number = levels; l >= 1; l--) {
        const e = pt.entry(0x1000n, l)!.value;
        expect(e & BigInt(EPTE.A | EPTE.D), `level ${l}`).toBe(BigInt(l === 1 ? EPTE.A | EPTE.D : EPTE.A));
      }
    });

    it('without A/D (ept_ad = 0) nothing is written and a read keeps write permission (no protect_clean_gpte)', () => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0x9000n });
      const before = [1, 2, 3].map((l) => pt.entry(0x1000n, l)!.value);
      const r = walkGuest(eptContext({ levels, ad: false }), mem, pt.root, 0x1000n, READ);
      expect(r).toMatchObject({ ok: true, pteAccess: 7 });
      expect([1, 2, 3].map((l) => pt.entry(0x1000n, l)!.value)).toEqual(before);
      const withAd = walkGuest(eptContext({ levels, ad: true }), mem, pt.root, 0x1000n, READ);
      expect(withAd).toMatchObject({ ok: true, access: 7, pteAccess: 5 });
    });
  });
}

describe('EPT permissions (SDM §28.3.3.2 EPT violations)', () => {
  const F = { kind: 'ept', levels: 4 } as const;
  const walk = (perms: { read?: boolean; write?: boolean; exec?: boolean }, access: { write?: boolean; user?: boolean; fetch?: boolean }, execonly = false) => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x9000n, perms });
    return walkGuest(eptContext({ execonly }), mem, pt.root, 0x1000n, access);
  };

  it('read needs R, write needs W, fetch needs X; the violation carries the access and R/W/X in its qualification', () => {
    expect(walk({ read: true, write: false, exec: false }, { user: true }).ok).toBe(true);
    const w = walk({ read: true, write: false, exec: false }, { write: true, user: true });
    expect(w).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.WRITE | PFERR.USER, eptQual: 0x2 | 0x1 | (1 << 3) } });
    const x = walk({ read: true, write: true, exec: false }, { fetch: true, user: true });
    // The EPT role has neither efer_nx nor cr4_smep, so KVM leaves FETCH out of the error code.
    expect(x).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.USER, eptQual: 0x4 | 0x1 | (3 << 3) } });
  });

  it('execute-only (XWR = 100) is a misconfiguration unless the CPU supports it', () => {
    expect(walk({ read: false, write: false, exec: true }, { fetch: true })).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG, level: 1, eptQual: 0 } });
    expect(walk({ read: false, write: false, exec: true }, { fetch: true }, true)).toMatchObject({ ok: true, access: 1 });
    expect(walk({ read: false, write: false, exec: true }, { user: true }, true)).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.USER } });
  });

  it('write-only (010) and write+execute (110) are always misconfigurations', () => {
    for (const execonly of [false, true]) {
      expect(walk({ read: false, write: true, exec: false }, {}, execonly)).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG } });
      expect(walk({ read: false, write: true, exec: true }, {}, execonly)).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG } });
    }
  });

  it('XWR = 000 is not present: a violation with no R/W/X', () => {
    expect(walk({ read: false, write: false, exec: false }, { user: true })).toMatchObject({ ok: false, fault: { errorCode: PFERR.USER, eptQual: 0x1 } });
  });
});

describe('EPT misconfigurations (SDM §28.3.3.1)', () => {
  const F = { kind: 'ept', levels: 4 } as const;

  it('memory types 2, 3 and 7 are reserved in a leaf; 0, 1, 4, 5, 6 are valid', () => {
    for (let mt = 0; mt < 8; mt++) {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0x9000n, perms: { memType: mt } });
      const r = walkGuest(eptContext(), mem, pt.root, 0x1000n, READ);
      expect(r.ok, `memory type ${mt}`).toBe(![2, 3, 7].includes(mt));
    }
  });

  it('bits 7:3 of a PML4E/PML5E and 6:3 of a non-leaf PDPTE/PDE are reserved', () => {
    for (const levels of [4, 5] as const) {
      for (let level = 2; level <= levels; level++) {
        for (let bit = 3; bit <= (level >= 4 ? 7 : 6); bit++) {
          const { mem, pt } = fixture({ kind: 'ept', levels });
          pt.map({ gva: 0x1000n, gpa: 0x9000n });
          pt.setBits(0x1000n, level, 1n << BigInt(bit));
          const r = walkGuest(eptContext({ levels }), mem, pt.root, 0x1000n, READ);
          expect(r, `levels ${levels} level ${level} bit ${bit}`).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG | PFERR.USER, level } });
        }
      }
    }
  });

  it('bits MAXPHYADDR..51 are reserved; bits 52..63 are not', () => {
    for (const maxPhyAddr of [36, 42, 46]) {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0x1000n, gpa: 0x9000n });
      pt.setBits(0x1000n, 2, 1n << BigInt(maxPhyAddr));
      expect(walkGuest(eptContext({ cpuid: { maxPhyAddr } }), mem, pt.root, 0x1000n, READ)).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG | PFERR.USER, level: 2 } });
    }
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x9000n, perms: { extraBits: 0xfffn << 52n } });
    expect(walkGuest(eptContext({ cpuid: { maxPhyAddr: 40 } }), mem, pt.root, 0x1000n, READ).ok).toBe(true);
  });

  it('large pages are limited by L1\'s EPT capabilities (huge_page_level), and their low address bits are reserved', () => {
    const big = (pageSize: number, hugePageLevel: 1 | 2 | 3, extraBits = 0n) => {
      const { mem, pt } = fixture(F);
      pt.map({ gva: 0n, gpa: 0n, pageSize, perms: { extraBits } });
      return walkGuest(eptContext({ hugePageLevel }), mem, pt.root, 0x1000n, READ);
    };
    expect(big(PAGE_1G, 3).ok).toBe(true);
    expect(big(PAGE_1G, 2)).toMatchObject({ ok: false, fault: { errorCode: MISCONFIG | PFERR.USER, level: 3 } });
    expect(big(PAGE_2M, 2).ok).toBe(true);
    expect(big(PAGE_2M, 1)).toMatchObject({ ok: false, fault: { level: 2 } });
    expect(big(PAGE_1G, 3, 1n << 12n)).toMatchObject({ ok: false, fault: { level: 3 } });
    expect(big(PAGE_1G, 3, 1n << 29n)).toMatchObject({ ok: false, fault: { level: 3 } });
    expect(big(PAGE_2M, 3, 1n << 20n)).toMatchObject({ ok: false, fault: { level: 2 } });
  });
});
