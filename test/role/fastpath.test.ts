/**
 * The skip-reconfiguration fast path. In every init path of Linux v5.17
 * mmu.c the new role is computed and, if `new_role.as_u64 ==
 * context->mmu_role.as_u64`, the function returns without touching anything:
 *   init_kvm_tdp_mmu        mmu.c:4779 (test at 4786)
 *   shadow_mmu_init_context mmu.c:4843 (test at 4847; used by kvm_init_shadow_mmu
 *                                       and kvm_init_shadow_npt_mmu)
 *   kvm_init_shadow_ept_mmu mmu.c:4932 (new_pgd at 4942, test at 4944)
 *   init_kvm_nested_mmu     mmu.c:4995 (test at 5001)
 * kvm_init_shadow_npt_mmu (mmu.c:4889) and kvm_init_shadow_ept_mmu call
 * __kvm_mmu_new_pgd(vcpu, pgd, new_role.base) BEFORE the test, so it runs
 * even when the init is skipped. Nothing but the role is compared: CPUID and
 * the EPT huge_page_level are not in it (reference §5, §5.2).
 */
import { describe, expect, it } from 'vitest';
import { initMmu, initNestedMmu, initShadowEptMmu, initShadowMmu, initShadowNptMmu, initTdpMmu, setRoleRegisters } from '../../src/mmu/init.js';
import { STRATEGIES, STRATEGY_NAMES } from '../../src/mmu/strategies.js';
import { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import {
  AMD_NPT4,
  CR0_AM,
  CR0_PE,
  CR0_PG,
  CR0_WP,
  CR4_PAE,
  CR4_PGE,
  CR4_SMEP,
  EFER_LMA,
  EFER_LME,
  EFER_NX,
  EFER_SCE,
  INTEL_CPUID,
  INTEL_EPT4,
  R,
  SHADOW_HOST,
  mkVcpu,
} from './kernel-facts.js';

const LONG_CR0 = CR0_PG | CR0_WP | CR0_PE;
const LONG_EFER = EFER_LME | EFER_LMA | EFER_NX;
const EPT = { execonly: true, accessedDirty: false, level: 4 as const, hugePageLevel: 3 as const };

describe('skip test in init_kvm_tdp_mmu (mmu.c:4786)', () => {
  it('second init with the same registers is skipped; counters inits/fastPathHits/rebuilds', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    expect(initTdpMmu(v)).toBe(false);
    expect(initTdpMmu(v)).toBe(true);
    expect(initTdpMmu(v)).toBe(true);
    expect(v.rootMmu.stats).toEqual({ inits: 3, fastPathHits: 2, rebuilds: 1 });
  });

  it('register bits outside the role (CR0.AM, CR4.PGE, EFER.SCE) hit the fast path', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    initTdpMmu(v);
    setRoleRegisters(v, LONG_CR0 | CR0_AM, CR4_PAE | CR4_PGE, LONG_EFER | EFER_SCE, false, false);
    expect(initTdpMmu(v)).toBe(true);
  });

  it('SMM or guest mode flips rebuild (both are in the base role)', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    initTdpMmu(v);
    v.smm = true;
    expect(initTdpMmu(v)).toBe(false);
    expect(v.rootMmu.roleBase).toBe(0x01003784);
    v.guestMode = true;
    expect(initTdpMmu(v)).toBe(false);
    expect(v.rootMmu.roleBase).toBe(0x01023784);
  });

  it('a first init always rebuilds: a zero-allocated role never equals a computed one (access = 7), in every design', () => {
    for (const name of STRATEGY_NAMES) {
      const v = new VcpuMmu({ host: INTEL_EPT4, cpuid: INTEL_CPUID, strategy: STRATEGIES[name] });
      setRoleRegisters(v, CR0_PE, 0, 0, false, false);
      expect(initTdpMmu(v), name).toBe(false);
    }
  });

  it('a CPUID change WITHOUT kvm_mmu_after_set_cpuid is invisible: skipped, reserved masks stay stale', () => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 46 });
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    initTdpMmu(v);
    v.applyCpuid({ ...INTEL_CPUID, maxPhyAddr: 40, vendor: 'amd' });
    expect(initTdpMmu(v)).toBe(true);
    expect(v.rootMmu.guestRsvdCheck.get(0, 0)).toBe(R(46, 51));
    expect(v.rootMmu.guestRsvdCheck.get(0, 3)).toBe(R(46, 51) | 0x80n);
  });
});

describe('skip test in shadow_mmu_init_context (mmu.c:4847)', () => {
  it('shadow paging: same role skipped', () => {
    const v = mkVcpu(SHADOW_HOST);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    expect(initShadowMmu(v)).toBe(false);
    expect(initShadowMmu(v)).toBe(true);
    expect(v.rootMmu.stats).toEqual({ inits: 2, fastPathHits: 1, rebuilds: 1 });
  });

  // The ext role exists for this: with WP=1 SMEP does not change the base (smep_andnot_wp = 0)
  it('SMEP toggled while WP=1: base unchanged (0x3704) but ext changes, so it rebuilds and permissions change', () => {
    const v = mkVcpu(SHADOW_HOST);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    initShadowMmu(v);
    const before = Array.from(v.rootMmu.permissions);
    setRoleRegisters(v, LONG_CR0, CR4_PAE | CR4_SMEP, LONG_EFER, false, false);
    expect(initShadowMmu(v)).toBe(false);
    expect(v.rootMmu.roleBase).toBe(0x3704);
    expect(v.rootMmu.roleExt).toBe(0x28d);
    // update_permission_bitmask: smepf adds 0xf0 to the supervisor-fetch bytes 8, 9, 12, 13
    expect(before[8]).toBe(0x55);
    expect(v.rootMmu.permissions[8]).toBe(0xf5);
  });
});

