/**
 * The shared-memory layouts of one VM's shadow page cache, declared once
 * (STYLE.md pattern 1). Three buffers per VM:
 *
 * - the VM header (`shadow-vm`): mmu_lock, the generation, page accounting,
 *   the list heads, the hash buckets, the per-gfn write-track counts and the
 *   per-gfn rmap heads (Linux v5.17 `struct kvm_arch` fields of the same
 *   names, and the memslot's `gfn_track` / `rmap` arrays);
 * - the page arena (`shadow-page` × capacity): each record one `struct
 *   kvm_mmu_page` header plus its 512 SPTEs and one link word pair per SPTE
 *   (the parent_ptes / rmap lists, kept inside the arena so the arena is
 *   self-contained and never allocates);
 * - the agents (`shadow-agent` × agents): one per thread that uses the cache
 *   (each vCPU, the coordinator), holding its lockless-walk epoch and its
 *   counters, one cache line apart.
 *
 * Locking, in one place (every field below repeats what applies to it):
 * - "under mmu_lock" means written and read only by the holder of the VM's
 *   mmu_lock (mmu-lock.ts), a plain mutex; such fields are read and written
 *   with plain indexing (the lock orders them). A field that is also read
 *   without the lock is always accessed with Atomics, by the holder too.
 * - read without the lock: SPTEs (the lockless hardware walk, shadow-walk.ts),
 *   a page's role, generation, root count, state and alloc sequence (root
 *   checks, audits), the VM generation, the zap sequence, the write-track
 *   counts and indirect_shadow_pages (the page-track fast check), every
 *   counter (snapshots).
 *
 * The page key (gfn, role word) is explained in src/role/page-role.ts; the
 * generation is deliberately not in the key: pages of an old generation are
 * skipped by lookups (is_obsolete_sp) and zapped lazily.
 */
import { defineLayout } from '../layout/layout.js';

/** SPTEs per shadow page (PT64_ENT_PER_PAGE). */
export const SPTES_PER_PAGE = 512;
/** KVM_MMU_HASH_SHIFT = 12: 4096 buckets (KVM_NUM_MMU_PAGES). */
export const HASH_SHIFT = 12;
export const HASH_BUCKETS = 1 << HASH_SHIFT;
/** "No page" / "no link" in every i32 link field. */
export const NIL = -1;

/** Where a page is. Transitions only under mmu_lock; read lock-free by audits and root checks. */
export const PAGE_STATE = {
  /** On the free list; all SPTEs zero. */
  FREE: 0,
  /** On active_mmu_pages and in its hash bucket; counted in n_used_mmu_pages. */
  ACTIVE: 1,
  /**
   * Prepared for zapping (role.invalid): off active_mmu_pages, still hashed.
   * Either still a root (rootCount > 0: counted in n_used, freed by its last
   * holder) or on the invalid list of the zap in progress (about to go to
   * limbo) — which kvm_zap_obsolete_pages parks on zapped_obsolete_pages
   * while it has dropped mmu_lock.
   */
  ZAPPED: 2,
  /** Zapped and unhashed, waiting for lockless walkers that may still see it (the grace period); then FREE. */
  LIMBO: 3,
} as const;
export type PageState = (typeof PAGE_STATE)[keyof typeof PAGE_STATE];

