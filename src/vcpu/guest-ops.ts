/**
 * The guest operations a vCPU core executes, as a plain union. A workload
 * produces them; the core decides which run in guest mode (memory accesses)
 * and which are VM exits handled outside guest mode (control-register
 * writes, CR3 loads, INVLPG, nested VM entry/exit, SMI/RSM, HLT) — as on
 * hardware with KVM, where the MMU work happens in the exit handlers.
 */
import type { EptInit } from '../mmu/init.js';

export interface L2State {
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
}

export type NestedKind = 'ept' | 'npt' | 'shadow';

export type GuestOp =
  | { readonly k: 'mov-cr0'; readonly v: bigint }
  | { readonly k: 'mov-cr4'; readonly v: bigint }
  | { readonly k: 'wrmsr-efer'; readonly v: bigint }
  | { readonly k: 'mov-cr3'; readonly v: bigint }
  | { readonly k: 'invlpg'; readonly gva: bigint }
  | { readonly k: 'access'; readonly gva: bigint; readonly write: boolean; readonly fetch: boolean; readonly user: boolean }
  | { readonly k: 'vmentry'; readonly kind: NestedKind; readonly l2: L2State; readonly ept?: EptInit; readonly nestedRoot: bigint }
  | { readonly k: 'vmexit' }
  | { readonly k: 'smi' }
  | { readonly k: 'rsm' }
  | { readonly k: 'hlt' };

export type GuestOpKind = GuestOp['k'];

/** Operations that stay in guest mode; every other one is a VM exit. */
export const runsInGuestMode = (op: GuestOp): boolean => op.k === 'access';

/** A read-only view of the vCPU a workload may consult to produce valid operations. */
export interface GuestView {
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
  readonly smm: boolean;
  readonly guestMode: boolean;
  readonly nestedKind: NestedKind | null;
}

/** A source of guest operations (a seeded workload). */
export interface GuestProgram {
  next(view: GuestView): GuestOp;
}
