/**
 * The five designs for making every cached role unequal to any computable
 * role after a CPUID change (`kvm_mmu_after_set_cpuid`). Each is implemented
 * exactly as its author described it, in the v5.17 structure (one cached
 * role = base + ext per context), including the ext layout its patch implies.
 * None is "fixed": where a design is weaker than its author thought, the
 * emulator shows it.
 */
import { EXT_ROLE_CPUID_STALE, EXT_ROLE_V517, FORMAT_CPUID_STALE, FORMAT_NO_VALID, FORMAT_V517, type RoleFormat } from '../role/ext-role.js';
import { PR } from '../role/page-role.js';
import type { MmuContext } from './context.js';

export const STRATEGY_NAMES = ['valid-bit', 'level-zero', 'cpuid-stale', 'word-zero', 'invalid-bit'] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

export interface InvalidationStrategy {
  readonly name: StrategyName;
  /** Layout and marking of computed roles under this design. */
  readonly format: RoleFormat;
  /** Who proposed it, where. */
  readonly source: string;
  /** What kvm_mmu_after_set_cpuid stores into one context's cached role. */
  invalidate(ctx: MmuContext): void;
}

const VALID = EXT_ROLE_V517.maskOf('valid');
const CPUID_STALE = EXT_ROLE_CPUID_STALE.maskOf('cpuid_stale');

/** Linux v5.17: clear ext.valid; every computed role sets it. */
const validBit: InvalidationStrategy = {
  name: 'valid-bit',
  format: FORMAT_V517,
  source: 'Linux v5.17 kvm_mmu_after_set_cpuid: mmu_role.ext.valid = 0',
  invalidate(ctx) {
    ctx.storeRole(ctx.roleBase, (ctx.roleExt & ~VALID) >>> 0);
  },
};

/**
 * Patch 03/23 as posted (Feb 2022): no valid bit; base.level = 0 marks the
 * role invalid, on the premise that a computed level is never zero.
 */
const levelZero: InvalidationStrategy = {
  name: 'level-zero',
  format: FORMAT_NO_VALID,
  source: '[PATCH 03/23] KVM: MMU: remove valid from extended role (Feb 4 2022): mmu_role.base.level = 0',
  invalidate(ctx) {
    ctx.storeRole((ctx.roleBase & ~PR.LEVEL_MASK) >>> 0, ctx.roleExt);
  },
};

/** The reviewer's counter-proposal: bit 0 becomes cpuid_stale, set on change. */
const cpuidStale: InvalidationStrategy = {
  name: 'cpuid-stale',
  format: FORMAT_CPUID_STALE,
  source: 'David Matlack, review of 03/23 (Feb 2022): mmu_role.ext.cpuid_stale = 1',
  invalidate(ctx) {
    ctx.storeRole(ctx.roleBase, (ctx.roleExt | CPUID_STALE) >>> 0);
  },
};

/** The maintainer's answer, merged for 5.18: clear the whole role word. */
const wordZero: InvalidationStrategy = {
  name: 'word-zero',
  format: FORMAT_V517,
  source: 'Paolo Bonzini, reply to the review (Feb 2022): mmu_role.as_u64 = 0',
  invalidate(ctx) {
    ctx.storeRole(0, 0);
  },
};

/** The 2024 fix: set base.invalid and clear ext.valid. */
const invalidBit: InvalidationStrategy = {
  name: 'invalid-bit',
  format: FORMAT_V517,
  source: 'Sean Christopherson, "Precisely invalidate MMU root_role during CPUID update" (Apr 2024)',
  invalidate(ctx) {
    ctx.storeRole((ctx.roleBase | PR.INVALID) >>> 0, (ctx.roleExt & ~VALID) >>> 0);
  },
};

export const STRATEGIES: Readonly<Record<StrategyName, InvalidationStrategy>> = {
  'valid-bit': validBit,
  'level-zero': levelZero,
  'cpuid-stale': cpuidStale,
  'word-zero': wordZero,
  'invalid-bit': invalidBit,
};

export function strategyByName(name: string): InvalidationStrategy {
  const s = (STRATEGIES as Record<string, InvalidationStrategy>)[name];
  if (!s) throw new RangeError(`unknown strategy "${name}"; expected one of ${STRATEGY_NAMES.join(', ')}`);
  return s;
}
