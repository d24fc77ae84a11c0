/**
 * The MMU side of nested VM entry and exit (Linux v5.17 svm/nested.c,
 * vmx/nested.c): which contexts become current and which init runs —
 * kvm_init_mmu without an unload, so the skip path applies. Register writes
 * and their resets are in src/vcpu (cr-checks.ts, exits.ts).
 */
import { CR0 } from '../role/regs.js';
import type { MmuContext } from './context.js';
import { initMmu, initShadowEptMmu, initShadowNptMmu, kvmMmuNewPgd, type EptInit } from './init.js';
import type { VcpuMmu } from './vcpu-mmu.js';

export interface Regs3 {
  cr0: number;
  cr4: number;
  efer: number;
}

export interface InitOutcome {
  ctx: MmuContext;
  skipped: boolean;
}

/** Load L2's (or L1's) registers with the vendor setters: no MMU reset of their own. */
function loadRegs(v: VcpuMmu, r: Regs3): void {
  v.cr0 = r.cr0 >>> 0;
  v.cr4 = r.cr4 >>> 0;
  v.efer = r.efer >>> 0;
}

/**
 * enter_svm_guest_mode with nested NPT: nested_vmcb02_prepare_control runs
 * nested_svm_init_mmu_context (kvm_init_shadow_npt_mmu with CR0.PG and L1's
 * CR4/EFER from vmcb01) *before* enter_guest_mode, so the NPT role sees the
 * guest-mode flag still clear; then L2's registers are loaded and
 * nested_svm_load_cr3 calls kvm_init_mmu (nested_mmu).
 */
export function enterGuestNpt(v: VcpuMmu, l1: Regs3, l2: Regs3, nestedCr3 = 0n): { guest: InitOutcome; walk: InitOutcome } {
  v.mmu = v.guestMmu;
  const skipped = initShadowNptMmu(v, CR0.PG, l1.cr4, l1.efer, nestedCr3);
  v.walkMmu = v.nestedMmu;
  v.guestMode = true;
  loadRegs(v, l2);
  return { guest: { ctx: v.guestMmu, skipped }, walk: initMmu(v) };
}

/**
 * nested_vmx_enter_non_root_mode with nested EPT: enter_guest_mode, then
 * prepare_vmcs02 → nested_ept_init_mmu_context (kvm_init_shadow_ept_mmu),
 * L2's registers, nested_vmx_load_cr3 → kvm_init_mmu (nested_mmu).
 */
export function enterGuestEpt(v: VcpuMmu, ept: EptInit, l2: Regs3): { guest: InitOutcome; walk: InitOutcome } {
  v.guestMode = true;
  v.mmu = v.guestMmu;
  const skipped = initShadowEptMmu(v, ept);
  v.walkMmu = v.nestedMmu;
  loadRegs(v, l2);
  return { guest: { ctx: v.guestMmu, skipped }, walk: initMmu(v) };
}

/**
 * Nested entry without nested TDP (L1 shadows L2 itself): guest mode on, L2's
 * registers, then nested_*_load_cr3 → kvm_mmu_new_pgd(L2's CR3) when `cr3`
 * is given (the shadow MMU switches root there) + kvm_init_mmu on root_mmu.
 */
export function enterGuestShadow(v: VcpuMmu, l2: Regs3, cr3?: bigint): InitOutcome {
  v.guestMode = true;
  loadRegs(v, l2);
  if (cr3 !== undefined) kvmMmuNewPgd(v, cr3);
  return initMmu(v);
}

/**
 * Nested VM-exit (nested_svm_vmexit / load_vmcs12_host_state): leave guest
 * mode, L1's registers, point both MMU pointers at root_mmu, then
 * nested_*_load_cr3(L1's CR3, nested TDP = false) → kvm_mmu_new_pgd when
 * `cr3` is given, and kvm_init_mmu (root_mmu; no unload, skip path applies).
 */
export function leaveGuest(v: VcpuMmu, l1: Regs3, cr3?: bigint): InitOutcome {
  v.guestMode = false;
  loadRegs(v, l1);
  v.useContexts(false);
  if (cr3 !== undefined) kvmMmuNewPgd(v, cr3);
  return initMmu(v);
}
