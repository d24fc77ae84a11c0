/**
 * Setting guest accessed/dirty flags after a successful walk (Linux v5.17
 * paging_tmpl.h FNAME(update_accessed_dirty_bits), FNAME(cmpxchg_gpte)).
 *
 * Shared memory: each entry that needs a flag is replaced by one
 * compare-exchange of the whole entry against the value the walk read. If
 * another vCPU (or the builder) changed the entry in between, nothing is
 * written and the caller restarts the whole walk, so no one's bits are lost
 * and a walk never sets flags on an entry it did not see.
 */
import { mutant } from '../check/mutants.js';
import { schedPoint } from '../layout/sched-point.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { lo32, type WalkerGeometry } from './format.js';
import type { GuestWalker } from './walker-state.js';

/**
 * FNAME(update_accessed_dirty_bits): from the top level down to the leaf, set
 * A where missing and, on a write, D on the leaf. Returns true when a
 * compare-exchange lost a race (the walk must restart). Levels already
 * updated keep their flags, as in KVM.
 *
 * Not modelled: read-only memslots (pte_writable; all guest memory is
 * writable here), dirty logging of the table page, and the EPT PML log
 * (write_log_dirty).
 */
export function updateAccessedDirtyBits(w: GuestWalker, g: WalkerGeometry, mem: GuestMemory, haveAd: boolean, writeFault: boolean): boolean {
  if (!haveAd) return false;
  const aMask = 1 << g.accessedBit;
  const dMask = 1 << g.dirtyBit;
  for (let level = w.maxLevel; level >= w.level; level--) {
    const orig = w.ptes[level - 1]!;
    const lo = lo32(orig);
    let set = (lo & aMask) === 0 ? aMask : 0;
    if (level === w.level && writeFault && (lo & dMask) === 0) set |= dMask;
    if (set === 0) continue;
    const pa = w.ptePa[level - 1]!;
    // Scheduling point (src/layout/sched-point.ts): another actor may edit the entry now.
    schedPoint.hook?.('ad-write', level, -1);
    if (g.entryBytes === 8) {
      const next = orig | BigInt(set);
      // Mutant: a plain store of what the walk read, losing any change made since.
      if (mutant['ad-no-cmpxchg']) mem.store64(pa, next);
      else if (mem.cmpxchg64(pa, orig, next) !== orig) return true;
      w.ptes[level - 1] = next;
    } else {
      const next = (lo | set) >>> 0;
      if (mutant['ad-no-cmpxchg']) mem.store32(pa, next);
      else if (mem.cmpxchg32(pa, lo, next) !== lo) return true;
      w.ptes[level - 1] = BigInt(next);
    }
  }
  return false;
}
