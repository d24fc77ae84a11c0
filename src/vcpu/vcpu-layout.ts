/**
 * The per-vCPU shared record: one per vCPU in a VM-wide SharedArrayBuffer,
 * declared once here. Each field says who writes it, who reads it and with
 * which ordering. "Owner" is the vCPU's own thread (or its step in an
 * in-thread host); "requester" is any other thread (coordinator, other
 * vCPUs).
 */
import { CPUID_WORDS } from '../cpuid/shared.js';
import { allocate, bindRecord, defineLayout, type RecordView } from '../layout/layout.js';

/** The stress checker's counters (src/check/vcpu-checker.ts), published with the others. */
export const CHECK_STATS = [
  'freshChecks',
  'freshLatent',
  'freshObservable',
  'accessChecks',
  'accessSkipped',
  'accessMismatches',
  'sharingViolations',
  'useAfterFree',
  'tlbChecks',
  'staleTranslations',
] as const;

/** Counters published by the owner at every exit to the host loop. */
export const VCPU_STATS = [
  'guestOps',
  'accesses',
  'pageFaults',
  'nestedFaults',
  'guestEntries',
  'entriesBackedOut',
  'gpFaults',
  'mmuInits',
  'fastPathHits',
  'rebuilds',
  'mmuResets',
  'mmuUnloads',
  'requestsHandled',
  'tlbFlushes',
  'cpuidApplied',
  'cpuidRefused',
  'halts',
  'nestedEntries',
  'nestedExits',
  // Shadow MMU (src/vcpu/shadow-mmu.ts), when the VM has a shadow page cache.
  'shadowHits',
  'shadowExits',
  'emulatedWrites',
  'mmioAccesses',
  'shadowNoPages',
  'faultRetriesExhausted',
  'mmuLoadFailures',
  'tripleFaults',
  // Stress invariants checked in the vCPU (src/check/vcpu-checker.ts), when checking is on.
  ...CHECK_STATS,
  // Role checker counts (src/check/role-checker.ts), when checking is on.
  'invalidations',
  'missedRebuildLatent',
  'missedRebuildObservable',
  'invalidReadLatent',
  'invalidReadObservable',
] as const;
export type VcpuStat = (typeof VCPU_STATS)[number];
export const STAT_INDEX = Object.fromEntries(VCPU_STATS.map((s, i) => [s, i])) as Record<VcpuStat, number>;

/** Shared register slots (64-bit). */
export const REG_SLOTS = ['cr0', 'cr3', 'cr4', 'efer', 'l1Cr0', 'l1Cr3', 'l1Cr4', 'l1Efer', 'nestedRoot'] as const;
export type RegSlot = (typeof REG_SLOTS)[number];
export const REG_INDEX = Object.fromEntries(REG_SLOTS.map((s, i) => [s, i])) as Record<RegSlot, number>;

/** Bits of the `flags` word. */
export const VCPU_FLAG = { SMM: 1 << 0, GUEST_MODE: 1 << 1, NESTED_EPT: 1 << 2, NESTED_NPT: 1 << 3, STOPPED: 1 << 4 } as const;

