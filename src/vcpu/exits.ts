/**
 * VM-exit handlers of the vCPU core, run outside guest mode: control-register
 * and EFER writes with the checks of Linux v5.17 kvm_set_cr0 / kvm_set_cr4 /
 * set_efer / kvm_set_cr3 (cr-checks.ts) and the MMU effect each accepted
 * write has; nested VM entry and exit; SMI and RSM; HLT; INVLPG.
 *
 * A refused write raises #GP and changes nothing (registers and roles stay).
 */
import { kvmMmuNewPgd, resetContext } from '../mmu/init.js';
import { enterGuestEpt, enterGuestNpt, enterGuestShadow, leaveGuest } from '../mmu/transitions.js';
import { CR0 } from '../role/regs.js';
import type { VcpuCore } from './core.js';
import { checkSetCr0, checkSetCr3, checkSetCr4, checkSetEfer, type CrAccepted, type CrRegs, type CrResult, type CrState } from './cr-checks.js';
import type { GuestOp } from './guest-ops.js';
import { makeRequest, REQ } from './requests.js';
import { mutant } from '../check/mutants.js';

export type ExitOutcome = 'ok' | 'gp' | 'halt';

const low32 = (v: bigint): number => Number(v & 0xffffffffn);

/** The state the register checks read: the core's registers (or `regs` instead), CPUID, SMM, host module. */
export function crState(core: VcpuCore, regs: CrRegs = core): CrState {
  return {
    cr0: regs.cr0,
    cr3: regs.cr3,
    cr4: regs.cr4,
    efer: regs.efer,
    features: core.cpuid,
    smm: core.smm,
    host: { module: core.mmu.host.vendor === 'amd' ? 'svm' : 'vmx', nested: true },
  };
}

/** Load a register file into the core and the low halves the MMU reads. */
export function loadRegs(core: VcpuCore, r: CrRegs): void {
  core.cr0 = r.cr0;
  core.cr3 = r.cr3;
  core.cr4 = r.cr4;
  core.efer = r.efer;
  core.mmu.cr0 = low32(r.cr0);
  core.mmu.cr4 = low32(r.cr4);
  core.mmu.efer = low32(r.efer);
}

/** Apply an accepted write and its MMU effect (kvm_post_set_cr0 / cr4, set_efer, kvm_set_cr3). */
function accept(core: VcpuCore, res: CrResult): ExitOutcome {
  if (!res.ok) return 'gp';
  loadRegs(core, res.regs);
  applyEffect(core, res);
  return 'ok';
}

function applyEffect(core: VcpuCore, res: CrAccepted): void {
  const e = res.effect;
  switch (e.kind) {
    case 'none':
      break;
    case 'reset':
      resetContext(core.mmu);
      core.count('mmuResets');
      break;
    case 'request':
      // The vCPU requests work from itself; it is handled before the next entry.
      makeRequest(core.rec.requests, 0, REQ[e.request]);
      break;
    case 'new-pgd':
      kvmMmuNewPgd(core.mmu, e.pgd);
      break;
  }
  if (res.pdptrsLoaded) makeRequest(core.rec.requests, 0, REQ.LOAD_MMU_PGD);
}

/** Handle one VM exit. */
export function handleExit(core: VcpuCore, op: GuestOp): ExitOutcome {
  switch (op.k) {
    case 'mov-cr0':
      return accept(core, checkSetCr0(crState(core), op.v));
    case 'mov-cr4': {
      const res = checkSetCr4(crState(core), op.v);
      // Mutant: the write is taken, its MMU reset forgotten.
      if (mutant['cr4-no-reset'] && res.ok && res.effect.kind === 'reset') return accept(core, { ...res, effect: { kind: 'none' } });
      return accept(core, res);
    }
    case 'wrmsr-efer':
      return accept(core, checkSetEfer(crState(core), op.v));
    case 'mov-cr3':
      return accept(core, checkSetCr3(crState(core), op.v));
    case 'invlpg':
    // kvm_mmu_invlpg: nothing to do without shadow pages; the shadow MMU hooks in here.
    case 'access':
      return 'ok';
    case 'vmentry':
      return nestedEntry(core, op);
    case 'vmexit':
      nestedExit(core);
      return 'ok';
    case 'smi':
      enterSmm(core);
      return 'ok';
    case 'rsm':
      leaveSmm(core);
      return 'ok';
    case 'hlt':
      return 'halt';
  }
}