describe('__kvm_mmu_new_pgd runs before the skip test (kvm_init_shadow_npt_mmu mmu.c:4902, kvm_init_shadow_ept_mmu mmu.c:4942)', () => {
  const tracked = (host = INTEL_EPT4) => {
    const calls: Array<[bigint, number]> = [];
    const v = new VcpuMmu({ host, cpuid: INTEL_CPUID, strategy: STRATEGIES['valid-bit'], hooks: { newPgd: (_v, pgd, role) => calls.push([pgd, role]) } });
    return { v, calls };
  };

  it('shadow EPT: skipped second init still switches the pgd with new_role.base', () => {
    const { v, calls } = tracked();
    expect(initShadowEptMmu(v, { ...EPT, eptp: 0x1000n })).toBe(false);
    expect(initShadowEptMmu(v, { ...EPT, eptp: 0x2000n })).toBe(true);
    expect(calls).toEqual([
      [0x1000n, 0x30704],
      [0x2000n, 0x30704],
    ]);
    expect(v.guestMmu.stats).toEqual({ inits: 2, fastPathHits: 1, rebuilds: 1 });
  });

  it('shadow NPT: skipped second init still switches the pgd', () => {
    const { v, calls } = tracked(AMD_NPT4);
    v.guestMode = true;
    expect(initShadowNptMmu(v, CR0_PG, CR4_PAE, LONG_EFER, 0x5000n)).toBe(false);
    expect(initShadowNptMmu(v, CR0_PG, CR4_PAE, LONG_EFER, 0x6000n)).toBe(true);
    expect(calls).toEqual([
      [0x5000n, 0x21704],
      [0x6000n, 0x21704],
    ]);
    expect(v.guestMmu.stats).toEqual({ inits: 2, fastPathHits: 1, rebuilds: 1 });
  });

  it('shadow EPT: execonly or A/D change the role and rebuild', () => {
    const v = mkVcpu(INTEL_EPT4);
    initShadowEptMmu(v, EPT);
    expect(initShadowEptMmu(v, { ...EPT, execonly: false })).toBe(false);
    expect(initShadowEptMmu(v, { ...EPT, execonly: false, accessedDirty: true })).toBe(false);
    expect(v.guestMmu.eptAd).toBe(true);
  });

  // reference §5.2: EPT huge_page_level is not in the role
  it('shadow EPT: a different L1 huge_page_level with the same role is skipped, guest reserved masks stay stale', () => {
    const v = mkVcpu(INTEL_EPT4, { maxPhyAddr: 42 });
    initShadowEptMmu(v, { ...EPT, hugePageLevel: 3 });
    expect(initShadowEptMmu(v, { ...EPT, hugePageLevel: 1 })).toBe(true);
    // with huge_page_level 1 the kernel would reserve bit 7 in [0][1]; it was not recomputed
    expect(v.guestMmu.guestRsvdCheck.get(0, 1)).toBe(R(42, 51) | R(3, 6));
    expect(v.guestMmu.guestRsvdCheck.get(0, 2)).toBe(R(42, 51) | R(3, 6));
  });
});

describe('skip test in init_kvm_nested_mmu (mmu.c:5001) and kvm_init_mmu dispatch (mmu.c:5036)', () => {
  it('nested: same L2 registers skipped', () => {
    const v = mkVcpu(INTEL_EPT4);
    setRoleRegisters(v, LONG_CR0, CR4_PAE, LONG_EFER, false, true);
    v.useContexts(true);
    expect(initNestedMmu(v)).toBe(false);
    expect(initNestedMmu(v)).toBe(true);
    expect(v.nestedMmu.stats).toEqual({ inits: 2, fastPathHits: 1, rebuilds: 1 });
  });

  it('kvm_init_mmu: mmu_is_nested -> nested_mmu; else tdp_enabled -> TDP root; else shadow root; never guest_mmu', () => {
    const n = mkVcpu(INTEL_EPT4);
    setRoleRegisters(n, LONG_CR0, CR4_PAE, LONG_EFER, false, true);
    n.useContexts(true);
    expect(initMmu(n).ctx).toBe(n.nestedMmu);
    expect(n.guestMmu.stats.inits).toBe(0);
    expect(n.rootMmu.stats.inits).toBe(0);

    const t = mkVcpu(INTEL_EPT4);
    setRoleRegisters(t, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    const rt = initMmu(t);
    expect(rt.ctx).toBe(t.rootMmu);
    expect(t.rootMmu.directMap).toBe(true);
    expect(t.rootMmu.roleBase).toBe(0x3784);

    const s = mkVcpu(SHADOW_HOST);
    setRoleRegisters(s, LONG_CR0, CR4_PAE, LONG_EFER, false, false);
    expect(initMmu(s).ctx).toBe(s.rootMmu);
    expect(s.rootMmu.roleBase).toBe(0x3704);
  });
});
