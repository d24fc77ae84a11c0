/**
 * The init paths with their skip-reconfiguration fast path, and the CPUID
 * invalidation (Linux v5.17 arch/x86/kvm/mmu/mmu.c, from `init_kvm_tdp_mmu`
 * to `kvm_mmu_after_set_cpuid`). Every path: compute the new role; if it
 * equals the cached one (whole 64-bit compare) return; otherwise store it and
 * recompute what that path recomputes, leaving every other field as it was.
 */
import {
  calcNestedRole,
  calcRootPageRole,
  calcShadowEptRole,
  calcShadowNptRole,
  calcShadowRole,
  calcTdpRole,
  tdpLevel,
  type Role,
} from '../role/compute.js';
import { shadowXMaskIsZero } from '../role/host.js';
import { CR0, CR4, EFER, roleRegsToRootLevel, type RoleRegs } from '../role/regs.js';
import { rsvdBits, type CpuidModel } from '../cpuid/cpuid.js';
import type { MmuContext } from './context.js';
import { updatePermissionBitmask, updatePkruBitmask } from './permissions.js';
import { resetRsvdsBitsMask, resetRsvdsBitsMaskEpt } from './rsvd.js';
import type { VcpuMmu } from './vcpu-mmu.js';
import { mutant } from '../check/mutants.js';

/** Set only inside forceRebuild: the skip test then always misses. */
let forcing = false;

/** The arguments of guest_mmu's last init (nested entry): what a forced rebuild of it repeats. */
export type GuestMmuInit =
  | { readonly kind: 'ept'; readonly ept: EptInit }
  | { readonly kind: 'npt'; readonly cr0: number; readonly cr4: number; readonly efer: number; readonly nestedCr3: bigint };

/**
 * A forced rebuild of one context now: the init path that owns `ctx`
 * (root_mmu: TDP or shadow by tdp_enabled; nested_mmu; guest_mmu with the
 * arguments of its last init) run with the skip test disabled, on `v` as it
 * is — fields the path does not assign stay as they are. For checkers, on a
 * scratch VcpuMmu (it counts a rebuild and calls __kvm_mmu_new_pgd hooks).
 */
export function forceRebuild(v: VcpuMmu, ctx: MmuContext, guestInit: GuestMmuInit | null): void {
  forcing = true;
  try {
    if (ctx === v.nestedMmu) initNestedMmu(v);
    else if (ctx === v.rootMmu) {
      if (v.host.tdpEnabled) initTdpMmu(v);
      else initShadowMmu(v);
    } else if (guestInit?.kind === 'ept') initShadowEptMmu(v, guestInit.ept);
    else if (guestInit?.kind === 'npt') {
      // nested_svm_init_mmu_context runs before enter_guest_mode: the NPT role sees guest mode clear.
      const guestMode = v.guestMode;
      v.guestMode = false;
      try {
        initShadowNptMmu(v, guestInit.cr0, guestInit.cr4, guestInit.efer, guestInit.nestedCr3);
      } finally {
        v.guestMode = guestMode;
      }
    }
    else throw new RangeError('guest_mmu was never initialised: no arguments to rebuild it with');
  } finally {
    forcing = false;
  }
}

/** The five init paths, by the names the CLI and scenarios use. */
export const INIT_PATHS = ['tdp', 'shadow', 'shadow-npt', 'shadow-ept', 'nested'] as const;
export type InitPath = (typeof INIT_PATHS)[number];

/**
 * Skip test shared by all paths: counts the init; on a miss stores the new
 * role. Returns true when skipped. Callers then tell the checker hook (only
 * when one is attached, so the fast path allocates nothing for it).
 */
function skipIfUnchanged(ctx: MmuContext, role: Role): boolean {
  ctx.stats.inits++;
  if (!forcing && ctx.roleEquals(role.base, role.ext)) {
    ctx.stats.fastPathHits++;
    return true;
  }
  ctx.stats.rebuilds++;
  ctx.storeRole(role.base, role.ext);
  return false;
}

/** The mmu-init span's context names (src/trace MMU_CONTEXT). */
const TRACE_CONTEXT = { root: 'root_mmu', guest: 'guest_mmu', nested: 'nested_mmu' } as const;

/**
 * The end of an init path's mmu-init span (started at the path's entry with
 * `v.hooks.trace?.now()`). Only called when a tracer is attached.
 */
function traceInit(v: VcpuMmu, start: number, ctx: MmuContext, skipped: boolean, role: Role): void {
  v.hooks.trace!.mmuInit(start, TRACE_CONTEXT[ctx.name], !skipped, role.base, role.ext);
}

