/**
 * The five CPUID-invalidation designs and kvm_mmu_after_set_cpuid.
 *
 * Linux v5.17 mmu.c:5061 kvm_mmu_after_set_cpuid: clears mmu_role.ext.valid
 * of root_mmu, guest_mmu and nested_mmu (lines 5075-5077), then
 * kvm_mmu_reset_context (mmu.c:5087) = kvm_mmu_unload + kvm_init_mmu
 * (mmu.c:5036), which re-initialises root_mmu, or nested_mmu when
 * mmu_is_nested (walk_mmu == &nested_mmu). guest_mmu is never re-initialised
 * there. The other designs' stores are kvm-mmu-reference.md §15.2-§15.5:
 *   level-zero  (patch 03/23):        base.level = 0, ext has no valid bit
 *   cpuid-stale (D. Matlack):         ext bit 0 (cpuid_stale) = 1
 *   word-zero   (P. Bonzini):         as_u64 = 0
 *   invalid-bit (S. Christopherson):  base.invalid = 1, ext.valid = 0
 */
import { describe, expect, it } from 'vitest';
import { afterSetCpuid, initNestedMmu, initShadowEptMmu, initTdpMmu, setCpuid, setRoleRegisters } from '../../src/mmu/init.js';
import { replaySequence } from '../../src/mmu/probe.js';
import { parseOrThrow, sequenceSchema } from '../../src/mmu/probe-schema.js';
import { STRATEGIES, STRATEGY_NAMES, type StrategyName } from '../../src/mmu/strategies.js';
import type { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import {
  CR0_PE,
  CR0_PG,
  CR0_WP,
  CR4_PAE,
  CR4_SMAP,
  CR4_SMEP,
  EFER_LMA,
  EFER_LME,
  EFER_NX,
  INTEL_CPUID,
  INTEL_EPT4,
  R,
  mkVcpu,
} from './kernel-facts.js';

const LONG_CR0 = CR0_PG | CR0_WP | CR0_PE;
const LONG_CR4 = CR4_PAE | CR4_SMEP | CR4_SMAP;
const LONG_EFER = EFER_LME | EFER_LMA | EFER_NX;
const EPT = { execonly: true, accessedDirty: false, level: 4 as const, hugePageLevel: 3 as const };

/** A 64-bit L1 on TDP: root role 0x3784 / ext (pg|pae|smap|smep|lma in the design's layout). */
function l1(strategy: StrategyName, cpuid = {}): VcpuMmu {
  const v = mkVcpu(INTEL_EPT4, cpuid, strategy);
  setRoleRegisters(v, LONG_CR0, LONG_CR4, LONG_EFER, false, false);
  initTdpMmu(v);
  return v;
}

// v5.17 positions: pg 0x4 | pae 0x8 | smap 0x40 | smep 0x80 | lma 0x200 = 0x2cc
// (+ valid 0x1 in v5.17; >> 1 = 0x166 without valid; unchanged for cpuid-stale)
const COMPUTED_EXT: Record<StrategyName, number> = {
  'valid-bit': 0x2cd,
  'level-zero': 0x166,
  'cpuid-stale': 0x2cc,
  'word-zero': 0x2cd,
  'invalid-bit': 0x2cd,
};
const INVALIDATED: Record<StrategyName, [number, number]> = {
  'valid-bit': [0x3784, 0x2cc], // ext.valid = 0
  'level-zero': [0x3780, 0x166], // base.level = 0
  'cpuid-stale': [0x3784, 0x2cd], // ext.cpuid_stale = 1
  'word-zero': [0, 0], // as_u64 = 0
  'invalid-bit': [0x3f84, 0x2cc], // base.invalid (0x800) = 1, ext.valid = 0
};

describe('what each design stores into a cached role', () => {
  it.each(STRATEGY_NAMES)('%s', (name) => {
    const v = l1(name);
    expect([v.rootMmu.roleBase, v.rootMmu.roleExt]).toEqual([0x3784, COMPUTED_EXT[name]]);
    STRATEGIES[name].invalidate(v.rootMmu);
    expect([v.rootMmu.roleBase, v.rootMmu.roleExt]).toEqual(INVALIDATED[name]);
  });

  it('invalidation only stores the role: derived data (permissions, masks) is untouched', () => {
    const v = l1('valid-bit');
    const perms = Array.from(v.rootMmu.permissions);
    const m = v.rootMmu.guestRsvdCheck.get(1, 2);
    STRATEGIES['valid-bit'].invalidate(v.rootMmu);
    expect(Array.from(v.rootMmu.permissions)).toEqual(perms);
    expect(v.rootMmu.guestRsvdCheck.get(1, 2)).toBe(m);
  });
});

describe('kvm_mmu_after_set_cpuid (mmu.c:5061)', () => {
  it('valid-bit: clears ext.valid of all three MMUs, unloads, re-initialises root_mmu only', () => {
    const v = l1('valid-bit');
    initShadowEptMmu(v, EPT); // guest_mmu = 0x30704 / 0x3
    const unloads = v.unloads;
    const r = afterSetCpuid(v);
    expect(r.ctx).toBe(v.rootMmu);
    expect(r.skipped).toBe(false);
    expect(v.unloads).toBe(unloads + 1);
    expect([v.rootMmu.roleBase, v.rootMmu.roleExt]).toEqual([0x3784, 0x2cd]);
    expect(v.rootMmu.stats).toEqual({ inits: 2, fastPathHits: 0, rebuilds: 2 });
    // guest_mmu: only the store; nested_mmu was never initialised (0 stays 0)
    expect([v.guestMmu.roleBase, v.guestMmu.roleExt]).toEqual([0x30704, 0x2]);
    expect(v.guestMmu.stats.inits).toBe(1);
    expect([v.nestedMmu.roleBase, v.nestedMmu.roleExt]).toEqual([0, 0]);
  });

  it('the new CPUID reaches the rebuilt root: MAXPHYADDR 46 -> 40 and vendor AMD', () => {
    const v = l1('valid-bit');
    expect(v.rootMmu.guestRsvdCheck.get(0, 3)).toBe(R(46, 51) | 0x80n);
    setCpuid(v, { ...INTEL_CPUID, maxPhyAddr: 40, vendor: 'amd' });
    expect(v.rootMmu.guestRsvdCheck.get(0, 0)).toBe(R(40, 51));
    expect(v.rootMmu.guestRsvdCheck.get(0, 3)).toBe(R(40, 51) | 0x180n);
  });

  it.each(STRATEGY_NAMES)('%s: root rebuilt now; guest_mmu (EPT) rebuilt at its next init', (name) => {
    const v = l1(name, { maxPhyAddr: 46 });
    initShadowEptMmu(v, EPT);
    const r = setCpuid(v, { ...INTEL_CPUID, maxPhyAddr: 40 });
    expect(r.ctx).toBe(v.rootMmu);
    expect(r.skipped).toBe(false);
    expect(v.rootMmu.guestRsvdCheck.get(0, 0)).toBe(R(40, 51));
    expect([v.guestMmu.roleBase, v.guestMmu.roleExt]).toEqual(
      {
        'valid-bit': [0x30704, 0x2],
        'level-zero': [0x30700, 0x1],
        'cpuid-stale': [0x30704, 0x3],
        'word-zero': [0, 0],
        'invalid-bit': [0x30f04, 0x2],
      }[name],
    );
    expect(initShadowEptMmu(v, EPT)).toBe(false);
    expect(v.guestMmu.guestRsvdCheck.get(0, 0)).toBe(R(40, 51));
  });

  it('with walk_mmu == nested_mmu, kvm_init_mmu re-initialises nested_mmu, not root_mmu', () => {
    const v = l1('valid-bit');
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, true); // L2 registers
    v.useContexts(true);
    initNestedMmu(v);
    const r = afterSetCpuid(v);
    expect(r.ctx).toBe(v.nestedMmu);
    expect(r.skipped).toBe(false);
    expect([v.nestedMmu.roleBase, v.nestedMmu.roleExt]).toEqual([0x23784, 0x20d]);
    // root_mmu still carries the invalidated role until the next root init
    expect([v.rootMmu.roleBase, v.rootMmu.roleExt]).toEqual([0x3784, 0x2cc]);
    expect(v.rootMmu.stats.inits).toBe(1);
  });
});

