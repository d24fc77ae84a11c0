/**
 * The vCPU core: one vCPU's run loop over shared memory and its own locals,
 * modelled on Linux v5.17 `vcpu_enter_guest` / `vcpu_run` (arch/x86/kvm/x86.c).
 * Host-agnostic: it never touches worker, piscina or comlink APIs, so the
 * same core runs on a worker thread or under an in-thread scheduler.
 *
 * One call of `run(budget)`: process requests in KVM's order; if halted,
 * return 'halt'; otherwise enter guest mode with KVM's ordering (store
 * mode = IN_GUEST, then load requests — Atomics are sequentially consistent,
 * so this is the full barrier — and back out if any is pending); execute guest
 * operations until one is a VM exit, the vCPU is kicked (mode no longer
 * IN_GUEST) or the budget is spent; leave guest mode; handle the exit
 * outside guest mode. Repeat until the budget is spent or the host is needed.
 */
import { cpuidEqual, type CpuidModel } from '../cpuid/cpuid.js';
import { decodeCpuid } from '../cpuid/shared.js';
import { initMmu, mmuUnload, resetContext, setCpuid } from '../mmu/init.js';
import type { InvalidationStrategy } from '../mmu/strategies.js';
import { VcpuMmu } from '../mmu/vcpu-mmu.js';
import type { HostSettings } from '../role/host.js';
import { handleExit, loadRegs, type ExitOutcome } from './exits.js';
import { runsInGuestMode, type GuestOp, type GuestProgram, type GuestView, type NestedKind } from './guest-ops.js';
import { checkRequest, makeRequest, MODE, REQ } from './requests.js';
import type { PendingFault, VcpuShadow } from './shadow-mmu.js';
import { mutant } from '../check/mutants.js';
import type { VcpuChecker } from '../check/vcpu-checker.js';
import type { GuestMmuInit } from '../mmu/init.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { GuestAccess } from './access.js';
import { REG_INDEX, STAT_INDEX, VCPU_FLAG, type VcpuRecord, type VcpuStat } from './vcpu-layout.js';
import type { Tracer } from '../trace/tracer.js';
import type { LoadResult } from '../shadow/index.js';

export type CpuidPolicy = 'strict' | 'legacy';

/** Why `run` returned to its host. */
export type ExitReason = 'budget' | 'halt' | 'userspace' | 'stop';

/** What one `step` did: entered guest mode, backed out, executed an operation, exited, was kicked, or returned to the host. */
export type StepResult = 'entered' | 'retry' | 'op' | 'exit' | 'kicked' | Exclude<ExitReason, 'budget'>;

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A guest operation in a few words. */
export function describeOp(op: GuestOp): string {
  switch (op.k) {
    case 'access':
      return `${op.fetch ? 'fetch' : op.write ? 'write' : 'read'}${op.user ? ' (user)' : ''} ${hex(op.gva)}`;
    case 'mov-cr0':
    case 'mov-cr4':
    case 'mov-cr3':
    case 'wrmsr-efer':
      return `${op.k} ${hex(op.v)}`;
    case 'invlpg':
      return `invlpg ${hex(op.gva)}`;
    case 'vmentry':
      return `vmentry (${op.kind}, L2 cr0 ${hex(op.l2.cr0)} cr4 ${hex(op.l2.cr4)})`;
    default:
      return op.k;
  }
}

export interface VcpuCoreOptions {
  id: number;
  record: VcpuRecord;
  host: HostSettings;
  cpuid: CpuidModel;
  strategy: InvalidationStrategy;
  policy: CpuidPolicy;
  program: GuestProgram;
  /** Guest physical memory; without it accesses are counted but not walked. */
  memory?: GuestMemory;
  /**
   * The VM's shadow page cache as this vCPU uses it: accesses go through the
   * SPTEs and fault into the cache. Without it, accesses are walked only.
   */
  shadow?: VcpuShadow;
  /** Hooks for checkers (optional): called after each completed guest access. */
  onGuestAccess?: (core: VcpuCore, op: Extract<GuestOp, { k: 'access' }>) => void;
  /**
   * This vCPU's tracer (src/trace): spans for guest mode, request handling,
   * MMU inits, shadow faults, MMU loads and (in the host loop) halts. Without
   * it every traced point is one `tracer?.` check.
   */
  tracer?: Tracer;
}

/** A faulting access is re-executed at most this many times in a row (then dropped and counted). */
export const MAX_FAULT_RETRIES = 8;

/** CR0 after INIT/RESET (vmx_vcpu_reset / svm: CD | NW | ET). */
export const RESET_CR0 = 0x60000010n;