/** reset_guest_paging_metadata: nothing at all when the role says paging is off. */
function resetGuestPagingMetadata(v: VcpuMmu, ctx: MmuContext): void {
  const reader = 'reset_guest_paging_metadata';
  if (!ctx.ext('cr0_pg', reader)) return;
  // reset_rsvds_bits_mask
  resetRsvdsBitsMask(
    ctx.guestRsvdCheck,
    v.reservedGpaBits,
    ctx.rootLevel,
    ctx.eferNx('reset_rsvds_bits_mask'),
    v.guestCanUseGbpages(),
    ctx.ext('cr4_pse', 'reset_rsvds_bits_mask'),
    v.guestIsAmd(),
  );
  updatePermissionBitmask(ctx, false);
  updatePkruBitmask(ctx);
}

/** reserved_hpa_bits(): rsvd_bits(shadow_phys_bits, 63), precomputed per width. */
const HPA_RSVD: readonly bigint[] = Array.from({ length: 65 }, (_, bits) => rsvdBits(bits, 63));
const reservedHpaBits = (v: VcpuMmu): bigint => HPA_RSVD[v.host.physBits]!;

/** reset_shadow_zero_bits_mask (shadow paging and shadow NPT). SME mask: not modelled (0). */
function resetShadowZeroBitsMask(v: VcpuMmu, ctx: MmuContext): void {
  const usesNx = ctx.eferNx('reset_shadow_zero_bits_mask') || !v.host.tdpEnabled;
  resetRsvdsBitsMask(ctx.shadowZeroCheck, reservedHpaBits(v), ctx.shadowRootLevel, usesNx, v.guestCanUseGbpages(), false, true);
  ctx.shadowZeroCheckSet = true;
}

/** reset_tdp_shadow_zero_bits_mask: legacy format on AMD, EPT format on Intel. */
function resetTdpShadowZeroBitsMask(v: VcpuMmu, ctx: MmuContext): void {
  if (shadowXMaskIsZero(v.host)) {
    resetRsvdsBitsMask(ctx.shadowZeroCheck, reservedHpaBits(v), ctx.shadowRootLevel, false, v.host.gbpages, false, true);
  } else {
    resetRsvdsBitsMaskEpt(ctx.shadowZeroCheck, reservedHpaBits(v), false, v.host.maxHugePageLevel);
  }
  ctx.shadowZeroCheckSet = true;
}

/** init_kvm_tdp_mmu (root_mmu). Returns true when the fast path was taken. */
export function initTdpMmu(v: VcpuMmu): boolean {
  const t = v.hooks.trace ? v.hooks.trace.now() : 0;
  const ctx = v.rootMmu;
  const regs = v.roleRegs();
  const role = calcTdpRole(regs, v, v.host, ctx.format);
  const skipped = skipIfUnchanged(ctx, role);
  if (v.hooks.initDecided) v.hooks.initDecided(v, ctx, skipped, role, (c) => reconfigureTdp(v, c, regs));
  if (!skipped) reconfigureTdp(v, ctx, regs);
  if (v.hooks.trace) traceInit(v, t, ctx, skipped, role);
  return skipped;
}

/** What init_kvm_tdp_mmu assigns after storing a new role. */
function reconfigureTdp(v: VcpuMmu, ctx: MmuContext, regs: RoleRegs): void {
  ctx.pageFault = 'tdp';
  ctx.shadowRootLevel = tdpLevel(v.host, v.maxPhyAddr);
  ctx.directMap = true;
  ctx.rootLevel = roleRegsToRootLevel(regs);
  const reader = 'init_kvm_tdp_mmu';
  if (!ctx.ext('cr0_pg', reader)) ctx.gvaToGpa = 'nonpaging';
  else if (ctx.ext('cr4_pae', reader)) ctx.gvaToGpa = 'paging64';
  else ctx.gvaToGpa = 'paging32';
  resetGuestPagingMetadata(v, ctx);
  resetTdpShadowZeroBitsMask(v, ctx);
}

/** shadow_mmu_init_context (shadow paging and shadow NPT). */
function shadowMmuInitContext(v: VcpuMmu, ctx: MmuContext, regs: RoleRegs, role: Role, traceStart: number): boolean {
  const skipped = skipIfUnchanged(ctx, role);
  if (v.hooks.initDecided) v.hooks.initDecided(v, ctx, skipped, role, (c) => reconfigureShadow(v, c, regs, role));
  if (!skipped) reconfigureShadow(v, ctx, regs, role);
  if (v.hooks.trace) traceInit(v, traceStart, ctx, skipped, role);
  return skipped;
}

