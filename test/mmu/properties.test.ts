/**
 * Properties of the role machinery that hold whatever the inputs: encodings
 * round-trip, the fast path is taken exactly when the computed role equals
 * the cached one, the five designs differ only where the design itself makes
 * them differ, and every design forces the rebuilds KVM's reset reaches —
 * except the one case the level-zero design misses, named in its own test.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { calcNestedRole, calcShadowEptRole, calcShadowNptRole, calcShadowRole, calcTdpRole, type Role } from '../../src/role/compute.js';
import { EXT_ROLE_CPUID_STALE, EXT_ROLE_NO_VALID, EXT_ROLE_V517, FORMAT_CPUID_STALE, FORMAT_NO_VALID, FORMAT_V517 } from '../../src/role/ext-role.js';
import { PAGE_ROLE } from '../../src/role/page-role.js';
import { CR4, toRoleRegs } from '../../src/role/regs.js';
import { type MmuContext } from '../../src/mmu/context.js';
import { setCpuid } from '../../src/mmu/init.js';
import { replaySequence, runInitStep, type ReplayResult } from '../../src/mmu/probe.js';
import { STRATEGIES, STRATEGY_NAMES, type StrategyName } from '../../src/mmu/strategies.js';
import { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import { sequenceArb, type InitStepIn } from './arbitraries.js';

const RUNS = { numRuns: 300 };

describe('bitfield encodings', () => {
  for (const b of [PAGE_ROLE, EXT_ROLE_V517, EXT_ROLE_NO_VALID, EXT_ROLE_CPUID_STALE]) {
    it(`${b.name}: decode then encode gives back the owned bits of any word`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 0xffffffff }), (w) => {
          const d = b.decode(w);
          expect(b.encode(d)).toBe((w & b.usedMask) >>> 0);
          expect(d.unused).toBe((w & ~b.usedMask) >>> 0);
        }),
        RUNS,
      );
    });
  }

  it('the no-valid layout is the v5.17 layout with bit 0 removed: field by field', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x3ff }), (w) => {
        const fields = (w & ~1) >>> 0; // v5.17 positions, marker clear
        const v = EXT_ROLE_V517.decode(fields);
        const byName = EXT_ROLE_NO_VALID.encode({ ...v });
        expect(FORMAT_NO_VALID.encodeExt(fields)).toBe(byName);
        expect(FORMAT_V517.encodeExt(fields)).toBe(EXT_ROLE_V517.encode({ ...v, valid: 1 }));
        expect(FORMAT_CPUID_STALE.encodeExt(fields)).toBe(EXT_ROLE_CPUID_STALE.encode({ ...v, cpuid_stale: 0 }));
      }),
      RUNS,
    );
  });
});

/** The role an init step must compute, from the calc functions, before the step runs. */
function expectedRole(v: VcpuMmu, s: InitStepIn): Role {
  const vc = { smm: s.smm, guestMode: s.guestMode, maxPhyAddr: v.maxPhyAddr };
  const regs = toRoleRegs(Number(s.cr0), Number(s.cr4), Number(s.efer));
  const f = v.strategy.format;
  switch (s.path) {
    case 'tdp':
      return calcTdpRole(regs, vc, v.host, f);
    case 'shadow':
      return calcShadowRole(regs, vc, f);
    case 'nested':
      return calcNestedRole(regs, vc, f);
    case 'shadow-npt':
      return calcShadowNptRole({ cr0: Number(s.cr0), cr4: Number(s.cr4) & ~CR4.PKE, efer: Number(s.efer) }, vc, v.host, f);
    case 'shadow-ept':
      return calcShadowEptRole(v.rootMmu.smm('test'), s.ept!.accessedDirty, s.ept!.execonly, s.ept!.level, f);
  }
}

describe('fast path', () => {
  for (const name of STRATEGY_NAMES) {
    it(`${name}: an init is skipped exactly when the computed role equals the cached one`, () => {
      fc.assert(
        fc.property(sequenceArb, (seq) => {
          const v = new VcpuMmu({ host: seq.host, cpuid: seq.cpuid, strategy: STRATEGIES[name] });
          for (const s of seq.steps) {
            if (s.op === 'setCpuid') {
              setCpuid(v, s.cpuid);
              continue;
            }
            const ctx: MmuContext = s.path === 'tdp' || s.path === 'shadow' ? v.rootMmu : s.path === 'nested' ? v.nestedMmu : v.guestMmu;
            const before = [ctx.roleBase, ctx.roleExt];
            const want = expectedRole(v, s);
            const { skipped } = runInitStep(v, s.path, s, s.ept);
            expect(skipped).toBe(before[0] === want.base && before[1] === want.ext);
            expect([ctx.roleBase, ctx.roleExt]).toEqual([want.base, want.ext]);
            expect(ctx.stats.inits).toBe(ctx.stats.fastPathHits + ctx.stats.rebuilds);
          }
        }),
        RUNS,
      );
    });
  }
});

