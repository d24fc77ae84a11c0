/**
 * The walker as a plain function returning a plain result: one GuestWalker
 * per call, so this allocates; hot loops keep a GuestWalker and call
 * gvaToGpa directly.
 */
import { asGpa, type Gpa } from '../memory/address.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { ACC } from './format.js';
import type { WalkMmu } from './mmu-view.js';
import { walkEnv, type AccessFlags, type WalkEnv } from './permission.js';
import { gvaToGpa } from './walker.js';
import { GuestWalker, type NestedTdp, type WalkFault, type WalkRoot } from './walker-state.js';

export interface WalkOk {
  readonly ok: true;
  readonly gpa: Gpa;
  readonly pageSize: number;
  /** Leaf level (0 for the nonpaging walker). */
  readonly level: number;
  /** Effective ACC_* bits of the page (for EPT, ACC.USER = readable). */
  readonly access: number;
  /** KVM's walker->pte_access: `access` without W on a read of a clean leaf. */
  readonly pteAccess: number;
  readonly pkey: number;
  /** Walks restarted after losing an A/D race. */
  readonly retries: number;
}

export interface WalkErr {
  readonly ok: false;
  readonly fault: Readonly<WalkFault>;
  readonly retries: number;
}

export type WalkResult = WalkOk | WalkErr;

export interface WalkOptions {
  /** The guest_mmu side when `mmu` is nested_mmu (a two-dimensional walk). */
  readonly nested?: NestedTdp | null;
  /** Whether `mmu` is vcpu->arch.walk_mmu; false for guest_mmu walks (their faults are nested). Default true. */
  readonly isWalkMmu?: boolean;
}

const isEnv = (a: AccessFlags | WalkEnv): a is WalkEnv => typeof (a as WalkEnv).pfec === 'number';

/** Translate `addr` with the context's walker; see gvaToGpa. */
export function walkGuest(mmu: WalkMmu, mem: GuestMemory, root: WalkRoot, addr: bigint, access: AccessFlags | WalkEnv, opts: WalkOptions = {}): WalkResult {
  const w = new GuestWalker();
  const env = isEnv(access) ? access : walkEnv(access);
  if (!gvaToGpa(w, mmu, mem, root, BigInt.asUintN(64, addr), env, opts.nested ?? null, opts.isWalkMmu ?? true)) {
    return { ok: false, fault: { ...w.fault }, retries: w.retries };
  }
  return {
    ok: true,
    gpa: asGpa(w.gpa),
    pageSize: w.pageSize,
    level: w.level,
    access: w.access,
    pteAccess: w.pteAccess,
    pkey: w.pkey,
    retries: w.retries,
  };
}

/** ACC_* bits as words: x86 "user", EPT "read". */
export function describeAccess(acc: number, ept: boolean): { read: boolean; write: boolean; exec: boolean; user: boolean } {
  return {
    read: ept ? (acc & ACC.USER) !== 0 : true,
    write: (acc & ACC.WRITE) !== 0,
    exec: (acc & ACC.EXEC) !== 0,
    user: !ept && (acc & ACC.USER) !== 0,
  };
}
