/**
 * Role computation per init path, pure: Linux v5.17 arch/x86/kvm/mmu/mmu.c,
 * the `kvm_calc_*_role*` functions. Inputs are exactly what those functions
 * read: the register snapshot, the vCPU's SMM and guest-mode flags, guest
 * MAXPHYADDR (through kvm_mmu_get_tdp_level) and the host settings. The ext
 * word is produced in the layout of the given `RoleFormat`, which is how the
 * five invalidation designs differ in what a computed role looks like.
 */
import { EXT_ROLE_V517, FORMAT_V517, type RoleFormat } from './ext-role.js';
import type { HostSettings } from './host.js';
import { ACC, LEVEL, PAGE_ROLE, PR } from './page-role.js';
import { CR0, CR4, EFER, roleRegsToRootLevel, type RoleRegs } from './regs.js';

/** `union kvm_mmu_role`: base (page role) in the low half, ext in the high half. */
export interface Role {
  readonly base: number;
  readonly ext: number;
}

/** The vCPU state role computation reads besides the registers. */
export interface RoleVcpuState {
  /** is_smm(vcpu): HF_SMM_MASK. */
  readonly smm: boolean;
  /** is_guest_mode(vcpu): HF_GUEST_MASK. */
  readonly guestMode: boolean;
  /** cpuid_maxphyaddr(vcpu): guest MAXPHYADDR. */
  readonly maxPhyAddr: number;
}

/** The 64-bit role value `as_u64` as a bigint (for display and tests). */
export const roleAsU64 = (r: Role): bigint => (BigInt(r.ext >>> 0) << 32n) | BigInt(r.base >>> 0);

export const rolesEqual = (a: Role, b: Role): boolean => a.base === b.base && a.ext === b.ext;

// Ext field masks in v5.17 positions; computation builds these, then the format encodes.
const X = {
  cr0_pg: EXT_ROLE_V517.maskOf('cr0_pg'),
  cr4_pae: EXT_ROLE_V517.maskOf('cr4_pae'),
  cr4_pse: EXT_ROLE_V517.maskOf('cr4_pse'),
  cr4_pke: EXT_ROLE_V517.maskOf('cr4_pke'),
  cr4_smap: EXT_ROLE_V517.maskOf('cr4_smap'),
  cr4_smep: EXT_ROLE_V517.maskOf('cr4_smep'),
  cr4_la57: EXT_ROLE_V517.maskOf('cr4_la57'),
  efer_lma: EXT_ROLE_V517.maskOf('efer_lma'),
  execonly: EXT_ROLE_V517.maskOf('execonly'),
};

/** kvm_calc_mmu_role_ext: ext fields in v5.17 positions, marker bit left clear. */
export function calcExtFields(regs: RoleRegs): number {
  if ((regs.cr0 & CR0.PG) === 0) return 0;
  const lma = (regs.efer & EFER.LMA) !== 0;
  let ext = X.cr0_pg;
  if (regs.cr4 & CR4.PAE) ext |= X.cr4_pae;
  if (regs.cr4 & CR4.SMEP) ext |= X.cr4_smep;
  if (regs.cr4 & CR4.SMAP) ext |= X.cr4_smap;
  if (regs.cr4 & CR4.PSE) ext |= X.cr4_pse;
  // PKEY and LA57 are active iff long mode is active.
  if (lma && regs.cr4 & CR4.PKE) ext |= X.cr4_pke;
  if (lma && regs.cr4 & CR4.LA57) ext |= X.cr4_la57;
  if (lma) ext |= X.efer_lma;
  return ext >>> 0;
}

/** kvm_calc_mmu_role_common: the base part shared by every register-driven path. */
function commonBase(regs: RoleRegs, vcpu: RoleVcpuState): number {
  let base = ACC.ALL << PR.ACCESS_SHIFT;
  if (regs.cr0 & CR0.PG) {
    if (regs.efer & EFER.NX) base |= PR.EFER_NX;
    if (regs.cr0 & CR0.WP) base |= PR.CR0_WP;
  }
  if (vcpu.smm) base |= 1 << PR.SMM_SHIFT;
  if (vcpu.guestMode) base |= PR.GUEST_MODE;
  return base;
}

const withLevel = (base: number, level: number): number => (base & ~PR.LEVEL_MASK) | level;

/**
 * kvm_calc_shadow_root_page_role_common: common + smep/smap_andnot_wp +
 * has_4_byte_gpte. The andnot_wp bits read the *ext* fields, so with
 * `baseOnly` (ext never filled) they are always 0 — the kernel's quirk.
 */
function shadowCommonBase(regs: RoleRegs, vcpu: RoleVcpuState, extFields: number): number {
  let base = commonBase(regs, vcpu);
  const wp = (regs.cr0 & CR0.WP) !== 0;
  if (extFields & X.cr4_smep && !wp) base |= PR.SMEP_ANDNOT_WP;
  if (extFields & X.cr4_smap && !wp) base |= PR.SMAP_ANDNOT_WP;
  if (regs.cr0 & CR0.PG && !(regs.cr4 & CR4.PAE)) base |= PR.HAS_4_BYTE_GPTE;
  return base;
}

