/**
 * Reconfiguration products for typical guests: levels, walker, guest reserved
 * bits, shadow zero bits, permissions[16], pkru_mask — all derived by hand
 * from Linux v5.17 arch/x86/kvm/mmu/mmu.c:
 *   __reset_rsvds_bits_mask        mmu.c:4269   (legacy format, per level)
 *   guest_can_use_gbpages          mmu.c:4358
 *   reset_rsvds_bits_mask          mmu.c:4373   (guest: reserved_gpa_bits, root_level, efer_nx, cr4_pse, AMD)
 *   __reset_rsvds_bits_mask_ept    mmu.c:4385   (EPT format + bad_mt_xwr)
 *   reset_shadow_zero_bits_mask    mmu.c:4440   (shadow/NPT: uses_nx = efer_nx || !tdp_enabled, amd = true)
 *   reset_tdp_shadow_zero_bits_mask mmu.c:4488  (AMD: legacy nx=false; Intel: EPT format, execonly=false)
 *   reset_ept_shadow_zero_bits_mask mmu.c:4520
 *   update_permission_bitmask      mmu.c:4538
 *   update_pkru_bitmask            mmu.c:4634
 *   reset_guest_paging_metadata    mmu.c:4678   (returns early when !is_cr0_pg(mmu))
 *   init_kvm_tdp_mmu mmu.c:4779, shadow_mmu_init_context mmu.c:4843,
 *   kvm_init_shadow_ept_mmu mmu.c:4932, init_kvm_nested_mmu mmu.c:4995.
 * reserved_gpa_bits = rsvd_bits(maxphyaddr, 63) (cpuid.c:342);
 * reserved_hpa_bits = rsvd_bits(shadow_phys_bits, 63) (mmu.c:4430).
 * Rows are [bit 7 of the entry][level - 1].
 */
