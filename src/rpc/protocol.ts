/**
 * The control-plane protocol between the coordinator and a vCPU worker:
 * versioned call shapes and stable error codes. Errors cross as data
 * (`RpcResult`), never as thrown exceptions flattened to a message.
 * The hot path never uses this: it is for ioctl-like calls a VMM makes.
 */
import type { CpuidModel } from '../cpuid/cpuid.js';

export const PROTOCOL_VERSION = 1;

export const RPC_ERRORS = {
  /** KVM would refuse the call in the vCPU's current state (e.g. strict CPUID change after the first run). */
  NOT_ALLOWED: 'NOT_ALLOWED',
  /** The arguments are invalid (e.g. a register value a real CPU rejects). */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** The vCPU's worker died; the call cannot complete. */
  VCPU_DEAD: 'VCPU_DEAD',
  /** No answer before the deadline. */
  TIMEOUT: 'TIMEOUT',
  /** The vCPU was stopped. */
  STOPPED: 'STOPPED',
  /** The peer speaks another protocol version. */
  VERSION_MISMATCH: 'VERSION_MISMATCH',
  INTERNAL: 'INTERNAL',
} as const;
export type RpcErrorCode = keyof typeof RPC_ERRORS;

export type RpcResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly code: RpcErrorCode; readonly message: string };

export const ok = <T>(value: T): RpcResult<T> => ({ ok: true, value });
export const fail = <T = never>(code: RpcErrorCode, message: string): RpcResult<T> => ({ ok: false, code, message });

/** Registers as they cross the boundary: hex strings (bigint does not survive every transport). */
export interface RegsWire {
  readonly cr0: string;
  readonly cr3: string;
  readonly cr4: string;
  readonly efer: string;
}

export interface VcpuSnapshot {
  readonly id: number;
  readonly regs: RegsWire;
  readonly smm: boolean;
  readonly guestMode: boolean;
  readonly halted: boolean;
  readonly hasRun: boolean;
  readonly paused: boolean;
  /** base/ext of root, guest, nested, as 0x-prefixed 8-digit hex. */
  readonly roles: { readonly root: [string, string]; readonly guest: [string, string]; readonly nested: [string, string] };
  readonly cpuid: CpuidModel;
  readonly stats: Readonly<Record<string, number>>;
}

export type CpuidOutcome = 'applied' | 'identical';

/** A checker finding as it crosses the boundary (src/check/role-checker.ts RoleFinding). */
export interface FindingWire {
  readonly invariant: string;
  readonly severity: 'latent' | 'observable';
  readonly strategy: string;
  readonly vcpu: number;
  readonly mmu: string;
  readonly op: number;
  readonly detail: string;
  /** The vCPU's last traced events before the end of the run, when the run kept a trace (stress). */
  readonly events?: readonly string[];
}

/** What a vCPU worker exposes. Every method returns a result; none throws. */
export interface VcpuControl {
  hello(version: number): RpcResult<number>;
  snapshot(): RpcResult<VcpuSnapshot>;
  getRegs(): RpcResult<RegsWire>;
  /** KVM_SET_SREGS-like: checked like guest writes; refused while L2 runs. */
  setRegs(regs: Partial<RegsWire>): RpcResult<RegsWire>;
  /** KVM_SET_CPUID2 on this vCPU: policy-checked, then kvm_mmu_after_set_cpuid. */
  setCpuid(cpuid: CpuidModel): RpcResult<CpuidOutcome>;
  /** Keep the vCPU out of its run loop until resume (a VMM not calling KVM_RUN). */
  pause(): RpcResult<void>;
  resume(): RpcResult<void>;
  /** Leave the run loop for good. */
  stop(): RpcResult<void>;
  /** The first findings of this vCPU's checker (empty when checking is off). */
  findings(): RpcResult<FindingWire[]>;
}
