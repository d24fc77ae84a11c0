/**
 * One vCPU's MMU state: the registers and CPUID facts the MMU reads, the three
 * contexts (root_mmu, guest_mmu, nested_mmu) and the `mmu` / `walk_mmu`
 * pointers (Linux v5.17 `struct kvm_vcpu_arch`). Owner-only: a vCPU's MMU
 * state is touched by its own thread, as the kernel touches it only under the
 * vCPU mutex (kvm-mmu-reference.md §15.7). The init paths live in init.ts.
 */
import { type CpuidModel, DEFAULT_CPUID, isAmdOrHygon, normaliseCpuid, reservedGpaBits } from '../cpuid/cpuid.js';
import type { Role, RoleVcpuState } from '../role/compute.js';
import type { HostSettings } from '../role/host.js';
import { DEFAULT_HOST } from '../role/host.js';
import { toRoleRegs, type RoleRegs } from '../role/regs.js';
import { MmuContext, type MmuName } from './context.js';
import { STRATEGIES, type InvalidationStrategy } from './strategies.js';

/** Hooks the shadow MMU and vCPU core attach; all optional. */
export interface VcpuMmuHooks {
  /** kvm_mmu_unload: free the roots of root_mmu and guest_mmu. */
  unload?(vmmu: VcpuMmu): void;
  /** __kvm_mmu_new_pgd: switch the current MMU's root to (pgd, role). */
  newPgd?(vmmu: VcpuMmu, pgd: bigint, role: number): void;
  /** Checker: kvm_mmu_after_set_cpuid is about to invalidate `ctx`. */
  beforeInvalidate?(vmmu: VcpuMmu, ctx: MmuContext): void;
  /**
   * Checker: an init path decided (skip or rebuild; on rebuild the new role is
   * already stored, nothing else yet). `reconfigure` applies this path's
   * rebuild products to any context.
   */
  initDecided?(vmmu: VcpuMmu, ctx: MmuContext, skipped: boolean, role: Role, reconfigure: (target: MmuContext) => void): void;
  /**
   * Tracing (src/trace Tracer): every init path records one mmu-init span,
   * from its entry to its end, with the path taken and the role computed.
   * Apart from initDecided (the checker's), so both can be attached.
   */
  trace?: MmuInitTracer;
}

/** What the init paths need of a tracer (src/trace/tracer.ts Tracer has it). */
export interface MmuInitTracer {
  now(): number;
  mmuInit(start: number, context: 'root_mmu' | 'guest_mmu' | 'nested_mmu', rebuilt: boolean, base: number, ext: number): void;
}

export interface VcpuMmuOptions {
  host?: HostSettings;
  cpuid?: CpuidModel;
  strategy?: InvalidationStrategy;
  /** Optional 6-word storage for the three cached roles (root, guest, nested). */
  roleStorage?: Uint32Array;
  hooks?: VcpuMmuHooks;
}

export class VcpuMmu implements RoleVcpuState {
  /** Low 32 bits of CR0, CR4, EFER (every role bit is below 32). */
  cr0 = 0;
  cr4 = 0;
  efer = 0;
  /** HF_SMM_MASK. */
  smm = false;
  /** HF_GUEST_MASK: the vCPU runs L2. */
  guestMode = false;

  cpuid: CpuidModel;
  /** vcpu->arch.maxphyaddr. */
  maxPhyAddr: number;
  /** vcpu->arch.reserved_gpa_bits. */
  reservedGpaBits: bigint;

  readonly host: HostSettings;
  readonly strategy: InvalidationStrategy;
  readonly rootMmu: MmuContext;
  readonly guestMmu: MmuContext;
  readonly nestedMmu: MmuContext;
  /** vcpu->arch.mmu: the MMU used for faults and roots. */
  mmu: MmuContext;
  /** vcpu->arch.walk_mmu: the MMU used to walk guest virtual addresses. */
  walkMmu: MmuContext;

  /** The role passed to the last __kvm_mmu_new_pgd (nested TDP inits). */
  lastNewPgdRole: number | null = null;
  /** kvm_mmu_unload calls so far. */
  unloads = 0;
  readonly hooks: VcpuMmuHooks;

  constructor(opts: VcpuMmuOptions = {}) {
    this.host = opts.host ?? DEFAULT_HOST;
    this.strategy = opts.strategy ?? STRATEGIES['valid-bit'];
    this.hooks = opts.hooks ?? {};
    this.cpuid = normaliseCpuid(opts.cpuid ?? DEFAULT_CPUID);
    this.maxPhyAddr = this.cpuid.maxPhyAddr;
    this.reservedGpaBits = reservedGpaBits(this.maxPhyAddr);
    const s = opts.roleStorage;
    if (s && s.length < 6) throw new RangeError('role storage needs six words');
    const fmt = this.strategy.format;
    this.rootMmu = new MmuContext('root', fmt, s?.subarray(0, 2));
    this.guestMmu = new MmuContext('guest', fmt, s?.subarray(2, 4));
    this.nestedMmu = new MmuContext('nested', fmt, s?.subarray(4, 6));
    this.mmu = this.rootMmu;
    this.walkMmu = this.rootMmu;
  }

  context(name: MmuName): MmuContext {
    return name === 'root' ? this.rootMmu : name === 'guest' ? this.guestMmu : this.nestedMmu;
  }

  get contexts(): readonly MmuContext[] {
    return [this.rootMmu, this.guestMmu, this.nestedMmu];
  }

  /** vcpu_to_role_regs. */
  roleRegs(): RoleRegs {
    return toRoleRegs(this.cr0, this.cr4, this.efer);
  }

  /** mmu_is_nested: walk_mmu == &nested_mmu. */
  isNested(): boolean {
    return this.walkMmu === this.nestedMmu;
  }

  /** guest_can_use_gbpages (mmu.c). */
  guestCanUseGbpages(): boolean {
    return this.host.tdpEnabled ? this.host.gbpages : this.cpuid.gbpages;
  }

  /** guest_cpuid_is_amd_or_hygon. */
  guestIsAmd(): boolean {
    return isAmdOrHygon(this.cpuid);
  }

  /**
   * The CPUID-derived state kvm_vcpu_after_set_cpuid writes before it calls
   * the MMU hook: the model, maxphyaddr, reserved_gpa_bits. No invalidation
   * here; init.ts `setCpuid` adds kvm_mmu_after_set_cpuid.
   */
  applyCpuid(cpuid: CpuidModel): void {
    this.cpuid = normaliseCpuid(cpuid);
    this.maxPhyAddr = this.cpuid.maxPhyAddr;
    this.reservedGpaBits = reservedGpaBits(this.maxPhyAddr);
  }

  /** Point mmu/walk_mmu at L1's contexts (nested exit) or L2's (nested TDP entry). */
  useContexts(nested: boolean): void {
    this.mmu = nested ? this.guestMmu : this.rootMmu;
    this.walkMmu = nested ? this.nestedMmu : this.rootMmu;
  }
}
