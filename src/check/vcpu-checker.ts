/**
 * Per-vCPU stress invariants checked in the vCPU's own thread:
 *
 * 1. fresh configuration — at a verified guest entry, each context in use
 *    (vcpu->arch.mmu and walk_mmu) has the role and products a forced
 *    rebuild would give now (init.ts forceRebuild on a scratch copy of the
 *    vCPU's MMU, applied to the contexts as they are). Products differ:
 *    observable (the accesses use them); only the role word differs: latent.
 * 2. correct accesses — each access's outcome (GPA, or fault with its error
 *    code) equals a reference walk made with the freshly built contexts.
 * 3. shadow sharing — the root page the vCPU enters with carries the
 *    context's page role (outside level, direct, access, quadrant, invalid).
 * 4. (part) no use after free — that root page is not on the free list.
 * 6. TLB coherence — an access to the stress edit target that overlapped no
 *    edit translates to the frame the completed edits put there.
 *
 * Checking levels: `full` checks every stint, `sampled` one stint in
 * `sampleEvery` (each sampled stint is checked whole), `off` nothing.
 * Concurrent page-table edits are excluded with the VM's edit seqlock: an
 * access that overlapped an edit is counted as skipped, not compared.
 */
import { forceRebuild, type GuestMmuInit } from '../mmu/init.js';
import type { MmuContext } from '../mmu/context.js';
import { VcpuMmu } from '../mmu/vcpu-mmu.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { PFERR } from '../paging/format.js';
import { PR } from '../role/page-role.js';
import { PAGE_STATE, type ShadowVm } from '../shadow/index.js';
import type { FindingWire } from '../rpc/protocol.js';
import { CHECK_STATS } from '../vcpu/vcpu-layout.js';
import { expectedFrame, type EditTarget, type VmRecord } from '../vm/vm-layout.js';
import { GuestAccess, type AccessOutcome, type WalkingVcpu } from '../vcpu/access.js';
import type { GuestOp } from '../vcpu/guest-ops.js';

export type CheckLevel = 'full' | 'sampled' | 'off';
export const CHECK_LEVELS: readonly CheckLevel[] = ['full', 'sampled', 'off'];

/** One stint in this many is checked at level `sampled`. */
export const DEFAULT_SAMPLE_EVERY = 16;

/** What the checker reads of the vCPU (the core satisfies it). */
export interface CheckedVcpu {
  readonly id: number;
  readonly mmu: VcpuMmu;
  readonly cr3: bigint;
  readonly nestedRoot: bigint;
  readonly guestInit: GuestMmuInit | null;
  /** The page the current MMU's walks start from (-1 without a shadow cache or root). */
  rootPage(): number;
}

export const VCPU_CHECK_STATS = CHECK_STATS;
export type VcpuCheckStat = (typeof VCPU_CHECK_STATS)[number];

export interface VcpuCheckerOptions {
  readonly level: CheckLevel;
  readonly sampleEvery?: number;
  readonly memory: GuestMemory;
  readonly shadow?: ShadowVm | null;
  readonly vm?: VmRecord | null;
  readonly editTarget?: EditTarget | null;
  readonly maxFindings?: number;
}

/** Role bits a page gets from its position, not from the context (pageRole in src/shadow). */
const POSITION_BITS = PR.LEVEL_MASK | PR.DIRECT | PR.ACCESS_MASK | PR.QUADRANT_MASK | PR.INVALID;

export class VcpuChecker {
  readonly counts: Record<VcpuCheckStat, number> = Object.fromEntries(VCPU_CHECK_STATS.map((k) => [k, 0])) as Record<VcpuCheckStat, number>;
  readonly findings: FindingWire[] = [];
  /** Operations seen (the driver advances it). */
  op = 0;
  private readonly ref: VcpuMmu;
  /** The reference walk: the vCPU's walk (GuestAccess) over the freshly built contexts. */
  private readonly refWalk: GuestAccess;
  private readonly refVcpu: WalkingVcpu;
  private stints = 0;
  /** The current stint is checked (full, or picked by sampling) and the reference is fresh. */
  private active = false;
  private readonly sampleEvery: number;
  private readonly maxFindings: number;