function nestedEntry(core: VcpuCore, op: Extract<GuestOp, { k: 'vmentry' }>): ExitOutcome {
  if (core.guestMode || core.smm) return 'gp';
  core.l1 = { cr0: core.cr0, cr3: core.cr3, cr4: core.cr4, efer: core.efer };
  const l1 = { cr0: low32(core.cr0), cr4: low32(core.cr4), efer: low32(core.efer) };
  const l2 = { cr0: low32(op.l2.cr0), cr4: low32(op.l2.cr4), efer: low32(op.l2.efer) };
  core.nestedKind = op.kind;
  core.nestedRoot = op.nestedRoot;
  if (op.kind === 'ept') {
    // nested_ept_new_eptp: A/D from EPTP bit 6, levels from the walk length (bits 5:3).
    const caps = op.ept ?? { execonly: false, accessedDirty: true, level: 4, hugePageLevel: 3 };
    const level = ((op.nestedRoot >> 3n) & 7n) === 4n ? 5 : 4;
    const ept = { ...caps, accessedDirty: (op.nestedRoot & 0x40n) !== 0n, level, eptp: op.nestedRoot } as const;
    core.guestInit = { kind: 'ept', ept };
    enterGuestEpt(core.mmu, ept, l2);
  } else if (op.kind === 'npt') {
    // nested_svm_init_mmu_context: CR0.PG with L1's CR4 and EFER (transitions.ts enterGuestNpt).
    core.guestInit = { kind: 'npt', cr0: CR0.PG, cr4: l1.cr4, efer: l1.efer, nestedCr3: op.nestedRoot };
    enterGuestNpt(core.mmu, l1, l2, op.nestedRoot);
  }
  else enterGuestShadow(core.mmu, l2, op.l2.cr3);
  core.cr0 = op.l2.cr0;
  core.cr3 = op.l2.cr3;
  core.cr4 = op.l2.cr4;
  core.efer = op.l2.efer;
  core.count('nestedEntries');
  return 'ok';
}

function nestedExit(core: VcpuCore): void {
  const l1 = core.l1;
  if (!core.guestMode || !l1) return;
  leaveGuest(core.mmu, { cr0: low32(l1.cr0), cr4: low32(l1.cr4), efer: low32(l1.efer) }, l1.cr3);
  core.cr0 = l1.cr0;
  core.cr3 = l1.cr3;
  core.cr4 = l1.cr4;
  core.efer = l1.efer;
  core.l1 = null;
  core.nestedKind = null;
  core.count('nestedExits');
}

/**
 * enter_smm (x86.c): an SMI in L2 first exits to L1 (vendor enter_smm hook);
 * then HF_SMM, CR0 loses PE/EM/TS/PG, CR4 = 0, EFER = 0, and
 * kvm_mmu_reset_context.
 */
function enterSmm(core: VcpuCore): void {
  if (core.smm) return;
  if (core.guestMode) nestedExit(core);
  core.smram = { cr0: core.cr0, cr3: core.cr3, cr4: core.cr4, efer: core.efer };
  core.mmu.smm = true;
  const cr0 = core.cr0 & ~BigInt((CR0.PE | CR0.EM | CR0.TS | CR0.PG) >>> 0);
  loadRegs(core, { cr0, cr3: core.cr3, cr4: 0n, efer: 0n });
  resetContext(core.mmu);
  core.count('mmuResets');
}

/**
 * RSM (emulator em_rsm → kvm_smm_changed(false), rsm_load_state): SMM off
 * and the saved registers back. The kernel reaches the final state through
 * several CR writes, each resetting the MMU; the model does one reset.
 */
function leaveSmm(core: VcpuCore): void {
  if (!core.smm) return;
  const saved = core.smram ?? { cr0: core.cr0, cr3: core.cr3, cr4: core.cr4, efer: core.efer };
  core.smram = null;
  core.mmu.smm = false;
  loadRegs(core, saved);
  resetContext(core.mmu);
  core.count('mmuResets');
}
