/**
 * The walker's state and result, `struct guest_walker` and `struct
 * x86_exception` (Linux v5.17 paging_tmpl.h, kvm_host.h). One GuestWalker is
 * reused across walks so the hot path allocates nothing but the entries it
 * reads. Owner-only: a walker belongs to one thread.
 */
import type { WalkEnv } from './permission.js';
import type { WalkMmu } from './mmu-view.js';

/** get_guest_pgd and get_pdptr of the walking context. */
export interface WalkRoot {
  /** CR3, the nested CR3 (NPT) or the EPT pointer. */
  pgd: bigint;
  /**
   * Root level 3 (PAE) only: the four PDPTE registers (walk_mmu->pdptrs, as
   * load_pdptrs left them). When absent, they are read from memory at `pgd`
   * on every walk, as nested_svm_get_tdp_pdptr does for a PAE nested CR3.
   */
  pdptes?: readonly bigint[] | null;
}

export type FaultVector = 'PF' | 'GP';

/** `struct x86_exception` as the walker fills it. */
export interface WalkFault {
  vector: FaultVector;
  /** x86 page-fault error code (PFERR_* bits). */
  errorCode: number;
  /** walker->level when the fault was raised (the inner walker's, for a nested fault). */
  level: number;
  /** fault.address: the address the faulting walker translated (an L2 GPA for a nested fault). */
  address: bigint;
  /** nested_page_fault: raised by an MMU other than vcpu->arch.walk_mmu (L1's nested tables). */
  nested: boolean;
  /** Nested faults: the level of the L2 table whose access was being translated; 0 for the final address. */
  outerLevel: number;
  /** EPT violations: exit-qualification bits 5:0 the EPT walker computes (bits 8:7 are not modelled). */
  eptQual: number;
}

export class GuestWalker {
  /** walker->level: the leaf level after a successful walk, the faulting level after a fault. */
  level = 0;
  /** walker->max_level: the first level read from memory. */
  maxLevel = 0;
  /** walker->table_gfn[level - 1], as a byte address in the walked space. */
  readonly tableGpa: number[] = [0, 0, 0, 0, 0];
  /** walker->pte_gpa[level - 1]: where the entry sits in the walked space. */
  readonly pteGpa: number[] = [0, 0, 0, 0, 0];
  /** Where the entry sits in guest memory after nested translation (walker->ptep_user). */
  readonly ptePa: number[] = [0, 0, 0, 0, 0];
  /** walker->ptes[level - 1], updated after a successful A/D compare-exchange. */
  readonly ptes: bigint[] = [0n, 0n, 0n, 0n, 0n];
  /** Effective ACC_* bits of the page, all levels combined (before protect_clean_gpte). */
  access = 0;
  /** walker->pte_access: `access` minus write on a read of a clean leaf. */
  pteAccess = 0;
  /** The leaf's protection key (64-bit instance). */
  pkey = 0;
  /** The translated guest physical address, page offset included (FNAME(gva_to_gpa)). */
  gpa = 0n;
  /**
   * The address the leaf maps in the walked space, before translate_nested_gpa:
   * the L2 GPA of a nested walk (what the shadow EPT/NPT root translates);
   * equal to `gpa` without nesting.
   */
  outerGpa = 0n;
  /** Bytes mapped by the leaf (4 KiB for the nonpaging walker). */
  pageSize = 0;
  /** Walks restarted because an accessed/dirty compare-exchange lost a race. */
  retries = 0;
  readonly fault: WalkFault = { vector: 'PF', errorCode: 0, level: 0, address: 0n, nested: false, outerLevel: 0, eptQual: 0 };

  // Scratch of the walk in progress (the walker's local variables), kept here
  // so the hot path passes one object: the address and the current entry
  // split in 32-bit halves, and pte_access (accLo/accHi, NX inverted).
  addrLo = 0;
  addrHi = 0;
  lo = 0;
  hi = 0;
  accLo = 0;
  accHi = 0;
  /** The walking context's reserved masks as 32-bit words, and bad_mt_xwr in halves (EPT). */
  rsvdWords: Uint32Array = EMPTY_WORDS;
  private rsvdSource: BigUint64Array | null = null;
  badLo = 0;
  badHi = 0;
  /** The last root pointer walked from, and its halves (a walker usually walks one root many times). */
  pgd = 0n;
  pgdLo = 0;
  pgdHi = 0;

  setPgd(pgd: bigint): void {
    this.pgd = pgd;
    this.pgdLo = Number(BigInt.asUintN(32, pgd));
    this.pgdHi = Number(BigInt.asUintN(32, pgd >> 32n));
  }

  /** Point rsvdWords at a context's mask array (a view, so later rebuilds of the context are seen). */
  useRsvdMasks(mask: BigUint64Array): void {
    if (this.rsvdSource === mask) return;
    this.rsvdSource = mask;
    this.rsvdWords = new Uint32Array(mask.buffer, mask.byteOffset, mask.length * 2);
  }
}

const EMPTY_WORDS = new Uint32Array(20);
// The 32-bit view of 64-bit masks assumes little-endian words (every platform Node supports).
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('src/paging assumes a little-endian host');

/**
 * The guest_mmu side of a two-dimensional walk: what translate_nested_gpa
 * (x86.c) walks L2 addresses with. `walker` and `env` are scratch space for
 * the inner walks, owned by the same thread as the outer walker.
 */
export interface NestedTdp {
  /** vcpu->arch.mmu while L2 runs: guest_mmu (shadow EPT or shadow NPT). */
  readonly mmu: WalkMmu;
  /** The EPT pointer or nested CR3. */
  readonly root: WalkRoot;
  readonly walker: GuestWalker;
  readonly env: WalkEnv;
}

/** A NestedTdp with fresh scratch space. */
export const nestedTdp = (mmu: WalkMmu, root: WalkRoot): NestedTdp => ({
  mmu,
  root,
  walker: new GuestWalker(),
  env: { pfec: 0, cpl: 0, eflagsAc: false, pkru: 0 },
});

/** A context that cannot be walked (never initialised, or levels the walker cannot hold). */
export class WalkerError extends Error {
  override name = 'WalkerError';
}
