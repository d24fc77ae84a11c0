/**
 * The per-entry and per-access checks of the guest walker, each a pure
 * function of the context and the entry (Linux v5.17 paging_tmpl.h,
 * spte.h, mmu.h). They read the context's role through its accessors,
 * never the registers.
 */
import { ACC, EPTE, PFERR, PTE, PTE_HI, type WalkerGeometry } from './format.js';
import type { WalkMmu } from './mmu-view.js';

/**
 * The access a walk is made for, and the vCPU state permission_fault reads.
 * One object per caller, reused across walks.
 */
export interface WalkEnv {
  /** The access as an error code: PFERR.WRITE | PFERR.USER | PFERR.FETCH only. For EPT, USER means "read". */
  pfec: number;
  /**
   * Current privilege level. 3 for user accesses and for implicit supervisor
   * accesses made at CPL 3 (descriptor-table reads...): the latter have no
   * PFERR.USER but get no SMAP override from EFLAGS.AC.
   */
  cpl: number;
  /** EFLAGS.AC. */
  eflagsAc: boolean;
  /** PKRU (32 bits). */
  pkru: number;
}

export interface AccessFlags {
  write?: boolean;
  user?: boolean;
  fetch?: boolean;
  /** A supervisor access made implicitly while CPL = 3 (SDM §4.6). Not with `user`. */
  implicitSupervisor?: boolean;
  eflagsAc?: boolean;
  pkru?: number;
}

/** A WalkEnv from readable flags: user → CPL 3; implicit supervisor → CPL 3 without PFERR.USER; else CPL 0. */
export function walkEnv(a: AccessFlags): WalkEnv {
  if (a.user && a.implicitSupervisor) throw new RangeError('an access is either user or implicit supervisor, not both');
  const pfec = (a.write ? PFERR.WRITE : 0) | (a.user ? PFERR.USER : 0) | (a.fetch ? PFERR.FETCH : 0);
  return { pfec, cpl: a.user || a.implicitSupervisor ? 3 : 0, eflagsAc: !!a.eflagsAc, pkru: (a.pkru ?? 0) >>> 0 };
}

/** FNAME(is_present_gpte): bit 0 for x86, any of R/W/X for EPT. */
export const isPresentGpte = (g: WalkerGeometry, lo: number): boolean => (g.kind === 'ept' ? (lo & 7) !== 0 : (lo & PTE.P) !== 0);

/**
 * FNAME(is_rsvd_bits_set): __is_rsvd_bits_set (spte.h) — the entry against
 * rsvd_bits_mask[bit 7][level - 1] — or, for the EPT walker, __is_bad_mt_xwr
 * (bit `entry & 0x3f` of bad_mt_xwr: memory type 5:3 and XWR 2:0).
 * Everything in 32-bit halves: `masks` is the mask array seen as 32-bit
 * words (little endian: word 2i is the low half of mask i).
 */
export function isRsvdBitsSet(masks: Uint32Array, g: WalkerGeometry, lo: number, hi: number, level: number, badLo: number, badHi: number): boolean {
  const i = 2 * (((lo >>> 7) & 1) * 5 + level - 1);
  if ((lo & masks[i]!) !== 0 || (hi & masks[i + 1]!) !== 0) return true;
  if (g.kind !== 'ept') return false;
  const bit = lo & 0x3f;
  return ((bit < 32 ? badLo >>> bit : badHi >>> (bit - 32)) & 1) !== 0;
}

/**
 * FNAME(is_last_gpte): level 1 always ends the walk; otherwise bit 7 does,
 * except that the 32-bit walker honours it only below level 2 + ext.cr4_pse
 * (read from the role: a stale role is visible here).
 */
export function isLastGpte(mmu: WalkMmu, g: WalkerGeometry, level: number, lo: number): boolean {
  if (level === 1) return true;
  if ((lo & PTE.PS) === 0) return false;
  if (g.kind !== 'paging32') return true;
  return level < 2 + (mmu.ext('cr4_pse', 'FNAME(is_last_gpte)') ? 1 : 0);
}

/**
 * FNAME(gpte_access) of the accumulated entry bits: ACC_* flags. x86: W, U
 * and P, with P cleared when any level had NX (P doubles as ACC_EXEC). EPT:
 * W → write, X → exec, R → "user" (readable).
 * `anyNx` is bit 63 of pte_access after the NX inversion is undone.
 */
export function gpteAccess(g: WalkerGeometry, accLo: number, anyNx: boolean): number {
  if (g.kind === 'ept') {
    return (accLo & EPTE.W ? ACC.WRITE : 0) | (accLo & EPTE.X ? ACC.EXEC : 0) | (accLo & EPTE.R ? ACC.USER : 0);
  }
  return (accLo & (PTE.RW | PTE.US | PTE.P)) ^ (anyNx ? 1 : 0);
}

/** FNAME(gpte_pkeys): entry bits 62:59, 64-bit instance only. */
export const gptePkey = (g: WalkerGeometry, hi: number): number => (g.kind === 'paging64' ? (hi & PTE_HI.PKEY_MASK) >>> PTE_HI.PKEY_SHIFT : 0);

/**
 * FNAME(protect_clean_gpte): on a read, drop write permission unless the
 * leaf is already dirty, so that the first write re-walks and sets D. A
 * no-op for an EPT walker without A/D.
 */
export function protectCleanGpte(g: WalkerGeometry, haveAd: boolean, access: number, leafLo: number): number {
  if (!haveAd) return access;
  const dirty = (leafLo >>> g.dirtyBit) & 1;
  return access & (~ACC.WRITE | (dirty << 1));
}

/**
 * permission_fault (mmu.h): 0, or PFERR_PRESENT (| PFERR_PK) when the access
 * `pfec` to a page with ACC bits `pteAccess` and key `pkey` faults. The SMAP
 * override — CPL < 3 with EFLAGS.AC — selects the "RSVD" half of the
 * permissions table. With a PKRU mask, the key's AD/WD bits are checked for
 * user pages, the pattern's RSVD slot standing for "user page".
 */
export function permissionFault(mmu: WalkMmu, env: WalkEnv, pteAccess: number, pkey: number, pfec: number): number {
  const smapOverride = env.cpl < 3 && env.eflagsAc ? 4 : 0;
  const index = (pfec >>> 1) + smapOverride;
  let fault = (mmu.permissions[index]! >>> pteAccess) & 1;
  let errcode = PFERR.PRESENT;
  const pkruMask = mmu.pkruMask;
  if (pkruMask !== 0) {
    let pkruBits = (env.pkru >>> (pkey * 2)) & 3;
    const offset = (pfec & ~1) + ((pteAccess & ACC.USER) << 1);
    pkruBits &= pkruMask >>> offset;
    if (pkruBits !== 0) {
      errcode |= PFERR.PK;
      fault = 1;
    }
  }
  return fault ? errcode : 0;
}
