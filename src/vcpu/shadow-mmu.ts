/**
 * One vCPU's use of the VM-wide shadow page cache (src/shadow): the roots of
 * root_mmu and guest_mmu, the hooks that free and switch them
 * (kvm_mmu_unload, __kvm_mmu_new_pgd), kvm_mmu_reload before every entry,
 * and a guest access as the hardware makes it — through the SPTEs of the
 * current MMU (vcpu->arch.mmu) — with the page-fault VM exit
 * (kvm_mmu_page_fault) when the SPTEs do not allow it.
 *
 * What the hardware walks where (Linux v5.17 semantics):
 * - TDP (root_mmu direct): the CPU walks the guest's tables itself (the guest
 *   walker here), then the resulting GPA goes through the TDP root; a miss is
 *   an EPT violation / NPF handled by the direct fault handler.
 * - Shadow paging (root_mmu indirect, tdp off): the SPTEs translate the guest
 *   virtual address directly; a miss is a #PF intercept handled by
 *   FNAME(page_fault), which walks the guest tables.
 * - L2 with nested TDP: the CPU walks L2's tables (nested_mmu over guest_mmu,
 *   modelled by the two-dimensional guest walk) and the final L2 GPA goes
 *   through guest_mmu's shadow EPT/NPT root; a miss is handled by the shadow
 *   EPT/NPT fault handler (a nested fault goes to L1).
 * Simplification: in the TDP and nested cases, the guest's own table reads
 * are not translated through the SPTEs (only the final address is), so table
 * pages never fault into the TDP root.
 *
 * Owner-only: every field belongs to the vCPU's thread; shared state is the
 * cache's (see src/shadow for its ordering) and the vCPU records (requests).
 * An in-thread host may run other actors at the scheduling points inside an
 * access (src/layout/sched-point.ts): each SPTE read of `translate`, each A/D
 * write of a guest walk, and taking mmu_lock in the fault handler — never
 * while this vCPU holds mmu_lock.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { MmuContext } from '../mmu/context.js';
import type { VcpuMmu } from '../mmu/vcpu-mmu.js';
import { PFERR } from '../paging/format.js';
import type { WalkEnv } from '../paging/permission.js';
import { GuestWalker, type WalkRoot } from '../paging/walker-state.js';
import {
  INVALID_PAGE,
  mmuReload,
  mmuUnload as shadowUnload,
  newPgd as shadowNewPgd,
  pageFault,
  RootSet,
  SPECIAL_ROOT,
  trackedWrite,
  translate,
  WALK,
  WalkScratch,
  type FaultResult,
  type LoadResult,
  type ShadowVm,
} from '../shadow/index.js';
import type { GuestOp } from './guest-ops.js';
import { faultOutcome, GuestAccess, type AccessOutcome, type WalkingVcpu } from './access.js';
import { makeRequest, REQ } from './requests.js';
import type { VcpuRecord } from './vcpu-layout.js';

/** What the shadow side needs from the vCPU core (a structural view, no import cycle). */
export interface ShadowVcpuView extends WalkingVcpu {
  readonly rec: VcpuRecord;
  count(stat: 'accesses' | 'pageFaults' | 'nestedFaults' | 'shadowHits' | 'shadowExits' | 'emulatedWrites' | 'mmioAccesses' | 'shadowNoPages', n?: number): void;
}

export type Access = Extract<GuestOp, { k: 'access' }>;

/** A VM exit of a guest access: the fault to handle outside guest mode. */
export interface PendingFault {
  readonly op: Access;
  /** cr2_or_gpa: the GVA (shadow paging), the GPA (TDP) or the L2 GPA (nested TDP). */
  readonly addr: bigint;
  /** WALK.NOT_PRESENT or WALK.PROTECTION. */
  readonly code: number;
  readonly ctx: MmuContext;
}

/** What the fault exit asks the core to do with the access. */
export type FaultDisposition = 'retry' | 'done';

export class VcpuShadow {
  readonly rootRoots = new RootSet();
  readonly guestRoots = new RootSet();
  private readonly scratch = new WalkScratch();
  /** The CPU's own walk of the guest's tables (TDP, nested TDP). */
  private readonly hardware: GuestAccess;
  private readonly faultWalker = new GuestWalker();
  private readonly env: WalkEnv = { pfec: 0, cpl: 0, eflagsAc: false, pkru: 0 };
  private readonly guestRoot: WalkRoot = { pgd: 0n, pdptes: null };
  /** How the last completed access ended (shared with the hardware walk, which records its faults there). */
  readonly outcome: AccessOutcome;
  /** The last handleFault's FaultResult kind ('retry' for a fault dropped before the handler) and PFERR error code (for the trace). */
  lastFaultKind: FaultResult['kind'] = 'retry';
  lastFaultErrorCode = 0;

  constructor(
    readonly vm: ShadowVm,
    readonly agent: number,
    readonly memory: GuestMemory,
  ) {
    this.hardware = new GuestAccess(memory);
    this.outcome = this.hardware.outcome;
  }

  /** Install kvm_mmu_unload and __kvm_mmu_new_pgd on the vCPU's MMU. */
  attach(view: ShadowVcpuView): void {
    const v = view.mmu;
    v.hooks.unload = () => this.unload(v);
    v.hooks.newPgd = (_v, pgd, role) => {
      // __kvm_mmu_new_pgd on vcpu->arch.mmu: a cached root, or free the current one.
      if (shadowNewPgd(this.vm, this.agent, this.rootsOf(v.mmu), v.mmu, pgd, role)) {
        makeRequest(view.rec.requests, 0, REQ.LOAD_MMU_PGD);
        makeRequest(view.rec.requests, 0, REQ.TLB_FLUSH_CURRENT);
      }
    };
  }

