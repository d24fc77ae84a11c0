/**
 * The CPUID changes a chaos coordinator makes: MAXPHYADDR, GBPAGES and the
 * vendor (the CPUID facts KVM's MMU reads), on top of the default model.
 */
import { DEFAULT_CPUID, type CpuidModel } from '../cpuid/cpuid.js';
import type { Rng } from './rng.js';

const MAXPHYADDRS = [36, 39, 42, 46, 48, 52] as const;

export function randomCpuid(rng: Rng): CpuidModel {
  return { ...DEFAULT_CPUID, maxPhyAddr: rng.pick(MAXPHYADDRS), gbpages: rng.chance(0.5), vendor: rng.chance(0.3) ? 'amd' : 'intel' };
}
