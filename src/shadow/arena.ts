/**
 * The page arena of one VM: a fixed number of shadow pages in one
 * SharedArrayBuffer that never grows, the header and agents beside it, and
 * the views and field offsets every other module uses (Linux v5.17 `struct
 * kvm_mmu_page` storage and the `struct kvm_arch` fields of the shadow MMU).
 * The lists a page moves between are in lists.ts.
 *
 * A ShadowVm is one thread's handle on the VM's buffers: `create` makes the
 * buffers (before they are shared), `attach` binds them in another thread.
 * Its hooks are thread-local; everything else it reads is shared memory.
 */
import { allocate, bindRecord } from '../layout/layout.js';
import { PR } from '../role/page-role.js';
import type { HostSettings } from '../role/host.js';
import { MmuLock } from './mmu-lock.js';
import { NIL, SHADOW_AGENT_LAYOUT, SHADOW_PAGE_LAYOUT, SHADOW_STAT_INDEX, shadowVmLayout, type PageState, type ShadowStat } from './layout.js';
import { spteMasksFor, type SpteMasks } from './spte-format.js';
import type { ShadowTracer } from '../trace/shadow-tracer.js';

/** Pages beyond n_max_mmu_pages in the default arena: make_mmu_pages_available is a soft limit (one fault may take up to four more pages). */
export const ARENA_SLACK = 16;
/** Largest arena: page indices must fit the SPTE address encoding and slot ids an i32. */
export const MAX_CAPACITY = 1 << 20;

export class ShadowArenaError extends RangeError {
  override name = 'ShadowArenaError';
}

export interface ShadowVmOptions {
  /** kvm->arch.n_max_mmu_pages. */
  readonly maxPages: number;
  /** Pages in the arena buffer (default maxPages + ARENA_SLACK); fixed for the VM's life. */
  readonly capacity?: number;
  /** Threads that use the cache (each vCPU, the coordinator): agent ids 0..agents-1. */
  readonly agents: number;
  /** Guest pages with a memslot: gfns 0..guestPages-1 (GuestMemory.size / 4096). */
  readonly guestPages: number;
  /** Host settings: the SPTE format (EPT on an Intel TDP host, else legacy), A/D bits, tdp_enabled. */
  readonly host: HostSettings;
  /** Lock and invariant assertions (KVM's lockdep and CONFIG_KVM_PROVE_MMU); off by default. */
  readonly prove?: boolean;
}

/**
 * What the cache asks of the VM around it, per agent (thread-local
 * callbacks, set by whoever runs the agent). Both are called with mmu_lock
 * held and must only set request bits and kick — never wait.
 */
export interface ShadowHooks {
  /** kvm_reload_remote_mmus: KVM_REQ_MMU_RELOAD to every vCPU (a root in use was zapped). */
  reloadRemoteMmus?(): void;
  /** kvm_flush_remote_tlbs: KVM_REQ_TLB_FLUSH to every vCPU (SPTEs were dropped or write-protected). */
  flushRemoteTlbs?(): void;
  /** The kvmmmu tracepoints of this agent's thread (src/trace); absent = tracing off, at the cost of one property read. */
  trace?: ShadowTracer;
}

/** Everything another thread needs to attach: structured-clonable. */
export interface ShadowVmHandle {
  readonly header: SharedArrayBuffer;
  readonly arena: SharedArrayBuffer;
  readonly agents: SharedArrayBuffer;
  readonly options: ShadowVmOptions & { readonly capacity: number };
}

const I32 = 4;
const I64 = 8;
const F64 = 8;
const pf = SHADOW_PAGE_LAYOUT.fields;

