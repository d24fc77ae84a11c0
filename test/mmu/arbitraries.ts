/** fast-check generators for role-machinery inputs, shared by the MMU property tests. */
import fc from 'fast-check';
import { GUEST_VENDORS, type CpuidModel } from '../../src/cpuid/cpuid.js';
import type { EptInit } from '../../src/mmu/init.js';
import type { HostSettings } from '../../src/role/host.js';
import { CR0, CR4, EFER } from '../../src/role/regs.js';

const bitsOf = (bits: number[]) => fc.subarray(bits).map((b) => b.reduce((a, x) => (a | x) >>> 0, 0));

export const hostArb: fc.Arbitrary<HostSettings> = fc.record({
  tdpEnabled: fc.boolean(),
  maxTdpLevel: fc.constantFrom(4 as const, 5 as const),
  vendor: fc.constantFrom('intel' as const, 'amd' as const),
  tdpForcedRootLevel: fc.constantFrom(0 as const, 0 as const, 4 as const, 5 as const),
  adDisabled: fc.boolean(),
  gbpages: fc.boolean(),
  physBits: fc.integer({ min: 32, max: 52 }),
  maxHugePageLevel: fc.constantFrom(1 as const, 2 as const, 3 as const),
});

export const cpuidArb: fc.Arbitrary<CpuidModel> = fc.record({
  vendor: fc.constantFrom(...GUEST_VENDORS),
  maxPhyAddr: fc.integer({ min: 32, max: 52 }),
  gbpages: fc.boolean(),
  pse36: fc.boolean(),
  pku: fc.boolean(),
  la57: fc.boolean(),
  smep: fc.boolean(),
  smap: fc.boolean(),
  nx: fc.boolean(),
});

export const eptArb: fc.Arbitrary<EptInit> = fc.record({
  execonly: fc.boolean(),
  accessedDirty: fc.boolean(),
  level: fc.constantFrom(4 as const, 5 as const),
  hugePageLevel: fc.constantFrom(1 as const, 2 as const, 3 as const),
});

/** Any combination of the bits the role reads (validity is not the role's business). */
export const regsArb = fc.record({
  cr0: bitsOf([CR0.PE, CR0.WP, CR0.PG >>> 0, CR0.ET]),
  cr4: bitsOf([CR4.PSE, CR4.PAE, CR4.PGE, CR4.LA57, CR4.SMEP, CR4.SMAP, CR4.PKE]),
  efer: bitsOf([EFER.LME, EFER.LMA, EFER.NX]),
  smm: fc.boolean(),
  guestMode: fc.boolean(),
});

export type InitStepIn = { op: 'init'; path: 'tdp' | 'shadow' | 'shadow-npt' | 'shadow-ept' | 'nested'; cr0: bigint; cr4: bigint; efer: bigint; smm: boolean; guestMode: boolean; ept?: EptInit };
export type StepIn = InitStepIn | { op: 'setCpuid'; cpuid: CpuidModel };

export const initStepArb: fc.Arbitrary<InitStepIn> = fc
  .record({ path: fc.constantFrom('tdp', 'shadow', 'shadow-npt', 'shadow-ept', 'nested'), regs: regsArb, ept: eptArb })
  .map(({ path, regs, ept }) => ({ op: 'init' as const, path, cr0: BigInt(regs.cr0), cr4: BigInt(regs.cr4), efer: BigInt(regs.efer), smm: regs.smm, guestMode: regs.guestMode, ept }));

export const stepArb: fc.Arbitrary<StepIn> = fc.oneof(
  { weight: 5, arbitrary: initStepArb },
  { weight: 1, arbitrary: cpuidArb.map((cpuid) => ({ op: 'setCpuid' as const, cpuid })) },
);

/** Steps that repeat earlier inits often, so the fast path and its misses are exercised. */
export const sequenceArb = fc
  .record({ host: hostArb, cpuid: cpuidArb, steps: fc.array(stepArb, { minLength: 1, maxLength: 24 }), repeats: fc.array(fc.nat(), { maxLength: 24 }) })
  .map(({ host, cpuid, steps, repeats }) => {
    const out: StepIn[] = [];
    steps.forEach((s, i) => {
      out.push(s);
      const r = repeats[i];
      if (r !== undefined && r % 3 === 0) {
        const prev = out.filter((x) => x.op === 'init');
        if (prev.length) out.push(prev[r % prev.length]!);
      }
    });
    return { host, cpuid, steps: out };
  });
