/**
 * Deliberate bugs ("mutants") the stress and simulation checks must catch:
 * each disables one step the kernel relies on, in the real code path, behind
 * a flag that costs one property load. Off unless a run names one
 * (`stress --mutant NAME`); a run enables at most one, in every thread of the
 * VM (the coordinator sets its own copy, each vCPU worker its copy from the
 * task). Each names the invariant expected to catch it.
 */
export const MUTANTS = {
  'reload-ignored': {
    invariant: 5,
    what: 'a vCPU consumes KVM_REQ_MMU_RELOAD without kvm_mmu_unload: it keeps running on its old roots after a zap-all',
  },
  'zap-no-wait': {
    invariant: 5,
    what: 'kvm_mmu_zap_all_fast does not wait for the reload request: it returns while vCPUs still run on old-generation roots',
  },
  'cpuid-no-invalidate': {
    invariant: 8,
    what: 'kvm_mmu_after_set_cpuid resets the MMU without invalidating the cached roles: the fast path skips the rebuild a CPUID change needs',
  },
  'lookup-ignores-role': {
    invariant: 3,
    what: 'kvm_mmu_get_page matches on the gfn alone: a shadow page built for one role is handed to a context with another',
  },
  'no-write-tracking': {
    invariant: 6,
    what: 'a write to a shadowed guest page table does not zap its shadow pages: vCPUs keep translating through the old entry',
  },
  'cr4-no-reset': {
    invariant: 1,
    what: 'a CR4 write that changes paging bits (kvm_post_set_cr4) does not reset the MMU context',
  },
  'request-no-kick': {
    invariant: 5,
    what: 'kvm_make_all_cpus_request sets the request bit but neither kicks nor waits for a vCPU in guest mode: a waiting request returns while it still runs',
  },
  'lookup-ignores-generation': {
    invariant: 3,
    what: 'kvm_mmu_get_page does not skip obsolete pages (for_each_valid_sp without is_obsolete_sp): a zapped generation is handed out again',
  },
  'prev-root-ignores-role': {
    invariant: 3,
    what: 'cached_root_available reuses a previous root whose pgd matches without comparing its role',
  },
  'ad-no-cmpxchg': {
    invariant: 6,
    what: 'the guest walker sets accessed/dirty bits with a plain store of the entry it read instead of a compare-exchange: a concurrent edit of the entry is lost',
    /**
     * Real threads almost never land an edit in the microseconds between a walk's read and its
     * write (not caught in 20 s with 12 vCPUs); the simulation puts a scheduling point there.
     */
    threads: false,
  },
} as const;

export type MutantName = keyof typeof MUTANTS;
export const MUTANT_NAMES = Object.keys(MUTANTS) as MutantName[];

/** The enabled mutant of this thread (one flag per mutant; all false normally). */
export const mutant: Record<MutantName, boolean> = Object.fromEntries(MUTANT_NAMES.map((n) => [n, false])) as Record<MutantName, boolean>;

/** Enable `name` (or none) in this thread. */
export function setMutant(name: MutantName | null | undefined): void {
  for (const n of MUTANT_NAMES) mutant[n] = n === name;
}

export const isMutantName = (s: string): s is MutantName => (MUTANT_NAMES as string[]).includes(s);
