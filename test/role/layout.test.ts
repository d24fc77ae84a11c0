/**
 * Layout of the two role words and of the full 64-bit role.
 *
 * Source: Linux v5.17 arch/x86/include/asm/kvm_host.h
 *   union kvm_mmu_page_role      (line 314) — u32, GCC allocates bit-fields LSB first
 *   union kvm_mmu_extended_role  (line 360)
 *   union kvm_mmu_role           (line 376) — struct { base; ext; } over u64 as_u64,
 *                                             little-endian: base = low 32 bits.
 * Alternative ext layouts: kvm-mmu-reference.md §15.2 (patch 03/23 deletes
 * `valid`, every later field moves down one bit) and §15.3 (bit 0 renamed
 * `cpuid_stale`).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_ROLE, formatPageRoleTrace } from '../../src/role/page-role.js';
import {
  EXT_ROLE_CPUID_STALE,
  EXT_ROLE_NO_VALID,
  EXT_ROLE_V517,
  FORMAT_CPUID_STALE,
  FORMAT_NO_VALID,
  FORMAT_V517,
} from '../../src/role/ext-role.js';
import { roleAsU64 } from '../../src/role/compute.js';

// kvm_host.h union kvm_mmu_page_role: level:4, has_4_byte_gpte:1, quadrant:2,
// direct:1, access:3, invalid:1, efer_nx:1, cr0_wp:1, smep_andnot_wp:1,
// smap_andnot_wp:1, ad_disabled:1, guest_mode:1, :6 (unnamed), smm:8.
const PAGE_ROLE_LAYOUT: ReadonlyArray<[string, number, number]> = [
  ['level', 0, 4],
  ['has_4_byte_gpte', 4, 1],
  ['quadrant', 5, 2],
  ['direct', 7, 1],
  ['access', 8, 3],
  ['invalid', 11, 1],
  ['efer_nx', 12, 1],
  ['cr0_wp', 13, 1],
  ['smep_andnot_wp', 14, 1],
  ['smap_andnot_wp', 15, 1],
  ['ad_disabled', 16, 1],
  ['guest_mode', 17, 1],
  ['smm', 24, 8],
];

// kvm_host.h union kvm_mmu_extended_role: valid, execonly, cr0_pg, cr4_pae,
// cr4_pse, cr4_pke, cr4_smap, cr4_smep, cr4_la57, efer_lma — all 1 bit.
const EXT_V517_LAYOUT: ReadonlyArray<[string, number]> = [
  ['valid', 0],
  ['execonly', 1],
  ['cr0_pg', 2],
  ['cr4_pae', 3],
  ['cr4_pse', 4],
  ['cr4_pke', 5],
  ['cr4_smap', 6],
  ['cr4_smep', 7],
  ['cr4_la57', 8],
  ['efer_lma', 9],
];

describe('union kvm_mmu_page_role (kvm_host.h:314)', () => {
  it.each(PAGE_ROLE_LAYOUT)('%s is at bit %i, %i bit(s) wide', (name, shift, width) => {
    const f = name as (typeof PAGE_ROLE.names)[number];
    expect(PAGE_ROLE.shiftOf(f)).toBe(shift);
    expect(PAGE_ROLE.width(f)).toBe(width);
    const mask = (((2 ** width - 1) * 2 ** shift) >>> 0);
    expect(PAGE_ROLE.maskOf(f)).toBe(mask);
    // all-ones value of the field encodes to exactly its mask
    expect(PAGE_ROLE.encode({ [f]: 2 ** width - 1 })).toBe(mask);
    expect(PAGE_ROLE.get(0xffffffff, f)).toBe(2 ** width - 1);
  });

  it('has exactly these 13 named fields', () => {
    expect([...PAGE_ROLE.names].sort()).toEqual(PAGE_ROLE_LAYOUT.map((x) => x[0]).sort());
  });

  it('bits 18..23 are the unnamed 6-bit pad (never a field)', () => {
    // used = bits 0..17 and 24..31
    expect(PAGE_ROLE.usedMask).toBe(0xff03ffff);
    expect(PAGE_ROLE.decode(0x00fc0000).unused).toBe(0x00fc0000);
  });

  it('smm occupies the whole top byte, so smm=1 is 0x01000000', () => {
    expect(PAGE_ROLE.encode({ smm: 1 })).toBe(0x01000000);
    expect(PAGE_ROLE.get(0x01000000, 'smm')).toBe(1);
  });

  it('a 4-bit level of 4 with access=ACC_ALL and direct is 0x784', () => {
    // ACC_ALL = 7 (spte.h); 7 << 8 = 0x700; direct bit 7 = 0x80.
    expect(PAGE_ROLE.encode({ level: 4, direct: 1, access: 7 })).toBe(0x784);
    expect(PAGE_ROLE.decode(0x00003784)).toMatchObject({ level: 4, direct: 1, access: 7, efer_nx: 1, cr0_wp: 1, unused: 0 });
  });

  // mmutrace.h KVM_MMU_PAGE_PRINTK: "l%u %u-byte q%u%s %s%s %snxe %sad"
  it('formats like KVM_MMU_PAGE_PRINTK (mmutrace.h)', () => {
    expect(formatPageRoleTrace(0x00003784)).toBe('l4 8-byte q0 direct wux nxe ad');
    // level 3, 4-byte gptes, quadrant 2, indirect, access 5 (-ux), invalid, !nx, ad_disabled
    const w = 3 | 0x10 | (2 << 5) | (5 << 8) | 0x800 | 0x10000;
    expect(formatPageRoleTrace(w)).toBe('l3 4-byte q2 -ux invalid !nxe !ad');
  });
});

describe('union kvm_mmu_extended_role (kvm_host.h:360), v5.17 layout', () => {
  it.each(EXT_V517_LAYOUT)('%s is bit %i', (name, bit) => {
    const f = name as (typeof EXT_ROLE_V517.names)[number];
    expect(EXT_ROLE_V517.shiftOf(f)).toBe(bit);
    expect(EXT_ROLE_V517.width(f)).toBe(1);
    expect(EXT_ROLE_V517.maskOf(f)).toBe(1 << bit);
  });

  it('has exactly these 10 fields, bits 10..31 unused', () => {
    expect([...EXT_ROLE_V517.names]).toEqual(EXT_V517_LAYOUT.map((x) => x[0]));
    expect(EXT_ROLE_V517.usedMask).toBe(0x3ff);
  });

  it('FORMAT_V517 uses these positions and sets valid (bit 0) on encode', () => {
    expect(FORMAT_V517.bit.cr0_pg).toBe(1 << 2);
    expect(FORMAT_V517.bit.efer_lma).toBe(1 << 9);
    // kvm_calc_mmu_role_ext (mmu.c:4707): ext.valid = 1 unconditionally
    expect(FORMAT_V517.encodeExt(0)).toBe(0x1);
    expect(FORMAT_V517.encodeExt(0x28c)).toBe(0x28d);
  });
});

describe('ext layout of the level-zero design (patch 03/23: valid removed)', () => {
  // §15.2: every later ext bit shifts down by one: execonly bit 0 … efer_lma bit 8.
  it.each(EXT_V517_LAYOUT.slice(1))('%s moves from bit %i to one bit lower', (name, bit) => {
    const f = name as (typeof EXT_ROLE_NO_VALID.names)[number];
    expect(EXT_ROLE_NO_VALID.shiftOf(f)).toBe(bit - 1);
    expect(EXT_ROLE_NO_VALID.width(f)).toBe(1);
    expect(FORMAT_NO_VALID.bit[f as keyof typeof FORMAT_NO_VALID.bit]).toBe(1 << (bit - 1));
  });

  it('has no valid field and uses bits 0..8 only', () => {
    expect(EXT_ROLE_NO_VALID.names).not.toContain('valid');
    expect(EXT_ROLE_NO_VALID.usedMask).toBe(0x1ff);
  });

  it('encodes v5.17-position fields shifted down, with no marker bit', () => {
    // v5.17 pg|pae|smep|lma = 0x4|0x8|0x80|0x200 = 0x28c -> 0x2|0x4|0x40|0x100 = 0x146
    expect(FORMAT_NO_VALID.encodeExt(0x28c)).toBe(0x146);
    expect(FORMAT_NO_VALID.encodeExt(0)).toBe(0);
    // execonly (v5.17 bit 1) becomes bit 0
    expect(FORMAT_NO_VALID.encodeExt(0x2)).toBe(0x1);
  });
});

describe('ext layout of the cpuid-stale design (bit 0 renamed, meaning flipped)', () => {
  it.each(EXT_V517_LAYOUT.slice(1))('%s stays at bit %i', (name, bit) => {
    const f = name as (typeof EXT_ROLE_CPUID_STALE.names)[number];
    expect(EXT_ROLE_CPUID_STALE.shiftOf(f)).toBe(bit);
    expect(FORMAT_CPUID_STALE.bit[f as keyof typeof FORMAT_CPUID_STALE.bit]).toBe(1 << bit);
  });

  it('bit 0 is cpuid_stale and computed roles leave it clear', () => {
    expect(EXT_ROLE_CPUID_STALE.maskOf('cpuid_stale')).toBe(1);
    expect(EXT_ROLE_CPUID_STALE.names).not.toContain('valid');
    expect(FORMAT_CPUID_STALE.encodeExt(0x28c)).toBe(0x28c);
    expect(FORMAT_CPUID_STALE.encodeExt(0)).toBe(0);
  });
});

describe('union kvm_mmu_role (kvm_host.h:376): as_u64 = base | ext << 32', () => {
  it('base is the low half, ext the high half', () => {
    expect(roleAsU64({ base: 0x00003784, ext: 0x0000028d })).toBe(0x0000028d_00003784n);
    expect(roleAsU64({ base: 0x01030704, ext: 0x3 })).toBe(0x00000003_01030704n);
  });

  it('ext.valid (ext bit 0) is bit 32 of as_u64; base.smm stays in bits 24..31', () => {
    expect(roleAsU64({ base: 0, ext: 1 })).toBe(1n << 32n);
    expect(roleAsU64({ base: 0xff000000, ext: 0 })).toBe(0xff000000n);
    expect(roleAsU64({ base: 0xffffffff, ext: 0xffffffff })).toBe(0xffffffffffffffffn);
  });
});