import { describe, expect, it } from 'vitest';
import type { MmuContext } from '../../src/mmu/context.js';
import { initNestedMmu, initShadowEptMmu, initShadowMmu, initShadowNptMmu, initTdpMmu, setRoleRegisters } from '../../src/mmu/init.js';
import { computeState, contextJson } from '../../src/mmu/probe.js';
import { computeStateSchema, parseOrThrow } from '../../src/mmu/probe-schema.js';
import type { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import {
  AMD_NPT4,
  CR0_NE,
  CR0_PE,
  CR0_PG,
  CR0_WP,
  CR4_LA57,
  CR4_PAE,
  CR4_PKE,
  CR4_PSE,
  CR4_SMAP,
  CR4_SMEP,
  EFER_LMA,
  EFER_LME,
  EFER_NX,
  EFER_SCE,
  INTEL_EPT4,
  INTEL_EPT5,
  R,
  SHADOW_HOST,
  mkVcpu,
  rsvdMatrix,
} from './kernel-facts.js';

const guestRsvd = (c: MmuContext) => rsvdMatrix((b, l) => c.guestRsvdCheck.get(b, l));
const shadowZero = (c: MmuContext) => rsvdMatrix((b, l) => c.shadowZeroCheck.get(b, l));
const perms = (c: MmuContext) => Array.from(c.permissions);

const BIT7 = 0x80n;
const BIT8 = 0x100n;
const BIT63 = 1n << 63n;
const R13_20 = R(13, 20); // 0x1fe000
const R13_29 = R(13, 29); // 0x3fffe000
const R12_20 = R(12, 20); // 0x1ff000
const R12_29 = R(12, 29); // 0x3ffff000
const PDPTE_RSVD = R(5, 8) | R(1, 2); // 0x1e6

/** Legacy level-4 matrix (mmu.c:4331-4351) from high, bit-8 term and gbpages term; column 4 given. */
const legacy4 = (h: bigint, b8: bigint, gb: bigint, col4: [bigint, bigint] = [0n, 0n]) => [
  [h, h, h | gb, h | b8 | BIT7, col4[0]],
  [h, h | R13_20, h | gb | R13_29, h | b8 | BIT7, col4[1]],
];
/** EPT-format matrix (mmu.c:4395-4406). */
const ept = (h: bigint, hugePageLevel: number) => {
  const g1 = hugePageLevel < 3 ? BIT7 : 0n;
  const g2 = hugePageLevel < 2 ? BIT7 : 0n;
  return [
    [h, h | R(3, 6) | g2, h | R(3, 6) | g1, h | R(3, 7), h | R(3, 7)],
    [h, h | R12_20 | g2, h | R12_29 | g1, h | R(3, 7), h | R(3, 7)],
  ];
};
const BAD_MT_XWR = 0xff545454ffff5454n; // !execonly
const BAD_MT_XWR_EXECONLY = 0xff444444ffff4444n;

// Permission bitmasks, computed by hand from update_permission_bitmask (mmu.c:4538):
// byte i: W = i&1, U = i&2, RSVD = i&4, F = i&8; ~w=0x33, ~u=0x0f, ~x=0x55, u=0xf0.
const PERM_WP_SMEP_SMAP_NX = [240, 243, 15, 63, 0, 51, 15, 63, 245, 247, 95, 127, 245, 247, 95, 127];
const PERM_WP_NX = [0, 51, 15, 63, 0, 51, 15, 63, 85, 119, 95, 127, 85, 119, 95, 127]; // == EPT bitmask
const PERM_WP_ONLY = [0, 51, 15, 63, 0, 51, 15, 63, 0, 51, 15, 63, 0, 51, 15, 63];
const PERM_NOTHING = [0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63];
const PERM_SMEP_NX_NOWP = [0, 0, 15, 63, 0, 0, 15, 63, 245, 245, 95, 127, 245, 245, 95, 127];
const PERM_EPT = [0, 51, 15, 63, 0, 51, 15, 63, 85, 119, 95, 127, 85, 119, 95, 127];

function boot(v: VcpuMmu, cr0: number, cr4: number, efer: number, smm = false, guestMode = false): void {
  setRoleRegisters(v, cr0, cr4, efer, smm, guestMode);
}

const LONG_CR0 = CR0_PG | CR0_WP | CR0_NE | CR0_PE;
const LONG_EFER = EFER_LME | EFER_LMA | EFER_NX;
const H46 = R(46, 51); // 0x000fc00000000000

describe('64-bit guest with WP, SMEP, SMAP, NX', () => {
  // init_kvm_tdp_mmu (mmu.c:4779)
  it('TDP (Intel 4-level EPT): levels, walker, guest rsvd, EPT-format shadow zero bits, permissions', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE | CR4_SMEP | CR4_SMAP, LONG_EFER);
    expect(initTdpMmu(v)).toBe(false);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x3784, 0x2cd]);
    expect(c.rootLevel).toBe(4);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.directMap).toBe(true);
    expect(c.gvaToGpa).toBe('paging64');
    // high = R(46,51); NX -> no bit 63; gbpages: tdp_enabled -> host GBPAGES (yes); Intel guest -> no bit 8
    expect(guestRsvd(c)).toEqual(legacy4(H46, 0n, 0n));
    expect(c.guestRsvdCheck.badMtXwr).toBe(0n);
    expect(perms(c)).toEqual(PERM_WP_SMEP_SMAP_NX);
    expect(c.pkruMask).toBe(0);
    // Intel host: EPT format, execonly=false, max_huge_page_level=1G, shadow_phys_bits=46
    expect(shadowZero(c)).toEqual(ept(H46, 3));
    expect(c.shadowZeroCheck.badMtXwr).toBe(BAD_MT_XWR);
  });

  // update_pkru_bitmask (mmu.c:4634)
  it('with CR4.PKE in long mode: pkru_mask 0xdd00 (WP=1); 0xd500 with WP=0', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE, LONG_EFER);
    initTdpMmu(v);
    expect(v.rootMmu.roleExt).toBe(0x2ed);
    expect(v.rootMmu.pkruMask).toBe(0xdd00);
    boot(v, CR0_PG | CR0_PE, CR4_PAE | CR4_PKE, LONG_EFER);
    initTdpMmu(v);
    expect(v.rootMmu.pkruMask).toBe(0xd500);
  });

  // shadow_mmu_init_context (mmu.c:4843) + reset_shadow_zero_bits_mask (mmu.c:4440)
  it('shadow paging: indirect, guest GBPAGES from CPUID, legacy shadow zero bits with amd=true', () => {
    const v = mkVcpu(SHADOW_HOST, { gbpages: false });
    boot(v, LONG_CR0, CR4_PAE | CR4_SMEP | CR4_SMAP, LONG_EFER);
    expect(initShadowMmu(v)).toBe(false);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x3704, 0x2cd]);
    expect(c.rootLevel).toBe(4);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.directMap).toBe(false);
    expect(c.gvaToGpa).toBe('paging64');
    expect(guestRsvd(c)).toEqual(legacy4(H46, 0n, BIT7));
    expect(perms(c)).toEqual(PERM_WP_SMEP_SMAP_NX);
    // uses_nx = efer_nx || !tdp_enabled -> no bit 63; gbpages = guest CPUID (no) -> bit 7; amd = true -> bit 8
    expect(shadowZero(c)).toEqual(legacy4(H46, BIT8, BIT7));
    expect(c.shadowZeroCheck.badMtXwr).toBe(0n);
  });

  // guest_can_use_gbpages (mmu.c:4358): tdp ? host GBPAGES : guest CPUID GBPAGES
  it('GBPAGES: TDP reads the host, shadow reads guest CPUID', () => {
    const tdp = mkVcpu({ ...INTEL_EPT4, gbpages: false }, { gbpages: true });
    boot(tdp, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(tdp);
    expect(tdp.rootMmu.guestRsvdCheck.get(0, 2)).toBe(H46 | BIT7);
    expect(tdp.rootMmu.guestRsvdCheck.get(1, 2)).toBe(H46 | BIT7 | R13_29);

    const tdp2 = mkVcpu(INTEL_EPT4, { gbpages: false });
    boot(tdp2, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(tdp2);
    expect(tdp2.rootMmu.guestRsvdCheck.get(0, 2)).toBe(H46);

    const sh = mkVcpu({ ...SHADOW_HOST, gbpages: false }, { gbpages: true });
    boot(sh, LONG_CR0, CR4_PAE, LONG_EFER);
    initShadowMmu(sh);
    expect(sh.rootMmu.guestRsvdCheck.get(0, 2)).toBe(H46);
    expect(sh.rootMmu.shadowZeroCheck.get(0, 2)).toBe(H46);
  });

  // reset_rsvds_bits_mask: amd = guest_cpuid_is_amd_or_hygon -> nonleaf_bit8_rsvd
  it.each([
    ['amd', BIT8],
    ['hygon', BIT8],
    ['intel', 0n],
    ['centaur', 0n],
  ] as const)('guest vendor %s: bit 8 of PML4Es is %s', (vendor, b8) => {
    const v = mkVcpu(INTEL_EPT4, { vendor });
    boot(v, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(v);
    expect(v.rootMmu.guestRsvdCheck.get(0, 3)).toBe(H46 | b8 | BIT7);
    expect(v.rootMmu.guestRsvdCheck.get(1, 3)).toBe(H46 | b8 | BIT7);
    expect(v.rootMmu.guestRsvdCheck.get(0, 2)).toBe(H46); // PDPTE: no bit 8 in v5.17
  });

  // __reset_rsvds_bits_mask: !nx -> high |= bit 63
  it('EFER.NX=0 reserves bit 63 in every entry; permissions drop the fetch faults', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE, EFER_LME | EFER_LMA);
    initTdpMmu(v);
    expect(v.rootMmu.roleBase).toBe(0x2784);
    expect(guestRsvd(v.rootMmu)).toEqual(legacy4(H46 | BIT63, 0n, 0n));
    expect(perms(v.rootMmu)).toEqual(PERM_WP_ONLY);
  });

  // reserved_gpa_bits = rsvd_bits(maxphyaddr, 63), masked to 0..51 for 4/5 level
  it.each([
    [36, R(36, 51)],
    [40, R(40, 51)],
    [52, 0n],
  ])('MAXPHYADDR %i -> high bits %s', (maxPhyAddr, high) => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr });
    boot(v, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(v);
    expect(guestRsvd(v.rootMmu)).toEqual(legacy4(high, 0n, 0n));
  });

  // reference §16.1 (TDP, MAXPHYADDR 52)
  it('reference §16.1: high = 0 -> only bit 7 / R(13,29) / R(13,20) remain', () => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 52 });
    boot(v, 0x80010021, 0x140220, 0xd01);
    initTdpMmu(v);
    expect(guestRsvd(v.rootMmu)).toEqual([
      [0n, 0n, 0n, 0x80n, 0n],
      [0n, 0x1fe000n, 0x3fffe000n, 0x80n, 0n],
    ]);
    expect(perms(v.rootMmu)).toEqual([0, 51, 15, 63, 0, 51, 15, 63, 245, 247, 95, 127, 245, 247, 95, 127]);
    expect(v.rootMmu.pkruMask).toBe(0);
  });
});