/** CPUID_UPDATE outcomes stored in `cpuidResult`. */
export const CPUID_RESULT = { APPLIED: 0, IDENTICAL: 1, REFUSED: 2 } as const;

export class VcpuCore implements GuestView {
  readonly id: number;
  readonly rec: VcpuRecord;
  readonly mmu: VcpuMmu;
  readonly policy: CpuidPolicy;
  private readonly program: GuestProgram;
  private readonly onGuestAccess: VcpuCoreOptions['onGuestAccess'];
  private readonly access: GuestAccess | null;
  readonly shadow: VcpuShadow | null;
  /** This vCPU's tracer, when the VM records a trace. */
  readonly tracer: Tracer | undefined;
  /** The access a fault exit asked to re-execute (the guest restarts the faulting instruction). */
  private retryOp: Extract<GuestOp, { k: 'access' }> | null = null;
  private retries = 0;
  /** The checker's edit sequence of the access waiting in a fault exit. */
  private faultSeq = -1;
  /** In a guest-mode stint (entered, not yet exited): only `step` leaves one open between calls. */
  private stint = false;
  /** Start of the current stint, for its trace span. */
  private tGuest = 0;
  /** The operation of the last in-guest step. */
  private lastOp: GuestOp | null = null;
  /** What the last `step` did, in words (for the simulation's event trace). */
  lastStep = '';

