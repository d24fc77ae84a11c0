/**
 * How each input reaches each role bit, per init path. Every expected word is
 * derived by hand from Linux v5.17 arch/x86/kvm/mmu/mmu.c (line numbers of
 * that file) and checked against the worked values of kvm-mmu-reference.md
 * §4.6 / §16.
 *
 * Page-role bit values used below (kvm_host.h:314): level = bits 0-3,
 * has_4_byte_gpte 0x10, direct 0x80, access ACC_ALL = 0x700, invalid 0x800,
 * efer_nx 0x1000, cr0_wp 0x2000, smep_andnot_wp 0x4000, smap_andnot_wp 0x8000,
 * ad_disabled 0x10000, guest_mode 0x20000, smm 0x01000000.
 * Ext bit values (kvm_host.h:360): valid 0x1, execonly 0x2, cr0_pg 0x4,
 * cr4_pae 0x8, cr4_pse 0x10, cr4_pke 0x20, cr4_smap 0x40, cr4_smep 0x80,
 * cr4_la57 0x100, efer_lma 0x200.
 */
import { describe, expect, it } from 'vitest';
import {
  calcNestedRole,
  calcRootPageRole,
  calcShadowEptRole,
  calcShadowNptRole,
  calcShadowRole,
  calcTdpRole,
  tdpLevel,
} from '../../src/role/compute.js';
import { FORMAT_CPUID_STALE, FORMAT_NO_VALID, FORMAT_V517 } from '../../src/role/ext-role.js';
import { initShadowEptMmu, initShadowNptMmu, initTdpMmu, setRoleRegisters } from '../../src/mmu/init.js';
import {
  AMD_NPT4,
  CR0_AM,
  CR0_NE,
  CR0_PE,
  CR0_PG,
  CR0_WP,
  CR4_LA57,
  CR4_PAE,
  CR4_PGE,
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
  SHADOW_HOST,
  mkVcpu,
} from './kernel-facts.js';

const L1 = { smm: false, guestMode: false, maxPhyAddr: 46 };
const regs = (cr0: number, cr4: number, efer: number) => ({ cr0: cr0 >>> 0, cr4: cr4 >>> 0, efer: efer >>> 0 });

const LONG64 = regs(CR0_PG | CR0_WP | CR0_PE, CR4_PAE | CR4_SMEP, EFER_LME | EFER_LMA | EFER_NX);

// ---------------------------------------------------------------------------
// kvm_calc_mmu_role_ext (mmu.c:4707) — shared by tdp, shadow, npt and nested.
// ---------------------------------------------------------------------------
describe('kvm_calc_mmu_role_ext (mmu.c:4707): CR0/CR4/EFER -> ext bits (via the TDP path)', () => {
  const ext = (cr0: number, cr4: number, efer: number) => calcTdpRole(regs(cr0, cr4, efer), L1, INTEL_EPT4).ext;

  it('CR0.PG=0: ext is exactly valid (0x1) whatever CR4/EFER say', () => {
    const all4 = CR4_PSE | CR4_PAE | CR4_LA57 | CR4_SMEP | CR4_SMAP | CR4_PKE;
    expect(ext(CR0_PE | CR0_WP, all4, EFER_LME | EFER_LMA | EFER_NX)).toBe(0x1);
  });

  it.each([
    ['PG only', 0, 0, 0x5],
    ['CR4.PSE', CR4_PSE, 0, 0x15],
    ['CR4.PAE', CR4_PAE, 0, 0xd],
    ['CR4.SMEP', CR4_SMEP, 0, 0x85],
    ['CR4.SMAP', CR4_SMAP, 0, 0x45],
    ['CR4.PKE without EFER.LMA -> cr4_pke 0', CR4_PKE, 0, 0x5],
    ['CR4.PKE with EFER.LMA', CR4_PKE, EFER_LMA, 0x225],
    ['CR4.LA57 without EFER.LMA -> cr4_la57 0', CR4_LA57, 0, 0x5],
    ['CR4.LA57 with EFER.LMA', CR4_LA57, EFER_LMA, 0x305],
    ['EFER.LMA alone', 0, EFER_LMA, 0x205],
    ['EFER.NX is not an ext bit', 0, EFER_NX, 0x5],
    ['non-role CR4.PGE is ignored', CR4_PGE, 0, 0x5],
  ])('%s', (_name, cr4, efer, want) => {
    expect(ext(CR0_PG, cr4, efer)).toBe(want);
  });

  it('CR0.WP is not an ext bit', () => {
    expect(ext(CR0_PG | CR0_WP, 0, 0)).toBe(0x5);
  });
});