describe('32-bit non-PAE guest', () => {
  // __reset_rsvds_bits_mask case PT32_ROOT_LEVEL (mmu.c:4299-4315)
  it('TDP, no PSE: level-2 entries all 0, walker paging32, rootLevel 2, shadowRootLevel 4', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, CR0_PG | CR0_WP | CR0_PE, 0, 0);
    initTdpMmu(v);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x2784, 0x5]);
    expect(c.rootLevel).toBe(2);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.gvaToGpa).toBe('paging32');
    expect(guestRsvd(c)).toEqual([
      [0n, 0n, 0n, 0n, 0n],
      [0n, 0n, 0n, 0n, 0n],
    ]);
    expect(perms(c)).toEqual(PERM_WP_ONLY);
  });

  it('TDP with PSE: 4MB PDE reserves R(17,21) = 0x3e0000 (PSE36 always assumed, is_cpuid_PSE36 mmu.c:338)', () => {
    const v = mkVcpu(INTEL_EPT4, { pse36: false });
    boot(v, CR0_PG | CR0_WP | CR0_PE, CR4_PSE, 0);
    initTdpMmu(v);
    expect(v.rootMmu.guestRsvdCheck.get(1, 1)).toBe(0x3e0000n);
    expect(v.rootMmu.roleExt).toBe(0x15);
  });

  // reference §16.2
  it('shadow (reference §16.2): WP=0, PSE, MAXPHYADDR 37 -> 0x713/0x15, rootLevel 2, shadowRootLevel 3, PAE-format shadow zero bits', () => {
    const v = mkVcpu(SHADOW_HOST, { maxPhyAddr: 37 });
    boot(v, 0x80000001, CR4_PSE, EFER_SCE);
    initShadowMmu(v);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x713, 0x15]);
    expect(c.rootLevel).toBe(2);
    expect(c.shadowRootLevel).toBe(3);
    expect(c.directMap).toBe(false);
    expect(c.gvaToGpa).toBe('paging32');
    expect(guestRsvd(c)).toEqual([
      [0n, 0n, 0n, 0n, 0n],
      [0n, 0x3e0000n, 0n, 0n, 0n],
    ]);
    expect(perms(c)).toEqual(PERM_NOTHING);
    expect(c.pkruMask).toBe(0);
    // shadow zero bits at level 3: high = R(46,63) & R(0,62) = R(46,62); uses_nx (tdp off) -> no extra bit 63
    const hp = R(46, 62);
    expect(hp).toBe(0x7fffc00000000000n);
    expect(shadowZero(c)).toEqual([
      [hp, hp, BIT63 | hp | PDPTE_RSVD, 0n, 0n],
      [hp, hp | R13_20, 0n, 0n, 0n],
    ]);
  });
});

