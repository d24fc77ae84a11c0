/**
 * The requester side of KVM's request protocol over vCPU records
 * (Linux v5.17 virt/kvm/kvm_main.c `kvm_make_vcpus_request_mask`,
 * `kvm_request_needs_ipi`, `kvm_vcpu_kick`). Synchronous and host-agnostic:
 * it sets bits and kicks; waiting for the "IPI acknowledgement" is separate
 * (vm/wait.ts for real threads; an in-thread host just keeps scheduling).
 */
import { type CpuidModel } from '../cpuid/cpuid.js';
import { encodeCpuid } from '../cpuid/shared.js';
import { makeRequest, MODE, REQ, type RequestDef } from '../vcpu/requests.js';
import type { VcpuRecord } from '../vcpu/vcpu-layout.js';
import { mutant } from '../check/mutants.js';

/** What a waiting requester must wait for on one target: its outsideEpoch to move past `epoch`. */
export interface AckWait {
  readonly vcpu: number;
  readonly epoch: number;
}

/**
 * Make a request on one vCPU and kick it. Order (the Dekker pairing with the
 * vCPU's entry): set the bit (SC read-modify-write = KVM's smp_mb before the
 * mode check), then — unless the request is NO_WAKEUP — wake a halted vCPU
 * and stop; else snapshot outsideEpoch and CAS mode IN_GUEST -> EXITING.
 * Returns what to wait for when the request needs an "IPI", else null.
 */
export function requestAndKick(rec: VcpuRecord, vcpu: number, req: RequestDef): AckWait | null {
  // Sequence the request first (tests compare it with the target's stintSeq).
  Atomics.add(rec.requestSeq, 0, 1);
  makeRequest(rec.requests, 0, req);
  if (!req.noWakeup && Atomics.load(rec.halted, 0) !== 0) {
    // kvm_vcpu_wake_up: a blocked vCPU is outside guest mode; no IPI to wait for.
    Atomics.notify(rec.requests, 0);
    return null;
  }
  // Mutant: the bit is set, nobody is kicked or waited for.
  if (mutant['request-no-kick']) return null;
  // Snapshot before the CAS: an exit after this point acknowledges our request.
  const epoch = Atomics.load(rec.outsideEpoch, 0);
  const old = Atomics.compareExchange(rec.mode, 0, MODE.IN_GUEST, MODE.EXITING_GUEST);
  // kvm_request_needs_ipi: WAIT requests wait for any mode but OUTSIDE; others only kick IN_GUEST.
  const needsIpi = req.wait ? old !== MODE.OUTSIDE_GUEST : old === MODE.IN_GUEST;
  if (!needsIpi) return null;
  // A halted vCPU woken late (NO_WAKEUP requests never wake it) is outside guest mode anyway.
  return { vcpu, epoch };
}

/**
 * kvm_make_all_cpus_request: the request on every target; returns the
 * acknowledgements a WAIT request must collect before it may return.
 */
export function makeAllCpusRequest(records: readonly VcpuRecord[], req: RequestDef, targets?: readonly number[]): AckWait[] {
  const acks: AckWait[] = [];
  for (const i of targets ?? records.keys()) {
    const a = requestAndKick(records[i]!, i, req);
    if (a && req.wait) acks.push(a);
  }
  return acks;
}

/** True once the target left guest mode after the snapshot (or was never in it). */
export const acknowledged = (rec: VcpuRecord, a: AckWait): boolean => Atomics.load(rec.outsideEpoch, 0) !== a.epoch;

/**
 * Post a CPUID table to each target and make CPUID_UPDATE: the table and its
 * epoch are stored (Atomics.store) before the request bit is set, so a vCPU
 * that consumes the bit reads this table.
 */
export function postCpuid(records: readonly VcpuRecord[], cpuid: CpuidModel, epoch: number, targets?: readonly number[]): AckWait[] {
  const list = targets ?? [...records.keys()];
  for (const i of list) {
    const rec = records[i]!;
    encodeCpuid(cpuid, rec.cpuidPosted);
    Atomics.store(rec.cpuidPostedEpoch, 0, epoch);
  }
  return makeAllCpusRequest(records, REQ.CPUID_UPDATE, list);
}

/** Whether a target has handled (applied or refused) the CPUID posted with `epoch`. */
export const cpuidHandled = (rec: VcpuRecord, epoch: number): boolean => Atomics.load(rec.cpuidAppliedEpoch, 0) >= epoch;

/**
 * The shadow cache's reach to the other vCPUs (src/shadow ShadowHooks):
 * kvm_reload_remote_mmus and kvm_flush_remote_tlbs set the request on every
 * vCPU and kick, without waiting (they run under mmu_lock).
 */
export const remoteRequestHooks = (records: readonly VcpuRecord[]): { reloadRemoteMmus(): void; flushRemoteTlbs(): void } => ({
  reloadRemoteMmus: () => void makeAllCpusRequest(records, REQ.MMU_RELOAD),
  flushRemoteTlbs: () => void makeAllCpusRequest(records, REQ.TLB_FLUSH),
});