const VCPU_FIELDS = {
  requests: {
    type: 'i32',
    doc: 'request bits (requests.ts). Requesters set with Atomics.or after publishing any data; the owner tests and clears with Atomics.and before every entry. A requester that wakes a halted owner calls Atomics.notify on this word.',
  },
  mode: {
    type: 'i32',
    doc: 'vcpu_mode (MODE.*). Owner stores IN_GUEST / OUTSIDE / READING_SHADOW_PAGE_TABLES with Atomics.store; requesters only compareExchange IN_GUEST -> EXITING. Dekker pairing with `requests`: owner stores mode then loads requests; requester sets a request then CASes mode.',
  },
  halted: {
    type: 'i32',
    doc: '1 while the owner is blocked in HLT waiting on `requests`. Owner stores 1 before re-checking requests and waiting, 0 after waking; requesters load it to decide kvm_vcpu_wake_up (Atomics.notify on requests).',
  },
  outsideEpoch: {
    type: 'i32',
    doc: 'incremented (Atomics.add) by the owner each time its mode returns to OUTSIDE from IN_GUEST, EXITING or READING_SHADOW_PAGE_TABLES, then Atomics.notify. A waiting request snapshots it after setting the request and returns once it changed: the "IPI acknowledged" event.',
  },
  guestEntries: {
    type: 'i32',
    doc: 'guest-mode entries that passed the request re-check. Owner Atomics.add right after the re-check; requesters Atomics.load (tests prove with it that a waiting request never returns while a target is still in the entry it was in).',
  },
  go: {
    type: 'i32',
    doc: '0 until the coordinator lets the vCPU make its first KVM_RUN (every vCPU thread exists first); the coordinator Atomics.store 1 then Atomics.notify; the host loop waits on it with Atomics.waitAsync.',
  },
  requestSeq: {
    type: 'i32',
    doc: 'requests made on this vCPU so far. A requester Atomics.add before setting the bit (requestAndKick). Read by the owner at stintSeq time.',
  },
  stintSeq: {
    type: 'i32',
    doc: 'the requestSeq the owner read right after its entry re-check passed (the current guest-mode stint is "verified"); -1 from just before it stores mode = IN_GUEST until then. Owner Atomics.store; tests Atomics.load it after a waiting request returned: IN_GUEST with 0 <= stintSeq < their sequence means a stint older than the request is still running guest code.',
  },
  rootPage: {
    type: 'i32',
    doc: 'the shadow page the current MMU translates through in the current stint (its root, or the first PAE root; -1 none). Owner Atomics.store after its entry re-check passed and before stintSeq; checkers load stintSeq, rootPage, then stintSeq again: equal sequences mean the root belongs to that verified stint.',
  },
  ran: {
    type: 'i32',
    doc: '0 until the first guest entry (KVM last_vmentry_cpu == -1), then 1. Owner stores; requesters load it for the strict CPUID policy.',
  },
  cpuidPosted: {
    type: 'i32',
    count: CPUID_WORDS,
    doc: 'a CPUID table posted for CPUID_UPDATE. The requester stores it (Atomics.store) and cpuidPostedEpoch before setting the request; the owner loads it after consuming the request. One broadcast at a time per VM (the coordinator serialises them).',
  },
  cpuidPostedEpoch: { type: 'i32', doc: 'epoch of cpuidPosted; requester Atomics.store before the request; owner Atomics.load.' },
  cpuidAppliedEpoch: {
    type: 'i32',
    doc: 'the last posted epoch the owner handled (applied or refused). Owner Atomics.store then Atomics.notify; the requester waits for it to reach its epoch.',
  },
  cpuidResult: { type: 'i32', doc: 'outcome for cpuidAppliedEpoch: 0 applied, 1 identical (no-op), 2 refused (strict policy). Owner stores before cpuidAppliedEpoch.' },
  pingPosted: { type: 'i32', doc: 'epoch of a PING request; the requester Atomics.store before setting the request; the owner Atomics.load after consuming it.' },
  pingAck: { type: 'i32', doc: 'the last PING epoch the owner handled; owner Atomics.store then Atomics.notify; the requester waits for it.' },
  flags: { type: 'i32', doc: 'VCPU_FLAG bits (SMM, guest mode, nested kind, stopped). Owner Atomics.store at every exit to the host loop; others read it only as a snapshot.' },
  roles: {
    type: 'u32',
    count: 6,
    doc: 'cached roles of root_mmu, guest_mmu, nested_mmu (base, ext each). Owner-only plain writes (MmuContext storage); others read only while the vCPU is outside its run loop (after a control-plane handshake) or as a racy snapshot.',
  },
  regs: {
    type: 'u64',
    count: REG_SLOTS.length,
    doc: 'architectural registers (REG_SLOTS). Owner Atomics.store at every exit to the host loop and on control-plane writes; others Atomics.load as a snapshot.',
  },
  stats: {
    type: 'f64',
    count: VCPU_STATS.length,
    doc: 'VCPU_STATS counters. Owner-only writes, published at every exit to the host loop; others read them as a snapshot (a value may lag by one batch).',
  },
} as const;

export const VCPU_LAYOUT = defineLayout('vcpu', VCPU_FIELDS);
export type VcpuRecord = RecordView<typeof VCPU_FIELDS>;

/** Allocate the records of `n` vCPUs in one SharedArrayBuffer. */
export const allocateVcpus = (n: number): SharedArrayBuffer => allocate(VCPU_LAYOUT, n);
export const bindVcpu = (buf: SharedArrayBuffer, index: number): VcpuRecord => bindRecord(VCPU_LAYOUT, buf, index);