// ---------------------------------------------------------------------------
// TDP: kvm_calc_mmu_role_common (mmu.c:4730) + kvm_calc_tdp_mmu_root_page_role
// (mmu.c:4766) + kvm_mmu_get_tdp_level (mmu.c:4752).
// ---------------------------------------------------------------------------
describe('TDP role: kvm_calc_tdp_mmu_root_page_role (mmu.c:4766)', () => {
  it('reference §4.6: 64-bit, WP, PAE|SMEP, LME|LMA|NX, 4-level EPT with A/D -> 0x3784 / 0x28d', () => {
    expect(calcTdpRole(LONG64, L1, INTEL_EPT4)).toEqual({ base: 0x3784, ext: 0x28d });
  });

  it('reference §16.1: CR0 0x80010021, CR4 0x140220, EFER 0xd01, MAXPHYADDR 52 -> 0x3784 / 0x28d', () => {
    expect(calcTdpRole(regs(0x80010021, 0x140220, 0xd01), { ...L1, maxPhyAddr: 52 }, INTEL_EPT4)).toEqual({ base: 0x3784, ext: 0x28d });
  });

  it('efer_nx and cr0_wp are taken only when CR0.PG=1 (kvm_calc_mmu_role_common)', () => {
    expect(calcTdpRole(regs(CR0_PE | CR0_WP, 0, EFER_NX), L1, INTEL_EPT4).base).toBe(0x784);
    expect(calcTdpRole(regs(CR0_PG, 0, EFER_NX), L1, INTEL_EPT4).base).toBe(0x1784);
    expect(calcTdpRole(regs(CR0_PG | CR0_WP, 0, 0), L1, INTEL_EPT4).base).toBe(0x2784);
  });

  it('TDP never sets has_4_byte_gpte, quadrant, smep/smap_andnot_wp (32-bit guest, WP=0, SMEP|SMAP)', () => {
    const r = calcTdpRole(regs(CR0_PG, CR4_SMEP | CR4_SMAP | CR4_PSE, 0), L1, INTEL_EPT4);
    expect(r.base).toBe(0x784);
    expect(r.ext).toBe(0x1 | 0x4 | 0x10 | 0x40 | 0x80);
  });

  it('smm = is_smm -> 0x01000000; guest_mode = is_guest_mode -> 0x20000', () => {
    expect(calcTdpRole(LONG64, { ...L1, smm: true }, INTEL_EPT4).base).toBe(0x01003784);
    expect(calcTdpRole(LONG64, { ...L1, guestMode: true }, INTEL_EPT4).base).toBe(0x00023784);
  });

  it('ad_disabled = (shadow_accessed_mask == 0): host without A/D -> 0x10000', () => {
    expect(calcTdpRole(LONG64, L1, { ...INTEL_EPT4, adDisabled: true }).base).toBe(0x13784);
  });

  it('non-role register bits (CR0.AM/NE, CR4.PGE, EFER.SCE) change nothing', () => {
    const r = calcTdpRole(regs(CR0_PG | CR0_WP | CR0_PE | CR0_AM | CR0_NE, CR4_PAE | CR4_SMEP | CR4_PGE, EFER_LME | EFER_LMA | EFER_NX | EFER_SCE), L1, INTEL_EPT4);
    expect(r).toEqual({ base: 0x3784, ext: 0x28d });
  });

  it('level comes from the host, not the guest paging mode (2-level guest on 4-level EPT -> level 4)', () => {
    expect(calcTdpRole(regs(CR0_PG, 0, 0), L1, INTEL_EPT4).base & 0xf).toBe(4);
  });
});

