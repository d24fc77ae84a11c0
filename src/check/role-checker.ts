/**
 * Role-invalidation checks for one vCPU's MMU (stress invariants 7 and 8):
 *
 * - effective invalidation: after kvm_mmu_after_set_cpuid, the first init of
 *   every invalidated context must rebuild. A fast path taken there is a
 *   finding: *latent* when a forced rebuild (applied to a copy of the context
 *   as it is) would produce the same products, *observable* when it would not.
 * - no reads of invalidated roles: between invalidation and recomputation,
 *   any read of a role field other than the whole-role comparison is a
 *   finding naming the field and the reading kernel function; *observable*
 *   when the value read differs from the value the field held before the
 *   invalidation, *latent* otherwise.
 *
 * The checker only observes (hooks and a role-read observer); it changes no
 * state of the MMU it checks.
 */
import type { MmuContext, MmuName } from '../mmu/context.js';
import { MmuContext as Ctx } from '../mmu/context.js';
import type { StrategyName } from '../mmu/strategies.js';
import type { VcpuMmu } from '../mmu/vcpu-mmu.js';
import { hex32 } from '../role/bitfield.js';
import { PAGE_ROLE } from '../role/page-role.js';

export type Severity = 'latent' | 'observable';

export interface RoleFinding {
  readonly invariant: 'effective-invalidation' | 'no-invalid-role-reads';
  readonly severity: Severity;
  readonly strategy: StrategyName;
  readonly vcpu: number;
  readonly mmu: MmuName;
  /** Operation counter of the vCPU when it happened. */
  readonly op: number;
  readonly detail: string;
}

export interface RoleCheckCounts {
  invalidations: number;
  missedRebuildLatent: number;
  missedRebuildObservable: number;
  invalidReadLatent: number;
  invalidReadObservable: number;
}

interface Pending {
  /** Role words before the invalidation store. */
  readonly base: number;
  readonly ext: number;
}

export class RoleChecker {
  readonly counts: RoleCheckCounts = {
    invalidations: 0,
    missedRebuildLatent: 0,
    missedRebuildObservable: 0,
    invalidReadLatent: 0,
    invalidReadObservable: 0,
  };
  readonly findings: RoleFinding[] = [];
  /** Operation counter, advanced by the driver. */
  op = 0;
  private readonly pending = new Map<MmuContext, Pending>();
  private scratch: Ctx | null = null;

  constructor(
    readonly vcpuId: number,
    readonly maxFindings = 100,
  ) {}

  /** Install the hooks and role-read observers on a vCPU's MMU. */
  attach(v: VcpuMmu): void {
    const strategy = v.strategy.name;
    v.hooks.beforeInvalidate = (_v, ctx) => {
      this.counts.invalidations++;
      this.pending.set(ctx, { base: ctx.roleBase, ext: ctx.roleExt });
    };
    v.hooks.initDecided = (_v, ctx, skipped, _role, reconfigure) => {
      if (!this.pending.delete(ctx) || !skipped) return;
      const scratch = this.scratchFor(ctx);
      scratch.copyFrom(ctx);
      reconfigure(scratch);
      const diff = ctx.productDifferences(scratch);
      const severity: Severity = diff.length ? 'observable' : 'latent';
      if (severity === 'latent') this.counts.missedRebuildLatent++;
      else this.counts.missedRebuildObservable++;
      this.record({
        invariant: 'effective-invalidation',
        severity,
        strategy,
        vcpu: this.vcpuId,
        mmu: ctx.name,
        op: this.op,
        detail:
          `first init of ${ctx.name}_mmu after the CPUID change took the fast path (role ${hex32(ctx.roleBase)}/${hex32(ctx.roleExt)})` +
          (diff.length ? `; a rebuild would change ${diff.join(', ')}` : '; a rebuild would produce the same products'),
      });
    };
    for (const ctx of v.contexts) {
      ctx.roleReadObserver = (c, field, reader) => {
        const before = this.pending.get(c);
        if (!before) return;
        const [word, name] = field.split('.') as ['base' | 'ext', string];
        const now = word === 'base' ? c.roleBase : c.roleExt;
        const was = word === 'base' ? before.base : before.ext;
        const readValue = fieldValue(c, word, name, now);
        const oldValue = fieldValue(c, word, name, was);
        const severity: Severity = readValue === oldValue ? 'latent' : 'observable';
        if (severity === 'latent') this.counts.invalidReadLatent++;
        else this.counts.invalidReadObservable++;
        this.record({
          invariant: 'no-invalid-role-reads',
          severity,
          strategy,
          vcpu: this.vcpuId,
          mmu: c.name,
          op: this.op,
          detail: `${reader} read ${c.name}_mmu.mmu_role.${field} = ${readValue} from an invalidated role (it held ${oldValue} before the invalidation)`,
        });
      };
    }
  }

  private scratchFor(ctx: MmuContext): Ctx {
    if (!this.scratch || this.scratch.format !== ctx.format) this.scratch = new Ctx(ctx.name, ctx.format);
    return this.scratch;
  }

  private record(f: RoleFinding): void {
    if (this.findings.length < this.maxFindings) this.findings.push(f);
  }
}

function fieldValue(c: MmuContext, word: 'base' | 'ext', name: string, value: number): number {
  if (word === 'base') return PAGE_ROLE.get(value, name as (typeof PAGE_ROLE.names)[number]);
  return c.format.ext.get(value, name);
}