  constructor(
    private readonly vcpu: CheckedVcpu,
    private readonly o: VcpuCheckerOptions,
  ) {
    const m = vcpu.mmu;
    this.ref = new VcpuMmu({ host: m.host, cpuid: m.cpuid, strategy: m.strategy });
    this.refWalk = new GuestAccess(o.memory);
    const ref = this.ref;
    // The vCPU's registers, the reference contexts, and counters that count nothing.
    this.refVcpu = {
      mmu: ref,
      get cr3() {
        return vcpu.cr3;
      },
      get nestedRoot() {
        return vcpu.nestedRoot;
      },
      count: () => undefined,
    };
    this.sampleEvery = Math.max(1, o.sampleEvery ?? DEFAULT_SAMPLE_EVERY);
    this.maxFindings = o.maxFindings ?? 100;
  }

  private find(invariant: string, severity: 'latent' | 'observable', mmu: string, detail: string): void {
    if (this.findings.length < this.maxFindings) {
      this.findings.push({ invariant, severity, strategy: this.vcpu.mmu.strategy.name, vcpu: this.vcpu.id, mmu, op: this.op, detail });
    }
  }

  /** At a verified guest entry: decide whether this stint is checked; check invariants 1, 3, 4. */
  entry(): void {
    if (this.o.level === 'off') return;
    this.active = this.o.level === 'full' || this.stints++ % this.sampleEvery === 0;
    if (!this.active) return;
    const v = this.vcpu.mmu;
    this.syncReference(v);
    const inUse = v.mmu === v.walkMmu ? [v.mmu] : [v.mmu, v.walkMmu];
    for (const ctx of inUse) this.checkFresh(v, ctx);
    this.checkRoot(v.mmu);
  }

  /** Copy the vCPU's MMU into the reference (registers, CPUID, contexts as they are), then rebuild the contexts in use. */
  private syncReference(v: VcpuMmu): void {
    const r = this.ref;
    if (r.cpuid !== v.cpuid) r.applyCpuid(v.cpuid);
    r.cr0 = v.cr0;
    r.cr4 = v.cr4;
    r.efer = v.efer;
    r.smm = v.smm;
    r.guestMode = v.guestMode;
    r.mmu = r.context(v.mmu.name);
    r.walkMmu = r.context(v.walkMmu.name);
    for (const c of v.contexts) r.context(c.name).copyFrom(c);
    for (const c of v.mmu === v.walkMmu ? [v.mmu] : [v.mmu, v.walkMmu]) forceRebuild(r, r.context(c.name), this.vcpu.guestInit);
  }

  private checkFresh(v: VcpuMmu, ctx: MmuContext): void {
    this.counts.freshChecks++;
    const fresh = this.ref.context(ctx.name);
    const products = ctx.productDifferences(fresh);
    const roleDiffers = !ctx.roleEquals(fresh.roleBase, fresh.roleExt);
    if (products.length === 0 && !roleDiffers) return;
    const sev = products.length > 0 ? 'observable' : 'latent';
    this.counts[sev === 'observable' ? 'freshObservable' : 'freshLatent']++;
    const role = (c: MmuContext) => `${c.roleBase.toString(16)}/${c.roleExt.toString(16)}`;
    this.find(
      'fresh-configuration',
      sev,
      ctx.name,
      `${ctx.name}_mmu at entry: role ${role(ctx)} vs fresh ${role(fresh)}` + (products.length ? `; products differ: ${products.join(', ')}` : ''),
    );
  }