describe('kvm_mmu_get_tdp_level (mmu.c:4752): MAXPHYADDR reaches the TDP level on 5-level hosts', () => {
  it.each([
    ['max_tdp_level 5', 36, 4, INTEL_EPT5],
    ['max_tdp_level 5', 48, 4, INTEL_EPT5],
    ['max_tdp_level 5', 49, 5, INTEL_EPT5],
    ['max_tdp_level 5', 52, 5, INTEL_EPT5],
    ['max_tdp_level 4', 52, 4, INTEL_EPT4],
    ['tdp_root_level 4 (forced) with max 5', 52, 4, { ...INTEL_EPT5, tdpForcedRootLevel: 4 as const }],
    ['tdp_root_level 5 (forced, AMD)', 36, 5, { ...AMD_NPT4, maxTdpLevel: 5 as const, tdpForcedRootLevel: 5 as const }],
  ])('%s, MAXPHYADDR %i -> level %i', (_label, maxPhyAddr, want, host) => {
    expect(tdpLevel(host, maxPhyAddr)).toBe(want);
    expect(calcTdpRole(LONG64, { ...L1, maxPhyAddr }, host).base & 0xf).toBe(want);
  });

  it('so on a 5-level Intel host the TDP role word itself depends on guest CPUID', () => {
    expect(calcTdpRole(LONG64, { ...L1, maxPhyAddr: 48 }, INTEL_EPT5).base).toBe(0x3784);
    expect(calcTdpRole(LONG64, { ...L1, maxPhyAddr: 49 }, INTEL_EPT5).base).toBe(0x3785);
  });
});

// ---------------------------------------------------------------------------
// Shadow paging: kvm_calc_shadow_root_page_role_common (mmu.c:4812) +
// kvm_calc_shadow_mmu_root_page_role (mmu.c:4825).
// ---------------------------------------------------------------------------
describe('shadow role: kvm_calc_shadow_mmu_root_page_role (mmu.c:4825)', () => {
  it('reference §4.6: 2-level guest with PSE, WP=0, NXE=0 -> 0x713 / 0x15 (level 3, 4-byte gptes)', () => {
    expect(calcShadowRole(regs(CR0_PG | CR0_PE, CR4_PSE, EFER_SCE), L1)).toEqual({ base: 0x713, ext: 0x15 });
  });

  it('64-bit with WP=1: smep/smap_andnot_wp stay 0 -> 0x3704 / 0x2cd', () => {
    const r = calcShadowRole(regs(CR0_PG | CR0_WP, CR4_PAE | CR4_SMEP | CR4_SMAP, EFER_LME | EFER_LMA | EFER_NX), L1);
    expect(r).toEqual({ base: 0x3704, ext: 0x2cd });
  });

  it('64-bit with WP=0: smep_andnot_wp 0x4000 and smap_andnot_wp 0x8000 -> 0xd704', () => {
    const r = calcShadowRole(regs(CR0_PG, CR4_PAE | CR4_SMEP | CR4_SMAP, EFER_LME | EFER_LMA | EFER_NX), L1);
    expect(r).toEqual({ base: 0xd704, ext: 0x2cd });
    expect(calcShadowRole(regs(CR0_PG, CR4_PAE | CR4_SMEP, EFER_LMA), L1).base).toBe(0x4704);
    expect(calcShadowRole(regs(CR0_PG, CR4_PAE | CR4_SMAP, EFER_LMA), L1).base).toBe(0x8704);
  });

  it('paging off: direct, level 3 (not 0), no andnot_wp even with CR4.SMEP|SMAP -> 0x783 / 0x1', () => {
    expect(calcShadowRole(regs(CR0_PE, CR4_SMEP | CR4_SMAP | CR4_PSE, 0), L1)).toEqual({ base: 0x783, ext: 0x1 });
  });

  it('32-bit PAE: level 3, 8-byte gptes -> 0x3703 / 0xd', () => {
    expect(calcShadowRole(regs(CR0_PG | CR0_WP, CR4_PAE, EFER_NX), L1)).toEqual({ base: 0x3703, ext: 0xd });
  });

  it('5-level: EFER.LMA with CR4.LA57 -> level 5 -> 0x2705 / 0x30d', () => {
    expect(calcShadowRole(regs(CR0_PG | CR0_WP, CR4_PAE | CR4_LA57, EFER_LME | EFER_LMA), L1)).toEqual({ base: 0x2705, ext: 0x30d });
  });

  it('CR4.LA57 without EFER.LMA -> level 3, ext.cr4_la57 = 0', () => {
    expect(calcShadowRole(regs(CR0_PG, CR4_PAE | CR4_LA57, 0), L1)).toEqual({ base: 0x703, ext: 0xd });
  });

  it('smm and guest_mode come from the vCPU', () => {
    expect(calcShadowRole(regs(CR0_PG | CR0_PE, CR4_PSE, 0), { ...L1, smm: true, guestMode: true }).base).toBe(0x01020713);
  });
});

