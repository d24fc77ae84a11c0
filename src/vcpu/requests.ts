/**
 * vCPU requests (Linux v5.17 include/linux/kvm_host.h, arch/x86 kvm_host.h):
 * a bit in the target's `requests` word, with KVM's WAIT and NO_WAKEUP
 * flags, processed by the target before every guest entry in a fixed order.
 *
 * Our bit numbers are our own (one 32-bit word); the names, flags and the
 * processing order are KVM's. Two requests are ours: CPUID_UPDATE (the
 * shared-memory CPUID broadcast; in KVM that is a per-vCPU ioctl) and
 * USERSPACE_EXIT (the VMM signalling a vCPU thread out of KVM_RUN, as a
 * signal with `immediate_exit` does).
 */

export interface RequestDef {
  readonly name: string;
  readonly bit: number;
  /** KVM_REQUEST_WAIT: the requester waits until every target left guest mode. */
  readonly wait: boolean;
  /** KVM_REQUEST_NO_WAKEUP: do not wake a halted vCPU for it. */
  readonly noWakeup: boolean;
}

const def = (name: string, bit: number, wait: boolean, noWakeup: boolean): RequestDef => ({ name, bit, wait, noWakeup });

/** In the order vcpu_enter_guest processes them (MMU-relevant subset + ours). */
export const REQ = {
  /** KVM_REQ_VM_DEAD, used as "stop": the run loop returns for good. */
  STOP: def('STOP', 0, true, false),
  /** KVM_REQ_MMU_RELOAD: unload all roots; the next entry reloads. */
  MMU_RELOAD: def('MMU_RELOAD', 1, true, true),
  /** KVM_REQ_MMU_SYNC: sync unsync shadow pages reachable from the roots. */
  MMU_SYNC: def('MMU_SYNC', 2, false, false),
  /** KVM_REQ_LOAD_MMU_PGD: load the new root into "hardware". */
  LOAD_MMU_PGD: def('LOAD_MMU_PGD', 3, false, false),
  /** KVM_REQ_TLB_FLUSH: flush all TLB contexts of this vCPU. */
  TLB_FLUSH: def('TLB_FLUSH', 4, true, true),
  /** KVM_REQ_TLB_FLUSH_CURRENT. */
  TLB_FLUSH_CURRENT: def('TLB_FLUSH_CURRENT', 5, false, false),
  /** KVM_REQ_TLB_FLUSH_GUEST. */
  TLB_FLUSH_GUEST: def('TLB_FLUSH_GUEST', 6, true, true),
  /** Ours: apply the CPUID table posted in this vCPU's record, then kvm_mmu_after_set_cpuid. */
  CPUID_UPDATE: def('CPUID_UPDATE', 7, true, false),
  /** Ours: leave the run loop to the host's event loop (control plane). */
  USERSPACE_EXIT: def('USERSPACE_EXIT', 8, false, false),
  /** KVM_REQ_TRIPLE_FAULT. */
  TRIPLE_FAULT: def('TRIPLE_FAULT', 9, false, false),
  /** Ours: acknowledge `pingPosted` in `pingAck` and do nothing else (the benchmarks' no-MMU-work limit). */
  PING: def('PING', 10, true, false),
} as const;

export type RequestName = keyof typeof REQ;

export const REQUEST_NAMES = Object.keys(REQ) as RequestName[];

export const requestByName = (name: string): RequestDef | undefined => (REQ as Record<string, RequestDef>)[name];

/** vCPU modes (linux/kvm_host.h `enum vcpu_mode`). */
export const MODE = {
  OUTSIDE_GUEST: 0,
  IN_GUEST: 1,
  EXITING_GUEST: 2,
  READING_SHADOW_PAGE_TABLES: 3,
} as const;

/**
 * kvm_make_request: publish the request bit with a read-modify-write. Any data
 * the request refers to must be stored (Atomics.store) before this call; the
 * sequentially consistent RMW orders it (KVM: smp_wmb before set_bit).
 */
export function makeRequest(requests: Int32Array, index: number, req: RequestDef): void {
  Atomics.or(requests, index, 1 << req.bit);
}

/**
 * kvm_check_request: test, then clear with an atomic; data published before
 * the request is visible after this returns true (KVM: smp_mb__after_atomic).
 */
export function checkRequest(requests: Int32Array, index: number, req: RequestDef): boolean {
  const mask = 1 << req.bit;
  if ((Atomics.load(requests, index) & mask) === 0) return false;
  return (Atomics.and(requests, index, ~mask) & mask) !== 0;
}

/** kvm_request_pending: any request bit set. */
export const requestPending = (requests: Int32Array, index: number): boolean => Atomics.load(requests, index) !== 0;
