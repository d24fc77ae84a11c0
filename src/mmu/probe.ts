/**
 * Role probes: run one init on a fresh vCPU (`computeState`), or one vCPU
 * through a sequence of inits and CPUID changes (`replaySequence`), and report
 * the touched context as plain JSON. These are what `role compute` and
 * `role replay` print; hold-out vectors made from the kernel's own functions
 * are compared against them.
 */
import { hex32 } from '../role/bitfield.js';
import { calcRootPageRole } from '../role/compute.js';
import type { HostSettings } from '../role/host.js';
import type { MmuContext, MmuName, RsvdBitsValidate } from './context.js';
import { initNestedMmu, initShadowEptMmu, initShadowMmu, initShadowNptMmu, initTdpMmu, setCpuid, setRoleRegisters, type EptInit, type InitPath } from './init.js';
import type { ComputeState, ReplaySequence, ReplayStep } from './probe-schema.js';
import { STRATEGIES, type InvalidationStrategy } from './strategies.js';
import { VcpuMmu } from './vcpu-mmu.js';

export interface RsvdJson {
  rsvdBitsMask: [string[], string[]];
  badMtXwr: string;
}

export interface ContextJson {
  base: string;
  ext: string;
  rootLevel: number;
  shadowRootLevel: number;
  directMap: boolean;
  rsvdBitsMask: [string[], string[]];
  badMtXwr: string;
  permissions: number[];
  pkruMask: string;
  gvaToGpa: string | null;
  eptAd: boolean;
  shadowZeroCheck: RsvdJson | null;
}

export interface ComputeResult extends ContextJson {
  newPgdRole: string | null;
}

export interface ReplayResult extends ContextJson {
  mmu: MmuName;
  skipped: boolean;
}

/** Lower-case hex with 0x, no padding. */
export const hex64 = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

function rsvdJson(c: RsvdBitsValidate): RsvdJson {
  const row = (big: 0 | 1) => [0, 1, 2, 3, 4].map((l) => hex64(c.get(big, l)));
  return { rsvdBitsMask: [row(0), row(1)], badMtXwr: hex64(c.badMtXwr) };
}

/** A context as the probes print it. */
export function contextJson(ctx: MmuContext): ContextJson {
  const guest = rsvdJson(ctx.guestRsvdCheck);
  return {
    base: hex32(ctx.roleBase),
    ext: hex32(ctx.roleExt),
    rootLevel: ctx.rootLevel,
    shadowRootLevel: ctx.shadowRootLevel,
    directMap: ctx.directMap,
    rsvdBitsMask: guest.rsvdBitsMask,
    badMtXwr: guest.badMtXwr,
    permissions: Array.from(ctx.permissions),
    pkruMask: hex64(BigInt(ctx.pkruMask >>> 0)),
    gvaToGpa: ctx.gvaToGpa,
    eptAd: ctx.eptAd,
    shadowZeroCheck: ctx.shadowZeroCheckSet ? rsvdJson(ctx.shadowZeroCheck) : null,
  };
}

const low32 = (v: bigint): number => Number(v & 0xffffffffn);

interface StepRegs {
  cr0: bigint;
  cr4: bigint;
  efer: bigint;
  smm: boolean;
  guestMode: boolean;
}

/**
 * One `init` step as KVM's callers do it: write what the caller writes to the
 * vCPU, point mmu/walk_mmu, run that path's init. Returns the touched context.
 */
export function runInitStep(v: VcpuMmu, path: InitPath, r: StepRegs, ept: EptInit | undefined): { ctx: MmuContext; skipped: boolean } {
  const cr0 = low32(r.cr0);
  const cr4 = low32(r.cr4);
  const efer = low32(r.efer);
  switch (path) {
    case 'tdp':
    case 'shadow':
      setRoleRegisters(v, cr0, cr4, efer, r.smm, r.guestMode);
      v.useContexts(false);
      return { ctx: v.rootMmu, skipped: path === 'tdp' ? initTdpMmu(v) : initShadowMmu(v) };
    case 'nested':
      // The registers are L2's.
      setRoleRegisters(v, cr0, cr4, efer, r.smm, r.guestMode);
      v.useContexts(true);
      return { ctx: v.nestedMmu, skipped: initNestedMmu(v) };
    case 'shadow-npt':
      // Only the hflags are the vCPU's; CR0/CR4/EFER are kvm_init_shadow_npt_mmu's arguments.
      v.smm = r.smm;
      v.guestMode = r.guestMode;
      v.useContexts(true);
      return { ctx: v.guestMmu, skipped: initShadowNptMmu(v, cr0, cr4, efer) };
    case 'shadow-ept':
      v.smm = r.smm;
      v.guestMode = r.guestMode;
      v.useContexts(true);
      if (!ept) throw new Error('shadow-ept needs EPT arguments');
      return { ctx: v.guestMmu, skipped: initShadowEptMmu(v, ept) };
  }
}

/**
 * `role compute`: a fresh vCPU (all contexts zero-filled) with the state's
 * CPUID and host settings, exactly one init of the given path. For
 * shadow-ept, root_mmu is first initialised (TDP) from the same registers and
 * SMM, because that path inherits SMM from root_mmu's role.
 */
export function computeState(state: ComputeState, strategy: InvalidationStrategy = STRATEGIES['valid-bit']): ComputeResult {
  const host: HostSettings = state.host;
  const v = new VcpuMmu({ host, cpuid: state.cpuid, strategy });
  let touched: MmuContext;
  if (state.path === 'shadow-ept') {
    setRoleRegisters(v, low32(state.cr0), low32(state.cr4), low32(state.efer), state.smm, state.guestMode);
    initTdpMmu(v);
    touched = runInitStep(v, 'shadow-ept', state, state.ept).ctx;
  } else {
    touched = runInitStep(v, state.path, state, state.ept).ctx;
  }
  let newPgdRole: string | null = null;
  if (state.path === 'tdp' || state.path === 'shadow') newPgdRole = hex32(calcRootPageRole(v.roleRegs(), v, host));
  else if (state.path !== 'nested' && v.lastNewPgdRole !== null) newPgdRole = hex32(v.lastNewPgdRole);
  return { ...contextJson(touched), newPgdRole };
}

/** `role replay`: one fresh vCPU through every step; one result per step. */
export function replaySequence(seq: ReplaySequence, strategy: InvalidationStrategy = STRATEGIES['valid-bit']): ReplayResult[] {
  const v = new VcpuMmu({ host: seq.host, cpuid: seq.cpuid, strategy });
  return seq.steps.map((step: ReplayStep) => {
    const r = step.op === 'init' ? runInitStep(v, step.path, step, step.ept ?? seq.ept) : setCpuid(v, step.cpuid);
    return { mmu: r.ctx.name, skipped: r.skipped, ...contextJson(r.ctx) };
  });
}