const PAGE_FIELDS = {
  gfn: {
    type: 'f64',
    doc: 'sp->gfn (an exact integer below 2^53). Written under mmu_lock when the page is allocated; read under mmu_lock (lookups, zaps, audits). Never read lock-free.',
  },
  role: {
    type: 'i32',
    doc: 'sp->role.word (the key with gfn). Atomics.store under mmu_lock at allocation; the invalid bit is set by Atomics.or under mmu_lock when the page is zapped, never cleared while the page is allocated. Read lock-free with Atomics.load by is_root_usable and stale-root checks.',
  },
  gen: {
    type: 'i32',
    doc: 'sp->mmu_valid_gen. Atomics.store under mmu_lock at allocation; read lock-free (Atomics.load) by root checks, under the lock by lookups.',
  },
  rootCount: {
    type: 'i32',
    doc: 'sp->root_count: holders of this page as a root (current root, previous roots, PAE roots of every vCPU context). Changed only by Atomics.add/sub, always under mmu_lock; read lock-free (Atomics.load) by audits. A page with rootCount > 0 is never freed.',
  },
  state: {
    type: 'i32',
    doc: 'PAGE_STATE. Atomics.store under mmu_lock on every transition; read lock-free by audits and the prove-mode walk check.',
  },
  allocSeq: {
    type: 'i32',
    doc: 'incremented (Atomics.add) under mmu_lock each time the page is handed out; read lock-free by the prove-mode walk check (a change during a walk = the page was reused under a walker).',
  },
  hashNext: { type: 'i32', doc: 'next page in the hash bucket (hash_link), NIL at the end. Under mmu_lock only.' },
  hashPrev: { type: 'i32', doc: 'previous page in the hash bucket, NIL for the first. Under mmu_lock only.' },
  listNext: {
    type: 'i32',
    doc: 'next page on the list the page is on (active_mmu_pages towards older pages, the free list, the limbo list). Under mmu_lock only.',
  },
  listPrev: { type: 'i32', doc: 'previous (newer) page on active_mmu_pages; unused on the free and limbo lists. Under mmu_lock only.' },
  parentHead: {
    type: 'i32',
    doc: 'first SPTE slot (page * 512 + index) that links to this page (sp->parent_ptes), NIL if none; the list continues through linkNext of the slots. Under mmu_lock only.',
  },
  parentCount: { type: 'i32', doc: 'length of the parent list. Under mmu_lock only.' },
  zapStamp: {
    type: 'i32',
    doc: 'the zap sequence after the commit that put this page in limbo; the page may be reused once every active walker started at or after it. Under mmu_lock only.',
  },
  spt: {
    type: 'u64',
    count: SPTES_PER_PAGE,
    doc: 'sp->spt: the 512 SPTEs. Written only by spte.ts (Atomics.store / Atomics.and), always under mmu_lock; read lock-free by the hardware walk (Atomics.load) inside a walker epoch, and under the lock by faults and zaps.',
  },
  linkNext: {
    type: 'i32',
    count: SPTES_PER_PAGE,
    doc: 'per SPTE slot: next slot on the list this SPTE is on — the parent list of the child it links (non-leaf) or the rmap of the gfn it maps (leaf). Meaningful only while the SPTE is present. Written by spte.ts under mmu_lock only.',
  },
  linkPrev: {
    type: 'i32',
    count: SPTES_PER_PAGE,
    doc: 'per SPTE slot: previous slot on the same list (NIL for the first). Written by spte.ts under mmu_lock only.',
  },
} as const;

/** One shadow page: header, SPTEs, link words. */
export const SHADOW_PAGE_LAYOUT = defineLayout('shadow-page', PAGE_FIELDS);