/** What shadow_mmu_init_context assigns after storing a new role. */
function reconfigureShadow(v: VcpuMmu, ctx: MmuContext, regs: RoleRegs, role: Role): void {
  const reader = 'shadow_mmu_init_context';
  if (!ctx.ext('cr0_pg', reader)) {
    // nonpaging_init_context
    ctx.pageFault = 'nonpaging';
    ctx.gvaToGpa = 'nonpaging';
    ctx.directMap = true;
  } else if (ctx.ext('cr4_pae', reader)) {
    ctx.pageFault = 'paging64';
    ctx.gvaToGpa = 'paging64';
    ctx.directMap = false;
  } else {
    ctx.pageFault = 'paging32';
    ctx.gvaToGpa = 'paging32';
    ctx.directMap = false;
  }
  ctx.rootLevel = roleRegsToRootLevel(regs);
  resetGuestPagingMetadata(v, ctx);
  ctx.shadowRootLevel = role.base & 0xf;
  resetShadowZeroBitsMask(v, ctx);
}

/** init_kvm_softmmu → kvm_init_shadow_mmu (root_mmu with TDP off). */
export function initShadowMmu(v: VcpuMmu): boolean {
  const t = v.hooks.trace ? v.hooks.trace.now() : 0;
  const regs = v.roleRegs();
  return shadowMmuInitContext(v, v.rootMmu, regs, calcShadowRole(regs, v, v.rootMmu.format), t);
}

/**
 * kvm_init_shadow_npt_mmu (guest_mmu): CR0/CR4/EFER are the caller's (svm
 * nested: CR0.PG only, L1's CR4 and EFER); PKE is masked off here.
 * __kvm_mmu_new_pgd runs first, always, even if the role then matches.
 */
export function initShadowNptMmu(v: VcpuMmu, cr0: number, cr4: number, efer: number, nestedCr3 = 0n): boolean {
  const t = v.hooks.trace ? v.hooks.trace.now() : 0;
  const ctx = v.guestMmu;
  const regs: RoleRegs = { cr0: cr0 >>> 0, cr4: (cr4 & ~CR4.PKE) >>> 0, efer: efer >>> 0 };
  const role = calcShadowNptRole(regs, v, v.host, ctx.format);
  newPgd(v, nestedCr3, role.base);
  return shadowMmuInitContext(v, ctx, regs, role, t);
}

/** Arguments of kvm_init_shadow_ept_mmu that come from L1's VMX state. */
export interface EptInit {
  /** L1's EPT capabilities allow execute-only. */
  readonly execonly: boolean;
  /** EPTP bit 6: accessed/dirty flags enabled. */
  readonly accessedDirty: boolean;
  /** vmx_eptp_page_walk_level(EPTP): 4 or 5. */
  readonly level: 4 | 5;
  /** Largest page L1's EPT caps allow: 1 (4K), 2 (2M), 3 (1G). */
  readonly hugePageLevel: 1 | 2 | 3;
  readonly eptp?: bigint;
}

/** kvm_init_shadow_ept_mmu (guest_mmu). SMM is inherited from root_mmu's stored role. */
export function initShadowEptMmu(v: VcpuMmu, ept: EptInit): boolean {
  const t = v.hooks.trace ? v.hooks.trace.now() : 0;
  const ctx = v.guestMmu;
  const smm = v.rootMmu.smm('kvm_calc_shadow_ept_root_page_role');
  const role = calcShadowEptRole(smm, ept.accessedDirty, ept.execonly, ept.level, ctx.format);
  newPgd(v, ept.eptp ?? 0n, role.base);
  const skipped = skipIfUnchanged(ctx, role);
  if (v.hooks.initDecided) v.hooks.initDecided(v, ctx, skipped, role, (c) => reconfigureShadowEpt(v, c, ept));
  if (!skipped) reconfigureShadowEpt(v, ctx, ept);
  if (v.hooks.trace) traceInit(v, t, ctx, skipped, role);
  return skipped;
}

/** What kvm_init_shadow_ept_mmu assigns after storing a new role. */
function reconfigureShadowEpt(v: VcpuMmu, ctx: MmuContext, ept: EptInit): void {
  ctx.shadowRootLevel = ept.level;
  ctx.eptAd = ept.accessedDirty;
  ctx.pageFault = 'ept';
  ctx.gvaToGpa = 'ept';
  ctx.rootLevel = ept.level;
  ctx.directMap = false;
  updatePermissionBitmask(ctx, true);
  ctx.pkruMask = 0;
  resetRsvdsBitsMaskEpt(ctx.guestRsvdCheck, v.reservedGpaBits, ept.execonly, ept.hugePageLevel);
  // reset_ept_shadow_zero_bits_mask
  resetRsvdsBitsMaskEpt(ctx.shadowZeroCheck, reservedHpaBits(v), ept.execonly, v.host.maxHugePageLevel);
  ctx.shadowZeroCheckSet = true;
}