// ---------------------------------------------------------------------------
// Nested walk MMU: kvm_calc_nested_mmu_role (mmu.c:4979) + role_regs_to_root_level (mmu.c:258).
// ---------------------------------------------------------------------------
describe('nested role: kvm_calc_nested_mmu_role (mmu.c:4979), over L2 registers', () => {
  const L2 = { smm: false, guestMode: true, maxPhyAddr: 46 };
  it('64-bit L2 -> level 4, direct (deliberately) -> 0x23784 / 0x20d', () => {
    expect(calcNestedRole(regs(CR0_PG | CR0_WP, CR4_PAE, EFER_LMA | EFER_NX), L2)).toEqual({ base: 0x23784, ext: 0x20d });
  });

  it('L2 paging off -> level 0 (role_regs_to_root_level), ext 0x1 -> 0x20780', () => {
    expect(calcNestedRole(regs(CR0_PE, CR4_PAE, 0), L2)).toEqual({ base: 0x20780, ext: 0x1 });
  });

  it('32-bit L2 with PSE, WP=0, SMEP -> level 2, 4-byte, smep_andnot_wp -> 0x24792 / 0x95', () => {
    expect(calcNestedRole(regs(CR0_PG, CR4_PSE | CR4_SMEP, 0), L2)).toEqual({ base: 0x24792, ext: 0x95 });
  });

  it('PAE L2 -> level 3; 5-level L2 -> level 5', () => {
    expect(calcNestedRole(regs(CR0_PG, CR4_PAE, 0), L2).base).toBe(0x20783);
    expect(calcNestedRole(regs(CR0_PG, CR4_PAE | CR4_LA57, EFER_LMA), L2).base).toBe(0x20785);
  });
});

