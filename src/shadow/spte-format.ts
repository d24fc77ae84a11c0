/**
 * The SPTE format: the module-wide shadow_* masks and the pure functions that
 * compute an SPTE value (Linux v5.17 spte.h, spte.c: make_spte,
 * make_nonleaf_spte, kvm_mmu_reset_all_pte_masks, kvm_mmu_set_ept_masks).
 * Nothing here touches shared memory; spte.ts is the only writer.
 *
 * Addresses: a leaf maps a guest frame, and host memory is guest memory, so
 * the pfn of a leaf is the gfn itself. A non-leaf SPTE points to a shadow
 * page of the arena; its "physical address" is (SHADOW_PFN_BASE + page) <<
 * 12, above any guest frame, so the two can never be confused.
 */
import type { HostSettings } from '../role/host.js';
import { ACC, PR } from '../role/page-role.js';

/** SPTE_MMU_PRESENT_MASK: bit 11, ignored by hardware in every SPTE flavour. */
export const SPTE_MMU_PRESENT = 1n << 11n;
/** PT_WRITABLE_MASK (also VMX_EPT_WRITABLE_MASK). */
export const SPTE_WRITABLE = 1n << 1n;
/** PT_PAGE_SIZE_MASK. */
export const SPTE_PAGE_SIZE = 1n << 7n;
/** SPTE_TDP_AD_DISABLED_MASK (bits 53:52 = 1). */
export const SPTE_TDP_AD_DISABLED = 1n << 52n;
/** PT64_BASE_ADDR_MASK: bits 51:12. */
export const SPTE_ADDR_MASK = ((1n << 52n) - 1n) & ~0xfffn;
/** First pfn of the shadow-page address range (physical 2^48). */
export const SHADOW_PFN_BASE = 1 << 36;
const SHADOW_PFN_BASE_N = BigInt(SHADOW_PFN_BASE);

/** The shadow_* masks for one host (they are module-wide in KVM: one format per VM here). */
export interface SpteMasks {
  readonly format: 'legacy' | 'ept';
  /** shadow_present_mask: P for legacy, EPT R unless the CPU has execute-only EPT. */
  readonly present: bigint;
  /** shadow_user_mask: U for legacy, EPT R (ACC_USER means "readable" with EPT). */
  readonly user: bigint;
  /** shadow_x_mask: EPT X; 0 for legacy. */
  readonly x: bigint;
  /** shadow_nx_mask: NX (bit 63) for legacy; 0 for EPT. */
  readonly nx: bigint;
  readonly accessed: bigint;
  readonly dirty: bigint;
  /** shadow_host_writable_mask / shadow_mmu_writable_mask. */
  readonly hostWritable: bigint;
  readonly mmuWritable: bigint;
  /** kvm_x86_get_mt_mask for RAM when tdp_enabled: EPT write-back + ignore PAT; 0 for NPT and shadow paging. */
  readonly mt: bigint;
  // The same, as 32-bit halves for the lockless walk (low word unless named hi).
  readonly userLo: number;
  readonly xLo: number;
  readonly nxHi: number;
}

/** VMX EPT bits (asm/vmx.h) used by kvm_mmu_set_ept_masks. */
const EPT_R = 1n;
const EPT_X = 4n;
const EPT_A = 1n << 8n;
const EPT_D = 1n << 9n;
const EPT_MT_WB_IPAT = (6n << 3n) | (1n << 6n);

/**
 * kvm_mmu_set_ept_masks(has_ad_bits = !host.adDisabled, has_exec_only =
 * true) on an Intel host with TDP, kvm_mmu_reset_all_pte_masks otherwise
 * (AMD NPT, or shadow paging on either vendor; the SME mask is 0).
 */
export function spteMasksFor(host: HostSettings): SpteMasks {
  if (host.tdpEnabled && host.vendor === 'intel') {
    const ad = !host.adDisabled;
    return withHalves({
      format: 'ept',
      present: 0n,
      user: EPT_R,
      x: EPT_X,
      nx: 0n,
      accessed: ad ? EPT_A : 0n,
      dirty: ad ? EPT_D : 0n,
      hostWritable: 1n << 57n,
      mmuWritable: 1n << 58n,
      mt: EPT_MT_WB_IPAT,
    });
  }
  return withHalves({
    format: 'legacy',
    present: 1n,
    user: 1n << 2n,
    x: 0n,
    nx: 1n << 63n,
    accessed: 1n << 5n,
    dirty: 1n << 6n,
    hostWritable: 1n << 9n,
    mmuWritable: 1n << 10n,
    mt: 0n,
  });
}

function withHalves(m: Omit<SpteMasks, 'userLo' | 'xLo' | 'nxHi'>): SpteMasks {
  return { ...m, userLo: Number(m.user), xLo: Number(m.x), nxHi: Number(m.nx >> 32n) };
}

