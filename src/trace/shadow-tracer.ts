/**
 * What the shadow page cache reports to a tracer: the `kvmmmu` tracepoints
 * of Linux v5.17 (arch/x86/kvm/mmu/mmutrace.h) that the cache models. The
 * cache calls these through `vm.hooks[agent]?.trace?.…(…)`, so with no
 * tracer installed nothing is evaluated, not even the arguments.
 *
 * Declared apart from the Tracer so that src/shadow depends on a type only
 * (this file imports nothing).
 */
export interface ShadowTracer {
  /**
   * trace_kvm_mmu_get_page (mmu.c kvm_mmu_get_page): a lookup found the page
   * (`created` false) or allocated it (true). `gen` is the page's
   * mmu_valid_gen, `rootCount` its root_count at that moment.
   */
  getPage(gfn: number, role: number, created: boolean, gen: number, rootCount: number): void;
  /** trace_kvm_mmu_prepare_zap_page (__kvm_mmu_prepare_zap_page), before anything of the page changes. */
  prepareZap(gfn: number, role: number, rootCount: number, gen: number): void;
  /** trace_kvm_mmu_zap_all_fast, under mmu_lock before the generation flips: the old generation and n_used_mmu_pages. */
  zapAllFast(gen: number, usedPages: number): void;
  /** trace_kvm_mmu_pagetable_walk (FNAME(walk_addr_generic) entry): the address walked and the access's error code. */
  pagetableWalk(addr: bigint, pferr: number): void;
  /** trace_kvm_mmu_walker_error: the guest walk faulted with this error code. */
  walkerError(pferr: number): void;
}
