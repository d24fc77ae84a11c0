/**
 * What the guest walker reads from an MMU context (`struct kvm_mmu`, Linux
 * v5.17): the walker slot, the root level, `ept_ad`, the guest reserved-bit
 * masks, the permission and PKRU bitmasks, and the role bits it reads through
 * the role accessors. A structural interface, so src/mmu's MmuContext
 * satisfies it unchanged and src/paging does not import src/mmu.
 *
 * The walker never looks at CR0/CR4/EFER: a stale context gives a stale
 * answer, as in KVM.
 */
import type { ExtField } from '../role/ext-role.js';

/** The `gva_to_gpa` slot: tmpl.h's three instances plus nonpaging_gva_to_gpa. */
export type GuestWalkerKind = 'nonpaging' | 'paging32' | 'paging64' | 'ept';

/** `struct rsvd_bits_validate`, read side. */
export interface RsvdCheckView {
  /** rsvd_bits_mask[big][levelIndex]; big = bit 7 of the entry, levelIndex = level - 1. */
  get(big: 0 | 1, levelIndex: number): bigint;
  /**
   * The same ten masks as one array, rsvd_bits_mask[big][levelIndex] at
   * big * 5 + levelIndex (the walker reads it through a 32-bit view, which
   * avoids allocating a BigInt per check). Owner-only, not shared memory.
   */
  readonly mask: BigUint64Array;
  readonly badMtXwr: bigint;
}

export interface WalkMmu {
  /** mmu->gva_to_gpa; null on a context no init path has touched. */
  readonly gvaToGpa: GuestWalkerKind | null;
  /** mmu->root_level. */
  readonly rootLevel: number;
  /** mmu->ept_ad (PT_HAVE_ACCESSED_DIRTY for the EPT walker). */
  readonly eptAd: boolean;
  /** mmu->guest_rsvd_check. */
  readonly guestRsvdCheck: RsvdCheckView;
  /** mmu->permissions[16]. */
  readonly permissions: Uint8Array;
  /** mmu->pkru_mask. */
  readonly pkruMask: number;
  /** is_cr4_<x>(mmu) / mmu_role.ext.<x>: reads the role. `reader` names the kernel function. */
  ext(field: ExtField, reader: string): boolean;
  /** is_efer_nx(mmu): reads the role. */
  eferNx(reader: string): boolean;
}