/** The views and geometry of one VM's shadow cache, in one thread. */
export class ShadowVm {
  /** The header's fields (layout.ts `shadow-vm`). */
  readonly h: ReturnType<typeof bindHeader>;
  readonly lock: MmuLock;
  readonly masks: SpteMasks;
  readonly capacity: number;
  readonly prove: boolean;
  /** The arena as i32 / u64 / f64 words. */
  readonly i32: Int32Array;
  readonly u64: BigUint64Array;
  readonly f64: Float64Array;
  /** Record stride in words, and each field's word offset inside a record. */
  readonly sw32: number;
  readonly sw64: number;
  readonly swF: number;
  readonly oGfn = pf.gfn.offset / F64;
  readonly oRole = pf.role.offset / I32;
  readonly oGen = pf.gen.offset / I32;
  readonly oRootCount = pf.rootCount.offset / I32;
  readonly oState = pf.state.offset / I32;
  readonly oAllocSeq = pf.allocSeq.offset / I32;
  readonly oHashNext = pf.hashNext.offset / I32;
  readonly oHashPrev = pf.hashPrev.offset / I32;
  readonly oListNext = pf.listNext.offset / I32;
  readonly oListPrev = pf.listPrev.offset / I32;
  readonly oParentHead = pf.parentHead.offset / I32;
  readonly oParentCount = pf.parentCount.offset / I32;
  readonly oZapStamp = pf.zapStamp.offset / I32;
  readonly oSpt = pf.spt.offset / I64;
  readonly oLinkNext = pf.linkNext.offset / I32;
  readonly oLinkPrev = pf.linkPrev.offset / I32;
  /** Per agent: walk epoch word and counters. */
  readonly agentEpoch: Int32Array[];
  readonly agentStats: Float64Array[];
  /** Per agent, this thread's hooks (not shared). */
  readonly hooks: (ShadowHooks | undefined)[] = [];

  private constructor(readonly handle: ShadowVmHandle) {
    const o = handle.options;
    this.capacity = o.capacity;
    this.prove = o.prove ?? false;
    this.h = bindHeader(o.guestPages, handle.header);
    this.lock = new MmuLock(this.h.lock, this.h.lockOwner, this.h.lockWaiters, this.h.lockQueuedWriter, this.prove);
    this.masks = spteMasksFor(o.host);
    this.i32 = new Int32Array(handle.arena);
    this.u64 = new BigUint64Array(handle.arena);
    this.f64 = new Float64Array(handle.arena);
    this.sw32 = SHADOW_PAGE_LAYOUT.stride / I32;
    this.sw64 = SHADOW_PAGE_LAYOUT.stride / I64;
    this.swF = SHADOW_PAGE_LAYOUT.stride / F64;
    this.agentEpoch = [];
    this.agentStats = [];
    for (let i = 0; i < o.agents; i++) {
      const r = bindRecord(SHADOW_AGENT_LAYOUT, handle.agents, i);
      this.agentEpoch.push(r.walkEpoch);
      this.agentStats.push(r.stats);
    }
  }

  /** A new, empty cache: every page on the free list, generation 0, zap sequence 1. */
  static create(options: ShadowVmOptions): ShadowVm {
    const capacity = options.capacity ?? options.maxPages + ARENA_SLACK;
    checkOptions(options, capacity);
    const handle: ShadowVmHandle = {
      header: allocate(shadowVmLayout(options.guestPages)),
      arena: allocate(SHADOW_PAGE_LAYOUT, capacity),
      agents: allocate(SHADOW_AGENT_LAYOUT, options.agents),
      options: { ...options, capacity },
    };
    const vm = new ShadowVm(handle);
    vm.initialise(options.maxPages);
    return vm;
  }

  /** The same cache in another thread. */
  static attach(handle: ShadowVmHandle): ShadowVm {
    return new ShadowVm(handle);
  }

  /** Before the buffers are shared: lists, heads, counters. */
  private initialise(maxPages: number): void {
    const h = this.h;
    h.hashHeads.fill(NIL);
    h.rmapHeads.fill(NIL);
    Atomics.store(h.capacity, 0, this.capacity);
    Atomics.store(h.nMaxPages, 0, maxPages);
    Atomics.store(h.zapSeq, 0, 1);
    h.activeHead[0] = h.activeTail[0] = h.limboHead[0] = h.limboTail[0] = h.zappedObsoleteHead[0] = NIL;
    // Free list in index order: page 0 is handed out first.
    h.freeHead[0] = NIL;
    for (let p = this.capacity - 1; p >= 0; p--) {
      const b = p * this.sw32;
      this.i32[b + this.oHashNext] = this.i32[b + this.oHashPrev] = NIL;
      this.i32[b + this.oListPrev] = NIL;
      this.i32[b + this.oParentHead] = NIL;
      this.i32[b + this.oListNext] = h.freeHead[0]!;
      h.freeHead[0] = p;
    }
    Atomics.store(h.freeCount, 0, this.capacity);
  }