/** kvm_mmu_get_tdp_level: forced level, else 4 when 5-level TDP is not needed. */
export function tdpLevel(host: HostSettings, maxPhyAddr: number): number {
  if (host.tdpForcedRootLevel) return host.tdpForcedRootLevel;
  if (host.maxTdpLevel === 5 && maxPhyAddr <= 48) return 4;
  return host.maxTdpLevel;
}

/** kvm_calc_tdp_mmu_root_page_role (root_mmu when TDP is on). */
export function calcTdpRole(
  regs: RoleRegs,
  vcpu: RoleVcpuState,
  host: HostSettings,
  format: RoleFormat = FORMAT_V517,
  baseOnly = false,
): Role {
  let base = commonBase(regs, vcpu);
  if (host.adDisabled) base |= PR.AD_DISABLED;
  base = withLevel(base, tdpLevel(host, vcpu.maxPhyAddr));
  base |= PR.DIRECT;
  base &= ~PR.HAS_4_BYTE_GPTE;
  return { base: base >>> 0, ext: baseOnly ? 0 : format.encodeExt(calcExtFields(regs)) };
}

/** kvm_calc_shadow_mmu_root_page_role (root_mmu when TDP is off). */
export function calcShadowRole(regs: RoleRegs, vcpu: RoleVcpuState, format: RoleFormat = FORMAT_V517, baseOnly = false): Role {
  const extFields = baseOnly ? 0 : calcExtFields(regs);
  let base = shadowCommonBase(regs, vcpu, extFields);
  if ((regs.cr0 & CR0.PG) === 0) base |= PR.DIRECT;
  // 32-bit and real-mode guests are shadowed with PAE tables.
  const level = !(regs.efer & EFER.LMA) ? LEVEL.PT32E_ROOT : regs.cr4 & CR4.LA57 ? LEVEL.PT64_ROOT_5 : LEVEL.PT64_ROOT_4;
  base = withLevel(base, level);
  return { base: base >>> 0, ext: baseOnly ? 0 : format.encodeExt(extFields) };
}

/**
 * kvm_calc_shadow_npt_root_page_role (guest_mmu, AMD nested). `regs` are the
 * values kvm_init_shadow_npt_mmu builds: the caller's CR0, CR4 without PKE,
 * EFER; smm and guest_mode come from the vCPU.
 */
export function calcShadowNptRole(regs: RoleRegs, vcpu: RoleVcpuState, host: HostSettings, format: RoleFormat = FORMAT_V517): Role {
  const extFields = calcExtFields(regs);
  let base = shadowCommonBase(regs, vcpu, extFields);
  base &= ~PR.DIRECT;
  base = withLevel(base, tdpLevel(host, vcpu.maxPhyAddr));
  return { base: base >>> 0, ext: format.encodeExt(extFields) };
}

/**
 * kvm_calc_shadow_ept_root_page_role (guest_mmu, Intel nested). Built from
 * scratch: ignores CR0/CR4/EFER and the vCPU's own SMM flag; `rootMmuSmm` is
 * the smm field of root_mmu's *stored* role, as the kernel reads it.
 */
export function calcShadowEptRole(
  rootMmuSmm: number,
  accessedDirty: boolean,
  execonly: boolean,
  level: number,
  format: RoleFormat = FORMAT_V517,
): Role {
  let base = (rootMmuSmm & 0xff) << PR.SMM_SHIFT;
  base = withLevel(base, level);
  if (!accessedDirty) base |= PR.AD_DISABLED;
  base |= PR.GUEST_MODE;
  base |= ACC.ALL << PR.ACCESS_SHIFT;
  return { base: base >>> 0, ext: format.encodeExt(execonly ? X.execonly : 0) };
}

/** kvm_calc_nested_mmu_role (nested_mmu): over L2's registers. */
export function calcNestedRole(regs: RoleRegs, vcpu: RoleVcpuState, format: RoleFormat = FORMAT_V517): Role {
  const extFields = calcExtFields(regs);
  let base = shadowCommonBase(regs, vcpu, extFields);
  // "direct" is deliberately meaningless for the walk-only nested MMU.
  base |= PR.DIRECT;
  base = withLevel(base, roleRegsToRootLevel(regs));
  return { base: base >>> 0, ext: format.encodeExt(extFields) };
}

/**
 * kvm_mmu_calc_root_page_role: the base-only role `kvm_mmu_new_pgd` uses to
 * look up cached roots; TDP or shadow by `tdp_enabled`.
 */
export function calcRootPageRole(regs: RoleRegs, vcpu: RoleVcpuState, host: HostSettings): number {
  return host.tdpEnabled ? calcTdpRole(regs, vcpu, host, FORMAT_V517, true).base : calcShadowRole(regs, vcpu, FORMAT_V517, true).base;
}

/** Sanity: the table positions this module relies on (checked at load). */
if (PAGE_ROLE.maskOf('level') !== 0xf || EXT_ROLE_V517.maskOf('valid') !== 1) {
  throw new Error('role layout does not match Linux v5.17');
}