describe('32-bit PAE guest', () => {
  // __reset_rsvds_bits_mask case PT32E_ROOT_LEVEL (mmu.c:4316-4327)
  it('TDP: rootLevel 3, paging64 walker, high bits up to 62, PDPTE bits 63|8:5|2:1', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, CR0_PG | CR0_WP | CR0_PE, CR4_PAE, EFER_NX);
    initTdpMmu(v);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x3784, 0xd]);
    expect(c.rootLevel).toBe(3);
    expect(c.gvaToGpa).toBe('paging64');
    const hp = R(46, 62);
    expect(guestRsvd(c)).toEqual([
      [hp, hp, 0xffffc000000001e6n, 0n, 0n],
      [hp, hp | R13_20, 0n, 0n, 0n],
    ]);
    expect(perms(c)).toEqual(PERM_WP_NX);
  });

  it('MAXPHYADDR 52: PAE still reserves bits 52..62 while 4-level reserves none', () => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 52 });
    boot(v, CR0_PG | CR0_PE, CR4_PAE, EFER_NX);
    initTdpMmu(v);
    expect(v.rootMmu.guestRsvdCheck.get(0, 0)).toBe(0x7ff0000000000000n);
    expect(v.rootMmu.guestRsvdCheck.get(0, 2)).toBe(0xfff00000000001e6n);
    expect(v.rootMmu.guestRsvdCheck.get(1, 1)).toBe(0x7ff00000001fe000n);
  });

  it('PAE without NX: bit 63 in every entry', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, CR0_PG | CR0_PE, CR4_PAE, 0);
    initTdpMmu(v);
    expect(v.rootMmu.guestRsvdCheck.get(0, 0)).toBe(0xffffc00000000000n);
    expect(v.rootMmu.guestRsvdCheck.get(1, 1)).toBe(0xffffc000001fe000n);
  });
});

