/**
 * The permission and PKRU bitmasks (Linux v5.17 mmu.c
 * `update_permission_bitmask`, `update_pkru_bitmask`). Both read the MMU's
 * *role* through the context's accessors, never the registers.
 */
import { PFERR } from '../paging/format.js';
import type { MmuContext } from './context.js';

/** Page-fault error code bits (kvm_host.h PFERR_*), declared once in src/paging. */
export { PFERR };

/** BYTE_MASK(access): bit n set iff ACC value n has any bit of `access`. */
const byteMask = (access: number): number => {
  let m = 0;
  for (let n = 1; n < 8; n++) if (n & access) m |= 1 << n;
  return m;
};
const X = byteMask(1);
const W = byteMask(2);
const U = byteMask(4);

/** Bitmask of faulting ACC values for each error-code pattern (pfec >> 1). */
export function computePermissions(
  out: Uint8Array,
  ept: boolean,
  cr4Smep: boolean,
  cr4Smap: boolean,
  cr0Wp: boolean,
  eferNx: boolean,
): void {
  for (let byte = 0; byte < 16; byte++) {
    const pfec = byte << 1;
    let wf = pfec & PFERR.WRITE ? ~W & 0xff : 0;
    const uf = pfec & PFERR.USER ? ~U & 0xff : 0;
    let ff = pfec & PFERR.FETCH ? ~X & 0xff : 0;
    let smepf = 0;
    let smapf = 0;
    if (!ept) {
      // Faults from kernel mode accesses to user pages.
      const kf = pfec & PFERR.USER ? 0 : U;
      if (!eferNx) ff = 0;
      // Allow supervisor writes if !CR0.WP.
      if (!cr0Wp) wf = pfec & PFERR.USER ? wf : 0;
      if (cr4Smep) smepf = pfec & PFERR.FETCH ? kf : 0;
      // The RSVD slot means "not subject to SMAP" (CPL < 3 with EFLAGS.AC).
      if (cr4Smap) smapf = pfec & (PFERR.RSVD | PFERR.FETCH) ? 0 : kf;
    }
    out[byte] = ff | uf | wf | smepf | smapf;
  }
}

/** update_permission_bitmask(mmu, ept). */
export function updatePermissionBitmask(mmu: MmuContext, ept: boolean): void {
  const reader = 'update_permission_bitmask';
  computePermissions(
    mmu.permissions,
    ept,
    mmu.ext('cr4_smep', reader),
    mmu.ext('cr4_smap', reader),
    mmu.cr0Wp(reader),
    mmu.eferNx(reader),
  );
}

/** The PKRU mask for the given CR0.WP, when CR4.PKE is active. */
export function computePkruMask(wp: boolean): number {
  let mask = 0;
  for (let bit = 0; bit < 16; bit++) {
    const pfec = bit << 1;
    const ff = (pfec & PFERR.FETCH) !== 0;
    const uf = (pfec & PFERR.USER) !== 0;
    const wf = (pfec & PFERR.WRITE) !== 0;
    // PFEC.RSVD is replaced by ACC_USER_MASK.
    const pteUser = (pfec & PFERR.RSVD) !== 0;
    const checkPkey = !ff && pteUser;
    const checkWrite = checkPkey && wf && (uf || wp);
    const pkeyBits = (checkPkey ? 1 : 0) | ((checkWrite ? 1 : 0) << 1);
    mask |= (pkeyBits & 3) << pfec;
  }
  return mask >>> 0;
}

/** update_pkru_bitmask(mmu). */
export function updatePkruBitmask(mmu: MmuContext): void {
  mmu.pkruMask = 0;
  if (!mmu.ext('cr4_pke', 'update_pkru_bitmask')) return;
  mmu.pkruMask = computePkruMask(mmu.cr0Wp('update_pkru_bitmask'));
}
