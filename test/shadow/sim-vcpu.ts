/**
 * A vCPU's use of the shadow cache, as the vCPU core would wire it (see the
 * integration notes of src/shadow): a context (src/mmu's MmuContext), its
 * RootSet, a walker and walk scratch, and a guest access that runs the
 * lockless walk and, on a miss, the fault handler, retrying as
 * RET_PF_RETRY re-enters the guest. Used by single-thread tests and by the
 * real-thread worker.
 */
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MmuContext } from '../../src/mmu/context.js';
import { GuestWalker, PFERR, walkEnv, type AccessFlags, type WalkEnv, type WalkFault, type WalkRoot } from '../../src/paging/index.js';
import {
  mmuReload,
  mmuUnload,
  newPgd,
  pageFault,
  RootSet,
  trackedWrite,
  translate,
  WALK,
  WalkScratch,
  type FaultRequest,
  type LoadResult,
  type ShadowVm,
} from '../../src/shadow/index.js';

export type AccessOutcome =
  | { kind: 'hit'; gpa: number; faults: number }
  | { kind: 'emulated'; gpa: number; faults: number }
  | { kind: 'guest-fault'; fault: WalkFault; faults: number }
  | { kind: 'no-memslot' | 'no-pages' | 'retries-exhausted'; faults: number }
  | { kind: 'load-failed'; load: LoadResult; faults: number };

const MAX_TRIES = 16;

export class SimVcpu {
  readonly roots = new RootSet();
  readonly scratch = new WalkScratch();
  readonly walker = new GuestWalker();
  /** Set by the run loop: a KVM_REQ_MMU_RELOAD is pending (is_page_fault_stale for PAE roots). */
  reloadPending: () => boolean = () => false;

  constructor(
    readonly vm: ShadowVm,
    readonly agent: number,
    readonly ctx: MmuContext,
    readonly mem: GuestMemory,
    /** get_guest_pgd / pdptrs of the context (ignored by direct contexts). */
    public guest: WalkRoot,
  ) {}

  /** kvm_mmu_reload. */
  reload(): LoadResult {
    return mmuReload(this.vm, this.agent, this.roots, this.ctx, this.guest, this.mem);
  }

  /** kvm_mmu_unload (one context here). */
  unload(): void {
    mmuUnload(this.vm, this.agent, [[this.roots, this.ctx]]);
  }

  /** A CR3 load: __kvm_mmu_new_pgd with the context's base role, then the new guest root. */
  switchPgd(guest: WalkRoot, role = this.ctx.roleBase): boolean {
    const switched = newPgd(this.vm, this.agent, this.roots, this.ctx, guest.pgd, role);
    this.guest = guest;
    return switched;
  }

  /** One lockless walk (guest mode); >= 0 is the GPA, else a WALK code. */
  walk(addr: bigint, env: WalkEnv): number {
    return translate(this.vm, this.agent, this.roots, this.ctx, addr, env, this.scratch);
  }

  /** One fault (outside guest mode) for a walk that missed with `code`. */
  fault(addr: bigint, env: WalkEnv, code: number) {
    const req: FaultRequest = {
      addr,
      errorCode: env.pfec | (code === WALK.PROTECTION ? PFERR.PRESENT : 0),
      guest: this.guest,
      cpl: env.cpl,
      eflagsAc: env.eflagsAc,
      pkru: env.pkru,
      reloadPending: this.reloadPending,
      walker: this.walker,
    };
    return pageFault(this.vm, this.agent, this.roots, this.ctx, this.mem, req);
  }

  /** A whole guest access: reload if needed, walk, fault and retry until it hits or stops. */
  access(addr: bigint, flags: AccessFlags = {}): AccessOutcome {
    const env = walkEnv(flags);
    let faults = 0;
    for (let tries = 0; tries < MAX_TRIES; tries++) {
      const load = this.reload();
      if (load !== 'ok') return { kind: 'load-failed', load, faults };
      const t = this.walk(addr, env);
      if (t >= 0) return { kind: 'hit', gpa: t, faults };
      if (t === WALK.NO_ROOT) continue;
      faults++;
      const f = this.fault(addr, env, t);
      switch (f.kind) {
        case 'fixed':
        case 'spurious':
        case 'retry':
          continue;
        case 'emulate':
          // The emulator performs the write, then page tracking zaps what it shadowed.
          trackedWrite(this.vm, this.agent, f.gpa);
          return { kind: 'emulated', gpa: f.gpa, faults };
        case 'guest-fault':
          return { kind: 'guest-fault', fault: f.fault, faults };
        case 'no-memslot':
        case 'no-pages':
          return { kind: f.kind, faults };
      }
    }
    return { kind: 'retries-exhausted', faults };
  }
}