/** Counters kept per agent (owner-only writes); a VM's totals are their sums. */
export const SHADOW_STATS = [
  /** kvm_mmu_get_page found the page (hash hit). */
  'hashHits',
  /** kvm_mmu_get_page found none (kvm->stat.mmu_cache_miss): a page is created. */
  'hashMisses',
  /** Pages allocated (misses that got a page). */
  'pagesCreated',
  /** Pages walked past in a bucket because their gfn differed. */
  'collisions',
  /** Obsolete pages (invalid or old generation) skipped by lookups. */
  'obsoleteSkipped',
  /** __kvm_mmu_prepare_zap_page calls (kvm->stat.mmu_shadow_zapped). */
  'zapped',
  /** Pages zapped to make room (kvm->stat.mmu_recycled). */
  'recycled',
  /** Limbo pages returned to the free list after their grace period. */
  'limboReclaimed',
  /** Times an allocation found no free page (the VM reported it). */
  'noPages',
  /** Roots taken by mmu_alloc_root. */
  'rootsAllocated',
  /** Root references dropped by mmu_free_root_page. */
  'rootsFreed',
  /** CR3/EPTP switches served from prev_roots (cached_root_available hit). */
  'prevRootHits',
  /** Fast switches attempted that found no usable cached root. */
  'prevRootMisses',
  /** Remote MMU reloads requested because a root in use was zapped. */
  'reloadRequests',
  /** Remote TLB flushes requested before freeing zapped pages. */
  'remoteTlbFlushes',
  /** kvm_mmu_zap_all_fast calls. */
  'zapAllFast',
  /** Times kvm_zap_obsolete_pages dropped mmu_lock for a waiter (cond_resched_rwlock_write). */
  'zapLockBreaks',
  /** Times an allocation short of free pages committed the pages parked on zapped_obsolete_pages (mmu_shrink_scan). */
  'obsoleteCommitsByShrinker',
  /** Page faults handled (any outcome). */
  'faults',
  /** Faults that installed an SPTE (RET_PF_FIXED; pf_fixed). */
  'faultsFixed',
  /** Faults that found the SPTE already right (RET_PF_SPURIOUS). */
  'faultsSpurious',
  /** Faults abandoned for a retry (stale root, changed guest entry). */
  'faultsRetried',
  /** Faults handed to the emulator (write to a write-tracked gfn). */
  'faultsEmulated',
  /** Faults the guest walker turned into a guest page fault. */
  'guestFaults',
  /** Faults on a gfn without a memslot. */
  'noMemslot',
  /** Lockless walks that found a usable leaf. */
  'accessHits',
  /** Lockless walks that did not. */
  'accessMisses',
  /** Guest writes to write-tracked gfns (kvm_mmu_pte_write). */
  'trackedWrites',
] as const;
export type ShadowStat = (typeof SHADOW_STATS)[number];
export const SHADOW_STAT_INDEX = Object.fromEntries(SHADOW_STATS.map((s, i) => [s, i])) as Record<ShadowStat, number>;

const CACHE_LINE = 64;
const STATS_BYTES = SHADOW_STATS.length * 8;

/** One agent: its walk epoch on a cache line of its own, then its counters, padded to whole lines. */
export const SHADOW_AGENT_LAYOUT = defineLayout('shadow-agent', {
  walkEpoch: {
    type: 'i32',
    doc: 'walk_shadow_page_lockless_begin/end: 0 while the agent is not walking SPTEs lock-free, else 1 + the zap sequence it read at the start of its walk. Owner Atomics.store (start, end); read by reclaimers (Atomics.load) under mmu_lock before reusing limbo pages.',
  },
  pad: { type: 'u8', count: CACHE_LINE - 4, doc: 'padding, never read or written: walkEpoch alone on its cache line.' },
  stats: {
    type: 'f64',
    count: SHADOW_STATS.length,
    doc: 'SHADOW_STATS counters. Owner-only plain writes; others read them as a snapshot (a value may lag).',
  },
  tail: {
    type: 'u8',
    count: (CACHE_LINE - (STATS_BYTES % CACHE_LINE)) % CACHE_LINE || CACHE_LINE,
    doc: 'padding, never read or written: the next agent starts on a fresh cache line.',
  },
});

/**
 * The VM header. Its size depends on the number of guest pages (the
 * write-track and rmap arrays are per gfn, like a memslot's), so the layout
 * is made per VM; every thread makes it from the same options.
 */
