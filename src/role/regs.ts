/**
 * Architectural register bits the MMU role machinery reads (Intel SDM vol. 3,
 * and arch/x86/kvm/mmu.h `KVM_MMU_CR0_ROLE_BITS` / `KVM_MMU_CR4_ROLE_BITS`).
 * Every role-relevant bit is below bit 32, so role code works on the low
 * 32 bits of each register as a JS number.
 */

export const CR0 = {
  PE: 1 << 0,
  MP: 1 << 1,
  EM: 1 << 2,
  TS: 1 << 3,
  ET: 1 << 4,
  NE: 1 << 5,
  WP: 1 << 16,
  AM: 1 << 18,
  NW: 1 << 29,
  CD: 1 << 30,
  PG: 1 << 31,
} as const;

export const CR4 = {
  VME: 1 << 0,
  PVI: 1 << 1,
  TSD: 1 << 2,
  DE: 1 << 3,
  PSE: 1 << 4,
  PAE: 1 << 5,
  MCE: 1 << 6,
  PGE: 1 << 7,
  PCE: 1 << 8,
  OSFXSR: 1 << 9,
  OSXMMEXCPT: 1 << 10,
  UMIP: 1 << 11,
  LA57: 1 << 12,
  VMXE: 1 << 13,
  SMXE: 1 << 14,
  FSGSBASE: 1 << 16,
  PCIDE: 1 << 17,
  OSXSAVE: 1 << 18,
  SMEP: 1 << 20,
  SMAP: 1 << 21,
  PKE: 1 << 22,
} as const;

export const EFER = {
  SCE: 1 << 0,
  LME: 1 << 8,
  LMA: 1 << 10,
  NX: 1 << 11,
  SVME: 1 << 12,
  LMSLE: 1 << 13,
  FFXSR: 1 << 14,
  TCE: 1 << 15,
} as const;

/** KVM_MMU_CR0_ROLE_BITS (mmu.h). */
export const CR0_ROLE_BITS = (CR0.PG | CR0.WP) >>> 0;
/** KVM_MMU_CR4_ROLE_BITS (mmu.h). */
export const CR4_ROLE_BITS = (CR4.PSE | CR4.PAE | CR4.LA57 | CR4.SMEP | CR4.SMAP | CR4.PKE) >>> 0;

/**
 * `struct kvm_mmu_role_regs` (mmu.c): the register snapshot a role is computed
 * from. Low 32 bits of each register.
 */
export interface RoleRegs {
  readonly cr0: number;
  readonly cr4: number;
  readonly efer: number;
}

/** vcpu_to_role_regs (mmu.c): CR0 and CR4 masked to their role bits, EFER whole. */
export const toRoleRegs = (cr0: number, cr4: number, efer: number): RoleRegs => ({
  cr0: (cr0 & CR0_ROLE_BITS) >>> 0,
  cr4: (cr4 & CR4_ROLE_BITS) >>> 0,
  efer: efer >>> 0,
});

/** role_regs_to_root_level (mmu.c): guest paging depth, 0 when paging is off. */
export function roleRegsToRootLevel(regs: RoleRegs): number {
  if ((regs.cr0 & CR0.PG) === 0) return 0;
  if (regs.efer & EFER.LMA) return regs.cr4 & CR4.LA57 ? 5 : 4;
  return regs.cr4 & CR4.PAE ? 3 : 2;
}