  private checkRoot(ctx: MmuContext): void {
    const shadow = this.o.shadow;
    if (!shadow) return;
    const page = this.vcpu.rootPage();
    if (page < 0) return;
    if (shadow.stateOf(page) === PAGE_STATE.FREE) {
      this.counts.useAfterFree++;
      this.find('no-use-after-free', 'observable', ctx.name, `entered on root page ${page}, which is on the free list`);
      return;
    }
    const pageRole = shadow.roleOf(page);
    const differs = (pageRole ^ ctx.roleBase) & ~POSITION_BITS;
    if (differs !== 0) {
      this.counts.sharingViolations++;
      // v5.17's kvm_mmu_calc_root_page_role computes with base_only, so ext is 0 and smep_andnot_wp /
      // smap_andnot_wp come out 0: __kvm_mmu_new_pgd can resume a cached root built without them.
      const quirk = (differs & ~(PR.SMEP_ANDNOT_WP | PR.SMAP_ANDNOT_WP)) === 0 ? ' (only smep/smap_andnot_wp differ: the v5.17 root-role lookup ignores them)' : '';
      this.find(
        'shadow-sharing',
        'observable',
        ctx.name,
        `root page ${page} (gfn ${shadow.gfnOf(page)}) has role ${pageRole.toString(16)}, the context's base role is ${ctx.roleBase.toString(16)}${quirk}`,
      );
    }
  }

  /** Before an access in a checked stint: the edit sequence it starts under (-1: not checked). */
  before(): number {
    if (!this.active) return -1;
    return this.o.vm ? Atomics.load(this.o.vm.editSeq, 0) : 0;
  }

  /** After an access completed (invariants 2 and 6). `seq`: what before() returned. */
  after(op: Extract<GuestOp, { k: 'access' }>, outcome: AccessOutcome, seq: number): void {
    if (seq < 0 || outcome.kind === 'other') return;
    const ok = this.refWalk.run(this.refVcpu, op);
    const ref = this.refWalk.outcome;
    const seqAfter = this.o.vm ? Atomics.load(this.o.vm.editSeq, 0) : 0;
    if (seq !== seqAfter || seq & 1) {
      this.counts.accessSkipped++;
      return;
    }
    this.counts.accessChecks++;
    const same = ok ? outcome.kind === 'gpa' && outcome.gpa === ref.gpa : outcome.kind === 'fault' && outcome.errorCode === ref.errorCode && outcome.nested === ref.nested;
    if (!same) {
      this.counts.accessMismatches++;
      const text = (o: AccessOutcome) => (o.kind === 'gpa' ? `GPA ${o.gpa.toString(16)}` : `fault ${o.errorCode.toString(16)}${o.nested ? ' (nested)' : ''}`);
      const pfec = (op.write ? PFERR.WRITE : 0) | (op.user ? PFERR.USER : 0) | (op.fetch ? PFERR.FETCH : 0);
      this.find('correct-accesses', 'observable', this.ref.walkMmu.name, `access ${op.gva.toString(16)} (pfec ${pfec.toString(16)}): got ${text(outcome)}, a fresh walk gives ${text(ref)}`);
    }
    this.checkEditTarget(op.gva, outcome, ok, seq);
  }

  /** Invariant 6: the edit target translates to the frame the completed edits put there. */
  private checkEditTarget(gva: bigint, outcome: AccessOutcome, refOk: boolean, seq: number): void {
    const t = this.o.editTarget;
    if (!t || !refOk || outcome.kind !== 'gpa' || Number(gva >> 12n) !== t.gvaPage || this.ref.walkMmu.gvaToGpa === 'nonpaging') return;
    this.counts.tlbChecks++;
    const frame = Math.floor(outcome.gpa / 4096) * 4096;
    const want = expectedFrame(t, seq);
    if (frame !== want) {
      this.counts.staleTranslations++;
      this.find('tlb-coherence', 'observable', this.ref.walkMmu.name, `edit target ${gva.toString(16)} translated to frame ${frame.toString(16)} after ${seq >>> 1} completed edits; it maps ${want.toString(16)}`);
    }
  }
}