describe('5-level guest', () => {
  // case PT64_ROOT_5LEVEL (mmu.c:4328-4333) + kvm_mmu_get_tdp_level
  it('5-level EPT host, MAXPHYADDR 52: level 5 TDP, columns 4 written, AMD guest adds bit 8 to PML5E/PML4E', () => {
    const v = mkVcpu(INTEL_EPT5, { maxPhyAddr: 52, vendor: 'amd' });
    boot(v, LONG_CR0, CR4_PAE | CR4_LA57, LONG_EFER);
    initTdpMmu(v);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x3785, 0x30d]);
    expect(c.rootLevel).toBe(5);
    expect(c.shadowRootLevel).toBe(5);
    expect(guestRsvd(c)).toEqual([
      [0n, 0n, 0n, 0x180n, 0x180n],
      [0n, R13_20, R13_29, 0x180n, 0x180n],
    ]);
  });

  it('5-level EPT host, MAXPHYADDR 48: TDP level 4 but guest rootLevel 5', () => {
    const v = mkVcpu(INTEL_EPT5, { maxPhyAddr: 48 });
    boot(v, LONG_CR0, CR4_PAE | CR4_LA57, LONG_EFER);
    initTdpMmu(v);
    const c = v.rootMmu;
    expect(c.roleBase).toBe(0x3784);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.rootLevel).toBe(5);
    const h = R(48, 51);
    expect(guestRsvd(c)).toEqual(legacy4(h, 0n, 0n, [h | BIT7, h | BIT7]));
  });

  it('shadow 5-level: shadowRootLevel 5, shadow zero bits column 4 written', () => {
    const v = mkVcpu(SHADOW_HOST);
    boot(v, LONG_CR0, CR4_PAE | CR4_LA57, LONG_EFER);
    initShadowMmu(v);
    const c = v.rootMmu;
    expect(c.roleBase).toBe(0x3705);
    expect(c.shadowRootLevel).toBe(5);
    expect(shadowZero(c)).toEqual(legacy4(H46, BIT8, 0n, [H46 | BIT8 | BIT7, H46 | BIT8 | BIT7]));
  });
});