  /** Full 64-bit architectural registers; the MMU holds their low halves. */
  cr0 = 0n;
  cr3 = 0n;
  cr4 = 0n;
  efer = 0n;
  /** L1's registers, saved while L2 runs. */
  l1: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } | null = null;
  nestedKind: NestedKind | null = null;
  nestedRoot = 0n;
  /** The arguments guest_mmu was last initialised with (nested entry with nested TDP). */
  guestInit: GuestMmuInit | null = null;
  /** The stress checker of this vCPU (invariants 1-4, 6), when checking is on. */
  checker: VcpuChecker | null = null;
  /** KVM_MP_STATE_HALTED: set by HLT, cleared by a wake-up. */
  halted = false;
  /** The vCPU has entered the guest at least once (last_vmentry_cpu != -1). */
  hasRun = false;
  /** Counters of an attached checker, published with the other statistics (keys are VCPU_STATS names). */
  checkCounts: Readonly<Partial<Record<VcpuStat, number>>> | null = null;
  /** SMRAM state save area: the registers RSM restores. */
  smram: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } | null = null;

  constructor(o: VcpuCoreOptions) {
    this.id = o.id;
    this.rec = o.record;
    this.policy = o.policy;
    this.program = o.program;
    this.onGuestAccess = o.onGuestAccess;
    // With a shadow cache the accesses go through it (its own walker is the CPU's); else they are walked only.
    this.access = o.memory && !o.shadow ? new GuestAccess(o.memory) : null;
    this.shadow = o.shadow ?? null;
    this.mmu = new VcpuMmu({ host: o.host, cpuid: o.cpuid, strategy: o.strategy, roleStorage: o.record.roles });
    this.tracer = o.tracer;
    if (o.tracer) this.mmu.hooks.trace = o.tracer;
    this.shadow?.attach(this);
    // kvm_arch_vcpu_create: kvm_vcpu_reset (CR0 = CD | NW | ET, the rest 0), then kvm_init_mmu.
    this.cr0 = RESET_CR0;
    this.mmu.cr0 = Number(RESET_CR0);
    initMmu(this.mmu);
    this.publish();
  }

  get smm(): boolean {
    return this.mmu.smm;
  }

  get guestMode(): boolean {
    return this.mmu.guestMode;
  }

  get cpuid(): CpuidModel {
    return this.mmu.cpuid;
  }

  count(stat: VcpuStat, n = 1): void {
    this.rec.stats[STAT_INDEX[stat]]! += n;
  }

  /** One KVM_RUN slice: at most `budget` guest operations. */
  run(budget: number): ExitReason {
    let done = 0;
    while (done < budget) {
      if (!this.stint) {
        const r = this.stepOutside();
        if (r === 'entered' || r === 'retry') continue;
        return this.leave(r);
      }
      if (this.stepInGuest() !== 'kicked') done++;
    }
    if (this.stint) this.endStint(null, null);
    return this.leave('budget');
  }

  /**
   * One scheduling step of the same loop, for an in-thread host that
   * interleaves vCPUs (src/sim): outside guest mode, requests + MMU load +
   * entry attempt; in guest mode, one guest operation — an access that stays
   * in guest mode, or the VM exit it causes, handled at once. A stint may span
   * many steps. `lastStep` says what the step did.
   */
  step(): StepResult {
    if (this.stint) {
      const r = this.stepInGuest();
      const op = this.lastOp;
      this.lastStep = r === 'kicked' ? 'kicked out of guest mode' : `${r === 'exit' ? 'exit ' : ''}${op ? describeOp(op) : ''}${this.retries ? ` (fault, retry ${this.retries})` : ''}`;
      return r;
    }
    const r = this.stepOutside();
    this.lastStep = r === 'entered' ? `entered guest mode (root page ${this.rootPage()})` : r === 'retry' ? 'entry backed out' : r;
    if (r !== 'entered' && r !== 'retry') this.leave(r);
    return r;
  }

  /** Outside guest mode: requests in KVM's order, then kvm_mmu_reload, then the entry with its re-check. */
  private stepOutside(): Exclude<ExitReason, 'budget'> | 'entered' | 'retry' {
    const r = this.processRequests();
    if (r) return r;
    if (this.halted) return 'halt';
    if (this.shadow) {
      const load = this.loadMmu();
      if (load === 'retry') return 'retry';
      if (load === 'userspace') return 'userspace';
    }
    if (!this.enterGuest()) return 'retry';
    this.stint = true;
    this.tGuest = this.tracer ? this.tracer.now() : 0;
    return 'entered';
  }

  /** In guest mode: one operation; an access stays in guest mode unless it faults, anything else is a VM exit. */
  private stepInGuest(): 'op' | 'exit' | 'kicked' {
    this.lastOp = null;
    if (Atomics.load(this.rec.mode, 0) !== MODE.IN_GUEST) {
      // Kicked ("IPI"): leave guest mode without executing anything.
      this.endStint(null, null);
      return 'kicked';
    }
    const retry = this.retryOp;
    const op = retry ?? this.program.next(this);
    this.lastOp = op;
    if (!retry) this.count('guestOps');
    if (!runsInGuestMode(op)) {
      this.endStint(op, null);
      return 'exit';
    }
    const a = op as Extract<GuestOp, { k: 'access' }>;
    const seq = this.checker ? this.checker.before() : -1;
    if (this.shadow) {
      const fault = this.shadow.inGuest(this, a);
      if (fault) {
        this.faultSeq = seq;
        this.endStint(null, fault);
        return 'exit';
      }
    } else if (this.access) this.access.run(this, a);
    this.accessDone(a, seq);
    return 'op';
  }

  /** Leave guest mode, then handle the exit (an exit operation, or an access's page fault) outside it. */
  private endStint(exitOp: GuestOp | null, fault: PendingFault | null): void {
    this.exitGuest();
    this.stint = false;
    if (this.tracer) this.tracer.guest(this.tGuest);
    if (exitOp) this.applyExit(handleExit(this, exitOp));
    if (fault) this.applyFault(fault);
  }

  /**
   * kvm_mmu_reload before entry. A root without a memslot is KVM's
   * mmu_check_root: KVM_REQ_TRIPLE_FAULT, handled on the next pass; no page
   * for a root makes KVM_RUN fail (-ENOSPC): back to the host, which retries.
   */
  private loadMmu(): 'ok' | 'retry' | 'userspace' {
    const tracer = this.tracer;
    let r: LoadResult;
    if (tracer && !this.shadow!.hasRoot(this)) {
      // Traced only when kvm_mmu_load runs (no root): the common reload is a no-op.
      const t = tracer.now();
      r = this.shadow!.reload(this);
      tracer.mmuLoad(t, r);
    } else r = this.shadow!.reload(this);
    if (r === 'ok') return 'ok';
    if (r === 'triple-fault') {
      makeRequest(this.rec.requests, 0, REQ.TRIPLE_FAULT);
      return 'retry';
    }
    this.count('mmuLoadFailures');
    return 'userspace';
  }

  /** The page-fault exit of an access; a fixed (or retried) fault re-executes the access. */
  private applyFault(f: PendingFault): void {
    const tracer = this.tracer;
    const t = tracer ? tracer.now() : 0;
    const d = this.shadow!.handleFault(this, f);
    if (tracer) tracer.shadowFault(t, f.addr, this.shadow!.lastFaultErrorCode, this.shadow!.lastFaultKind);
    if (d === 'retry' && this.retries < MAX_FAULT_RETRIES) {
      this.retryOp = f.op;
      this.retries++;
      return;
    }
    if (d === 'retry') {
      this.count('faultRetriesExhausted');
      this.retryOp = null;
      this.retries = 0;
    } else this.accessDone(f.op, this.faultSeq);
  }

  /** An access completed (in guest mode, or by its fault exit): checkers see its outcome. */
  private accessDone(a: Extract<GuestOp, { k: 'access' }>, seq: number): void {
    this.retryOp = null;
    this.retries = 0;
    if (this.checker) {
      this.checker.op = this.rec.stats[STAT_INDEX.guestOps]!;
      this.checker.after(a, (this.shadow ?? this.access)!.outcome, seq);
    }
    this.onGuestAccess?.(this, a);
  }

  /** The page the current MMU's walks start from (for checkers); -1 without a shadow cache or root. */
  rootPage(): number {
    return this.shadow ? this.shadow.rootPage(this) : -1;
  }

  /**
   * A shutdown (triple fault) as the VMM answers it: reset this vCPU — out
   * of L2 and SMM, registers as after RESET, kvm_mmu_reset_context.
   */
  private resetVcpu(): void {
    this.count('tripleFaults');
    this.l1 = null;
    this.nestedKind = null;
    this.nestedRoot = 0n;
    this.guestInit = null;
    this.smram = null;
    this.halted = false;
    this.retryOp = null;
    this.retries = 0;
    this.mmu.smm = false;
    this.mmu.guestMode = false;
    this.mmu.useContexts(false);
    loadRegs(this, { cr0: RESET_CR0, cr3: 0n, cr4: 0n, efer: 0n });
    resetContext(this.mmu);
    this.count('mmuResets');
  }

  /** vCPU destruction (kvm_mmu_destroy → kvm_mmu_unload): give back every root. Idempotent. */
  shutdown(): void {
    mmuUnload(this.mmu);
    this.publish();
  }

  private applyExit(o: ExitOutcome): void {
    if (o === 'gp') this.count('gpFaults');
    else if (o === 'halt') {
      this.halted = true;
      this.count('halts');
    }
  }

  /**
   * Entry with KVM's ordering: mode = IN_GUEST, full barrier, then if any
   * request is pending (or a kick already flipped the mode) back out.
   */
  private enterGuest(): boolean {
    const { mode, requests, stintSeq } = this.rec;
    Atomics.store(stintSeq, 0, -1);
    Atomics.store(mode, 0, MODE.IN_GUEST);
    if (Atomics.load(requests, 0) !== 0 || Atomics.load(mode, 0) !== MODE.IN_GUEST) {
      this.count('entriesBackedOut');
      this.toOutside();
      return false;
    }
    // Verified: every request made before this point would have been seen above.
    if (this.shadow) Atomics.store(this.rec.rootPage, 0, this.shadow.rootPage(this));
    Atomics.store(stintSeq, 0, Atomics.load(this.rec.requestSeq, 0));
    this.checker?.entry();
    if (!this.hasRun) {
      this.hasRun = true;
      Atomics.store(this.rec.ran, 0, 1);
    }
    Atomics.add(this.rec.guestEntries, 0, 1);
    this.count('guestEntries');
    return true;
  }

  private exitGuest(): void {
    this.toOutside();
  }

  /** mode = OUTSIDE, then announce it to waiting requesters (the "IPI ack"). */
  private toOutside(): void {
    Atomics.store(this.rec.mode, 0, MODE.OUTSIDE_GUEST);
    Atomics.add(this.rec.outsideEpoch, 0, 1);
    Atomics.notify(this.rec.outsideEpoch, 0);
  }

  /** Requests in vcpu_enter_guest's order. Returns a reason to go back to the host, if any. */
  private processRequests(): 'stop' | 'userspace' | null {
    const q = this.rec.requests;
    const bits = Atomics.load(q, 0);
    if (bits === 0) return null;
    const tracer = this.tracer;
    if (!tracer) return this.handleRequests(q);
    const t = tracer.now();
    const r = this.handleRequests(q);
    tracer.requests(t, bits);
    return r;
  }

  /** The pending requests, in vcpu_enter_guest's order (processRequests without the trace). */
  private handleRequests(q: Int32Array): 'stop' | 'userspace' | null {
    if (checkRequest(q, 0, REQ.STOP)) return 'stop';
    if (checkRequest(q, 0, REQ.CPUID_UPDATE)) this.applyPostedCpuid();
    if (checkRequest(q, 0, REQ.PING)) {
      Atomics.store(this.rec.pingAck, 0, Atomics.load(this.rec.pingPosted, 0));
      Atomics.notify(this.rec.pingAck, 0);
    }
    if (checkRequest(q, 0, REQ.MMU_RELOAD) && !mutant['reload-ignored']) {
      mmuUnload(this.mmu);
      this.count('mmuUnloads');
    }
    if (checkRequest(q, 0, REQ.MMU_SYNC)) this.count('requestsHandled');
    if (checkRequest(q, 0, REQ.LOAD_MMU_PGD)) this.count('requestsHandled');
    if (checkRequest(q, 0, REQ.TLB_FLUSH)) {
      // kvm_vcpu_flush_tlb_all also satisfies a pending TLB_FLUSH_CURRENT.
      checkRequest(q, 0, REQ.TLB_FLUSH_CURRENT);
      this.count('tlbFlushes');
    }
    if (checkRequest(q, 0, REQ.TLB_FLUSH_CURRENT)) this.count('tlbFlushes');
    if (checkRequest(q, 0, REQ.TLB_FLUSH_GUEST)) this.count('tlbFlushes');
    if (checkRequest(q, 0, REQ.TRIPLE_FAULT)) {
      this.resetVcpu();
      return 'userspace';
    }
    if (checkRequest(q, 0, REQ.USERSPACE_EXIT)) return 'userspace';
    return null;
  }

  /**
   * CPUID_UPDATE: the posted table, applied as KVM_SET_CPUID2 would be under
   * this VM's policy, then kvm_mmu_after_set_cpuid; the outcome is stored
   * before the epoch so a waiter that sees the epoch sees the outcome.
   */
  private applyPostedCpuid(): void {
    const epoch = Atomics.load(this.rec.cpuidPostedEpoch, 0);
    const result = this.setCpuid(decodeCpuid(this.rec.cpuidPosted));
    Atomics.store(this.rec.cpuidResult, 0, result);
    Atomics.store(this.rec.cpuidAppliedEpoch, 0, epoch);
    Atomics.notify(this.rec.cpuidAppliedEpoch, 0);
  }

  /** KVM_SET_CPUID2 (kvm_set_cpuid): strict refuses a changed table after the first run. */
  setCpuid(cpuid: CpuidModel): (typeof CPUID_RESULT)[keyof typeof CPUID_RESULT] {
    if (this.policy === 'strict' && this.hasRun) {
      if (cpuidEqual(cpuid, this.mmu.cpuid)) return CPUID_RESULT.IDENTICAL;
      this.count('cpuidRefused');
      return CPUID_RESULT.REFUSED;
    }
    setCpuid(this.mmu, cpuid);
    this.count('cpuidApplied');
    this.count('mmuResets');
    return CPUID_RESULT.APPLIED;
  }

  /** Back to the host: publish the state others may snapshot. */
  private leave(r: ExitReason): ExitReason {
    this.publish();
    return r;
  }

  /** Publish registers, flags and MMU counters to the shared record. */
  publish(): void {
    const { regs, flags, stats } = this.rec;
    Atomics.store(regs, REG_INDEX.cr0, this.cr0);
    Atomics.store(regs, REG_INDEX.cr3, this.cr3);
    Atomics.store(regs, REG_INDEX.cr4, this.cr4);
    Atomics.store(regs, REG_INDEX.efer, this.efer);
    Atomics.store(regs, REG_INDEX.l1Cr0, this.l1?.cr0 ?? 0n);
    Atomics.store(regs, REG_INDEX.l1Cr3, this.l1?.cr3 ?? 0n);
    Atomics.store(regs, REG_INDEX.l1Cr4, this.l1?.cr4 ?? 0n);
    Atomics.store(regs, REG_INDEX.l1Efer, this.l1?.efer ?? 0n);
    Atomics.store(regs, REG_INDEX.nestedRoot, this.nestedRoot);
    let f = 0;
    if (this.mmu.smm) f |= VCPU_FLAG.SMM;
    if (this.mmu.guestMode) f |= VCPU_FLAG.GUEST_MODE;
    if (this.nestedKind === 'ept') f |= VCPU_FLAG.NESTED_EPT;
    if (this.nestedKind === 'npt') f |= VCPU_FLAG.NESTED_NPT;
    Atomics.store(flags, 0, f);
    let inits = 0;
    let fast = 0;
    let rebuilds = 0;
    for (const c of this.mmu.contexts) {
      inits += c.stats.inits;
      fast += c.stats.fastPathHits;
      rebuilds += c.stats.rebuilds;
    }
    stats[STAT_INDEX.mmuInits] = inits;
    stats[STAT_INDEX.fastPathHits] = fast;
    stats[STAT_INDEX.rebuilds] = rebuilds;
    if (this.checkCounts) for (const [k, n] of Object.entries(this.checkCounts)) stats[STAT_INDEX[k as VcpuStat]] = n!;
    if (this.checker) for (const [k, n] of Object.entries(this.checker.counts)) stats[STAT_INDEX[k as VcpuStat]] = n;
  }
}