/** Ext fields in v5.17 positions, marker removed, whatever the design's layout. */
const extFields = (name: StrategyName, ext: number): number =>
  STRATEGIES[name].format === FORMAT_NO_VALID ? (ext << 1) >>> 0 : (ext & ~1) >>> 0;

const products = (r: ReplayResult) => {
  const { base: _b, ext: _e, skipped: _s, ...rest } = r;
  return rest;
};

const smmOf = (hex: string): number => PAGE_ROLE.get(Number(hex), 'smm');
const withoutSmm = (hex: string): number => (Number(hex) & ~PAGE_ROLE.maskOf('smm')) >>> 0;

describe('the five designs side by side', () => {
  function runAll(seq: Parameters<typeof replaySequence>[0]) {
    return Object.fromEntries(STRATEGY_NAMES.map((n) => [n, replaySequence(seq, STRATEGIES[n])])) as Record<StrategyName, ReplayResult[]>;
  }

  it('valid-bit, cpuid-stale, invalid-bit and level-zero compute the same base words, ext fields and products on any sequence', () => {
    fc.assert(
      fc.property(sequenceArb, (seq) => {
        const runs = runAll(seq);
        const ref = runs['valid-bit'];
        for (const n of ['cpuid-stale', 'invalid-bit', 'level-zero'] as const) {
          runs[n].forEach((r, i) => {
            expect(r.base, `${n} step ${i} base`).toBe(ref[i]!.base);
            expect(extFields(n, Number(r.ext)), `${n} step ${i} ext fields`).toBe(extFields('valid-bit', Number(ref[i]!.ext)));
            expect(products(r), `${n} step ${i}`).toEqual(products(ref[i]!));
            // Only level-zero may take a different fast-path decision (see below).
            if (n !== 'level-zero') expect(r.skipped, `${n} step ${i} skipped`).toBe(ref[i]!.skipped);
          });
        }
      }),
      RUNS,
    );
  });

  /**
   * Whether root_mmu's cached role is invalidated (not re-initialised since
   * the last CPUID change) before each step: kvm_mmu_reset_context re-inits
   * root_mmu only while the walk context is root_mmu.
   */
  function rootInvalidatedBefore(steps: readonly { op: string; path?: string }[]): boolean[] {
    let walkNested = false;
    let rootInvalid = false;
    return steps.map((st) => {
      const before = rootInvalid;
      if (st.op === 'setCpuid') rootInvalid = walkNested;
      else if (st.path === 'tdp' || st.path === 'shadow') {
        walkNested = false;
        rootInvalid = false;
      } else walkNested = true;
      return before;
    });
  }

  it('word-zero first departs from valid-bit at a shadow-ept init while root_mmu is zeroed, in the SMM byte', () => {
    fc.assert(
      fc.property(sequenceArb, (seq) => {
        const runs = runAll(seq);
        const rootInvalid = rootInvalidatedBefore(seq.steps);
        const first = runs['word-zero'].findIndex((r, i) => JSON.stringify(r) !== JSON.stringify(runs['valid-bit'][i]));
        if (first < 0) return;
        const step = seq.steps[first]!;
        expect(step.op === 'init' && step.path, `first difference at step ${first}`).toBe('shadow-ept');
        expect(rootInvalid[first], `root_mmu invalidated before step ${first}`).toBe(true);
        const [wz, vb] = [runs['word-zero'][first]!, runs['valid-bit'][first]!];
        expect(smmOf(wz.base)).toBe(0);
        expect(smmOf(vb.base)).not.toBe(0);
        expect(withoutSmm(wz.base)).toBe(withoutSmm(vb.base));
      }),
      RUNS,
    );
  });

  it('word-zero: kvm_calc_shadow_ept_root_page_role reads smm = 0 from the zeroed root_mmu role while the vCPU is in SMM', () => {
    const host = { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 } as const;
    const cpuid = { vendor: 'intel', maxPhyAddr: 46, gbpages: true, pse36: true, pku: true, la57: false, smep: true, smap: true, nx: true } as const;
    const ept = { execonly: false, accessedDirty: true, level: 4, hugePageLevel: 3 } as const;
    const seq = {
      host,
      cpuid,
      steps: [
        // root_mmu computed in SMM, then L2 entered through EPT: walk_mmu is nested_mmu.
        { op: 'init' as const, path: 'tdp' as const, cr0: 0x80010031n, cr4: 0x20n, efer: 0xd00n, smm: true, guestMode: false },
        { op: 'init' as const, path: 'shadow-ept' as const, cr0: 0n, cr4: 0n, efer: 0n, smm: true, guestMode: true, ept },
        // CPUID change: the reset re-initialises nested_mmu only; root_mmu stays invalidated.
        { op: 'setCpuid' as const, cpuid: { ...cpuid, maxPhyAddr: 40 } },
        { op: 'init' as const, path: 'shadow-ept' as const, cr0: 0n, cr4: 0n, efer: 0n, smm: true, guestMode: true, ept },
      ],
    };
    const [valid, zero] = [replaySequence(seq, STRATEGIES['valid-bit']), replaySequence(seq, STRATEGIES['word-zero'])];
    expect(smmOf(valid[3]!.base)).toBe(1);
    expect(smmOf(zero[3]!.base)).toBe(0);
  });
});