describe('nested EPT (kvm_init_shadow_ept_mmu, mmu.c:4932)', () => {
  // reference §16.3
  it('execute-only, A/D off, 4-level, 1G caps, MAXPHYADDR 42 (reference §16.3)', () => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 42 });
    expect(initShadowEptMmu(v, { execonly: true, accessedDirty: false, level: 4, hugePageLevel: 3 })).toBe(false);
    const c = v.guestMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x30704, 0x3]);
    expect(c.rootLevel).toBe(4);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.directMap).toBe(false);
    expect(c.eptAd).toBe(false);
    expect(c.gvaToGpa).toBe('ept');
    const h = R(42, 51);
    expect(h).toBe(0xffc0000000000n);
    expect(guestRsvd(c)).toEqual(ept(h, 3));
    expect(c.guestRsvdCheck.badMtXwr).toBe(BAD_MT_XWR_EXECONLY);
    expect(perms(c)).toEqual(PERM_EPT);
    expect(c.pkruMask).toBe(0);
    // reset_ept_shadow_zero_bits_mask: EPT format, same execonly, host max_huge_page_level, shadow_phys_bits 46
    expect(shadowZero(c)).toEqual(ept(H46, 3));
    expect(c.shadowZeroCheck.badMtXwr).toBe(BAD_MT_XWR_EXECONLY);
  });

  it.each([
    [2, 'bit 7 reserved in 1G (level-3) entries'],
    [1, 'bit 7 reserved in 1G and 2M entries'],
  ] as const)('L1 huge_page_level %i: %s (guest check only; shadow check uses the host level)', (hpl, _what) => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 42 });
    initShadowEptMmu(v, { execonly: false, accessedDirty: true, level: 4, hugePageLevel: hpl });
    expect(guestRsvd(v.guestMmu)).toEqual(ept(R(42, 51), hpl));
    expect(v.guestMmu.guestRsvdCheck.badMtXwr).toBe(BAD_MT_XWR);
    expect(shadowZero(v.guestMmu)).toEqual(ept(H46, 3));
    expect(v.guestMmu.eptAd).toBe(true);
    expect(v.guestMmu.roleBase).toBe(0x20704);
  });

  it('5-level EPTP: rootLevel = shadowRootLevel = 5', () => {
    const v = mkVcpu(INTEL_EPT5);
    initShadowEptMmu(v, { execonly: false, accessedDirty: false, level: 5, hugePageLevel: 3 });
    expect([v.guestMmu.rootLevel, v.guestMmu.shadowRootLevel, v.guestMmu.roleBase]).toEqual([5, 5, 0x30705]);
  });
});

describe('shadow NPT products (kvm_init_shadow_npt_mmu, mmu.c:4889 -> shadow_mmu_init_context)', () => {
  it('64-bit L1 with PKE: pkru_mask 0 (PKE masked), WP=0 permissions, guest and shadow legacy checks', () => {
    const v = mkVcpu(AMD_NPT4, { vendor: 'amd', maxPhyAddr: 40 });
    v.guestMode = true;
    initShadowNptMmu(v, CR0_PG, CR4_PAE | CR4_SMEP | CR4_PKE, LONG_EFER);
    const c = v.guestMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x25704, 0x28d]);
    expect(c.rootLevel).toBe(4);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.directMap).toBe(false);
    expect(c.gvaToGpa).toBe('paging64');
    expect(c.pkruMask).toBe(0);
    expect(perms(c)).toEqual(PERM_SMEP_NX_NOWP);
    // guest: high R(40,51), gbpages host (tdp on), AMD guest bit 8
    expect(guestRsvd(c)).toEqual(legacy4(R(40, 51), BIT8, 0n));
    // shadow: reserved_hpa R(48,63) -> high R(48,51); uses_nx (efer_nx) -> no 63; host gbpages; amd
    expect(shadowZero(c)).toEqual(legacy4(R(48, 51), BIT8, 0n));
  });

  it('32-bit L1 NPT: rootLevel 2, shadowRootLevel 4 (TDP level), paging32, shadow zero bits with bit 63 (efer_nx 0, tdp on)', () => {
    const v = mkVcpu(AMD_NPT4, { vendor: 'amd' });
    v.guestMode = true;
    initShadowNptMmu(v, CR0_PG, 0, 0);
    const c = v.guestMmu;
    expect(c.rootLevel).toBe(2);
    expect(c.shadowRootLevel).toBe(4);
    expect(c.gvaToGpa).toBe('paging32');
    expect(shadowZero(c)).toEqual(legacy4(R(48, 51) | BIT63, BIT8, 0n));
  });
});