// ---------------------------------------------------------------------------
// Shadow NPT: kvm_calc_shadow_npt_root_page_role (mmu.c:4877), kvm_init_shadow_npt_mmu
// (mmu.c:4889: cr4 & ~X86_CR4_PKE), caller svm/nested.c:108 passes cr0 = X86_CR0_PG.
// ---------------------------------------------------------------------------
describe('shadow NPT role: kvm_init_shadow_npt_mmu (mmu.c:4889)', () => {
  it('cr0 = PG only: cr0_wp 0, so smep/smap_andnot_wp = ext.cr4_smep/smap; PKE masked; direct 0; level = TDP level', () => {
    const v = mkVcpu(AMD_NPT4);
    v.guestMode = true;
    initShadowNptMmu(v, CR0_PG, CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE, EFER_LME | EFER_LMA | EFER_NX);
    // base: 4 | 0x700 | nx 0x1000 | 0x4000 | 0x8000 | guest 0x20000
    expect(v.guestMmu.roleBase).toBe(0x2d704);
    // ext: valid|pg|pae|smap|smep|lma = 0x2cd; cr4_pke (0x20) absent although LMA and PKE were passed
    expect(v.guestMmu.roleExt).toBe(0x2cd);
    // __kvm_mmu_new_pgd gets new_role.base
    expect(v.lastNewPgdRole).toBe(0x2d704);
  });

  it('32-bit (non-PAE) L1 NPT: has_4_byte_gpte, level still the TDP level 4 -> 0x20714 / 0x5', () => {
    const v = mkVcpu(AMD_NPT4);
    v.guestMode = true;
    initShadowNptMmu(v, CR0_PG, 0, 0);
    expect([v.guestMmu.roleBase, v.guestMmu.roleExt]).toEqual([0x20714, 0x5]);
  });

  it('level follows kvm_mmu_get_tdp_level (forced 5)', () => {
    const host = { ...AMD_NPT4, maxTdpLevel: 5 as const, tdpForcedRootLevel: 5 as const };
    expect(calcShadowNptRole(regs(CR0_PG, 0, 0), { smm: false, guestMode: true, maxPhyAddr: 40 }, host).base).toBe(0x20715);
  });

  it('smm and guest_mode are the vCPU current hflags', () => {
    const v = mkVcpu(AMD_NPT4);
    v.smm = true;
    v.guestMode = false;
    initShadowNptMmu(v, CR0_PG, CR4_PAE, EFER_LMA);
    expect(v.guestMmu.roleBase).toBe(0x01000704);
  });

  it('the function itself honours a caller WP (only the SVM caller forces PG-only)', () => {
    expect(calcShadowNptRole(regs(CR0_PG | CR0_WP, CR4_PAE | CR4_SMEP, EFER_LMA), { smm: false, guestMode: true, maxPhyAddr: 46 }, AMD_NPT4).base).toBe(0x22704);
  });
});

// ---------------------------------------------------------------------------
// Shadow EPT: kvm_calc_shadow_ept_root_page_role (mmu.c:4909), kvm_init_shadow_ept_mmu (mmu.c:4932).
// ---------------------------------------------------------------------------
describe('shadow EPT role: kvm_calc_shadow_ept_root_page_role (mmu.c:4909)', () => {
  it('reference §4.6: execonly, no A/D, 4-level, not SMM -> 0x30704 / 0x3', () => {
    expect(calcShadowEptRole(0, false, true, 4)).toEqual({ base: 0x30704, ext: 0x3 });
  });

  it('A/D enabled, not execonly -> 0x20704 / 0x1', () => {
    expect(calcShadowEptRole(0, true, false, 4)).toEqual({ base: 0x20704, ext: 0x1 });
  });

  it('level = EPTP page-walk level (5) -> 0x30705', () => {
    expect(calcShadowEptRole(0, false, false, 5)).toEqual({ base: 0x30705, ext: 0x1 });
  });

  it('smm = root_mmu stored base.smm -> 0x01030704', () => {
    expect(calcShadowEptRole(1, false, true, 4).base).toBe(0x01030704);
  });

  it('ignores CR0/CR4/EFER and the vCPU guest flag: guest_mode always 1, efer_nx/cr0_wp 0', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, CR0_PG | CR0_WP, CR4_PAE | CR4_SMEP | CR4_PKE, EFER_LMA | EFER_NX, false, false);
    initShadowEptMmu(v, { execonly: false, accessedDirty: true, level: 4, hugePageLevel: 3 });
    expect([v.guestMmu.roleBase, v.guestMmu.roleExt]).toEqual([0x20704, 0x1]);
  });

  it('SMM is read from root_mmu\'s STORED role, not from the vCPU flag', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, CR0_PG | CR0_WP, CR4_PAE, EFER_LMA, true, false);
    initTdpMmu(v); // root_mmu.mmu_role.base.smm = 1
    v.smm = false; // vCPU left SMM, root_mmu not re-initialised
    initShadowEptMmu(v, { execonly: true, accessedDirty: false, level: 4, hugePageLevel: 3 });
    expect(v.guestMmu.roleBase).toBe(0x01030704);

    const w = mkVcpu(INTEL_EPT4);
    w.smm = true; // in SMM but root_mmu never initialised (role 0)
    initShadowEptMmu(w, { execonly: true, accessedDirty: false, level: 4, hugePageLevel: 3 });
    expect(w.guestMmu.roleBase).toBe(0x00030704);
  });
});

