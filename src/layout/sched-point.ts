/**
 * Scheduling points: the shared-memory operations inside one step of a vCPU
 * where an in-thread host (src/sim) may run another actor first, as another
 * thread could run on real hardware. Real threads preempt anywhere; a
 * single-threaded host preempts only where a point says so.
 *
 * One mechanism for every site: a site calls `schedPoint.hook?.(kind, level, page)`
 * just before the operation. On real threads the hook is null, so a point
 * costs one property load. A point is placed only where its caller holds no
 * lock (no mmu_lock, no seqlock write side): the nested actor may need the
 * lock, and in one thread it could never get it.
 *
 * Sites (each names the operation the nested actor runs before):
 * - `ad-write`: a guest walk's accessed/dirty compare-exchange of an entry
 *   it read earlier (src/paging/accessed-dirty.ts); level = the entry's.
 * - `lockless-walk`: one SPTE read of the hardware's lockless walk, between
 *   walk_shadow_page_lockless_begin and _end (src/shadow/shadow-walk.ts);
 *   level = the table level read.
 * - `fault-lock`: taking mmu_lock in a page fault, after the (unlocked) guest
 *   walk and before the staleness checks (src/shadow/faults.ts); level = the
 *   guest leaf level of a shadow fault, 0 for a direct fault (no guest walk).
 */
export const SCHED_POINTS = ['ad-write', 'lockless-walk', 'fault-lock'] as const;
export type SchedPointKind = (typeof SCHED_POINTS)[number];

/**
 * The host's hook (null on real threads; an optional call evaluates no
 * argument then). `page`: for `lockless-walk`, the shadow page whose SPTE
 * is read next (so the host can tell whether the nested actor zapped it);
 * -1 elsewhere. Set by one host at a time, in its own thread.
 */
export const schedPoint: { hook: ((kind: SchedPointKind, level: number, page: number) => void) | null } = { hook: null };

/** A point as a trace names it: "(preempts vcpuN <this>)". */
export function describeSchedPoint(kind: SchedPointKind, level: number): string {
  switch (kind) {
    case 'ad-write':
      return `between a guest walk's read and its A/D write, level ${level}`;
    case 'lockless-walk':
      return `inside a lockless walk, level ${level}`;
    case 'fault-lock':
      return level > 0 ? `between a fault's guest walk and mmu_lock, level ${level}` : 'in a direct fault, before mmu_lock';
  }
}