describe('known weakness of level-zero: nested_mmu with L2 paging off computes level 0', () => {
  // kvm_calc_nested_mmu_role (mmu.c:4979): level = role_regs_to_root_level(regs),
  // which is 0 when CR0.PG = 0 (mmu.c:258). The level-zero invalidation writes
  // base.level = 0 -- a value the role already has -- and the ext word has no
  // valid bit, so the invalidated role EQUALS the next computed one.
  function nestedPagingOff(name: StrategyName) {
    const v = l1(name);
    setRoleRegisters(v, CR0_PE, 0, 0, false, true); // L2: paging off
    v.useContexts(true);
    expect(initNestedMmu(v)).toBe(false);
    return v;
  }

  it('LEVEL-ZERO WEAKNESS: after kvm_mmu_after_set_cpuid the next nested init takes the fast path', () => {
    const v = nestedPagingOff('level-zero');
    expect([v.nestedMmu.roleBase, v.nestedMmu.roleExt]).toEqual([0x20780, 0]);
    const r = setCpuid(v, { ...INTEL_CPUID, maxPhyAddr: 40 });
    expect(r.ctx).toBe(v.nestedMmu);
    expect(r.skipped).toBe(true); // invalidation had no effect
    expect(v.nestedMmu.stats).toEqual({ inits: 2, fastPathHits: 1, rebuilds: 1 });
  });

  it.each(['valid-bit', 'cpuid-stale', 'word-zero', 'invalid-bit'] as const)('%s does force the rebuild in the same scenario', (name) => {
    const v = nestedPagingOff(name);
    const r = setCpuid(v, { ...INTEL_CPUID, maxPhyAddr: 40 });
    expect(r.ctx).toBe(v.nestedMmu);
    expect(r.skipped).toBe(false);
  });

  it('the same weakness through `role replay`', () => {
    const seq = parseOrThrow(
      sequenceSchema,
      {
        host: { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 },
        cpuid: { ...INTEL_CPUID },
        steps: [
          { op: 'init', path: 'nested', cr0: '0x1', cr4: '0x0', efer: '0x0', smm: false, guestMode: true },
          { op: 'setCpuid', cpuid: { ...INTEL_CPUID, maxPhyAddr: 40 } },
        ],
      },
      'seq',
    );
    const lz = replaySequence(seq, STRATEGIES['level-zero']);
    expect(lz[1]).toMatchObject({ mmu: 'nested', skipped: true, base: '0x00020780', ext: '0x00000000', rootLevel: 0 });
    const vb = replaySequence(seq, STRATEGIES['valid-bit']);
    expect(vb[1]).toMatchObject({ mmu: 'nested', skipped: false, base: '0x00020780', ext: '0x00000001' });
  });
});