describe('TDP on an AMD host: reset_tdp_shadow_zero_bits_mask legacy branch (mmu.c:4494)', () => {
  it('nx=false (bit 63), host GBPAGES, amd=true, level = shadow_root_level; column 4 untouched', () => {
    const v = mkVcpu(AMD_NPT4);
    boot(v, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(v);
    const c = v.rootMmu;
    expect(shadowZero(c)).toEqual(legacy4(R(48, 51) | BIT63, BIT8, 0n));
    expect(c.shadowZeroCheck.get(0, 3)).toBe(0x800f000000000180n);
    expect(c.shadowZeroCheck.badMtXwr).toBe(0n);
  });
});

describe('nested walk MMU products (init_kvm_nested_mmu, mmu.c:4995)', () => {
  it.each([
    ['64-bit', CR0_PG | CR0_WP, CR4_PAE, EFER_LMA | EFER_NX, 4, 'paging64'],
    ['PAE', CR0_PG | CR0_WP, CR4_PAE, 0, 3, 'paging64'],
    ['32-bit', CR0_PG | CR0_WP, 0, 0, 2, 'paging32'],
    ['paging off', CR0_PE, 0, 0, 0, 'nonpaging'],
  ] as const)('L2 %s: rootLevel = role.level %i, walker %s', (_n, cr0, cr4, efer, level, walker) => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, cr0, cr4, efer, false, true);
    v.useContexts(true);
    initNestedMmu(v);
    expect(v.nestedMmu.rootLevel).toBe(level);
    expect(v.nestedMmu.gvaToGpa).toBe(walker);
  });

  it('never assigns shadow_zero_check, shadow_root_level, direct_map (null / 0 / false in the output)', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE | CR4_SMEP, LONG_EFER, false, true);
    v.useContexts(true);
    initNestedMmu(v);
    const c = v.nestedMmu;
    expect(c.shadowZeroCheckSet).toBe(false);
    expect(shadowZero(c)).toEqual([
      [0n, 0n, 0n, 0n, 0n],
      [0n, 0n, 0n, 0n, 0n],
    ]);
    expect(c.shadowRootLevel).toBe(0);
    expect(c.directMap).toBe(false);
    const j = contextJson(c);
    expect(j.shadowZeroCheck).toBeNull();
    expect(j.shadowRootLevel).toBe(0);
    // but guest paging metadata is computed: WP, SMEP, NX
    expect(guestRsvd(c)).toEqual(legacy4(H46, 0n, 0n));
    expect(perms(c)).toEqual([0, 51, 15, 63, 0, 51, 15, 63, 245, 247, 95, 127, 245, 247, 95, 127]);
  });
});

describe('stale data is kernel behaviour', () => {
  // reset_guest_paging_metadata (mmu.c:4678): if (!is_cr0_pg(mmu)) return;
  it('paging turned off: rebuild happens, but rsvd masks, permissions and pkru keep the previous values', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE, LONG_EFER);
    initTdpMmu(v);
    const c = v.rootMmu;
    boot(v, CR0_PE, 0, 0);
    expect(initTdpMmu(v)).toBe(false);
    expect([c.roleBase, c.roleExt]).toEqual([0x784, 0x1]);
    expect(c.rootLevel).toBe(0);
    expect(c.gvaToGpa).toBe('nonpaging');
    expect(guestRsvd(c)).toEqual(legacy4(H46, 0n, 0n));
    expect(perms(c)).toEqual(PERM_WP_SMEP_SMAP_NX);
    expect(c.pkruMask).toBe(0xdd00);
  });

  it('fresh vCPU with paging off: everything stays zero (zero-allocated vCPU)', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, CR0_PE, 0, 0);
    initTdpMmu(v);
    expect(perms(v.rootMmu)).toEqual(new Array(16).fill(0));
    expect(guestRsvd(v.rootMmu).flat().every((x) => x === 0n)).toBe(true);
    expect(v.rootMmu.pkruMask).toBe(0);
  });

  it('shadow paging off: nonpaging (direct_map true) and metadata kept', () => {
    const v = mkVcpu(SHADOW_HOST);
    boot(v, LONG_CR0, CR4_PAE, LONG_EFER);
    initShadowMmu(v);
    boot(v, CR0_PE, 0, 0);
    initShadowMmu(v);
    const c = v.rootMmu;
    expect([c.roleBase, c.roleExt]).toEqual([0x783, 0x1]);
    expect(c.directMap).toBe(true);
    expect(c.gvaToGpa).toBe('nonpaging');
    expect(c.rootLevel).toBe(0);
    expect(c.shadowRootLevel).toBe(3);
    expect(perms(c)).toEqual(PERM_WP_NX);
    expect(guestRsvd(c)).toEqual(legacy4(H46, 0n, 0n));
  });

  // __reset_rsvds_bits_mask writes only the columns of its level (mmu.c:4297-4351)
  it('4-level then 2-level: columns 3 and 4 (levels 3,4) keep the 4-level values', () => {
    const v = mkVcpu(INTEL_EPT4);
    boot(v, LONG_CR0, CR4_PAE, LONG_EFER);
    initTdpMmu(v);
    boot(v, CR0_PG | CR0_WP | CR0_PE, 0, 0);
    initTdpMmu(v);
    expect(guestRsvd(v.rootMmu)).toEqual([
      [0n, 0n, H46, H46 | BIT7, 0n],
      [0n, 0n, H46 | R13_29, H46 | BIT7, 0n],
    ]);
  });

  it('5-level then PAE: [1][2] and both rows of levels 4,5 keep the 5-level values', () => {
    const v = mkVcpu(INTEL_EPT5, { maxPhyAddr: 52 });
    boot(v, LONG_CR0, CR4_PAE | CR4_LA57, LONG_EFER);
    initTdpMmu(v);
    boot(v, CR0_PG | CR0_WP | CR0_PE, CR4_PAE, EFER_NX);
    initTdpMmu(v);
    const hp = R(52, 62);
    expect(guestRsvd(v.rootMmu)).toEqual([
      [hp, hp, BIT63 | hp | PDPTE_RSVD, BIT7, BIT7],
      [hp, hp | R13_20, R13_29, BIT7, BIT7],
    ]);
  });
});