  /** kvm_mmu_unload: every root of root_mmu and guest_mmu. */
  unload(v: VcpuMmu): void {
    shadowUnload(this.vm, this.agent, [
      [this.rootRoots, v.rootMmu],
      [this.guestRoots, v.guestMmu],
    ]);
  }

  /** The RootSet of root_mmu or guest_mmu (nested_mmu has no roots). */
  rootsOf(ctx: MmuContext): RootSet {
    if (ctx.name === 'root') return this.rootRoots;
    if (ctx.name === 'guest') return this.guestRoots;
    throw new RangeError('nested_mmu has no roots: it is never vcpu->arch.mmu');
  }

  /** get_guest_pgd of the current MMU: CR3 for root_mmu, the EPTP / nested CR3 for guest_mmu. */
  private guestRootOf(view: ShadowVcpuView, ctx: MmuContext): WalkRoot {
    this.guestRoot.pgd = ctx.name === 'guest' ? view.nestedRoot : view.cr3;
    return this.guestRoot;
  }

  /** Whether kvm_mmu_reload has nothing to do: the current MMU has a root (kvm_mmu_load is skipped). */
  hasRoot(view: ShadowVcpuView): boolean {
    return this.rootsOf(view.mmu.mmu).rootHpa !== INVALID_PAGE;
  }

  /** kvm_mmu_reload before entry: allocate the current MMU's roots if it has none. */
  reload(view: ShadowVcpuView): LoadResult {
    const ctx = view.mmu.mmu;
    return mmuReload(this.vm, this.agent, this.rootsOf(ctx), ctx, this.guestRootOf(view, ctx), this.memory);
  }

  /** The page the current MMU's walks start from: its root, or the first PAE root; -1 without one. */
  rootPage(view: ShadowVcpuView): number {
    const roots = this.rootsOf(view.mmu.mmu);
    if (roots.rootHpa >= 0) return roots.rootHpa;
    if (roots.rootHpa === SPECIAL_ROOT) for (const p of roots.paeRoot) if (p >= 0) return p;
    return -1;
  }

  /**
   * The access as `ctx` sees it. Through guest_mmu (L1's EPT/NPT tables) it is
   * a user access, as translate_nested_gpa makes it ("NPT walks are always
   * user-walks"; the NPF error code has U set): SMAP and U/S never apply there.
   */
  private envFor(op: Access, ctx: MmuContext): WalkEnv {
    const env = this.env;
    env.pfec = (op.write ? PFERR.WRITE : 0) | (op.user || ctx.name === 'guest' ? PFERR.USER : 0) | (op.fetch ? PFERR.FETCH : 0);
    env.cpl = op.user ? 3 : 0;
    return env;
  }

  /**
   * One access in guest mode. Returns null when it completed without an exit
   * (translated, or a guest fault the CPU delivers itself), or the VM exit.
   */
  inGuest(view: ShadowVcpuView, op: Access): PendingFault | null {
    const v = view.mmu;
    const ctx = v.mmu;
    let addr = op.gva;
    if (ctx.directMap || v.isNested()) {
      // The CPU walks the guest's (or L2's) tables itself; a fault there goes to the guest, no exit.
      if (!this.hardware.run(view, op)) return null;
      addr = this.hardware.outerGpa;
    } else view.count('accesses');
    const env = this.envFor(op, ctx);
    const t = translate(this.vm, this.agent, this.rootsOf(ctx), ctx, addr, env, this.scratch);
    if (t >= 0) {
      view.count('shadowHits');
      this.outcome.kind = 'gpa';
      this.outcome.gpa = t;
      return null;
    }
    view.count('shadowExits');
    return { op, addr, code: t, ctx };
  }

  /** The fault exit, outside guest mode (kvm_mmu_page_fault). */
  handleFault(view: ShadowVcpuView, f: PendingFault): FaultDisposition {
    // The MMU may have changed since the exit (it cannot: the exit is handled first), or lost its root (no root: re-enter).
    const env = this.envFor(f.op, f.ctx);
    const errorCode = env.pfec | (f.code === WALK.PROTECTION ? PFERR.PRESENT : 0);
    this.lastFaultErrorCode = errorCode;
    if (f.code === WALK.NO_ROOT || view.mmu.mmu !== f.ctx) {
      this.lastFaultKind = 'retry';
      return 'retry';
    }
    const requests = view.rec.requests;
    const r: FaultResult = pageFault(this.vm, this.agent, this.rootsOf(f.ctx), f.ctx, this.memory, {
      addr: f.addr,
      errorCode,
      guest: this.guestRootOf(view, f.ctx),
      cpl: env.cpl,
      isWalkMmu: f.ctx === view.mmu.walkMmu,
      reloadPending: () => (Atomics.load(requests, 0) & (1 << REQ.MMU_RELOAD.bit)) !== 0,
      walker: this.faultWalker,
    });
    this.lastFaultKind = r.kind;
    switch (r.kind) {
      case 'fixed':
      case 'spurious':
      case 'retry':
        return 'retry';
      case 'emulate':
        // The emulator performs the write; page tracking then zaps what shadowed the gfn.
        trackedWrite(this.vm, this.agent, r.gpa);
        view.count('emulatedWrites');
        this.outcome.kind = 'other';
        return 'done';
      case 'guest-fault':
        faultOutcome(this.outcome, r.fault);
        view.count(r.fault.nested ? 'nestedFaults' : 'pageFaults');
        return 'done';
      case 'no-memslot':
        view.count('mmioAccesses');
        this.outcome.kind = 'other';
        return 'done';
      case 'no-pages':
        view.count('shadowNoPages');
        this.outcome.kind = 'other';
        return 'done';
    }
  }

}