describe('known weakness of word-zero: shadow EPT inherits SMM from a zeroed root_mmu role', () => {
  // kvm_calc_shadow_ept_root_page_role (mmu.c:4915): role.base.smm =
  // vcpu->arch.root_mmu.mmu_role.base.smm. While L2 runs, kvm_mmu_after_set_cpuid
  // re-initialises nested_mmu, not root_mmu; under word-zero root_mmu's whole role
  // (smm included) is 0 until the next root init.
  function inSmmWithL2(name: StrategyName): VcpuMmu {
    const v = mkVcpu(INTEL_EPT4, {}, name);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, true, false);
    initTdpMmu(v); // root_mmu.base.smm = 1
    expect(v.rootMmu.roleBase).toBe(0x01003784);
    v.guestMode = true;
    initShadowEptMmu(v, EPT);
    expect(v.guestMmu.roleBase).toBe(0x01030704);
    v.useContexts(true);
    initNestedMmu(v);
    setCpuid(v, { ...INTEL_CPUID, maxPhyAddr: 40 });
    expect(v.smm).toBe(true);
    initShadowEptMmu(v, EPT); // e.g. the next EPTP load
    return v;
  }

  it('WORD-ZERO WEAKNESS: the vCPU is in SMM but the new guest_mmu role has smm = 0', () => {
    const v = inSmmWithL2('word-zero');
    expect([v.rootMmu.roleBase, v.rootMmu.roleExt]).toEqual([0, 0]);
    expect(v.guestMmu.roleBase).toBe(0x00030704);
  });

  it.each(['valid-bit', 'level-zero', 'cpuid-stale', 'invalid-bit'] as const)('%s keeps base.smm, so guest_mmu gets smm = 1', (name) => {
    const v = inSmmWithL2(name);
    expect(v.guestMmu.roleBase).toBe(0x01030704);
  });
});