export function shadowVmLayout(guestPages: number) {
  return defineLayout('shadow-vm', {
    lock: {
      type: 'i32',
      doc: 'mmu_lock (mmu-lock.ts): 0 free, 1 held, 2 held with waiters. Compare-exchange / exchange to take, Atomics.sub + notify to release.',
    },
    lockOwner: {
      type: 'i32',
      doc: '1 + the agent holding mmu_lock, 0 when free. Stored by the holder right after taking the lock and cleared right before releasing it; read by lock assertions (the holder itself) and as a snapshot.',
    },
    lockWaiters: {
      type: 'i32',
      doc: 'agents waiting for mmu_lock (mmu-lock.ts): Atomics.add by a waiter before it first parks, Atomics.sub once it holds the lock; read (Atomics.load) by the holder to decide a lock break (rwlock_is_contended).',
    },
    lockQueuedWriter: {
      type: 'i32',
      doc: '1 + the agent re-taking mmu_lock after a lock break (mmu-lock.ts breakAsync), 0 if none: KVM qrwlock queueing, later lock() calls wait behind it. Atomics.store by that agent before it waits for the lock and after it got it (then Atomics.notify); Atomics.load/wait by lock().',
    },
    mmuValidGen: {
      type: 'i32',
      doc: 'kvm->arch.mmu_valid_gen, 0 or 1. Flipped (Atomics.store) under mmu_lock by zap-all-fast only; read under the lock by lookups and lock-free (Atomics.load) by root checks.',
    },
    nMaxPages: { type: 'i32', doc: 'kvm->arch.n_max_mmu_pages. Under mmu_lock (Atomics for snapshots).' },
    nUsedPages: { type: 'i32', doc: 'kvm->arch.n_used_mmu_pages: ACTIVE pages plus ZAPPED pages still held as roots. Under mmu_lock (Atomics for snapshots).' },
    capacity: { type: 'i32', doc: 'pages in the arena buffer. Written once by create() before the buffers are shared; read-only after.' },
    freeHead: { type: 'i32', doc: 'first FREE page (singly linked through listNext). Under mmu_lock only.' },
    freeCount: { type: 'i32', doc: 'FREE pages. Under mmu_lock; read lock-free as a snapshot (Atomics.load).' },
    activeHead: { type: 'i32', doc: 'newest page of active_mmu_pages (list_add puts new pages here). Under mmu_lock only.' },
    activeTail: { type: 'i32', doc: 'oldest page of active_mmu_pages (reclaim and obsolete zaps start here). Under mmu_lock only.' },
    limboHead: { type: 'i32', doc: 'oldest LIMBO page (lowest zapStamp). Under mmu_lock only.' },
    limboTail: { type: 'i32', doc: 'newest LIMBO page. Under mmu_lock only.' },
    limboCount: { type: 'i32', doc: 'LIMBO pages. Under mmu_lock; read lock-free as a snapshot.' },
    zappedObsoleteHead: {
      type: 'i32',
      doc: 'kvm->arch.zapped_obsolete_pages: pages kvm_zap_obsolete_pages prepared (ZAPPED, root count 0) but had not committed when it dropped mmu_lock for a lock break, singly linked through listNext; taken back when it resumes. Under mmu_lock only.',
    },
    zappedObsoleteCount: { type: 'i32', doc: 'pages on zappedObsoleteHead. Under mmu_lock; read lock-free as a snapshot.' },
    zapSeq: {
      type: 'i32',
      doc: 'zap sequence, starts at 1: incremented (Atomics.add) under mmu_lock by every commit of zapped pages, after their SPTE links were cleared; read lock-free (Atomics.load) by walkers at the start of every lockless walk.',
    },
    indirectShadowPages: {
      type: 'i32',
      doc: 'kvm->arch.indirect_shadow_pages. Under mmu_lock (Atomics.add); read lock-free by the page-track write path as its fast check.',
    },
    maxCollisions: { type: 'i32', doc: 'kvm->stat.max_mmu_page_hash_collisions. Under mmu_lock; read as a snapshot.' },
    hashHeads: {
      type: 'i32',
      count: HASH_BUCKETS,
      doc: 'kvm->arch.mmu_page_hash: first page of each bucket, NIL if empty. Under mmu_lock only.',
    },
    gfnTrack: {
      type: 'i32',
      count: guestPages,
      doc: 'gfn_track[KVM_PAGE_TRACK_WRITE] per gfn: indirect shadow pages of that gfn. Atomics.add/sub under mmu_lock; read lock-free (Atomics.load) by the page-track write check and make_spte, under the lock otherwise.',
    },
    rmapHeads: {
      type: 'i32',
      count: guestPages,
      doc: 'rmap head per gfn: first leaf SPTE slot mapping it, NIL if none (the list continues through linkNext). Under mmu_lock only.',
    },
  });
}
export type ShadowVmLayout = ReturnType<typeof shadowVmLayout>;
