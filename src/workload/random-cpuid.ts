/**
 * The CPUID changes a chaos coordinator makes: MAXPHYADDR, GBPAGES and the
 * vendor (the CPUID facts KVM's MMU reads), on top of the default model;
 * with `features`, also NX, PKU and LA57 (the stress coordinator's set). The
 * draws without `features` are unchanged, so seeded tours stay reproducible.
 */
import { DEFAULT_CPUID, type CpuidModel } from '../cpuid/cpuid.js';
import type { Rng } from './rng.js';

const MAXPHYADDRS = [36, 39, 42, 46, 48, 52] as const;

export function randomCpuid(rng: Rng, opts: { features?: boolean } = {}): CpuidModel {
  const base: CpuidModel = { ...DEFAULT_CPUID, maxPhyAddr: rng.pick(MAXPHYADDRS), gbpages: rng.chance(0.5), vendor: rng.chance(0.3) ? 'amd' : 'intel' };
  if (!opts.features) return base;
  return { ...base, nx: rng.chance(0.8), pku: rng.chance(0.5), la57: rng.chance(0.3) };
}
