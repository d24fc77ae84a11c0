/**
 * Guest memory accesses in guest mode, through the current walk MMU: the
 * guest page walker driven by `walk_mmu` (nested_mmu over guest_mmu while L2
 * runs with nested TDP), as KVM's gva_to_gpa does. A fault is a guest page
 * fault (or, for a violation in L1's nested tables, a nested fault); the
 * walker sets accessed/dirty bits with compare-exchange. This is the whole
 * access for a VM without a shadow cache, and the CPU's own walk of the
 * guest's tables for one with it (shadow-mmu.ts, TDP and nested TDP).
 *
 * Keeps one walker and one access environment per vCPU: no allocation per access.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { gvaToGpa } from '../paging/walker.js';
import { GuestWalker, nestedTdp, type NestedTdp, type WalkRoot } from '../paging/walker-state.js';
import type { WalkEnv } from '../paging/permission.js';
import { PFERR } from '../paging/format.js';
import type { VcpuMmu } from '../mmu/vcpu-mmu.js';
import type { WalkFault } from '../paging/walker-state.js';
import type { GuestOp } from './guest-ops.js';

/** How an access ended, for checkers (mutated in place: no allocation per access). */
export interface AccessOutcome {
  /** gpa: translated to `gpa`; fault: a guest (or nested) page fault; other: emulated, MMIO or no pages. */
  kind: 'gpa' | 'fault' | 'other';
  gpa: number;
  errorCode: number;
  nested: boolean;
}

export const newOutcome = (): AccessOutcome => ({ kind: 'other', gpa: -1, errorCode: 0, nested: false });

/** Record a guest fault in an outcome. */
export function faultOutcome(o: AccessOutcome, f: WalkFault): void {
  o.kind = 'fault';
  o.gpa = -1;
  o.errorCode = f.errorCode;
  o.nested = f.nested;
}

/** What a walk reads of the vCPU (the core satisfies it). */
export interface WalkingVcpu {
  readonly mmu: VcpuMmu;
  readonly cr3: bigint;
  readonly nestedRoot: bigint;
  count(stat: 'accesses' | 'pageFaults' | 'nestedFaults'): void;
}

export class GuestAccess {
  private readonly walker = new GuestWalker();
  private readonly env: WalkEnv = { pfec: 0, cpl: 0, eflagsAc: false, pkru: 0 };
  private readonly root: WalkRoot = { pgd: 0n, pdptes: null };
  private nested: NestedTdp | null = null;
  private nestedRoot = -1n;

  /** How the last access ended. */
  readonly outcome: AccessOutcome = newOutcome();

  constructor(readonly memory: GuestMemory) {}

  /** The address the last successful walk's leaf maps in the walked space (the L2 GPA of a nested walk). */
  get outerGpa(): bigint {
    return this.walker.outerGpa;
  }

  /** One load, store or fetch. Returns true when it translated. */
  run(core: WalkingVcpu, op: Extract<GuestOp, { k: 'access' }>): boolean {
    const env = this.env;
    env.pfec = (op.write ? PFERR.WRITE : 0) | (op.user ? PFERR.USER : 0) | (op.fetch ? PFERR.FETCH : 0);
    env.cpl = op.user ? 3 : 0;
    this.root.pgd = core.cr3;
    const v = core.mmu;
    const nested = v.isNested() ? this.nestedFor(core) : null;
    core.count('accesses');
    if (gvaToGpa(this.walker, v.walkMmu, this.memory, this.root, op.gva, env, nested, true)) {
      this.outcome.kind = 'gpa';
      this.outcome.gpa = Number(this.walker.gpa);
      return true;
    }
    faultOutcome(this.outcome, this.walker.fault);
    core.count(this.walker.fault.nested ? 'nestedFaults' : 'pageFaults');
    return false;
  }

  /** The guest_mmu side of a two-dimensional walk, rebuilt when the nested root changes. */
  private nestedFor(core: WalkingVcpu): NestedTdp {
    if (!this.nested || this.nestedRoot !== core.nestedRoot || this.nested.mmu !== core.mmu.guestMmu) {
      this.nested = nestedTdp(core.mmu.guestMmu, { pgd: core.nestedRoot, pdptes: null });
      this.nestedRoot = core.nestedRoot;
    }
    return this.nested;
  }
}