// ---------------------------------------------------------------------------
// kvm_mmu_calc_root_page_role (mmu.c:5048): base_only = true, ext never filled.
// ---------------------------------------------------------------------------
describe('base-only role kvm_mmu_calc_root_page_role (mmu.c:5048)', () => {
  it('quirk: shadow paging, WP=0 with SMEP|SMAP -> smep/smap_andnot_wp are 0 in the lookup role (0x1704 vs stored 0xd704)', () => {
    const r = regs(CR0_PG, CR4_PAE | CR4_SMEP | CR4_SMAP, EFER_LME | EFER_LMA | EFER_NX);
    expect(calcRootPageRole(r, L1, SHADOW_HOST)).toBe(0x1704);
    expect(calcShadowRole(r, L1).base).toBe(0xd704);
    expect(calcShadowRole(r, L1, FORMAT_V517, true)).toEqual({ base: 0x1704, ext: 0 });
  });

  it('has_4_byte_gpte is read from the registers, so base-only keeps it (0x713)', () => {
    expect(calcRootPageRole(regs(CR0_PG | CR0_PE, CR4_PSE, 0), L1, SHADOW_HOST)).toBe(0x713);
  });

  it('TDP: base-only equals the stored base', () => {
    const r = regs(CR0_PG, CR4_PAE | CR4_SMEP, EFER_LMA | EFER_NX);
    expect(calcRootPageRole(r, L1, INTEL_EPT4)).toBe(0x1784);
    expect(calcTdpRole(r, L1, INTEL_EPT4).base).toBe(0x1784);
    expect(calcTdpRole(r, L1, INTEL_EPT4, FORMAT_V517, true).ext).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// The design formats: same base, ext in the design's layout.
// ---------------------------------------------------------------------------
describe('computed roles under the alternative ext layouts (reference §15.2, §15.3)', () => {
  it('level-zero (no valid): 64-bit TDP ext 0x28d -> 0x146; paging off -> 0; base unchanged', () => {
    expect(calcTdpRole(LONG64, L1, INTEL_EPT4, FORMAT_NO_VALID)).toEqual({ base: 0x3784, ext: 0x146 });
    expect(calcTdpRole(regs(0, 0, 0), L1, INTEL_EPT4, FORMAT_NO_VALID)).toEqual({ base: 0x784, ext: 0 });
    expect(calcShadowEptRole(0, false, true, 4, FORMAT_NO_VALID)).toEqual({ base: 0x30704, ext: 0x1 });
    expect(calcShadowEptRole(0, false, false, 4, FORMAT_NO_VALID)).toEqual({ base: 0x30704, ext: 0 });
  });

  it('cpuid-stale: bit 0 always clear in computed roles', () => {
    expect(calcTdpRole(LONG64, L1, INTEL_EPT4, FORMAT_CPUID_STALE)).toEqual({ base: 0x3784, ext: 0x28c });
    expect(calcShadowRole(regs(0, 0, 0), L1, FORMAT_CPUID_STALE)).toEqual({ base: 0x783, ext: 0 });
    expect(calcShadowEptRole(0, false, true, 4, FORMAT_CPUID_STALE)).toEqual({ base: 0x30704, ext: 0x2 });
    expect(calcNestedRole(regs(CR0_PG, CR4_PSE, 0), { smm: false, guestMode: true, maxPhyAddr: 46 }, FORMAT_CPUID_STALE).ext).toBe(0x14);
  });
});