describe('afterSetCpuid forces rebuilds', () => {
  /**
   * After kvm_mmu_after_set_cpuid, the first init of every invalidated
   * context must rebuild. Tracks each context from the invalidation to its
   * next init and returns the inits that took the fast path.
   */
  function missedRebuilds(name: StrategyName, seq: { host: VcpuMmu['host']; cpuid: VcpuMmu['cpuid']; steps: ReturnType<typeof sequenceArb.generate>['value']['steps'] }) {
    const v = new VcpuMmu({ host: seq.host, cpuid: seq.cpuid, strategy: STRATEGIES[name] });
    const pending = new Set<MmuContext>();
    const missed: { mmu: string; base: number; ext: number }[] = [];
    v.hooks.beforeInvalidate = (_v, ctx) => void pending.add(ctx);
    v.hooks.initDecided = (_v, ctx, skipped) => {
      if (pending.delete(ctx) && skipped) missed.push({ mmu: ctx.name, base: ctx.roleBase, ext: ctx.roleExt });
    };
    for (const s of seq.steps) {
      if (s.op === 'setCpuid') setCpuid(v, s.cpuid);
      else runInitStep(v, s.path, s, s.ept);
    }
    return missed;
  }

  for (const name of ['valid-bit', 'cpuid-stale', 'word-zero', 'invalid-bit'] as const) {
    it(`${name}: never takes the fast path on the first init after invalidation`, () => {
      fc.assert(
        fc.property(sequenceArb, (seq) => {
          expect(missedRebuilds(name, seq)).toEqual([]);
        }),
        RUNS,
      );
    });
  }

  it('level-zero: misses only nested_mmu roles computed with L2 paging off (level 0 is a computable level)', () => {
    fc.assert(
      fc.property(sequenceArb, (seq) => {
        for (const m of missedRebuilds('level-zero', seq)) {
          expect(m.mmu).toBe('nested');
          expect(PAGE_ROLE.get(m.base, 'level')).toBe(0);
          expect(EXT_ROLE_NO_VALID.get(m.ext, 'cr0_pg')).toBe(0);
        }
      }),
      RUNS,
    );
  });

  it('level-zero: the miss happens — nested_mmu with L2 paging off keeps its role through a CPUID change', () => {
    const host = { tdpEnabled: true, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 } as const;
    const cpuid = { vendor: 'intel', maxPhyAddr: 46, gbpages: true, pse36: true, pku: true, la57: false, smep: true, smap: true, nx: true } as const;
    const l2PagingOff: InitStepIn = { op: 'init', path: 'nested', cr0: 0x11n, cr4: 0n, efer: 0n, smm: false, guestMode: true };
    const seq = { host, cpuid, steps: [l2PagingOff, { op: 'setCpuid' as const, cpuid: { ...cpuid, maxPhyAddr: 39 } }] };
    expect(missedRebuilds('level-zero', seq)).toEqual([{ mmu: 'nested', base: 0x00020780, ext: 0 }]);
    expect(missedRebuilds('valid-bit', seq)).toEqual([]);
  });
});