/**
 * init_kvm_nested_mmu (nested_mmu, over L2's registers). The walker is chosen
 * from the live vCPU registers, not the role. shadow_root_level, direct_map,
 * shadow_zero_check, page_fault are never assigned here.
 */
export function initNestedMmu(v: VcpuMmu): boolean {
  const t = v.hooks.trace ? v.hooks.trace.now() : 0;
  const ctx = v.nestedMmu;
  const regs = v.roleRegs();
  const role = calcNestedRole(regs, v, ctx.format);
  const skipped = skipIfUnchanged(ctx, role);
  if (v.hooks.initDecided) v.hooks.initDecided(v, ctx, skipped, role, (c) => reconfigureNested(v, c, role));
  if (!skipped) reconfigureNested(v, ctx, role);
  if (v.hooks.trace) traceInit(v, t, ctx, skipped, role);
  return skipped;
}

/** What init_kvm_nested_mmu assigns after storing a new role. */
function reconfigureNested(v: VcpuMmu, ctx: MmuContext, role: Role): void {
  ctx.rootLevel = role.base & 0xf;
  if (!(v.cr0 & CR0.PG)) ctx.gvaToGpa = 'nonpaging';
  else if (v.efer & EFER.LMA) ctx.gvaToGpa = 'paging64';
  else if (v.cr4 & CR4.PAE) ctx.gvaToGpa = 'paging64';
  else ctx.gvaToGpa = 'paging32';
  resetGuestPagingMetadata(v, ctx);
}

/** kvm_init_mmu: nested walk → nested_mmu; else TDP or shadow by tdp_enabled. */
export function initMmu(v: VcpuMmu): { ctx: MmuContext; skipped: boolean } {
  if (v.isNested()) return { ctx: v.nestedMmu, skipped: initNestedMmu(v) };
  if (v.host.tdpEnabled) return { ctx: v.rootMmu, skipped: initTdpMmu(v) };
  return { ctx: v.rootMmu, skipped: initShadowMmu(v) };
}

/** kvm_mmu_unload: free the roots of root_mmu and guest_mmu (shadow module hook). */
export function mmuUnload(v: VcpuMmu): void {
  v.unloads++;
  v.hooks.unload?.(v);
}

/**
 * kvm_mmu_new_pgd (CR3 load, nested CR3 load without nested TDP): look up
 * cached roots with the base-only role of kvm_mmu_calc_root_page_role.
 */
export function kvmMmuNewPgd(v: VcpuMmu, pgd: bigint): void {
  newPgd(v, pgd, calcRootPageRole(v.roleRegs(), v, v.host));
}

/** __kvm_mmu_new_pgd: root-cache switch, delegated to the shadow module. */
function newPgd(v: VcpuMmu, pgd: bigint, role: number): void {
  v.lastNewPgdRole = role;
  v.hooks.newPgd?.(v, pgd, role);
}

/** kvm_mmu_reset_context: unload, then kvm_init_mmu. */
export function resetContext(v: VcpuMmu): { ctx: MmuContext; skipped: boolean } {
  mmuUnload(v);
  return initMmu(v);
}

/**
 * kvm_mmu_after_set_cpuid: invalidate all three cached roles as the VM's
 * design prescribes, then reset (which re-initialises only root_mmu, or
 * nested_mmu while L2 is walked).
 */
export function afterSetCpuid(v: VcpuMmu): { ctx: MmuContext; skipped: boolean } {
  for (const ctx of [v.rootMmu, v.guestMmu, v.nestedMmu]) {
    v.hooks.beforeInvalidate?.(v, ctx);
    if (!mutant['cpuid-no-invalidate']) v.strategy.invalidate(ctx);
  }
  return resetContext(v);
}

/** kvm_vcpu_after_set_cpuid (MMU part): apply the model, then the MMU hook. */
export function setCpuid(v: VcpuMmu, cpuid: CpuidModel): { ctx: MmuContext; skipped: boolean } {
  v.applyCpuid(cpuid);
  return afterSetCpuid(v);
}

/** Write the registers the role reads (vCPU side; validity checks are the vCPU core's). */
export function setRoleRegisters(v: VcpuMmu, cr0: number, cr4: number, efer: number, smm: boolean, guestMode: boolean): void {
  v.cr0 = cr0 >>> 0;
  v.cr4 = cr4 >>> 0;
  v.efer = efer >>> 0;
  v.smm = smm;
  v.guestMode = guestMode;
}