  // --- page fields -------------------------------------------------------

  base32(p: number): number {
    return p * this.sw32;
  }
  gfnOf(p: number): number {
    return this.f64[p * this.swF + this.oGfn]!;
  }
  roleOf(p: number): number {
    return Atomics.load(this.i32, p * this.sw32 + this.oRole) >>> 0;
  }
  genOf(p: number): number {
    return Atomics.load(this.i32, p * this.sw32 + this.oGen);
  }
  rootCountOf(p: number): number {
    return Atomics.load(this.i32, p * this.sw32 + this.oRootCount);
  }
  stateOf(p: number): PageState {
    return Atomics.load(this.i32, p * this.sw32 + this.oState) as PageState;
  }
  allocSeqOf(p: number): number {
    return Atomics.load(this.i32, p * this.sw32 + this.oAllocSeq);
  }
  setState(p: number, s: PageState): void {
    Atomics.store(this.i32, p * this.sw32 + this.oState, s);
  }
  /** Index of SPTE `index` of page `p` in `u64`. */
  spteIndex(p: number, index: number): number {
    return p * this.sw64 + this.oSpt + index;
  }

  // --- VM fields -----------------------------------------------------------

  /** kvm->arch.mmu_valid_gen (lock-free read). */
  get mmuValidGen(): number {
    return Atomics.load(this.h.mmuValidGen, 0);
  }
  get nUsed(): number {
    return Atomics.load(this.h.nUsedPages, 0);
  }
  get nMax(): number {
    return Atomics.load(this.h.nMaxPages, 0);
  }
  get freeCount(): number {
    return Atomics.load(this.h.freeCount, 0);
  }
  get limboCount(): number {
    return Atomics.load(this.h.limboCount, 0);
  }
  get guestPages(): number {
    return this.h.gfnTrack.length;
  }

  /** is_obsolete_sp: role.invalid set, or a generation other than the VM's. Lock-free. */
  isObsolete(p: number): boolean {
    return (this.roleOf(p) & INVALID_BIT) !== 0 || this.genOf(p) !== this.mmuValidGen;
  }

  /** Install the hooks `agent` uses in this thread. */
  setHooks(agent: number, hooks: ShadowHooks): void {
    this.checkAgent(agent);
    this.hooks[agent] = hooks;
  }

  checkAgent(agent: number): void {
    if (!Number.isInteger(agent) || agent < 0 || agent >= this.agentEpoch.length) {
      throw new ShadowArenaError(`agent ${agent}: this VM has agents 0..${this.agentEpoch.length - 1}`);
    }
  }

  /** Count `n` events of `stat` for `agent` (owner-only write). */
  count(agent: number, stat: ShadowStat, n = 1): void {
    this.agentStats[agent]![SHADOW_STAT_INDEX[stat]]! += n;
  }

  assertLocked(agent: number, where: string): void {
    if (this.prove) this.lock.assertHeld(agent, where);
  }
}

/** role.invalid, the one bit of a page role that changes after allocation. */
export const INVALID_BIT = PR.INVALID;

function bindHeader(guestPages: number, buf: SharedArrayBuffer) {
  return bindRecord(shadowVmLayout(guestPages), buf);
}

function checkOptions(o: ShadowVmOptions, capacity: number): void {
  const int = (v: number, min: number, max: number) => Number.isInteger(v) && v >= min && v <= max;
  if (!int(o.maxPages, 1, MAX_CAPACITY)) throw new ShadowArenaError(`maxPages: expected an integer in 1..${MAX_CAPACITY}, got ${o.maxPages}`);
  if (!int(capacity, o.maxPages, MAX_CAPACITY)) throw new ShadowArenaError(`capacity: expected an integer in ${o.maxPages}..${MAX_CAPACITY}, got ${capacity}`);
  if (!int(o.agents, 1, 4096)) throw new ShadowArenaError(`agents: expected an integer in 1..4096, got ${o.agents}`);
  if (!int(o.guestPages, 1, 1 << 28)) throw new ShadowArenaError(`guestPages: expected an integer in 1..2^28, got ${o.guestPages}`);
}