/** is_shadow_present_pte. */
export const isShadowPresent = (spte: bigint): boolean => (spte & SPTE_MMU_PRESENT) !== 0n;
/** is_last_spte: level 1, or a large page. */
export const isLastSpte = (spte: bigint, level: number): boolean => level === 1 || (spte & SPTE_PAGE_SIZE) !== 0n;
/** is_large_pte. */
export const isLargePte = (spte: bigint): boolean => (spte & SPTE_PAGE_SIZE) !== 0n;
/** is_writable_pte. */
export const isWritable = (spte: bigint): boolean => (spte & SPTE_WRITABLE) !== 0n;
/** spte_to_pfn: for a leaf, the gfn it maps. */
export const sptePfn = (spte: bigint): number => Number((spte & SPTE_ADDR_MASK) >> 12n);
/** The shadow page a non-leaf SPTE points to (to_shadow_page). */
export const sptePage = (spte: bigint): number => Number((spte & SPTE_ADDR_MASK) >> 12n) - SHADOW_PFN_BASE;
/** The "physical address" of a shadow page (__pa(sp->spt)). */
export const pageAddress = (page: number): bigint => (SHADOW_PFN_BASE_N + BigInt(page)) << 12n;

/** spte_shadow_accessed_mask / spte_shadow_dirty_mask: none when the role disables A/D. */
const adMask = (m: SpteMasks, adDisabled: boolean, mask: bigint): bigint => (adDisabled ? 0n : mask);

/** make_nonleaf_spte: a link to `child`, every permission granted (leaves decide). */
export function makeNonleafSpte(m: SpteMasks, child: number, adDisabled: boolean): bigint {
  let spte = SPTE_MMU_PRESENT | pageAddress(child) | m.present | SPTE_WRITABLE | m.user | m.x;
  spte |= adDisabled ? SPTE_TDP_AD_DISABLED : m.accessed;
  return spte;
}

export interface LeafRequest {
  /** sp->role.word of the page holding the SPTE. */
  readonly role: number;
  /** ACC_* bits the SPTE may grant. */
  readonly access: number;
  readonly gfn: number;
  /** The SPTE being replaced (0 if none). */
  readonly old: bigint;
  /** The gfn is write-tracked (mmu_try_to_unsync_pages returned -EPERM). */
  readonly tracked: boolean;
  /** tdp_enabled: add the memory type. */
  readonly tdp: boolean;
}

/**
 * make_spte for a 4 KiB leaf, not prefetched, host-writable (every memslot
 * here is RAM, writable). Returns the SPTE and whether it had to be
 * write-protected because its gfn is write-tracked. The unsync path of
 * mmu_try_to_unsync_pages is not modelled: every shadowed gfn is tracked
 * (see page-cache.ts), so a tracked gfn always forces write protection.
 */
export function makeSpte(m: SpteMasks, r: LeafRequest): { spte: bigint; wrprot: boolean } {
  const adDisabled = (r.role & PR.AD_DISABLED) !== 0;
  let spte = SPTE_MMU_PRESENT;
  if (adDisabled) spte |= SPTE_TDP_AD_DISABLED;
  spte |= m.present;
  spte |= adMask(m, adDisabled, m.accessed);
  let access = r.access;
  spte |= access & ACC.EXEC ? m.x : m.nx;
  if (access & ACC.USER) spte |= m.user;
  if (r.tdp) spte |= m.mt;
  spte |= m.hostWritable;
  spte |= BigInt(r.gfn) << 12n;
  let wrprot = false;
  if (access & ACC.WRITE) {
    spte |= SPTE_WRITABLE | m.mmuWritable;
    // An SPTE that was writable stays so without a new check (and, as in KVM, without D).
    if (isWritable(r.old)) return { spte, wrprot };
    if (r.tracked) {
      wrprot = true;
      access &= ~ACC.WRITE;
      spte &= ~(SPTE_WRITABLE | m.mmuWritable);
    }
  }
  if (access & ACC.WRITE) spte |= adMask(m, adDisabled, m.dirty);
  return { spte, wrprot };
}

/**
 * The ACC_* bits a present leaf grants, as hardware reads them from the two
 * halves: W, "user" (legacy U / EPT R), exec (legacy !NX / EPT X).
 */
export function leafAccess(m: SpteMasks, lo: number, hi: number): number {
  const w = lo & ACC.WRITE;
  const u = lo & m.userLo ? ACC.USER : 0;
  const x = m.format === 'ept' ? (lo & m.xLo ? ACC.EXEC : 0) : hi & m.nxHi ? 0 : ACC.EXEC;
  return w | u | x;
}