describe('role compute probe: the issue example (Linux v5.17 result given in the brief)', () => {
  it('TDP, WP=0, SMAP+PKE, NX=0, AMD guest, Intel host: exact JSON', () => {
    const state = parseOrThrow(
      computeStateSchema,
      {
        path: 'tdp',
        cr0: '0x80040021',
        cr4: '0x612220',
        efer: '0x500',
        smm: false,
        guestMode: true,
        cpuid: { vendor: 'amd', maxPhyAddr: 46, gbpages: false, pse36: true, pku: true, la57: false, smep: true, smap: true, nx: true },
        host: { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 43, maxHugePageLevel: 3 },
        ept: { execonly: false, accessedDirty: false, level: 5, hugePageLevel: 3 },
      },
      'state',
    );
    expect(computeState(state)).toEqual({
      base: '0x00020784',
      ext: '0x0000026d',
      rootLevel: 4,
      shadowRootLevel: 4,
      directMap: true,
      rsvdBitsMask: [
        ['0x800fc00000000000', '0x800fc00000000000', '0x800fc00000000000', '0x800fc00000000180', '0x0'],
        ['0x800fc00000000000', '0x800fc000001fe000', '0x800fc0003fffe000', '0x800fc00000000180', '0x0'],
      ],
      badMtXwr: '0x0',
      permissions: [240, 240, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63],
      pkruMask: '0xd500',
      gvaToGpa: 'paging64',
      eptAd: false,
      shadowZeroCheck: {
        rsvdBitsMask: [
          ['0xff80000000000', '0xff80000000078', '0xff80000000078', '0xff800000000f8', '0xff800000000f8'],
          ['0xff80000000000', '0xff800001ff000', '0xff8003ffff000', '0xff800000000f8', '0xff800000000f8'],
        ],
        badMtXwr: '0xff545454ffff5454',
      },
      newPgdRole: '0x00020784',
    });
  });

  it('shadow-ept probe (reference §16.3 values) reports the role passed to __kvm_mmu_new_pgd', () => {
    const state = parseOrThrow(
      computeStateSchema,
      {
        path: 'shadow-ept',
        cr0: '0x80010001',
        cr4: '0x20',
        efer: '0xd00',
        smm: false,
        guestMode: true,
        cpuid: { vendor: 'intel', maxPhyAddr: 42, gbpages: true, pse36: true, pku: false, la57: false, smep: false, smap: false, nx: true },
        host: { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 },
        ept: { execonly: true, accessedDirty: false, level: 4, hugePageLevel: 3 },
      },
      'state',
    );
    const r = computeState(state);
    expect(r.base).toBe('0x00030704');
    expect(r.ext).toBe('0x00000003');
    expect(r.newPgdRole).toBe('0x00030704');
    expect(r.badMtXwr).toBe('0xff444444ffff4444');
    expect(r.rsvdBitsMask[0][4]).toBe('0xffc00000000f8');
    expect(r.rsvdBitsMask[1][2]).toBe('0xffc003ffff000');
    expect(r.permissions).toEqual(PERM_EPT);
    expect(r.gvaToGpa).toBe('ept');
  });
});
